#pragma once
// The videos a DiT run renders while it trains (sample/training_samples.h writes them), where the run layout
// keeps them: runs/<run>/samples/step-<N>/sample-<i>.mp4. The trainer names them here and the service finds
// them here. A reader names a run, a step and a file name, never a path, and what it gets stays inside the
// run's folder: a file name is one plain component (no "/", no "..", no leading "."), and the file, once its
// symlinks are followed, must lie inside the run's folder. Torch-free; functions of the file system only.

#include "train/run_layout.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace mugv {

// runs/<run>/samples/step-<step>.
fs::path sample_step_dir(const RunPaths& run, int64_t step);
// The file of the `index`-th sample prompt: "sample-<index>.mp4".
std::string sample_file_name(size_t index);

struct RunSampleFile {
  int64_t step = 0;
  std::string file;  // its name inside the step's folder
  fs::path path;
  uintmax_t size = 0;  // bytes
};

// The sample videos of a run (.mp4, .webm, .gif), newest step first and by file name within a step, from the
// newest `max_steps` steps. A run without samples has none; a name or a symlink that breaks the rules above
// is left out.
[[nodiscard]] std::vector<RunSampleFile> list_run_samples(const RunPaths& run, size_t max_steps);

// The sample `file` of `step`. Errors name the run, the step and the file: invalid_argument for a file name
// that is not a plain video file name, forbidden for a file that resolves outside the run's folder, not_found
// for a missing one.
[[nodiscard]] fs::path run_sample_path(const RunPaths& run, int64_t step, const std::string& file);

}  // namespace mugv
