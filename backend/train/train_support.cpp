#include "train/train_support.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/strings.h"
#include "model/compute.h"
#include "model/weights.h"
#include "train/checkpoint_store.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cstring>
#include <fstream>

namespace mugv {

DiTBundleImpl::DiTBundleImpl(const ModelPreset& preset) {
  dit = register_module("dit", DiT(preset.dit));
  text = register_module("text", make_text_encoder(preset.text));
}

VAEBundleImpl::VAEBundleImpl(const VAEConfig& config) { vae = register_module("vae", VideoVAE(config)); }

std::vector<std::pair<std::string, torch::Tensor>> named_parameters(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : module.named_parameters(true)) out.emplace_back(item.key(), item.value());
  return out;
}

const char* to_string(WeightSet set) {
  switch (set) {
    case WeightSet::model: return "model";
    case WeightSet::ema: return "ema";
    default: return "unknown";
  }
}

std::optional<WeightSet> weight_set_from_string(std::string_view name) {
  if (name == "model") return WeightSet::model;
  if (name == "ema") return WeightSet::ema;
  return std::nullopt;
}

std::optional<LatentStats> read_latent_stats(const RunPaths& paths) {
  std::error_code ec;
  if (!fs::is_regular_file(paths.latent_stats(), ec)) return std::nullopt;
  auto j = read_json_file(paths.latent_stats());
  try {
    return LatentStats{j.at("mean").get<std::vector<double>>(), j.at("std").get<std::vector<double>>()};
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::format, paths.latent_stats().string(), cat("expected {\"mean\": [...], \"std\": [...]}: ", e.what()));
  }
}

void write_latent_stats(const RunPaths& paths, const LatentStats& stats) {
  write_json_atomic(paths.latent_stats(), {{"mean", stats.mean}, {"std", stats.std}});
}

void apply_latent_stats(VideoVAEImpl& vae, const RunPaths& paths) {
  auto stats = read_latent_stats(paths);
  if (!stats) return;
  const size_t channels = static_cast<size_t>(vae.config().latent_channels);
  if (stats->mean.size() != channels || stats->std.size() != channels)
    throw Error(ErrorCode::format, paths.latent_stats().string(),
                cat("holds ", stats->mean.size(), " channels; the VAE has ", channels));
  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  vae.set_latent_stats(torch::tensor(stats->mean, opts), torch::tensor(stats->std, opts));
}

VAEBundle load_vae_run(const std::string& run_name, ModelPreset* preset_out) {
  RunPaths paths = run_paths(run_name);
  RunManifest manifest = read_run_manifest(paths);
  if (manifest.kind != RunLayoutKind::vae)
    throw Error(ErrorCode::invalid_argument, run_name, cat("is a ", to_string(manifest.kind), " run, not a VAE run"));
  ModelPreset preset = load_model_preset(manifest.preset);
  CheckpointStore store(paths.checkpoints());
  auto good = store.latest_good();
  if (!good) throw Error(ErrorCode::not_found, run_name, "the VAE run has no good checkpoint yet; train it with `mugv train-vae`");
  VAEBundle bundle(preset.vae);
  load_module(*bundle, good->dir / "model.safetensors");
  apply_latent_stats(*bundle->vae, paths);
  bundle->eval();
  if (preset_out) *preset_out = preset;
  return bundle;
}

RgbFrame to_rgb_frame(const torch::Tensor& image) {
  auto bytes = ((image.to(torch::kCPU, torch::kFloat).clamp(-1, 1) + 1) * 127.5)
                   .round()
                   .to(torch::kUInt8)
                   .permute({1, 2, 0})
                   .contiguous();
  RgbFrame f(static_cast<int>(bytes.size(1)), static_cast<int>(bytes.size(0)));
  std::copy(bytes.data_ptr<uint8_t>(), bytes.data_ptr<uint8_t>() + bytes.numel(), f.rgb.begin());
  return f;
}

std::vector<RgbFrame> video_to_frames(const torch::Tensor& video) {
  std::vector<RgbFrame> frames;
  for (int64_t i = 0; i < video.size(1); ++i) frames.push_back(to_rgb_frame(video.select(1, i)));
  return frames;
}

double measure_gemm_flops(int64_t n, int repeats, torch::ScalarType dtype, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  const auto options = torch::TensorOptions().dtype(dtype).device(device);
  auto a = torch::randn({n, n}).to(options), b = torch::randn({n, n}).to(options);
  // GPU kernels run asynchronously: time from an idle device to a finished product.
  auto finish = [&] { synchronize_device(device); };
  auto c = torch::mm(a, b);  // warm-up: thread pool, BLAS init
  finish();
  double best = 0;
  for (int i = 0; i < repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    c = torch::mm(a, b);
    finish();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (s > 0) best = std::max(best, 2.0 * double(n) * double(n) * double(n) / s);
  }
  return best;
}

namespace {
std::optional<int64_t> proc_kib(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (starts_with(line, key + ":")) {
      try {
        return std::stoll(line.substr(key.size() + 1)) * 1024;
      } catch (...) {
        return std::nullopt;
      }
    }
  }
  return std::nullopt;
}
}  // namespace

int64_t peak_rss_bytes() { return proc_kib("/proc/self/status", "VmHWM").value_or(0); }

std::optional<int64_t> available_memory_bytes() { return proc_kib("/proc/meminfo", "MemAvailable"); }

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(const uint8_t* bytes, size_t size) {
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  for (size_t i = 0; i < size; i += 3) {
    uint32_t v = uint32_t(bytes[i]) << 16;
    if (i + 1 < size) v |= uint32_t(bytes[i + 1]) << 8;
    if (i + 2 < size) v |= bytes[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < size ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < size ? kAlphabet[v & 63] : '=';
  }
  return out;
}

std::vector<uint8_t> base64_decode(std::string_view text, const std::string& subject) {
  std::vector<uint8_t> out;
  uint32_t v = 0;
  int bits = 0;
  for (char ch : text) {
    if (ch == '=') break;
    const char* p = std::strchr(kAlphabet, ch);
    if (!p || ch == '\0') throw Error(ErrorCode::format, subject, "not base64");
    v = (v << 6) | uint32_t(p - kAlphabet);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t((v >> bits) & 0xff));
    }
  }
  return out;
}

std::string torch_rng_state_base64() {
  auto state = at::detail::getDefaultCPUGenerator().get_state();
  return base64_encode(state.data_ptr<uint8_t>(), static_cast<size_t>(state.numel()));
}

void set_torch_rng_state_base64(const std::string& state, const std::string& subject) {
  auto bytes = base64_decode(state, subject);
  auto t = torch::empty({int64_t(bytes.size())}, torch::kUInt8);
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  try {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(t);
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::corrupt, subject, cat("RNG state rejected: ", e.what_without_backtrace()));
  }
}

}  // namespace mugv
