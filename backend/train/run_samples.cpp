#include "train/run_samples.h"

#include "core/error.h"
#include "core/path_confinement.h"
#include "core/strings.h"

#include <algorithm>
#include <cctype>
#include <map>

namespace mugv {

namespace {

bool plain_video_name(const std::string& name) {
  if (name.empty() || name.size() > 200 || name.front() == '.') return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  const std::string ext = fs::path(name).extension().string();
  return ext == ".mp4" || ext == ".webm" || ext == ".gif";
}

std::string subject(const RunPaths& run, int64_t step, const std::string& file) {
  return cat("run ", run.root.filename().string(), ", step ", step, ", ", file);
}

}  // namespace

fs::path sample_step_dir(const RunPaths& run, int64_t step) {
  return run.samples() / step_dir_name(step);
}

std::string sample_file_name(size_t index) {
  return cat("sample-", index, ".mp4");
}

fs::path run_sample_path(const RunPaths& run, int64_t step, const std::string& file) {
  if (!plain_video_name(file))
    throw Error(ErrorCode::invalid_argument, subject(run, step, file),
                "a sample is named by its file name alone (letters, digits, '.', '_', '-'; .mp4, .webm or "
                ".gif; not starting with '.')");
  const fs::path path = sample_step_dir(run, step) / file;
  // A symlink inside the run's folder must not lead out of it (where it leads is not said).
  if (!PathConfinement(std::vector<fs::path>{run.root}).resolve_inside(path))
    throw Error(ErrorCode::forbidden, subject(run, step, file), "leads outside the run's folder; not served");
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw Error(ErrorCode::not_found, subject(run, step, file), "no such sample video in the run");
  return path;
}

std::vector<RunSampleFile> list_run_samples(const RunPaths& run, size_t max_steps) {
  std::map<int64_t, fs::path, std::greater<>> steps;  // newest first
  std::error_code ec, entry_ec;
  for (auto it = fs::directory_iterator(run.samples(), ec); !ec && it != fs::directory_iterator();
       it.increment(ec))
    if (auto step = step_from_dir_name(it->path().filename().string()); step && it->is_directory(entry_ec))
      steps[*step] = it->path();
  const PathConfinement inside_run(std::vector<fs::path>{run.root});
  std::vector<RunSampleFile> out;
  for (const auto& [step, dir] : steps) {
    if (max_steps-- == 0) break;
    std::vector<RunSampleFile> files;
    ec.clear();
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (!plain_video_name(name) || !inside_run.resolve_inside(it->path()) || !it->is_regular_file(entry_ec))
        continue;
      const uintmax_t size = fs::file_size(it->path(), entry_ec);
      files.push_back({step, name, it->path(), entry_ec ? 0 : size});
    }
    // sample-2 before sample-10.
    std::sort(files.begin(), files.end(), [](const RunSampleFile& a, const RunSampleFile& b) {
      return a.file.size() != b.file.size() ? a.file.size() < b.file.size() : a.file < b.file;
    });
    out.insert(out.end(), files.begin(), files.end());
  }
  return out;
}

}  // namespace mugv
