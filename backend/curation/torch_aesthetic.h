#pragma once
// The LibTorch aesthetic predictors (aesthetic_model.h), registered by register_torch_aesthetic_loader().
//
// TorchScript predictor (*.pt, *.ts, *.torchscript): `forward(images)` takes float images [N, 3, S, S] in
// [0, 1] (RGB, the picture centre-cropped to a square and resized with area averaging) and returns N
// scores ([N] or [N, 1]). S is the module's integer attribute `input_size` when it has one, else 224.
// Whatever normalisation the model wants (e.g. CLIP's mean/std) belongs inside the module.
//
// MLP head (*.safetensors), the LAION aesthetic-predictor layout: tensors layers.<i>.weight [out, in] and
// layers.<i>.bias [out], applied in increasing <i>, ending in one output. __metadata__:
//   "features"    (required) a TorchScript feature extractor, path relative to the safetensors file, with
//                 the predictor's input contract above, returning embeddings [N, D]; D must equal the first
//                 layer's input width
//   "normalize"   "l2" (default: LAION normalises CLIP embeddings) or "none"
//   "activation"  between layers: "none" (default, as LAION's head), "relu" or "gelu"
// Errors name the file: Error(format) for a missing tensor, a gap in the layer indices, a bad metadata
// value or an unreadable TorchScript file; Error(invalid_argument) for mismatched widths or an output that
// is not one finite number per image. Inference runs on CPU without gradients.

namespace mugv {

// Idempotent.
void register_torch_aesthetic_loader();

}  // namespace mugv
