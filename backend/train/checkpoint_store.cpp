#include "train/checkpoint_store.h"

#include "train/run_layout.h"

#include "core/error.h"
#include "core/hash.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"

#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <cstdio>

namespace mugv {
namespace {

constexpr const char* kManifest = "manifest.json";
constexpr const char* kLatest = "latest";
constexpr const char* kStagingPrefix = ".staging-";

void fsync_path(const fs::path& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw Error(ErrorCode::io, path.string(), "cannot open to sync");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error(ErrorCode::io, path.string(), "fsync failed");
}

std::optional<fs::path> latest_pointer(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_regular_file(dir / kLatest, ec)) return std::nullopt;
  std::string name = trim(read_text_file(dir / kLatest));
  if (!step_from_dir_name(name)) return std::nullopt;
  return dir / name;
}

}  // namespace

CheckpointStore::CheckpointStore(fs::path checkpoints_dir) : dir_(std::move(checkpoints_dir)) {}

std::string CheckpointStore::step_dir_name(int64_t step) {
  return mugv::step_dir_name(step);
}

fs::path CheckpointStore::staging_path(int64_t step, const std::string& writer_tag) const {
  return dir_ / cat(kStagingPrefix, step_dir_name(step), "-",
                    writer_tag.empty() ? std::to_string(::getpid()) : writer_tag);
}

fs::path CheckpointStore::begin(int64_t step, const std::string& writer_tag) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw Error(ErrorCode::io, dir_.string(), "cannot create the checkpoints folder: " + ec.message());
  for (const auto& entry : fs::directory_iterator(dir_, ec))
    if (starts_with(entry.path().filename().string(), kStagingPrefix)) fs::remove_all(entry.path(), ec);
  fs::path staging = staging_path(step, writer_tag);
  fs::create_directories(staging, ec);
  if (ec) throw Error(ErrorCode::io, staging.string(), "cannot create the staging folder: " + ec.message());
  return staging;
}

CheckpointRef CheckpointStore::commit(const fs::path& staging, int64_t step, const nlohmann::json& metadata) {
  nlohmann::json files = nlohmann::json::object();
  std::vector<fs::path> paths;
  for (const auto& entry : fs::directory_iterator(staging)) {
    if (!entry.is_regular_file() || entry.path().filename() == kManifest) continue;
    paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  for (const auto& p : paths) {
    fsync_path(p, false);
    files[p.filename().string()] = {{"bytes", fs::file_size(p)}, {"sha256", sha256_file(p)}};
  }
  nlohmann::json manifest = {
      {"format", "mugv-checkpoint-1"}, {"step", step}, {"files", files}, {"metadata", metadata}};
  write_json_atomic(staging / kManifest, manifest);
  fsync_path(staging, true);

  fs::path final_dir = dir_ / step_dir_name(step);
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    // Replacing a checkpoint of the same step: move the old one aside first so the rename stays atomic.
    fs::path old = dir_ / cat(kStagingPrefix, "old-", step_dir_name(step), "-", ::getpid());
    fs::rename(final_dir, old);
    fs::rename(staging, final_dir);
    fs::remove_all(old, ec);
  } else {
    fs::rename(staging, final_dir);
  }
  fsync_path(dir_, true);
  write_text_atomic(dir_ / kLatest, step_dir_name(step) + "\n");
  return CheckpointRef{step, final_dir, metadata};
}

std::vector<CheckpointRef> CheckpointStore::list() const {
  std::vector<CheckpointRef> refs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (!entry.is_directory()) continue;
    if (auto step = step_from_dir_name(entry.path().filename().string()))
      refs.push_back({*step, entry.path(), {}});
  }
  std::sort(refs.begin(), refs.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return refs;
}

std::optional<std::string> CheckpointStore::verify(const fs::path& checkpoint_dir) const {
  std::error_code ec;
  if (!fs::is_directory(checkpoint_dir, ec)) return std::string("missing");
  nlohmann::json manifest;
  try {
    manifest = read_json_file(checkpoint_dir / kManifest);
  } catch (const Error& e) {
    return cat("manifest unreadable: ", e.message());
  }
  if (!manifest.contains("files") || !manifest["files"].is_object())
    return std::string("manifest has no file list");
  for (auto it = manifest["files"].begin(); it != manifest["files"].end(); ++it) {
    fs::path file = checkpoint_dir / it.key();
    if (!fs::is_regular_file(file, ec)) return cat(it.key(), " is missing");
    uint64_t expected = it.value().value("bytes", uint64_t(0));
    uint64_t actual = fs::file_size(file, ec);
    if (actual != expected)
      return cat(it.key(), " has ", actual, " bytes, the manifest says ", expected, " (truncated?)");
    if (sha256_file(file) != it.value().value("sha256", std::string()))
      return cat(it.key(), " does not match its SHA-256 in the manifest (damaged)");
  }
  return std::nullopt;
}

CheckpointRef CheckpointStore::open(int64_t step) const {
  fs::path dir = dir_ / step_dir_name(step);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(ErrorCode::not_found, dir.string(), "no such checkpoint");
  if (auto problem = verify(dir)) throw Error(ErrorCode::corrupt, dir.string(), *problem);
  auto manifest = read_json_file(dir / kManifest);
  return CheckpointRef{step, dir, manifest.value("metadata", nlohmann::json::object())};
}

std::optional<CheckpointRef> CheckpointStore::latest_good(
    const std::function<void(const CheckpointProblem&)>& on_problem) const {
  auto refs = list();
  std::optional<int64_t> start;
  if (auto latest = latest_pointer(dir_)) start = step_from_dir_name(latest->filename().string());
  for (auto it = refs.rbegin(); it != refs.rend(); ++it) {
    if (start && it->step > *start) continue;  // newer than `latest`: an interrupted commit never finished
    if (auto problem = verify(it->dir)) {
      log_warning(cat(it->dir.string(), ": refused: ", *problem));
      if (on_problem) on_problem({it->dir, *problem});
      continue;
    }
    return open(it->step);
  }
  return std::nullopt;
}

int CheckpointStore::prune(int keep_last) {
  auto refs = list();
  auto latest = latest_pointer(dir_);
  int removed = 0;
  for (size_t i = 0; i + static_cast<size_t>(std::max(keep_last, 1)) < refs.size(); ++i) {
    if (latest && refs[i].dir == *latest) continue;
    std::error_code ec;
    fs::remove_all(refs[i].dir, ec);
    if (!ec) ++removed;
  }
  return removed;
}

}  // namespace mugv
