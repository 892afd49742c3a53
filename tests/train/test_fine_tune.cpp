// Fine-tuning a trained run (train/fine_tune.h): LoRA (only adapters train, checkpoints hold adapters, exact
// resume, held-out loss falls), full fine-tune from the base's weights, a changed base refused, and the
// `mugv train --from --lora` / `mugv lora` command lines. Micro preset, synthetic latent caches.
#include "core/error.h"
#include "core/json_io.h"
#include "core/paths.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "model/lora.h"
#include "model/lora_file.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "support/micro_home.h"
#include "support/test_support.h"
#include "train/evaluation.h"
#include "train/fine_tune.h"
#include "train/flow.h"
#include "train/latent_cache.h"
#include "train/trainer.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

using namespace mugv;

namespace {

// The message of the mugv::Error `fn` throws (the test fails when it throws none).
std::string error_text(const std::function<void()>& fn) {
  return test::expect_error(fn).what();
}

// The fine-tune's own data: clips of a colour and motion the base never saw ("a purple circle moving up"),
// `count` of them written as dataset `dataset`; different seeds give different clips of the same kind.
void write_finetune_clips(const std::string& dataset, int count, int seed) {
  torch::manual_seed(seed);
  for (int i = 0; i < count; ++i) {
    CachedClip c;
    c.clip_id = 100 + i;
    c.caption = "a purple circle moving up";
    c.fps = 8;
    c.frames = 17;
    c.height = c.width = 32;
    auto latent = torch::full({4, 5, 4, 4}, 0.8) - 0.4 * torch::linspace(-1, 1, 4).view({1, 1, 4, 1}) +
                  0.05 * torch::randn({4, 5, 4, 4});
    write_cached_clip(latent_cache_dir(dataset, "vae0"), c, latent);
  }
}

// Mean flow loss of `model` over the cached clips of `dataset` at fixed noise (train/evaluation.h).
double heldout_loss(DiTBundleImpl& model, const Tokenizer& tokenizer, const std::string& dataset) {
  FlowEvalOptions options;
  options.draws = 4;
  options.shift_base_px = 32;
  return fixed_draw_flow_loss(*model.dit, *model.text, tokenizer, load_model_preset("micro").text.max_tokens,
                              list_cached_clips(latent_cache_dir(dataset, "vae0")), options);
}

std::map<std::string, torch::Tensor> file_tensors(const fs::path& file) {
  auto st = SafetensorsFile::open(file);
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : st.names()) out[name] = tensor_from_view(st.at(name), file.string());
  return out;
}

fs::path checkpoint_file(const std::string& run, int64_t step, const char* name) {
  return run_paths(run).checkpoints() / CheckpointStore::step_dir_name(step) / name;
}

// The base model of the micro home: 30 steps on the shapes clips.
void train_base() {
  train_dit(test::micro_finetune_options("base", 30), {}, CancelToken());
}

TrainOptions lora_options(const std::string& run, int64_t steps) {
  auto o = test::micro_finetune_options(run, steps);
  o.from = "base";
  o.lora = "rank=4,alpha=8,targets=attn,cross,mlp";
  o.dataset = "ft";
  o.vae_run.clear();  // the base's
  o.lr = 2e-2;
  return o;
}

nlohmann::json lora_config(int64_t steps) {
  return {{"train",
           {{"steps", steps},
            {"lora", "rank=4,alpha=8,targets=attn,cross,mlp"},
            {"from", "base"},
            {"from_weights", "ema"},
            {"dataset", "ft"},
            {"batch", 2},
            {"lr", 2e-2},
            {"warmup", 2},
            {"save_every", 2},
            {"keep", 10},
            {"threads", 2},
            {"seed", 7},
            {"ema", 0.9},
            {"preset", "micro"}}},
          {"flow", {{"shift_base", 32}, {"p_first_frame", 0.0}, {"caption_dropout", 0.0}}}};
}

}  // namespace

TEST_CASE("a LoRA run trains only its adapters, checkpoints them alone and lowers the held-out loss",
          "[train][lora]") {
  test::MicroHome home(6);
  train_base();
  write_finetune_clips("ft", 4, 1);
  write_finetune_clips("ft_heldout", 2, 2);
  const BaseModel base = find_base_model("base", WeightSet::ema);
  const auto base_weights = file_tensors(base.weights_file());

  // The model as it enters the last step: every base tensor still bit-identical to the base's file.
  std::vector<std::string> changed_base;
  int64_t adapter_tensors = 0;
  TrainCallbacks cb;
  cb.before_step = [&](int64_t step, DiTBundleImpl& model) {
    if (step != 24) return;
    for (const auto& [name, t] : module_state(model)) {
      if (name.find(".lora_") != std::string::npos) {
        ++adapter_tensors;
        continue;
      }
      auto it = base_weights.find(name);
      if (it == base_weights.end() || !torch::equal(it->second, t)) changed_base.push_back(name);
    }
  };
  auto result = train_dit(lora_options("lora1", 24), lora_config(24), CancelToken(), cb);
  CHECK(changed_base.empty());
  CHECK(adapter_tensors == 2 * 2 * (2 + 3 + 2));  // A and B on 7 linears in each of 2 blocks

  // The run records its base; its tokenizer is the base's; checkpoints hold the adapters and nothing else.
  const RunManifest manifest = read_run_manifest(run_paths("lora1"));
  CHECK(manifest.vae_run == "vae0");
  CHECK(manifest.config["base"]["run"] == "base");
  CHECK(manifest.config["base"]["sha256"] == base.sha256);
  std::ifstream a(run_paths("base").tokenizer(), std::ios::binary),
      b(run_paths("lora1").tokenizer(), std::ios::binary);
  std::stringstream sa, sb;
  sa << a.rdbuf();
  sb << b.rdbuf();
  CHECK(sa.str() == sb.str());
  for (const char* file : {"model.safetensors", "ema.safetensors"}) {
    const auto tensors = file_tensors(checkpoint_file("lora1", 24, file));
    CHECK(tensors.size() == size_t(adapter_tensors));
    for (const auto& [name, t] : tensors) CHECK(name.find(".lora_") != std::string::npos);
  }
  const LoraFile adapter = read_lora_file(checkpoint_file("lora1", 24, "ema.safetensors"));
  CHECK(adapter.info.prefix == "dit.");
  CHECK(adapter.weights.alpha == 8.0);

  // Held-out clips of the new kind: the base (plus a zero adapter) against the trained adapter.
  const Tokenizer tokenizer = Tokenizer::from_file(run_paths("lora1").tokenizer());
  DiTBundle model(load_model_preset("micro"));
  load_base_model(base, model->dit, model->text);
  const double before = heldout_loss(*model, tokenizer, "ft_heldout");
  lora_set_of(*model->dit).attach(*model->dit, adapter.weights, 1.0, "lora1");
  const double after = heldout_loss(*model, tokenizer, "ft_heldout");
  INFO("held-out loss: base " << before << ", with the adapter " << after);
  CHECK(after < 0.8 * before);
}

TEST_CASE("a LoRA run resumes exactly: N steps straight equal N/2, stop, resume, N/2", "[train][lora]") {
  test::MicroHome home(6);
  train_base();
  write_finetune_clips("ft", 4, 1);
  train_dit(lora_options("straight", 6), lora_config(6), CancelToken());
  CancelToken cancel;
  TrainCallbacks stop;
  stop.before_step = [&](int64_t step, DiTBundleImpl&) {
    if (step == 4) cancel.request_cancel();
  };
  auto o = lora_options("split", 6);
  o.save_every = 100;
  auto config = lora_config(6);
  config["train"]["save_every"] = 100;
  ErrorCode code = ErrorCode::unknown;
  code = test::expect_error([&] { train_dit(o, config, cancel, stop); }).code();
  REQUIRE(code == ErrorCode::cancelled);
  auto resumed = resume_dit("split", ResumeChanges{}, CancelToken());
  CHECK(resumed.start_step == 3);
  for (const char* file : {"model.safetensors", "ema.safetensors", "optimizer.safetensors"}) {
    const auto x = file_tensors(checkpoint_file("straight", 6, file));
    const auto y = file_tensors(checkpoint_file("split", 6, file));
    REQUIRE(x.size() == y.size());
    for (const auto& [name, t] : x) {
      INFO(file << " " << name);
      REQUIRE(y.count(name));
      CHECK(torch::equal(t, y.at(name)));
    }
  }
}

TEST_CASE("a full fine-tune starts from the base's weights; a base that changed is refused on resume",
          "[train][lora]") {
  test::MicroHome home(6);
  train_base();
  write_finetune_clips("ft", 4, 1);
  const BaseModel base = find_base_model("base", WeightSet::ema);
  const auto base_weights = file_tensors(base.weights_file());
  std::vector<std::string> differ;
  TrainCallbacks cb;
  cb.before_step = [&](int64_t step, DiTBundleImpl& model) {
    if (step != 1) return;
    for (const auto& [name, t] : module_state(model))
      if (!base_weights.count(name) || !torch::equal(base_weights.at(name), t)) differ.push_back(name);
  };
  auto o = lora_options("full", 4);
  o.lora.clear();
  auto config = lora_config(4);
  config["train"]["lora"] = "";
  train_dit(o, config, CancelToken(), cb);
  CHECK(differ.empty());
  CHECK(file_tensors(checkpoint_file("full", 4, "model.safetensors")).size() == base_weights.size());

  // A different --vae-run than the base's is refused with both named; --lora without --from too.
  auto wrong = lora_options("wrong", 4);
  wrong.vae_run = "vae9";
  CHECK_THAT(error_text([&] { train_dit(wrong, {}, CancelToken()); }),
             Catch::Contains("vae0") && Catch::Contains("vae9"));

  // The base's checkpoint is rewritten (bit rot, or the folder reused): resuming names the base and stops.
  {
    std::fstream f(base.weights_file(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-4, std::ios::end);
    f.write("\x01\x02\x03\x04", 4);
  }
  ErrorCode code = ErrorCode::unknown;
  const Error refused = test::expect_error([&] { resume_dit("full", ResumeChanges(6), CancelToken()); });
  code = refused.code();
  const std::string message = refused.what();
  CHECK(code == ErrorCode::conflict);
  CHECK_THAT(message, Catch::Contains("base") && Catch::Contains("step 30"));
}

TEST_CASE("mugv train --from --lora, lora extract / info / merge on the command line", "[cli][train][lora]") {
  test::MicroHome home(6);
  train_base();
  write_finetune_clips("ft", 4, 1);
  const fs::path dir = home.path() / "scratch";
  fs::create_directories(dir);
  auto args = [&](std::vector<std::string> a) {
    std::string s;
    for (const auto& x : a) s += test::shell_quote_arg(x) + " ";
    return s;
  };
  const std::string common = args({"--dataset", "ft", "--steps", "4", "--batch", "2", "--lr", "1e-2",
                                   "--threads", "2", "--save-every", "2", "--seed", "3"});
  auto trained = test::run_mugv_cli(
      "train --preset micro --from base --lora rank=4,alpha=4,targets=attn,mlp --run l1 " + common + "--json",
      dir);
  if (!trained) return;
  INFO(trained->err);
  REQUIRE(trained->exit_code == 0);
  CHECK(nlohmann::json::parse(trained->out)["last_step"] == 4);

  auto no_base = test::run_mugv_cli("train --preset micro --lora rank=4 --run l2 " + common, dir);
  CHECK(no_base->exit_code != 0);
  CHECK_THAT(no_base->err, Catch::Contains("--from"));

  const fs::path adapter = dir / "l1.safetensors";
  auto extracted = test::run_mugv_cli("lora extract --run l1 --out " + adapter.string(), dir);
  INFO(extracted->err);
  REQUIRE(extracted->exit_code == 0);
  auto info = test::run_mugv_cli("lora info " + adapter.string() + " --json", dir);
  REQUIRE(info->exit_code == 0);
  auto j = nlohmann::json::parse(info->out);
  CHECK(j["layout"] == "peft");
  CHECK(j["prefix"] == "base_model.model.");
  CHECK(j["modules"].size() == 2 * 4);
  CHECK(j["metadata"]["base_sha256"] == find_base_model("base", WeightSet::ema).sha256);

  // Merged into a run of its own: its weights are the base's plus the adapter, within fp32 rounding.
  auto merged = test::run_mugv_cli("lora merge --run l1 --out-run m1", dir);
  INFO(merged->err);
  REQUIRE(merged->exit_code == 0);
  CheckpointStore store(run_paths("m1").checkpoints());
  auto ref = store.latest_good();
  REQUIRE(ref);
  const auto m1 = file_tensors(ref->dir / "model.safetensors");
  CHECK(m1.count("dit.blocks.0.attn.qkv.weight") == 1);
  CHECK(m1.count("dit.blocks.0.attn.qkv.lora_A.weight") == 0);
  DiTBundle unmerged(load_model_preset("micro"));
  load_base_model(find_base_model("base", WeightSet::ema), unmerged->dit, unmerged->text);
  const LoraFile lora = read_lora_file(adapter);
  merge_lora(*unmerged->dit, lora.weights, 1.0, adapter.string());
  for (const auto& [name, t] : module_state(*unmerged->dit)) {
    INFO(name);
    CHECK((m1.at("dit." + name) - t).abs().max().item<double>() < 1e-6);
  }
  // An adapter for other modules is refused naming them.
  auto foreign = test::run_mugv_cli(
      "lora merge --run base --lora " + (dir / "none.safetensors").string() + " --out-run m2", dir);
  CHECK(foreign->exit_code != 0);
  CHECK_THAT(foreign->err, Catch::Contains("none.safetensors"));
}

TEST_CASE("a LoRA run keeps its frozen base in bf16 on request, under bf16 autocast only", "[train][lora]") {
  test::MicroHome home(6);
  train_base();
  write_finetune_clips("ft", 4, 1);
  auto o = lora_options("half", 6);
  o.base_dtype = "bf16";
  o.precision = "bf16";
  torch::ScalarType base_type = torch::kFloat32, adapter_type = torch::kBFloat16;
  std::vector<double> losses;
  TrainCallbacks cb;
  cb.before_step = [&](int64_t, DiTBundleImpl& model) {
    base_type = model.dit->blocks->ptr<DiTBlockImpl>(0)->attn->qkv->weight.scalar_type();
    for (const auto& item : model.dit->named_parameters())
      if (item.key() == "blocks.0.attn.qkv.lora_A.weight") adapter_type = item.value().scalar_type();
  };
  cb.on_step = [&](const StepMetrics& m) { losses.push_back(m.loss); };
  train_dit(o, lora_config(6), CancelToken(), cb);
  CHECK(base_type == torch::kBFloat16);
  CHECK(adapter_type == torch::kFloat32);  // adapters, their gradients and AdamW state stay fp32
  REQUIRE(losses.size() == 6);
  for (double l : losses) CHECK(std::isfinite(l));
  // The adapters saved are fp32 and load onto an fp32 base for sampling.
  const LoraFile adapter = read_lora_file(checkpoint_file("half", 6, "model.safetensors"));
  CHECK(adapter.info.dtype == "F32");

  auto fp32 = lora_options("half32", 6);
  fp32.base_dtype = "bf16";
  fp32.precision = "fp32";
  CHECK_THAT(error_text([&] { train_dit(fp32, {}, CancelToken()); }), Catch::Contains("--precision bf16"));
  CHECK_FALSE(fs::exists(run_paths("half32").root));  // refused before anything was written
}

TEST_CASE(
    "a LoRA run with its frozen base swapped in block by block or recomputed trains like one with the base "
    "kept",
    "[train][lora]") {
  test::MicroHome home(6);
  train_base();
  write_finetune_clips("ft", 4, 1);
  // What each step's model held: no block swap, or one of this use (read during the run: the model and its
  // swap are gone when train_dit returns).
  using Seen = std::optional<OffloadUse>;
  auto losses_of = [](TrainOptions o, nlohmann::json config, Seen* seen) {
    std::vector<double> losses;
    TrainCallbacks cb;
    cb.on_step = [&](const StepMetrics& m) { losses.push_back(m.loss); };
    cb.before_step = [&](int64_t, DiTBundleImpl& model) {
      const BlockOffload* offload = model.dit->block_offload();
      *seen = offload ? Seen(offload->use()) : std::nullopt;
    };
    train_dit(o, config, CancelToken(), cb);
    return losses;
  };
  Seen none = OffloadUse::inference, swapped;
  const auto kept = losses_of(lora_options("kept", 6), lora_config(6), &none);
  auto o = lora_options("swapped", 6);
  o.offload = "blocks";
  auto config = lora_config(6);
  config["train"]["offload"] = "blocks";
  const auto got = losses_of(o, config, &swapped);
  CHECK_FALSE(none.has_value());
  REQUIRE(swapped.has_value());
  CHECK(*swapped == OffloadUse::training);
  REQUIRE(got.size() == kept.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(kept[i]).epsilon(1e-5));
  // Full recomputation without the swap takes the same path through the frozen embedders into the blocks.
  Seen unused;
  auto r = lora_options("recomputed", 6);
  r.recompute = "full";
  const auto recomputed = losses_of(r, lora_config(6), &unused);
  REQUIRE(recomputed.size() == kept.size());
  for (size_t i = 0; i < kept.size(); ++i) CHECK(recomputed[i] == Approx(kept[i]).epsilon(1e-5));

  const auto a = file_tensors(checkpoint_file("kept", 6, "model.safetensors"));
  const auto b = file_tensors(checkpoint_file("swapped", 6, "model.safetensors"));
  REQUIRE(a.size() == b.size());
  for (const auto& [name, t] : a) {
    INFO(name);
    CHECK(torch::allclose(t, b.at(name), 1e-4, 1e-6));
  }
  // A full fine-tune has nothing frozen to swap.
  auto full = test::micro_finetune_options("full", 2);
  full.from = "base";
  full.offload = "blocks";
  full.vae_run.clear();
  CHECK_THAT(error_text([&] { train_dit(full, {}, CancelToken()); }), Catch::Contains("frozen"));
}
