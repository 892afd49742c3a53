#pragma once
// A temporary $MUGV_HOME for training tests: a "micro" model preset (a DiT of two blocks, hidden 48, two
// heads; "micro4" has four blocks) and a synthetic latent cache of `clips` clips of dataset "shapes" for VAE
// run "vae0", so a training step takes milliseconds. Needs LibTorch (include only from torch test targets).
#include "core/strings.h"
#include "support/test_support.h"
#include "train/latent_cache.h"
#include "train/run_layout.h"
#include "train/train_params.h"

#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace mugv::test {

inline const char* const kMicroPreset = R"(description = "test preset"
[dit]
hidden = 48
depth = 2
heads = 2
mlp_ratio = 2
patch = [1, 2, 2]
[vae]
latent_channels = 4
compress = [4, 8, 8]
base_channels = 8
channel_mult = [1, 1, 1]
res_blocks = 1
decoder_window = 1
[text]
kind = "small_transformer"
vocab_size = 64
dim = 32
layers = 1
heads = 2
ff_dim = 64
max_tokens = 12
)";

// `mugv train` arguments naming a run of the micro preset on the home's cache; callers add the training
// values.
inline std::vector<std::string> micro_train_args(const std::string& run) {
  return {"train", "--preset", "micro", "--dataset", "shapes", "--vae-run", "vae0", "--run", run};
}

// Training options for run `run` of the micro preset on the home's cache, small enough for a test: batch 2,
// 2 threads, a checkpoint every 2 steps (10 kept), seed 7, first-frame conditioning and caption dropout on.
inline TrainOptions micro_train_options(const std::string& run, int64_t steps) {
  TrainOptions o;
  o.run = run;
  o.preset = o.model = "micro";
  o.dataset = "shapes";
  o.vae_run = "vae0";
  o.steps = steps;
  o.batch = 2;
  o.lr = 2e-3;
  o.warmup_steps = 2;
  o.save_every = 2;
  o.keep_checkpoints = 10;
  o.threads = 2;
  o.seed = 7;
  o.ema_decay = 0.9;
  o.flow.shift_base_px = 32;
  o.flow.p_first_frame = 0.3;
  o.flow.p_caption_dropout = 0.2;
  return o;
}

// The config a run of micro_train_options(_, steps) stores, as the command line would give it: what a resume
// reads its options from. Callers add what they change (e.g. config["train"]["precision"]).
inline nlohmann::json micro_train_config(int64_t steps) {
  return {{"train",
           {{"steps", steps},
            {"save_every", 2},
            {"threads", 2},
            {"seed", 7},
            {"batch", 2},
            {"lr", 2e-3},
            {"warmup", 2},
            {"ema", 0.9},
            {"keep", 10},
            {"model", "micro"},
            {"preset", "micro"},
            {"dataset", "shapes"},
            {"vae_run", "vae0"}}},
          {"flow", {{"shift_base", 32}, {"p_first_frame", 0.3}, {"caption_dropout", 0.2}}}};
}

// The micro options for fine-tuning tests: a faster learning rate and neither first-frame conditioning nor
// caption dropout, so a few steps move the model visibly.
inline TrainOptions micro_finetune_options(const std::string& run, int64_t steps) {
  auto o = micro_train_options(run, steps);
  o.lr = 5e-3;
  o.flow.p_first_frame = 0;
  o.flow.p_caption_dropout = 0;
  return o;
}

class MicroHome {
 public:
  explicit MicroHome(int clips = 6) {
    ::setenv("MUGV_HOME", dir_.path().c_str(), 1);
    fs::create_directories(dir_ / "presets/models");
    std::ofstream(dir_ / "presets/models/micro.toml") << kMicroPreset;
    // The same with four blocks ("micro4"), for pipeline stages of more than one block.
    std::string deep = kMicroPreset;
    deep.replace(deep.find("depth = 2"), 9, "depth = 4");
    std::ofstream(dir_ / "presets/models/micro4.toml") << deep;
    const char* colors[] = {"red", "green", "blue"};
    const char* moves[] = {"left", "right"};
    for (int i = 0; i < clips; ++i) {
      CachedClip c;
      c.clip_id = i + 1;
      c.caption = cat("a ", colors[i % 3], " circle moving ", moves[(i / 3) % 2]);
      c.fps = 8;
      c.frames = 17;
      c.height = c.width = 32;
      auto latent = torch::full({4, 5, 4, 4}, 0.5 * (i % 3) - 0.5) +
                    0.3 * torch::linspace(-1, 1, 5).view({1, 5, 1, 1}) * ((i / 3) % 2 ? 1 : -1);
      write_cached_clip(latent_cache_dir("shapes", "vae0"), c, latent);
    }
  }
  ~MicroHome() { ::unsetenv("MUGV_HOME"); }
  MicroHome(const MicroHome&) = delete;
  MicroHome& operator=(const MicroHome&) = delete;
  const fs::path& path() const { return dir_.path(); }

 private:
  TempDir dir_;
};

// Every step's metrics of a run, in order (runs/R/metrics.jsonl).
inline std::vector<nlohmann::json> run_metrics(const std::string& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run_paths(run).metrics());
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace mugv::test
