// Loading a big DiT checkpoint: peak resident memory against the file's size, and the time. A synthetic
// checkpoint in the release's layout is written first (the release's width: hidden 3456, 48 heads, 24 latent
// channels, text 4096; fewer blocks than 56 so that it fits a workstation, in bf16 as the release ships), as
// dit.pt (torch.save zip) and as dit.safetensors; then each is loaded by a fresh copy of this program, which
// reads the DiT configuration from the file, builds the model in the file's dtype and streams the weights in
// (model/weights.h), and reports its own peak resident set (VmHWM). Prints one JSON line per file.
// Usage: bench_weights_load [--dir DIR] [--depth 12] [--hidden 3456 --heads 48] [--keep]
//        bench_weights_load --load FILE   (the measured child)

#include "core/error.h"
#include "core/strings.h"
#include "core/weight_files.h"
#include "model/compute.h"
#include "model/config.h"
#include "model/dit.h"
#include "model/weights.h"

#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// A field of /proc/self/status in bytes ("VmHWM", "VmRSS").
int64_t status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

int load_child(const fs::path& file) {
  const int64_t baseline = status_bytes("VmRSS");
  const auto start = Clock::now();
  const mugv::WeightFiles files = mugv::WeightFiles::open(file);
  const mugv::DiTConfig config =
      mugv::dit_config_from_checkpoint(mugv::shapes_of(files), mugv::kReleaseTextTokens, file.string());
  const torch::ScalarType dtype =
      files.at("x_embedder.proj.weight").dtype == mugv::DType::bf16 ? torch::kBFloat16 : torch::kFloat32;
  mugv::DiT dit{nullptr};
  {
    mugv::DefaultDtypeScope in_dtype(dtype);
    dit = mugv::DiT(config);
  }
  const double built = std::chrono::duration<double>(Clock::now() - start).count();
  const mugv::LoadReport report = mugv::load_module(*dit, files, {}, mugv::UnexpectedTensors::error);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const auto file_bytes = static_cast<int64_t>(fs::file_size(file));
  const int64_t peak = status_bytes("VmHWM");
  nlohmann::json j = {{"bench", "weights_load"},
                      {"file", file.filename().string()},
                      {"format", mugv::to_string(files.format())},
                      {"file_bytes", file_bytes},
                      {"tensors", report.loaded},
                      {"dit_parameters", mugv::dit_parameter_count(config)},
                      {"depth", config.depth},
                      {"hidden", config.hidden},
                      {"baseline_rss_bytes", baseline},
                      {"peak_rss_bytes", peak},
                      {"peak_rss_over_file", double(peak) / double(file_bytes)},
                      {"build_seconds", built},
                      {"load_seconds", seconds - built}};
  std::cout << j.dump() << std::endl;
  return 0;
}

int run_child(const char* self, const fs::path& file) {
  const pid_t pid = fork();
  if (pid == 0) {
    execl(self, self, "--load", file.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path dir = fs::temp_directory_path() / "mugv-bench-weights";
  int depth = 12, hidden = 3456, heads = 48;
  bool keep = false;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw mugv::Error(mugv::ErrorCode::usage, a, "needs a value");
        return argv[++i];
      };
      if (a == "--load") return load_child(next());
      if (a == "--dir")
        dir = next();
      else if (a == "--depth")
        depth = std::stoi(next());
      else if (a == "--hidden")
        hidden = std::stoi(next());
      else if (a == "--heads")
        heads = std::stoi(next());
      else if (a == "--keep")
        keep = true;
      else
        throw mugv::Error(mugv::ErrorCode::usage, a, "unknown option");
    }
    fs::create_directories(dir);
    const mugv::DiTConfig c = mugv::release_width_dit(hidden, heads, depth);
    {
      // Written once, then freed before anything is measured.
      torch::NoGradGuard no_grad;
      mugv::DefaultDtypeScope in_bf16(torch::kBFloat16);
      torch::manual_seed(0);
      mugv::DiT dit(c);
      mugv::save_module_torch(*dit, dir / "dit.pt");
      mugv::save_module(*dit, dir / "dit.safetensors");
    }
    int status = 0;
    for (const char* name : {"dit.pt", "dit.safetensors"}) status |= run_child(argv[0], dir / name);
    if (!keep) fs::remove_all(dir);
    return status;
  } catch (const std::exception& e) {
    std::cerr << "bench_weights_load: " << e.what() << "\n";
    return 1;
  }
}
