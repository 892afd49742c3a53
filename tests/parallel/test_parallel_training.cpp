// Multi-rank DiT training over real Gloo on loopback: the `mugv` binary started by the launcher, one thread
// per rank. Each layout must reproduce one process's loss and gradient-norm curves over 20 steps (fp32,
// 1e-5 relative) and end with the same weights; a tensor-parallel checkpoint must resume as one process.
#include "catalog/catalog.h"
#include "catalog/generations.h"
#include "catalog/preferences.h"
#include "core/json_io.h"
#include "core/paths.h"
#include "parallel/launcher.h"
#include "support/micro_home.h"
#include "support/test_support.h"
#include "train/checkpoint_store.h"
#include "train/fine_tune.h"
#include "train/preference.h"
#include "train/run_layout.h"
#include "train/sharded_checkpoint.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <thread>

using namespace mugv;

namespace {

constexpr int kSteps = 20;

std::string mugv_binary() {
  return (test::binary_dir() / "bin" / "mugv").string();
}

LaunchResult run_mugv(int nproc, std::vector<std::string> args) {
  LaunchOptions o;
  o.nproc = nproc;
  o.kill_grace = std::chrono::milliseconds(3000);
  o.command = {mugv_binary()};
  o.command.insert(o.command.end(), args.begin(), args.end());
  return launch(o, CancelToken());
}

std::vector<std::string> train_args(const std::string& run, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = test::micro_train_args(run);
  a.insert(a.end(), {"--steps",
                     std::to_string(kSteps),
                     "--batch",
                     "4",
                     "--lr",
                     "5e-4",
                     "--warmup",
                     "2",
                     "--save-every",
                     "10",
                     "--keep",
                     "5",
                     "--threads",
                     "1",
                     "--seed",
                     "7",
                     "--ema",
                     "0.9",
                     "--shift-base",
                     "32",
                     "--p-first-frame",
                     "0.3",
                     "--caption-dropout",
                     "0.2",
                     "--prefetch",
                     "0",
                     "--comm-timeout",
                     "60"});
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

struct Curve {
  std::vector<double> loss, grad_norm;
};

Curve read_curve(const std::string& run) {
  Curve c;
  std::ifstream in(run_paths(run).metrics());
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    c.loss.push_back(j.at("loss").get<double>());
    c.grad_norm.push_back(j.at("grad_norm").get<double>());
  }
  return c;
}

// Losses and gradient norms equal within `tolerance`, relative.
void check_same_curve(const Curve& a, const Curve& b, double tolerance = 1e-5) {
  REQUIRE(a.loss.size() == b.loss.size());
  for (size_t i = 0; i < a.loss.size(); ++i) {
    INFO("step " << i + 1 << ": loss " << a.loss[i] << " vs " << b.loss[i] << ", grad norm " << a.grad_norm[i]
                 << " vs " << b.grad_norm[i]);
    CHECK(std::abs(a.loss[i] - b.loss[i]) <= tolerance * std::abs(a.loss[i]));
    CHECK(std::abs(a.grad_norm[i] - b.grad_norm[i]) <= tolerance * std::abs(a.grad_norm[i]));
  }
}

// The whole weights of a run's checkpoint, whatever layout wrote it. Whole shapes come from a one-process
// checkpoint of the same preset (`single`'s).
std::map<std::string, torch::Tensor> weights_at(const std::string& run, int64_t step,
                                                const std::string& single = "single") {
  const fs::path dir = CheckpointStore(run_paths(run).checkpoints()).open(step).dir;
  const CheckpointLayout saved = read_checkpoint_layout(dir);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, t] :
       read_canonical_tensors(CheckpointStore(run_paths(single).checkpoints()).open(step).dir, "model", {},
                              {})
           .tensors)
    shapes[name] = t.sizes().vec();
  return read_canonical_tensors(dir, "model", saved, shapes).tensors;
}

void check_same_weights(const std::string& run, const std::string& reference, int64_t step) {
  auto a = weights_at(run, step, reference), b = weights_at(reference, step, reference);
  REQUIRE(a.size() == b.size());
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, t] : b) {
    REQUIRE(a.count(name));
    REQUIRE(a[name].sizes() == t.sizes());
    // The difference's norm against the tensor's (floored at 1e-3 per element for tensors near their zero
    // initialisation). A norm, not the largest element: an element whose gradient is near AdamW's eps steps
    // by an amount that follows the rounding of that gradient, which the reduction order changes (KTO's β =
    // 200 run moved 40 of 2304 elements of one tensor by up to 2.6e-5 against a largest weight of 0.017,
    // while the tensor's norm moved by 1.4e-4 of itself).
    const double floor = 1e-3 * std::sqrt(static_cast<double>(t.numel()));
    const double diff = (a[name] - t).norm().item<double>() / std::max(floor, t.norm().item<double>());
    if (diff > worst) worst = diff, worst_name = name;
  }
  INFO("largest relative difference " << worst << " in " << worst_name);
  CHECK(worst < 1e-3);
}

// Every tensor file of run `a`'s checkpoint at `step` (weights, EMA, optimizer state, each piece) is in run
// `b`'s and holds bit for bit the same tensors.
void check_identical_checkpoints(const std::string& a_run, const std::string& b_run, int64_t step) {
  const std::string suffix = ".safetensors";
  const fs::path a = CheckpointStore(run_paths(a_run).checkpoints()).open(step).dir;
  const fs::path b = CheckpointStore(run_paths(b_run).checkpoints()).open(step).dir;
  int files = 0;
  for (const auto& entry : fs::directory_iterator(a)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= suffix.size() || name.substr(name.size() - suffix.size()) != suffix) continue;
    INFO(name);
    REQUIRE(fs::exists(b / name));
    const std::string stem = name.substr(0, name.size() - suffix.size());
    auto ta = read_canonical_tensors(a, stem, {}, {});
    auto tb = read_canonical_tensors(b, stem, {}, {});
    REQUIRE(ta.tensors.size() == tb.tensors.size());
    for (const auto& [key, t] : ta.tensors) CHECK(torch::equal(t, tb.tensors.at(key)));
    ++files;
  }
  CHECK(files >= 3);  // model, ema and optimizer at least
}

// `pairs` human-labelled pairs of generations in the home's catalog, their latents kept beside the videos as
// `mugv generate` keeps them, in `base`'s latent space: winners bright and moving right, losers dark and
// moving left, all captioned "a red circle moving right".
void label_pairs(const std::string& base, int pairs) {
  const std::string space = base_latent_cache(find_base(base, WeightSet::ema));
  Catalog catalog = Catalog::open(catalog_path());
  torch::manual_seed(3);
  const auto ramp = torch::linspace(-1, 1, 5).view({1, 5, 1, 1});
  for (int i = 0; i < pairs; ++i) {
    int64_t ids[2];
    for (int side = 0; side < 2; ++side) {
      const double sign = side == 0 ? 1.0 : -1.0;
      const auto latent =
          sign * (torch::full({4, 5, 4, 4}, 0.6) + 0.3 * ramp) + 0.05 * torch::randn({4, 5, 4, 4});
      const fs::path video = mugv_home() / cat("generation-", i, "-", side, ".mp4");
      Generation g;
      g.prompt_text = "a red circle moving right";
      g.steps = 4;
      g.width = g.height = 32;
      g.frames = 17;
      g.output_path = video;
      g.settings = {{"latent", generation_latent_path(video).string()}, {"fps", 8.0}};
      write_generation_latent(generation_latent_path(video), latent, g.prompt_text, space, 8.0, 17, 32, 32);
      ids[side] = add_generation(catalog, g).id;
    }
    label_preference(catalog, add_preference_pair(catalog, ids[0], ids[1]).id, PreferenceChoice::a, "human");
  }
}

}  // namespace

TEST_CASE("DPO and KTO post-training on two data-parallel ranks train exactly like one process",
          "[parallel][gloo][train]") {
  test::MicroHome home(8);
  REQUIRE(run_mugv(1, train_args("base")).exit_code == 0);
  label_pairs("base", 4);
  auto post_args = [](const std::string& objective, const std::string& run, std::vector<std::string> extra) {
    std::vector<std::string> a = {
        "train", "--from",     "base", "--objective",       objective, "--run",
        run,     "--steps",    "8",    "--batch",           "4",       "--lr",
        "2e-3",  "--warmup",   "2",    "--save-every",      "8",       "--threads",
        "1",     "--seed",     "7",    "--preference-beta", "200",     "--preference-sft-weight",
        "0.5",   "--prefetch", "0",    "--comm-timeout",    "60"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  for (const std::string objective : {"dpo", "kto"}) {
    SECTION(objective) {
      const std::string single = objective + "-1";
      auto one = run_mugv(1, post_args(objective, single, {}));
      INFO(one.message);
      REQUIRE(one.exit_code == 0);
      const Curve reference = read_curve(single);
      REQUIRE(reference.loss.size() == 8);
      for (const auto& [run, flags] :
           {std::pair<std::string, std::vector<std::string>>{objective + "-dp2", {}},
            {objective + "-zero2", {"--zero", "1"}}}) {
        auto two = run_mugv(2, post_args(objective, run, flags));
        INFO(run << ": " << two.message);
        REQUIRE(two.exit_code == 0);
        // Half the items per rank changes the GEMM shapes and so the float32 rounding of each item's error,
        // and β = 200 magnifies it in the gradient (KTO's sigmoids): 1e-4 instead of the flow tests' 1e-5.
        check_same_curve(read_curve(run), reference, 1e-4);
        check_same_weights(run, single, 8);
        // The objective's statistics are the whole batch's on every layout.
        std::ifstream a(run_paths(run).metrics()), b(run_paths(single).metrics());
        for (std::string la, lb; std::getline(a, la) && std::getline(b, lb);) {
          const auto ja = nlohmann::json::parse(la)["objective"], jb = nlohmann::json::parse(lb)["objective"];
          for (const char* key : {"accuracy", "margin", "sft"})
            CHECK(ja.at(key).get<double>() == Approx(jb.at(key).get<double>()).epsilon(1e-5).margin(1e-9));
        }
      }
      // Tensor parallel would have to split the frozen reference too: refused as a usage error (exit code 2).
      auto tp = run_mugv(2, post_args(objective, objective + "-tp2", {"--tp", "2"}));
      INFO(tp.message);
      CHECK(tp.message.find("code 2") != std::string::npos);
    }
  }
}

TEST_CASE("data, ZeRO-1, tensor and context parallel on two ranks train exactly like one process",
          "[parallel][gloo][train]") {
  test::MicroHome home(8);
  auto single = run_mugv(1, train_args("single"));
  REQUIRE(single.exit_code == 0);
  const Curve reference = read_curve("single");
  REQUIRE(reference.loss.size() == size_t(kSteps));

  struct Case {
    const char* run;
    std::vector<std::string> flags;
  };
  for (const Case& c :
       {Case{"dp2", {}}, Case{"zero2", {"--zero", "1"}}, Case{"tp2", {"--tp", "2"}},
        Case{"cp2", {"--cp", "2"}}, Case{"tp2-selective", {"--tp", "2", "--recompute", "selective"}}}) {
    SECTION(c.run) {
      auto r = run_mugv(2, train_args(c.run, c.flags));
      INFO(r.message);
      REQUIRE(r.exit_code == 0);
      check_same_curve(read_curve(c.run), reference);
      check_same_weights(c.run, "single", kSteps);
      auto metrics = read_json_file(run_paths(c.run).root / "run.json");  // rank 0 wrote the run
      CHECK(metrics.at("name") == c.run);
    }
  }
}

TEST_CASE("a tensor-parallel checkpoint resumes in one process, and a ZeRO run resumes on its own layout",
          "[parallel][gloo][train]") {
  test::MicroHome home(8);
  REQUIRE(run_mugv(1, train_args("single")).exit_code == 0);
  REQUIRE(run_mugv(2, train_args("tp2", {"--tp", "2"})).exit_code == 0);
  REQUIRE(run_mugv(2, train_args("zero2", {"--zero", "1"})).exit_code == 0);
  const fs::path tp_checkpoint = CheckpointStore(run_paths("tp2").checkpoints()).open(kSteps).dir;
  CHECK(fs::exists(tp_checkpoint / "model.tp0of2.safetensors"));
  CHECK(fs::exists(tp_checkpoint / "model.tp1of2.safetensors"));
  CHECK(read_checkpoint_layout(tp_checkpoint).tp == 2);
  const fs::path zero_checkpoint = CheckpointStore(run_paths("zero2").checkpoints()).open(kSteps).dir;
  CHECK(fs::exists(zero_checkpoint / "optimizer.dp0of2.safetensors"));
  CHECK(fs::exists(zero_checkpoint / "optimizer.dp1of2.safetensors"));

  const std::string more = std::to_string(kSteps + 4);
  REQUIRE(run_mugv(1, {"resume", "single", "--steps", more}).exit_code == 0);
  auto resharded = run_mugv(1, {"resume", "tp2", "--steps", more, "--tp", "1"});
  INFO(resharded.message);
  REQUIRE(resharded.exit_code == 0);
  REQUIRE(run_mugv(2, {"resume", "zero2", "--steps", more}).exit_code == 0);
  auto reference = read_curve("single");
  REQUIRE(reference.loss.size() == size_t(kSteps + 4));
  check_same_curve(read_curve("tp2"), reference);
  check_same_curve(read_curve("zero2"), reference);
  check_same_weights("tp2", "single", kSteps + 4);
  // The resumed run is a one-process run now: whole tensors, no layout file.
  CHECK(
      fs::exists(CheckpointStore(run_paths("tp2").checkpoints()).open(kSteps + 4).dir / "model.safetensors"));
}

TEST_CASE("parallel layouts that cannot work are refused with the reason", "[parallel][train]") {
  test::MicroHome home(4);
  // heads 2 cannot split four ways
  auto r = run_mugv(2, train_args("bad", {"--tp", "2", "--cp", "2"}));
  CHECK(r.exit_code != 0);
  // tensor parallel in one process
  auto one = run_mugv(1, train_args("one", {"--tp", "2"}));
  CHECK(one.exit_code != 0);
}

namespace {

// The pid of the process whose environment holds `tag` and RANK=<rank>; 0 when none (yet).
pid_t find_rank_process(const std::string& tag, int rank) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "environ", std::ios::binary);
    std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto has = [&](const std::string& var) {
      return env.find(std::string(1, '\0') + var + '\0') != std::string::npos ||
             env.rfind(var + '\0', 0) == 0;
    };
    if (has("MUGV_TEST_TAG=" + tag) && has(cat("RANK=", rank))) return static_cast<pid_t>(std::stol(name));
  }
  return 0;
}

}  // namespace

TEST_CASE("a rank killed mid-run stops the whole run, names the rank and leaves the checkpoints intact",
          "[parallel][gloo][train]") {
  test::MicroHome home(8);
  // Data parallel (rank 1 is a replica) and pipeline stages (rank 1 is the last stage, which the first one
  // waits on point to point).
  std::vector<std::string> layout;
  SECTION("data parallel") {}
  SECTION("pipeline stages") {
    layout = {"--pp", "2"};
  }
  const std::string tag = cat("kill-", ::getpid(), layout.empty() ? "" : "-pp");
  auto args = train_args("killed", {"--steps", "100000", "--save-every", "2"});
  args.insert(args.end(), layout.begin(), layout.end());
  args.insert(args.begin(), {"MUGV_TEST_TAG=" + tag, mugv_binary()});
  LaunchOptions o;
  o.nproc = 2;
  o.kill_grace = std::chrono::milliseconds(3000);
  o.command = {"env"};
  o.command.insert(o.command.end(), args.begin(), args.end());
  LaunchResult result;
  std::thread runner([&] { result = launch(o, CancelToken()); });

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  pid_t victim = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    if (fs::exists(run_paths("killed").checkpoints() / "latest", ec) &&
        read_curve("killed").loss.size() >= 5) {
      victim = find_rank_process(tag, 1);
      if (victim) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(victim != 0);
  const auto killed_at = std::chrono::steady_clock::now();
  ::kill(victim, SIGKILL);
  runner.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  INFO(result.message);
  CHECK(result.exit_code != 0);
  REQUIRE(result.failure);
  CHECK(result.failure->rank == 1);
  CHECK(result.failure->signal == SIGKILL);
  CHECK(seconds < 30);  // the other rank was stopped, not left waiting for the collective timeout
  auto good = CheckpointStore(run_paths("killed").checkpoints()).latest_good();
  REQUIRE(good);
  CHECK(good->step >= 2);
}

TEST_CASE("multi-rank runs resume exactly on their own layout", "[parallel][gloo][train]") {
  test::MicroHome home(8);
  for (const auto& flags : {std::vector<std::string>{"--tp", "2"}, std::vector<std::string>{"--zero", "1"}}) {
    const std::string tag = flags[0] == "--tp" ? "tp" : "zero";
    INFO(tag);
    REQUIRE(run_mugv(2, train_args(tag + "-straight", flags)).exit_code == 0);
    auto half = flags;
    half.insert(half.end(), {"--steps", std::to_string(kSteps / 2)});
    REQUIRE(run_mugv(2, train_args(tag + "-resumed", half)).exit_code == 0);
    REQUIRE(run_mugv(2, {"resume", tag + "-resumed", "--steps", std::to_string(kSteps)}).exit_code == 0);
    check_identical_checkpoints(tag + "-straight", tag + "-resumed", kSteps);
  }
}

TEST_CASE("Muon under ZeRO-1 and tensor parallel trains exactly like one process and reshards on resume",
          "[parallel][gloo][train][muon]") {
  // Tensor parallel orthogonalises whole matrices (pieces gathered), ZeRO-1 shards the state by parameter:
  // neither approximates, so the curves match one process as the AdamW layouts do.
  test::MicroHome home(8);
  const std::vector<std::string> muon = {"--optimizer", "muon", "--muon-lr-scale", "0.5"};
  auto single = run_mugv(1, train_args("single", muon));
  REQUIRE(single.exit_code == 0);
  const Curve reference = read_curve("single");
  REQUIRE(reference.loss.size() == size_t(kSteps));

  struct Case {
    const char* run;
    int nproc;
    std::vector<std::string> flags;
  };
  for (const Case& c : {Case{"zero2", 2, {"--zero", "1"}}, Case{"tp2", 2, {"--tp", "2"}},
                        Case{"tp2-zero2", 4, {"--tp", "2", "--zero", "1"}}}) {
    SECTION(c.run) {
      std::vector<std::string> flags = muon;
      flags.insert(flags.end(), c.flags.begin(), c.flags.end());
      auto r = run_mugv(c.nproc, train_args(c.run, flags));
      INFO(r.message);
      REQUIRE(r.exit_code == 0);
      check_same_curve(read_curve(c.run), reference);
      check_same_weights(c.run, "single", kSteps);
      // The sharded Muon state joins into whole tensors and continues in one process.
      const std::string more = std::to_string(kSteps + 2);
      REQUIRE(run_mugv(1, {"resume", "single", "--steps", more}).exit_code == 0);
      auto resumed = run_mugv(1, {"resume", c.run, "--steps", more, "--tp", "1"});
      INFO(resumed.message);
      REQUIRE(resumed.exit_code == 0);
      check_same_curve(read_curve(c.run), read_curve("single"));
    }
  }
}

namespace {

// `mugv train` arguments for the four-block preset (pipeline stages of two blocks, or four chunks).
std::vector<std::string> deep_train_args(const std::string& run, std::vector<std::string> extra = {}) {
  auto a = train_args(run, std::move(extra));
  *(std::find(a.begin(), a.end(), "--preset") + 1) = "micro4";
  return a;
}

}  // namespace

TEST_CASE("pipeline stages, alone and with tensor, context and data parallel, train exactly like one process",
          "[parallel][gloo][train][pipeline]") {
  test::MicroHome home(8);
  REQUIRE(run_mugv(1, deep_train_args("single")).exit_code == 0);
  const Curve reference = read_curve("single");
  REQUIRE(reference.loss.size() == size_t(kSteps));

  struct Case {
    const char* run;
    int nproc;
    std::vector<std::string> flags;
  };
  for (const Case& c :
       {Case{"accumulated", 1, {"--micro-batches", "2"}}, Case{"pp2", 2, {"--pp", "2"}},
        // with partial recomputation: each stage re-runs the first of its two blocks
        Case{"pp2-interleaved",
             2,
             {"--pp", "2", "--pp-schedule", "interleaved", "--recompute", "full", "--recompute-blocks", "1"}},
        Case{"pp2-tp2", 4, {"--pp", "2", "--tp", "2"}},
        Case{"pp2-cp2", 4, {"--pp", "2", "--cp", "2", "--recompute", "full"}},
        Case{"pp2-zero2", 4, {"--pp", "2", "--zero", "1", "--micro-batches", "2"}}}) {
    SECTION(c.run) {
      auto r = run_mugv(c.nproc, deep_train_args(c.run, c.flags));
      INFO(r.message);
      REQUIRE(r.exit_code == 0);
      check_same_curve(read_curve(c.run), reference);
      check_same_weights(c.run, "single", kSteps);
      if (c.nproc > 1) {
        const fs::path dir = CheckpointStore(run_paths(c.run).checkpoints()).open(kSteps).dir;
        CHECK(read_checkpoint_layout(dir).pp == 2);
        // Every step reports each stage's wait for its neighbours.
        std::ifstream in(run_paths(c.run).metrics());
        std::string line;
        std::getline(in, line);
        const auto ranks = nlohmann::json::parse(line).at("ranks");
        REQUIRE(ranks.size() == size_t(c.nproc));
        CHECK(ranks[0].at("pipeline_wait_ms").get<double>() > 0);
      }
    }
  }
}

TEST_CASE("pipeline stages under bf16 autocast follow the one-process bf16 curve",
          "[parallel][gloo][train][pipeline]") {
  // bf16 GEMMs round per micro-batch shape, so the curves agree to bf16's precision, not bit for bit; a
  // dtype lost at a stage boundary or a wrong gradient would leave them far apart.
  test::MicroHome home(8);
  REQUIRE(run_mugv(1, deep_train_args("single", {"--precision", "bf16"})).exit_code == 0);
  auto r = run_mugv(2, deep_train_args("pp2-bf16", {"--precision", "bf16", "--pp", "2"}));
  INFO(r.message);
  REQUIRE(r.exit_code == 0);
  const Curve reference = read_curve("single"), piped = read_curve("pp2-bf16");
  REQUIRE(piped.loss.size() == reference.loss.size());
  for (size_t i = 0; i < reference.loss.size(); ++i) {
    INFO("step " << i + 1 << ": loss " << piped.loss[i] << " vs " << reference.loss[i]);
    CHECK(std::abs(piped.loss[i] - reference.loss[i]) <= 2e-2 * std::abs(reference.loss[i]));
    CHECK(std::abs(piped.grad_norm[i] - reference.grad_norm[i]) <= 5e-2 * std::abs(reference.grad_norm[i]));
  }
}

TEST_CASE("pipeline checkpoints reshard across stage counts and resume exactly on their own layout",
          "[parallel][gloo][train][pipeline]") {
  test::MicroHome home(8);
  const std::string half = std::to_string(kSteps / 2), all = std::to_string(kSteps);
  REQUIRE(run_mugv(1, deep_train_args("single")).exit_code == 0);
  REQUIRE(run_mugv(2, deep_train_args("pp2", {"--pp", "2"})).exit_code == 0);
  const fs::path pp_checkpoint = CheckpointStore(run_paths("pp2").checkpoints()).open(kSteps).dir;
  CHECK(fs::exists(pp_checkpoint / "model.pp0of2.safetensors"));
  CHECK(fs::exists(pp_checkpoint / "optimizer.pp1of2.safetensors"));

  // A pipeline run's checkpoint continues in one process, and a one-process checkpoint under two stages
  // with tensor parallel: both follow the uninterrupted one-process curve.
  const std::string more = std::to_string(kSteps + 4);
  REQUIRE(run_mugv(1, {"resume", "single", "--steps", more}).exit_code == 0);
  auto joined = run_mugv(1, {"resume", "pp2", "--steps", more, "--pp", "1"});
  INFO(joined.message);
  REQUIRE(joined.exit_code == 0);
  check_same_curve(read_curve("pp2"), read_curve("single"));
  check_same_weights("pp2", "single", kSteps + 4);

  REQUIRE(run_mugv(1, deep_train_args("cut", {"--steps", half})).exit_code == 0);
  auto cut = run_mugv(4, {"resume", "cut", "--steps", more, "--pp", "2", "--tp", "2"});
  INFO(cut.message);
  REQUIRE(cut.exit_code == 0);
  check_same_curve(read_curve("cut"), read_curve("single"));

  // Two stages, stopped halfway and resumed on two stages: bit for bit the uninterrupted two-stage run.
  REQUIRE(run_mugv(2, deep_train_args("pp2-resumed", {"--pp", "2", "--steps", half})).exit_code == 0);
  REQUIRE(run_mugv(2, {"resume", "pp2-resumed", "--steps", all}).exit_code == 0);
  REQUIRE(run_mugv(2, deep_train_args("pp2-straight", {"--pp", "2"})).exit_code == 0);
  check_identical_checkpoints("pp2-straight", "pp2-resumed", kSteps);
}

TEST_CASE("pipeline layouts that cannot work are refused with the reason", "[parallel][train][pipeline]") {
  test::MicroHome home(4);
  // two blocks cannot make two stages of two chunks each
  auto chunks = run_mugv(2, train_args("chunks", {"--pp", "2", "--pp-schedule", "interleaved"}));
  CHECK(chunks.exit_code != 0);
  // pipeline stages in one process
  CHECK(run_mugv(1, train_args("one", {"--pp", "2"})).exit_code != 0);
  // three ranks cannot hold two stages
  CHECK(run_mugv(3, train_args("three", {"--pp", "2"})).exit_code != 0);
}
