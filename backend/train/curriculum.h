#pragma once
// A training curriculum (docs/MUGV.md §5.3): the stages a DiT run goes through, by step, and what each one
// changes about the step's batch. MUG-V trains (1) on images and short 360p video with the image share
// annealed down, (2) on video whose clip length is raised and with first-frame conditioning introduced,
// (3) on the best clips at full length. Inside one run a stage here sets, per step:
//
// - image_share: the probability that the step trains on images, the first latent frame of every clip (the
//   VAE encodes frame 0 on its own: model/vae.h, so that latent is exactly the clip's first picture);
//   annealed linearly from `image_share` to `image_share_end` over the stage;
// - latent_frames: the clips' first k latent frames (their first 1 + compress_t·(k − 1) video frames;
//   0: whole clips), raised linearly from `latent_frames` to `latent_frames_end` over the stage;
// - p_first_frame: the probability of first-frame conditioning (replaces --p-first-frame; images never
//   condition).
//
// A stage covers the steps after the previous stage's `until` up to its own; steps after the last stage
// keep its final values. The decision "images or video" comes from a SplitMix64 hash of (seed, step), never
// from a generator, so every rank decides the same and a resumed run decides what an uninterrupted one
// would. The curricula of the whole dataset (resolution, the best clips) are separate runs: SFT with
// --clip-filter from the previous stage (--from).
//
// A curriculum is a TOML preset of kind "curricula" (presets/curricula/NAME.toml) or a file:
//
//   description = "..."
//   [[stage]]
//   until = 2000            # last step of the stage (increasing from stage to stage), or
//   until_share = 0.4       #   where the stage ends as a share of the run's --steps (0 < share <= 1)
//   image_share = 0.5       # 0..1
//   image_share_end = 0.1   # default: image_share
//   latent_frames = 2       # 0: whole clips
//   latent_frames_end = 3   # default: latent_frames
//   p_first_frame = 0.0     # default: the run's --p-first-frame
//
// Torch-free; pure functions.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

struct CurriculumStage {
  int64_t until = 0;       // 0 until resolved() when the file gives until_share
  double until_share = 0;  // 0: `until` is given
  double image_share = 0, image_share_end = 0;
  int64_t latent_frames = 0, latent_frames_end = 0;
  std::optional<double> p_first_frame;
};

struct Curriculum {
  std::string source;  // the preset or file it came from (for messages)
  std::vector<CurriculumStage> stages;

  bool empty() const { return stages.empty(); }
  // Every stage's end in steps of a run of `total_steps` (until_share rounded). Throws
  // Error(invalid_argument) naming the source when two stages would end at the same step.
  [[nodiscard]] Curriculum resolved(int64_t total_steps) const;
  // The curriculum as stored in a run folder (to_json) and read back (from_json, which checks it like a
  // file).
  nlohmann::json to_json() const;
};

// Checks and converts the preset's JSON (core/presets.h load_preset). Throws Error(invalid_argument)
// "SOURCE: stage N: key 'image_share': ..." for a value out of range, a missing or non-increasing `until`,
// an unknown key, or no stage at all.
[[nodiscard]] Curriculum curriculum_from_json(const nlohmann::json& preset, const std::string& source);

// `name_or_file`: a preset name of kind "curricula" or a path to a TOML file (it contains '/' or ends in
// .toml). Errors as load_preset and curriculum_from_json.
[[nodiscard]] Curriculum load_curriculum(const std::string& name_or_file);

// What the curriculum asks of training step `step` (1-based).
struct CurriculumStep {
  int stage = -1;             // index into stages; -1 without a curriculum
  bool images = false;        // train on the clips' first latent frame alone
  int64_t latent_frames = 0;  // 0: whole clips
  std::optional<double> p_first_frame;
  nlohmann::json to_json() const;  // for the step's metrics
};
[[nodiscard]] CurriculumStep curriculum_step(const Curriculum& curriculum, int64_t step, uint64_t seed);

}  // namespace mugv
