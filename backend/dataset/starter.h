#pragma once
// Writes the shapes starter dataset to disk (`mugv make-dataset shapes`):
//   DIR/train/shape_00000.mp4 + .txt   training clips with sidecar captions
//   DIR/heldout/heldout_000.mp4 + .txt one clip per held-out combination (never in train/)
//   DIR/manifest.jsonl                 the training split (path, caption, fps +
//   color/shape/direction/background) DIR/heldout.jsonl                  the held-out clips, same fields
//   DIR/heldout.json                   the held-out combinations and their prompts, for `mugv eval`
//   DIR/dataset.json                   the generator settings, so the set can be reproduced
// Deterministic in the options. Existing files in DIR are overwritten; other files are left alone.

#include "core/progress.h"
#include "dataset/shapes.h"

#include <cstdint>
#include <filesystem>
#include <string>

namespace mugv {

struct ShapesDatasetOptions {
  std::filesystem::path out_dir;
  int count = 256;  // training clips
  int size = 64;    // square frame side, pixels
  int frames = 17;
  double fps = 8;
  uint64_t seed = 1;
  double held_out_fraction = 0.1;
  int crf = 17;
  shapes::Placement placement = shapes::Placement::edge;
};

struct ShapesDatasetResult {
  int train_clips = 0;
  int held_out_clips = 0;
  int held_out_combos = 0;
  std::filesystem::path manifest, held_out_manifest, held_out_list;
};

// Throws Error(invalid_argument) for out-of-range options (count < 1, size not in 16..1024 or not a
// multiple of 8, frames < 1, fps <= 0), Error(io) when DIR cannot be written.
ShapesDatasetResult make_shapes_dataset(const ShapesDatasetOptions& options, const CancelToken& cancel,
                                        const ProgressFn& progress);

}  // namespace mugv
