// mugv encode --dataset D --vae-run V | --model M --size WxH --frames F: the latent cache the DiT trains on
// (backend/train/latent_cache.h).
#include "command.h"

#include "catalog/catalog.h"
#include "core/error.h"
#include "core/paths.h"
#include "train/latent_encode.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace mugv::cli {
namespace {

int run_encode(const Invocation& inv) {
  const auto& v = inv.values;
  if (!v.has("encode.dataset")) throw Error(ErrorCode::usage, "--dataset", "is required");
  if (v.has("encode.vae_run") == v.has("encode.model"))
    throw Error(ErrorCode::usage, "--vae-run",
                "give the VAE run to encode with, or a released model (--model)");
  LatentCacheOptions options;
  options.dataset = v.get_text("encode.dataset");
  if (v.has("encode.vae_run")) options.vae_run = v.get_text("encode.vae_run");
  if (v.has("encode.model")) {
    options.model = v.get_text("encode.model");
    if (!v.has("encode.size") || !v.has("encode.frames"))
      throw Error(ErrorCode::usage, "--size", "a released model's VAE encodes at --size WxH and --frames F");
    const Size2D size = v.get_size2d("encode.size");
    options.geometry = {size.width, size.height, v.get_int("encode.frames"), v.get_real("encode.fps")};
  }
  options.threads = v.get_int("encode.threads");
  Catalog catalog = Catalog::open(catalog_path());
  auto r = encode_latents(catalog, options, CancelToken(), terminal_progress());
  finish_progress_line();
  nlohmann::json failures = nlohmann::json::array();
  for (const auto& f : r.failures) failures.push_back({{"clip", f.clip_id}, {"reason", f.reason}});
  if (inv.json) {
    std::cout << nlohmann::json{{"cache_dir", r.cache_dir.string()},
                                {"clips", r.clips_total},
                                {"rejected", r.rejected},
                                {"uncaptioned", r.uncaptioned},
                                {"encoded", r.encoded},
                                {"already_cached", r.already_cached},
                                {"failed", r.failures.size()},
                                {"failures", failures}}
                     .dump(2)
              << "\n";
  } else {
    std::printf(
        "encoded %lld clip(s), %lld already cached, %zu failed (%lld rejected, %lld without caption) into "
        "%s\n",
        static_cast<long long>(r.encoded), static_cast<long long>(r.already_cached), r.failures.size(),
        static_cast<long long>(r.rejected), static_cast<long long>(r.uncaptioned), r.cache_dir.c_str());
    for (const auto& f : r.failures)
      std::printf("  failed clip %lld: %s\n", static_cast<long long>(f.clip_id), f.reason.c_str());
  }
  return r.failures.empty() || r.encoded + r.already_cached > 0 ? 0 : 1;
}

}  // namespace

Command encode_command() {
  Command c;
  c.words = {"encode"};
  c.summary = "encode a dataset's clips into the latent cache of a VAE run";
  c.usage = "--dataset D --vae-run V | --model NAME|DIR --size WxH --frames F [--fps R]";
  c.define = [](ParamRegistry& r) {
    r.add(param("encode.dataset", "--dataset", ParamType::text, nullptr, "dataset to encode", "encode"));
    r.add(param("encode.vae_run", "--vae-run", ParamType::text, nullptr,
                "VAE run whose encoder and geometry to use", "encode"));
    r.add(param("encode.model", "--model", ParamType::path, nullptr,
                "a released model folder (or installed model name) whose VAE to use, for fine-tuning it",
                "encode"));
    r.add(
        param("encode.size", "--size", ParamType::size2d, nullptr, "clip size WxH (with --model)", "encode"));
    auto frames = param("encode.frames", "--frames", ParamType::integer, nullptr,
                        "frames per clip (with --model)", "encode");
    frames.min_value = 1;
    r.add(frames);
    auto fps = param("encode.fps", "--fps", ParamType::real, 0.0,
                     "frame rate clips are resampled to (0: as recorded; with --model)", "encode");
    fps.min_value = 0;
    r.add(fps);
    auto threads =
        param("encode.threads", "--threads", ParamType::integer, 0, "CPU threads (0: all cores)", "machine");
    threads.min_value = 0;
    r.add(threads);
  };
  c.run = run_encode;
  c.job_kind = "encode";
  return c;
}

}  // namespace mugv::cli
