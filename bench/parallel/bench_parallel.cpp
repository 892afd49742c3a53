// bench_parallel: `mugv train` under `mugv launch` on a synthetic latent cache of the `small` preset (256
// video tokens per clip), one thread per rank, as docs/MUGV.md §6's targets ask:
//   weak scaling   1 rank at --batch B  vs  2 data-parallel ranks at --batch 2B: efficiency = tokens/s(2) /
//                  (2 · tokens/s(1))
//   layouts        ZeRO-1 on 2 ranks, tensor parallel 2, context parallel 2 (same global batch as dp2 / dp1)
//   pipeline       2 stages (1F1B) at m = 2, 4, 8 micro-batches of one sample: each stage's measured idle
//                  fraction of the schedule (1 − its forward/backward time / the slowest stage's schedule
//                  time) against (p − 1) / (m + p − 1), and its peak RSS against the planner's per-stage
//                  estimate
// bench_parallel [--preset small] [--batch 4] [--steps 8] [--only layouts|pipeline]
// Prints one JSON line per run (median over the steps after the first two) and the efficiency.
#include "core/paths.h"
#include "core/strings.h"
#include "model/compute.h"
#include "model/config.h"
#include "parallel/launcher.h"
#include "parallel/memory_model.h"
#include "parallel/pipeline.h"
#include "train/latent_cache.h"

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

using namespace mugv;

namespace {

struct RunSummary {
  double tokens_per_s = 0, step_ms = 0, compute_ms = 0, communication_ms = 0, mfu = 0;
  double peak_rss_bytes = 0;  // the largest rank's
  // Per rank: the median idle fraction of the pipeline schedule (1 − its busy time / the slowest stage's
  // schedule time, the bubble as the 1F1B formula counts it), and peak RSS.
  std::vector<double> pipeline_wait_fraction, rank_peak_rss_bytes;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

RunSummary summarise(const fs::path& metrics) {
  std::vector<double> tps, step, compute, comm, mfu;
  std::vector<std::vector<double>> waits;  // per rank, per step
  std::vector<double> rank_peaks;
  double peak = 0;
  std::ifstream in(metrics);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (++n <= 2) continue;  // warm-up: allocator, first collectives
    auto j = nlohmann::json::parse(line);
    tps.push_back(j.at("tokens_per_s"));
    step.push_back(j.at("step_ms"));
    mfu.push_back(j.at("mfu"));
    double worst_comm = j.value("communication_ms", 0.0), worst_compute = j.value("compute_ms", 0.0);
    if (j.contains("ranks"))
      for (const auto& r : j["ranks"]) {
        worst_comm = std::max(worst_comm, r.at("communication_ms").get<double>());
        worst_compute = std::max(worst_compute, r.at("compute_ms").get<double>());
      }
    compute.push_back(worst_compute);
    comm.push_back(worst_comm);
    peak = std::max(peak, j.value("peak_rss_bytes", 0.0));
    if (j.contains("ranks")) {
      const auto& ranks = j["ranks"];
      waits.resize(ranks.size());
      rank_peaks.resize(ranks.size());
      double schedule_ms = 0;  // the slowest stage's schedule, waits included
      for (const auto& rank : ranks) schedule_ms = std::max(schedule_ms, rank.value("pipeline_ms", 0.0));
      for (size_t r = 0; r < ranks.size(); ++r) {
        const double rss = ranks[r].at("peak_rss_bytes").get<double>();
        peak = std::max(peak, rss);
        rank_peaks[r] = std::max(rank_peaks[r], rss);
        const double busy = ranks[r].value("pipeline_ms", 0.0) - ranks[r].value("pipeline_wait_ms", 0.0);
        if (schedule_ms > 0) waits[r].push_back(1.0 - busy / schedule_ms);
      }
    }
  }
  RunSummary s{median(tps), median(step), median(compute), median(comm), median(mfu), peak, {}, rank_peaks};
  for (auto& w : waits) s.pipeline_wait_fraction.push_back(median(w));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "small";
  int64_t batch = 4, steps = 8;
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i], v = argv[i + 1];
    if (f == "--preset")
      preset = v;
    else if (f == "--batch")
      batch = std::atol(v.c_str());
    else if (f == "--steps")
      steps = std::atol(v.c_str());
    else if (f == "--only")
      only = v;
  }
  try {
    char tmpl[] = "/tmp/mugv-bench-parallel-XXXXXX";
    if (!::mkdtemp(tmpl)) throw Error(ErrorCode::io, tmpl, "cannot create a temporary folder");
    const fs::path home = tmpl;
    ::setenv("MUGV_HOME", home.c_str(), 1);
    torch::manual_seed(0);
    for (int i = 0; i < 16; ++i) {  // [16, 4, 16, 16] latents: 4 x 8 x 8 = 256 tokens after (1,2,2) patches
      CachedClip c;
      c.clip_id = i + 1;
      c.caption = cat("clip number ", i, " with a moving shape");
      c.fps = 8;
      c.frames = 16;
      c.height = c.width = 128;
      write_cached_clip(latent_cache_dir("bench", "vae"), c, torch::randn({16, 4, 16, 16}));
    }
    const fs::path mugv = executable_path().parent_path().parent_path().parent_path() / "bin" / "mugv";
    const ModelPreset model = load_model_preset(preset);
    // The planner's memory estimate for one rank of a run, to hold against the peak RSS it measures.
    auto estimate = [&](ParallelLayout layout, int64_t per_rank_batch, int zero, Recompute recompute) {
      MemoryOptions m = MemoryOptions::for_device(TrainDevice::cpu, model);
      m.frames = 16;
      m.height = m.width = 128;
      m.micro_batch = static_cast<int>(per_rank_batch);
      m.zero = zero;
      m.recompute = recompute;
      return double(estimate_memory(model, layout, m).total());
    };
    auto run = [&](const std::string& name, int ranks, int64_t global_batch, std::vector<std::string> extra,
                   ParallelLayout layout, int64_t per_rank_batch, int zero,
                   Recompute recompute = Recompute::none) {
      LaunchOptions o;
      o.nproc = ranks;
      o.command = {mugv.string(),  "train",
                   "--preset",     preset,
                   "--dataset",    "bench",
                   "--vae-run",    "vae",
                   "--run",        name,
                   "--steps",      std::to_string(steps),
                   "--batch",      std::to_string(global_batch),
                   "--threads",    "1",
                   "--save-every", "100000",
                   "--warmup",     "1",
                   "--prefetch",   "2"};
      o.command.insert(o.command.end(), extra.begin(), extra.end());
      auto result = launch(o, CancelToken());
      if (result.exit_code != 0) throw Error(ErrorCode::internal, name, result.message);
      RunSummary s = summarise(home / "runs" / name / "metrics.jsonl");
      std::cout << nlohmann::json{{"bench", "parallel"},
                                  {"run", name},
                                  {"ranks", ranks},
                                  {"batch", global_batch},
                                  {"tokens_per_s", s.tokens_per_s},
                                  {"step_ms", s.step_ms},
                                  {"compute_ms_max_rank", s.compute_ms},
                                  {"communication_ms_max_rank", s.communication_ms},
                                  {"mfu", s.mfu},
                                  {"peak_rss_mib", s.peak_rss_bytes / 1048576.0},
                                  {"planner_estimate_mib",
                                   estimate(layout, per_rank_batch, zero, recompute) / 1048576.0},
                                  {"estimate_over_measured",
                                   estimate(layout, per_rank_batch, zero, recompute) / s.peak_rss_bytes}}
                       .dump()
                << std::endl;
      return s;
    };
    if (only.empty() || only == "layouts") {
      RunSummary one = run("dp1", 1, batch, {}, {1, 1, 1}, batch, 0);
      RunSummary two = run("dp2", 2, 2 * batch, {}, {1, 1, 2}, batch, 0);
      std::cout << nlohmann::json{{"bench", "parallel"},
                                  {"weak_scaling_dp_1_to_2", two.tokens_per_s / (2 * one.tokens_per_s)}}
                       .dump()
                << std::endl;
      run("zero2", 2, 2 * batch, {"--zero", "1"}, {1, 1, 2}, batch, 1);
      run("tp2", 2, batch, {"--tp", "2"}, {2, 1, 1}, batch, 0);
      run("cp2", 2, batch, {"--cp", "2"}, {1, 2, 1}, batch, 0);
      run("dp1-selective", 1, batch, {"--recompute", "selective"}, {1, 1, 1}, batch, 0, Recompute::selective);
    }
    if (only.empty() || only == "pipeline") {
      // Two stages, one sample per micro-batch: the step is m micro-batches, and each stage idles for
      // (p − 1) micro-batch times of the other's forward + backward in the ideal 1F1B schedule.
      for (int m : {2, 4, 8}) {
        const std::string name = cat("pp2-m", m);
        RunSummary r =
            run(name, 2, m, {"--pp", "2", "--micro-batches", std::to_string(m)}, {1, 1, 1, 2}, 1, 0);
        const double ideal = pipeline_bubble_fraction({int(model.dit.depth), 2, 1}, m);
        nlohmann::json stages = nlohmann::json::array();
        for (size_t k = 0; k < r.pipeline_wait_fraction.size(); ++k) {
          MemoryOptions mem = MemoryOptions::for_device(TrainDevice::cpu, model);
          mem.frames = 16;
          mem.height = mem.width = 128;
          mem.micro_batch = 1;
          mem.pp_micro_batches = m;
          const double estimate =
              double(estimate_stage_memory(model, {1, 1, 1, 2}, mem, int(k)).total()) / 1048576.0;
          const double measured = r.rank_peak_rss_bytes[k] / 1048576.0;
          stages.push_back({{"stage", k},
                            {"idle_fraction", r.pipeline_wait_fraction[k]},
                            {"peak_rss_mib", measured},
                            {"planner_estimate_mib", estimate},
                            {"estimate_over_measured", estimate / measured}});
        }
        std::cout << nlohmann::json{{"bench", "pipeline"},
                                    {"micro_batches", m},
                                    {"ideal_bubble", ideal},
                                    {"stages", stages},
                                    {"step_ms", r.step_ms}}
                         .dump()
                  << std::endl;
      }
    }
    std::error_code ec;
    fs::remove_all(home, ec);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_parallel: %s\n", e.what());
    return 1;
  }
  return 0;
}
