#include "model/release_weights.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/strings.h"
#include "core/weight_files.h"
#include "model/weights.h"

namespace mugv {

void load_release_dit(const ReleaseModelFiles& files, DiTImpl& dit) {
  (void)load_module(dit, WeightFiles::open(files.dit), {}, UnexpectedTensors::error);
}

void load_release_text(const ReleaseModelFiles& files, TextEncoderBase& text) {
  require_complete(files);
  auto* t5 = dynamic_cast<T5EncoderImpl*>(&text);
  if (!t5) throw Error(ErrorCode::internal, files.dir.string(), "the released model's text encoder is T5");
  // A Hugging Face T5 folder may hold the whole encoder-decoder; only the encoder's tensors are read.
  (void)load_t5_encoder(*t5, *files.text_encoder);
}

std::shared_ptr<VideoCodec> load_release_codec(const ReleaseModelFiles& files) {
  require_complete(files);
  const WeightFiles vae_files = WeightFiles::open(*files.vae);
  MugvVAE vae(mugv_vae_config_from_shapes(shapes_of(vae_files)));
  (void)load_module(*vae, vae_files, {}, UnexpectedTensors::error);
  return make_video_codec(vae);
}

}  // namespace mugv
