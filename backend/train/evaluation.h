#pragma once
// A validation loss for comparing training recipes (optimizers, learning rates, parametrisations, growth):
// the rectified-flow loss of a model on a fixed set of cached clips, at noise and timesteps that are the same
// for every model and every call. Two models evaluated on the same clips with the same options see exactly
// the same noised inputs, so the difference of their losses is the difference of the models, not of the
// draws (a training loss is a different batch at different noise every step).
//
// Draw d of clip i comes from make_flow_batch's generator at (seed, step = i, sample = d) with the run's
// timestep shift (flow.h); no conditioning frames and no caption dropout. Eval mode, no gradients; the
// modules' train/eval mode is restored. Not thread-safe (the modules are shared).

#include "model/dit.h"
#include "model/text_encoder.h"
#include "model/tokenizer.h"
#include "train/flow.h"
#include "train/latent_cache.h"

#include <cstdint>
#include <vector>

namespace mugv {

struct FlowEvalOptions {
  int64_t draws = 2;   // noise/timestep draws per clip (one forward of this batch size per clip)
  uint64_t seed = 20;  // of the draws; the same for every model compared
  double shift_base_px = 64;
};

// Mean flow loss over every clip and draw. `text_tokens`: the model preset's text length. Throws
// Error(invalid_argument) for an empty clip list; the latent cache's errors name a bad file.
[[nodiscard]] double fixed_draw_flow_loss(DiTImpl& dit, TextEncoderBase& text, const Tokenizer& tokenizer,
                                          int64_t text_tokens, const std::vector<CachedClip>& clips,
                                          const FlowEvalOptions& options);

}  // namespace mugv
