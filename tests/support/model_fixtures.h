#pragma once
// Model configurations shared by the LibTorch test suites (model, sample); header-only, torch-free.

#include "model/config.h"

namespace mugv::test {

// A DiT small enough for quick checks: hidden 48 (2 heads x 24), 4 latent channels, text width 16, 6 tokens.
inline DiTConfig micro_dit_config(int depth = 2) {
  DiTConfig c;
  c.hidden = 48;
  c.depth = depth;
  c.heads = 2;
  c.head_dim = 24;
  c.in_channels = 4;
  c.text_dim = 16;
  c.text_tokens = 6;
  return c;
}

}  // namespace mugv::test
