// mugv encode --dataset D --vae-run V: the latent cache the DiT trains on (backend/train/latent_cache.h).
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

int run(const Invocation& inv) {
  const auto& v = inv.values;
  if (!v.has("encode.dataset")) throw Error(ErrorCode::usage, "--dataset", "is required");
  if (!v.has("encode.vae_run")) throw Error(ErrorCode::usage, "--vae-run", "is required");
  LatentCacheOptions options;
  options.dataset = v.get_text("encode.dataset");
  options.vae_run = v.get_text("encode.vae_run");
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
  c.usage = "--dataset D --vae-run V";
  c.define = [](ParamRegistry& r) {
    r.add(param("encode.dataset", "--dataset", ParamType::text, nullptr, "dataset to encode", "encode"));
    r.add(param("encode.vae_run", "--vae-run", ParamType::text, nullptr,
                "VAE run whose encoder and geometry to use", "encode"));
    auto threads =
        param("encode.threads", "--threads", ParamType::integer, 0, "CPU threads (0: all cores)", "machine");
    threads.min_value = 0;
    r.add(threads);
  };
  c.run = run;
  c.job_kind = "encode";
  return c;
}

}  // namespace mugv::cli
