#include "train/evaluation.h"

#include "core/error.h"

namespace mugv {

double fixed_draw_flow_loss(DiTImpl& dit, TextEncoderBase& text, const Tokenizer& tokenizer,
                            int64_t text_tokens, const std::vector<CachedClip>& clips,
                            const FlowEvalOptions& options) {
  if (clips.empty()) throw Error(ErrorCode::invalid_argument, "validation", "no clips to evaluate on");
  torch::NoGradGuard no_grad;
  const bool dit_trained = dit.is_training(), text_trained = text.is_training();
  dit.eval();
  text.eval();
  const auto device = dit.parameters().front().device();
  FlowOptions flow;
  flow.shift_base_px = options.shift_base_px;
  flow.p_first_frame = 0;
  flow.p_caption_dropout = 0;
  double sum = 0;
  for (size_t i = 0; i < clips.size(); ++i) {
    const CachedClip& clip = clips[i];
    const auto x0 =
        read_cached_latent(clip).unsqueeze(0).expand({options.draws, -1, -1, -1, -1}).contiguous();
    const FlowBatch batch = to_device(
        make_flow_batch(x0, options.seed, static_cast<int64_t>(i), clip.height, clip.width, flow), device);
    const TokenizedText tokens =
        tokenizer.encode(clip.caption, static_cast<int>(text_tokens), TokenLimitPolicy::truncate);
    const auto ids = torch::tensor(tokens.ids, torch::kInt64).view({1, -1}).expand({options.draws, -1});
    const auto mask = torch::tensor(tokens.mask, torch::kInt64)
                          .view({1, -1})
                          .expand({options.draws, -1})
                          .to(torch::kFloat32);
    const auto features = text.forward(ids.to(device), mask.to(device));
    const auto fps = torch::full({options.draws}, clip.fps, torch::TensorOptions().device(device));
    const auto prediction = dit.forward(batch.x_t, batch.t * kDiTTimesteps, features, mask.to(device), fps);
    sum += masked_flow_loss(prediction, batch.target, batch.cond_mask).item<double>();
  }
  if (dit_trained) dit.train();
  if (text_trained) text.train();
  return sum / static_cast<double>(clips.size());
}

}  // namespace mugv
