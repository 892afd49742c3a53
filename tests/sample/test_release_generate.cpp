// A released MUG-V model folder, written by the test in the release's layout with tiny random networks
// (dit.pt as torch.save writes it, vae.safetensors, a Hugging Face T5 folder), loaded and sampled from,
// in-process and through `mugv generate --model`.
#include "core/error.h"
#include "core/json_io.h"
#include "core/safetensors.h"
#include "dataset/shapes.h"
#include "media/decoder.h"
#include "media/image.h"
#include "media/probe.h"
#include "model/info.h"
#include "model/lora_file.h"
#include "model/mugv_vae.h"
#include "model/release_files.h"
#include "model/text_encoder.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "sample/model_bundle.h"
#include "sample/release_model.h"
#include "sample/sampler.h"
#include "sample/video_io.h"
#include "support/model_fixtures.h"
#include "support/test_support.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>

using namespace mugv;
using mugv::test::expect_error;
using mugv::test::TempDir;

namespace {

namespace fs = std::filesystem;

// Widths of 32 so the release's GroupNorm(32) (which shapes cannot tell) fits; 8x compression in time and
// space.
MugvVAEConfig tiny_release_vae() {
  MugvVAEConfig c;
  c.spatial_channels = {32, 32, 32, 32};
  c.spatial_layers_per_block = 1;
  c.temporal_filters = 32;
  c.temporal_multipliers = {1, 1, 1, 1};
  c.temporal_res_blocks = 1;
  c.latent_channels = 4;
  c.latent_mean = {0.1, -0.2, 0.3, 0.0};
  c.latent_std = {1.5, 0.5, 2.0, 1.0};
  return c;
}

TextEncoderConfig tiny_t5(int vocab) {
  TextEncoderConfig c;
  c.kind = TextEncoderKind::t5;
  c.vocab_size = vocab;
  c.dim = 16;
  c.layers = 2;
  c.heads = 2;
  c.head_dim = 8;
  c.ff_dim = 24;
  c.max_tokens = 300;
  c.relative_buckets = 8;
  c.relative_max_distance = 16;
  return c;
}

void perturb(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.add_(torch::randn_like(p) * 0.05);
}

// DIR/dit.pt, DIR/vae.safetensors, DIR/t5/{config.json, spiece.model, model.safetensors}.
void write_release_folder(const fs::path& dir) {
  torch::manual_seed(21);
  fs::create_directories(dir / "t5");
  std::vector<std::string> captions;
  for (const auto& c : shapes::colors())
    for (const auto& s : shapes::shape_names()) captions.push_back("a " + c.name + " " + s + " moving left");
  const Tokenizer tokenizer = Tokenizer::train(captions, 64);
  tokenizer.save(dir / "t5" / "spiece.model");

  const TextEncoderConfig t5 = tiny_t5(tokenizer.vocab_size());
  write_json_atomic(dir / "t5" / "config.json",
                    {{"model_type", "t5"},
                     {"d_model", t5.dim},
                     {"d_kv", t5.head_dim},
                     {"d_ff", t5.ff_dim},
                     {"num_layers", t5.layers},
                     {"num_heads", t5.heads},
                     {"vocab_size", t5.vocab_size},
                     {"relative_attention_num_buckets", t5.relative_buckets},
                     {"relative_attention_max_distance", t5.relative_max_distance},
                     {"feed_forward_proj", "gated-gelu"}});
  T5Encoder encoder(t5);
  perturb(*encoder);
  {
    // Hugging Face names, with a decoder tensor the loader must leave alone.
    SafetensorsWriter writer;
    std::vector<torch::Tensor> keep;
    for (const auto& [name, tensor] : module_state(*encoder)) {
      keep.push_back(tensor.contiguous());
      const std::string hf = name == "embed_tokens.weight" ? "shared.weight" : "encoder." + name;
      writer.add(hf, DType::f32, tensor.sizes().vec(), keep.back().data_ptr(), tensor.numel() * 4);
    }
    const float decoder_weight[4] = {1, 2, 3, 4};
    writer.add("decoder.block.0.layer.0.SelfAttention.q.weight", DType::f32, {2, 2}, decoder_weight, 16);
    writer.write(dir / "t5" / "model.safetensors");
  }

  MugvVAE vae(tiny_release_vae());
  perturb(*vae);
  save_module(*vae, dir / "vae.safetensors");

  DiTConfig dit = test::micro_dit_config(3);  // text width 16 = the T5's
  dit.text_tokens = kReleaseTextTokens;
  dit.null_caption = false;
  DiT model(dit);
  perturb(*model);
  save_module_torch(*model, dir / "dit.pt");
}

// Mean absolute difference of two videos' pixel values (0-255); they must have the same frames and sizes.
double mean_abs_difference(const std::vector<RgbFrame>& a, const std::vector<RgbFrame>& b) {
  REQUIRE(a.size() == b.size());
  double total = 0, values = 0;
  for (size_t f = 0; f < a.size(); ++f) {
    REQUIRE(a[f].rgb.size() == b[f].rgb.size());
    for (size_t i = 0; i < a[f].rgb.size(); ++i) total += std::abs(int(a[f].rgb[i]) - int(b[f].rgb[i]));
    values += double(a[f].rgb.size());
  }
  return values > 0 ? total / values : 0.0;
}

const fs::path& release_folder() {
  static TempDir dir("mugv-release");
  static const bool written = (write_release_folder(dir / "MUG-V-tiny"), true);
  (void)written;
  static const fs::path folder = dir / "MUG-V-tiny";
  return folder;
}

GenerateRequest i2v_request(const fs::path& image) {
  GenerateRequest r;
  r.prompt = with_aesthetic_score("a red circle moving left");
  r.negative_prompt = release_negative_prompt();
  r.seed = 3;
  r.steps = 2;
  r.frames = 9;  // 8k + 1: the image's latent and one more
  r.height = 32;
  r.width = 32;
  r.fps = ReleaseDefaults::fps;
  r.first_frame = load_condition_image(image, r.width, r.height);
  return r;
}

fs::path test_image(const fs::path& dir) {
  RgbFrame frame;
  frame.width = 32;
  frame.height = 32;
  frame.rgb.resize(32 * 32 * 3);
  for (size_t i = 0; i < frame.rgb.size(); ++i) frame.rgb[i] = static_cast<uint8_t>((i * 7) % 251);
  write_png(dir / "first.png", frame);
  return dir / "first.png";
}

}  // namespace

TEST_CASE("a released model folder loads with configurations read from its files",
          "[unit][sample][release]") {
  const fs::path& folder = release_folder();
  ModelBundle b = load_release_model(folder, {});
  CHECK(b.preset.dit.hidden == 48);
  CHECK(b.preset.dit.depth == 3);
  CHECK_FALSE(b.dit->has_null_caption());
  CHECK(b.preset.text.dim == 16);
  CHECK(b.preset.text.max_tokens == 300);
  CHECK(b.codec->compress_t() == 8);
  CHECK(b.codec->compress_h() == 8);
  CHECK(b.codec->latent_frames(105) == 14);
  CHECK(b.codec->decodes_after_condition_frame());
  CHECK(b.shift_base_px == 512.0);
  CHECK(b.prompt_limit == TokenLimitPolicy::truncate);
  CHECK(b.run.name == "MUG-V-tiny");
}

TEST_CASE("an installed released model is described from its files' headers, for the server and the studio",
          "[unit][sample][release]") {
  const fs::path& folder = release_folder();
  TempDir models("mugv-models");
  fs::copy(folder, models / "MUG-V-tiny", fs::copy_options::recursive);
  fs::copy(folder, models / "mismatched", fs::copy_options::recursive);
  // A T5 whose width the DiT does not read: every part is there, but they do not fit each other.
  auto t5 = read_json_file(models / "mismatched" / "t5" / "config.json");
  t5["d_model"] = 24;
  write_json_atomic(models / "mismatched" / "t5" / "config.json", t5);

  const auto installed = list_installed_models(models.path());
  REQUIRE(installed.size() == 2);
  const InstalledModel& good = installed[0];
  REQUIRE(good.name == "MUG-V-tiny");
  REQUIRE(good.preset);
  const ModelPreset loaded = load_release_model(folder, {}).preset;
  CHECK(good.preset->dit.hidden == loaded.dit.hidden);
  CHECK(good.preset->dit.depth == loaded.dit.depth);
  CHECK(good.preset->vae.compress_t == 8);
  CHECK(good.preset->vae.compress_h == 8);
  const nlohmann::json listed = to_json(good);
  CHECK(listed["complete"] == true);
  CHECK(listed["latent_cache"] == "release-MUG-V-tiny");
  // What the studio plans with: the preset read back from the reply, field for field.
  const ModelPreset back = release_preset_from_json(listed["preset"], "reply");
  CHECK(release_preset_json(back) == listed["preset"]);
  CHECK(back.dit.text_tokens == kReleaseTextTokens);
  CHECK(back.text.kind == TextEncoderKind::t5);
  CHECK(describe(back, 17, 32, 32).video_tokens == describe(loaded, 17, 32, 32).video_tokens);
  // The release's VAE is counted from its own layout, not as this project's VAE.
  CHECK(good.preset->released_vae_parameters == mugv_vae_parameter_count(tiny_release_vae()));
  CHECK(describe(back, 17, 32, 32).vae_parameters == mugv_vae_parameter_count(tiny_release_vae()));
  nlohmann::json broken = listed["preset"];
  broken["dit"].erase("heads");
  Error e = expect_error([&] { (void)release_preset_from_json(broken, "reply"); });
  CHECK(e.code() == ErrorCode::format);
  CHECK_THAT(e.message(), Catch::Contains("dit.heads"));

  const InstalledModel& bad = installed[1];
  CHECK(bad.problem.empty());
  CHECK_FALSE(bad.preset);
  CHECK_THAT(bad.preset_error, Catch::Contains("d_model 24"));
  const nlohmann::json unusable = to_json(bad);
  CHECK(unusable["complete"] == false);
  CHECK_FALSE(unusable.contains("preset"));
}

TEST_CASE("image-to-video with a released model: the image is the first frame; block swap changes nothing",
          "[unit][sample][release]") {
  const fs::path& folder = release_folder();
  TempDir dir;
  const GenerateRequest r = i2v_request(test_image(dir.path()));
  ModelBundle plain = load_release_model(folder, {});
  const SampleResult a = sample(plain, r, CancelToken());
  REQUIRE(a.frames.size() == 9);
  CHECK(a.frames[0].rgb == r.first_frame->pixels.rgb);  // put in front as it is, not re-decoded
  CHECK(a.frames[1].width == 32);
  CHECK(a.latent.size(2) == 2);

  ReleaseLoadOptions swap;
  swap.offload = OffloadMode::blocks;
  ModelBundle swapped = load_release_model(folder, swap);
  REQUIRE(swapped.dit->block_offload() != nullptr);
  const SampleResult b = sample(swapped, r, CancelToken());
  CHECK(torch::equal(a.latent, b.latent));
  CHECK(swapped.dit->block_offload()->peak_resident_blocks() == 2);
}

TEST_CASE("a released model folder that lacks a part, or holds a damaged file, is refused by name",
          "[unit][sample][release]") {
  const fs::path& folder = release_folder();
  TempDir dir;
  const fs::path copy = dir / "partial";
  fs::copy(folder, copy, fs::copy_options::recursive);
  fs::remove(copy / "vae.safetensors");
  Error e = expect_error([&] { (void)load_release_model(copy, {}); });
  CHECK(e.code() == ErrorCode::not_found);
  CHECK(e.subject() == copy.string());
  CHECK_THAT(e.message(), Catch::Contains("vae.pt"));

  fs::copy_file(folder / "vae.safetensors", copy / "vae.safetensors");
  fs::resize_file(copy / "dit.pt", fs::file_size(copy / "dit.pt") / 2);
  e = expect_error([&] { (void)load_release_model(copy, {}); });
  CHECK_THAT(std::string(e.what()), Catch::Contains("dit.pt"));

  // A video far beyond this machine's memory fails before anything is built, with the numbers.
  ReleaseLoadOptions huge;
  huge.frames = 105;
  huge.width = 4096;
  huge.height = 4096;
  huge.offload = OffloadMode::none;
  e = expect_error([&] { (void)load_release_model(folder, huge); });
  CHECK(e.code() == ErrorCode::out_of_memory);
  CHECK_THAT(e.message(), Catch::Contains("--offload blocks would need"));
  huge.offload = OffloadMode::automatic;
  e = expect_error([&] { (void)load_release_model(folder, huge); });
  CHECK_THAT(e.message(), Catch::Contains("even with block swap"));
}

TEST_CASE("mugv generate --model runs image-to-video with the release's defaults", "[cli][sample][release]") {
  const fs::path& folder = release_folder();
  TempDir dir;
  const fs::path image = test_image(dir.path());
  auto r = test::run_mugv_cli(
      "generate --model " + folder.string() + " --image " + image.string() +
          " --prompt 'a red circle moving left' --frames 9 --size 32x32 --steps 2 --seed 4 "
          "--out " +
          (dir / "v.mp4").string() + " --json",
      dir.path());
  if (!r) return;
  INFO(r->err);
  REQUIRE(r->exit_code == 0);
  const auto j = nlohmann::json::parse(r->out);
  CHECK(j["frames"] == 9);
  CHECK(j["metadata"]["prompt"] == "a red circle moving left aesthetic score: 6.0.");
  CHECK(j["metadata"]["negative_prompt"] == release_negative_prompt());
  MediaInfo info = probe(dir / "v.mp4", ProbeDepth::headers);
  CHECK(info.metadata["seed"] == "4");
  CHECK(info.nominal_fps == Approx(30.0));

  auto missing = test::run_mugv_cli(
      "generate --model no-such-model --prompt 'x' --out " + (dir / "w.mp4").string(), dir.path());
  CHECK(missing->exit_code == 1);
  CHECK_THAT(missing->err, Catch::Contains("no-such-model"));
}

TEST_CASE("a released model fine-tunes: encode with its VAE, LoRA and full fine-tune, resume and generate",
          "[cli][sample][release][lora]") {
  const fs::path model = release_folder();
  TempDir home("mugv-release-tune");
  const fs::path scratch = home / "scratch";
  fs::create_directories(scratch);
  auto mugv = [&](const std::string& args) {
    auto r = test::run_mugv_cli(args, scratch, home.path());
    REQUIRE(r);
    INFO("mugv " << args << "\n" << r->err);
    REQUIRE(r->exit_code == 0);
    return r->out;
  };
  const std::string m = test::shell_quote_arg(model.string());
  mugv("make-dataset shapes --out " + (home / "shapes").string() + " --count 6 --size 32 --frames 9 --fps 8");
  mugv("dataset import " + (home / "shapes").string() + " --name shapes");
  auto encoded = nlohmann::json::parse(
      mugv("encode --dataset shapes --model " + m + " --size 32x32 --frames 9 --fps 8 --json"));
  CHECK(encoded["encoded"] == 6);
  CHECK(encoded["cache_dir"].get<std::string>().find("release-MUG-V-tiny") != std::string::npos);

  const std::string common = " --preset tiny --dataset shapes --batch 2 --threads 2 --save-every 2 --json";
  auto lora =
      nlohmann::json::parse(mugv("train --from " + m +
                                 " --lora rank=2,targets=attn,mlp --run rl --steps 2 --sample-every 2 "
                                 "--sample-steps 2" +
                                 common));
  // Samples during training render with the adapter on the released DiT, decoded by its VAE.
  bool sampled = false;
  for (const auto& entry : fs::directory_iterator(home / "runs" / "rl" / "samples" / "step-2"))
    sampled = sampled || entry.is_regular_file();
  CHECK(sampled);
  CHECK(lora["last_step"] == 2);
  // The same run with the frozen base swapped in block by block renders its samples through the swap: the
  // same adapters, the same videos, bit for bit (the frozen text encoder's features now come from the cache).
  mugv("train --from " + m +
       " --lora rank=2,targets=attn,mlp --offload blocks --run rs --steps 2 --sample-every 2 "
       "--sample-steps 2" +
       common);
  auto sample_frames = [&](const std::string& run) {
    std::vector<RgbFrame> frames;
    VideoDecoder decoder(home / "runs" / run / "samples" / "step-2" / "sample-0.mp4");
    while (auto frame = decoder.next()) frames.push_back(std::move(*frame));
    return frames;
  };
  const auto kept_frames = sample_frames("rl"), swapped_frames = sample_frames("rs");
  REQUIRE(!kept_frames.empty());
  CHECK(mean_abs_difference(kept_frames, swapped_frames) == 0.0);
  const auto run = read_json_file(home / "runs" / "rl" / "run.json");
  CHECK(run["config"]["base"]["model"] == model.string());
  CHECK(run["vae_run"] == "release-MUG-V-tiny");
  // Its checkpoints hold the adapters; the T5 and the DiT stay in the model folder.
  const auto adapter =
      SafetensorsFile::open(home / "runs" / "rl" / "checkpoints" / "step-2" / "model.safetensors");
  for (const auto& name : adapter.names()) CHECK(name.find(".lora_") != std::string::npos);
  // T5 ran once per distinct caption: its features are on disk, one file each.
  auto cached_features = [&] {
    size_t n = 0;
    for (const auto& entry : fs::recursive_directory_iterator(home / "cache" / "text"))
      n += entry.path().extension() == ".safetensors";
    return n;
  };
  CHECK(cached_features() >= 1);
  CHECK(cached_features() <= 6 + 1);  // at most one per clip's caption, and the empty prompt
  auto resumed = nlohmann::json::parse(mugv("resume rl --steps 4 --json"));
  CHECK(resumed["start_step"] == 2);
  CHECK(resumed["last_step"] == 4);
  auto generated =
      nlohmann::json::parse(mugv("generate --run rl --prompt 'a red circle moving left' --frames 9 --size "
                                 "32x32 --steps 2 --json --out " +
                                 (scratch / "rl.mp4").string()));
  CHECK(generated["checkpoint_step"] == 4);
  CHECK(fs::file_size(scratch / "rl.mp4") > 0);

  // The LoRA run merged into a copy of the model folder: its DiT is the released one plus the adapter, the
  // rest is the released folder's, and it generates as a model.
  const fs::path merged = home / "merged-model";
  auto merge_report = nlohmann::json::parse(
      mugv("lora merge --run rl --json --out-model " + test::shell_quote_arg(merged.string())));
  CHECK(merge_report["base"] == model.string());
  CHECK(fs::is_symlink(merged / "vae.safetensors"));
  CHECK(fs::is_symlink(merged / "t5"));
  CHECK(fs::is_regular_file(merged / "dit.pt"));
  ModelBundle expected = load_release_model(model, ReleaseLoadOptions{});
  apply_lora_files(expected, {{home / "runs" / "rl" / "checkpoints" / "step-4" / "ema.safetensors", 1.0}},
                   /*merge=*/true);
  ModelBundle got = load_release_model(merged, ReleaseLoadOptions{});
  ModelBundle original = load_release_model(model, ReleaseLoadOptions{});
  const auto want = module_state(*expected.dit), have = module_state(*got.dit),
             was = module_state(*original.dit);
  REQUIRE(want.size() == have.size());
  bool changed = false;
  for (size_t i = 0; i < want.size(); ++i) {
    INFO(want[i].first);
    CHECK(want[i].first == have[i].first);
    CHECK(torch::allclose(want[i].second, have[i].second, 1e-6, 1e-7));
    changed = changed || !torch::equal(was[i].second, have[i].second);
  }
  CHECK(changed);
  mugv("generate --model " + test::shell_quote_arg(merged.string()) +
       " --prompt 'a red circle moving left' --frames 9 --size 32x32 --steps 2 --out " +
       (scratch / "merged.mp4").string());
  CHECK(fs::file_size(scratch / "merged.mp4") > 0);
  auto again = test::run_mugv_cli("lora merge --run rl --out-model " + test::shell_quote_arg(merged.string()),
                                  scratch, home.path());
  CHECK(again->exit_code != 0);
  CHECK_THAT(again->err, Catch::Contains("exists"));

  // A full fine-tune trains the DiT only: its checkpoints hold dit.* and no T5. Its first two steps draw the
  // clips rl's did (same seed and data): their features are read, not computed.
  const size_t features = cached_features();
  mugv("train --from " + m + " --run rf --steps 2" + common);
  CHECK(cached_features() == features);  // the same encoder: every caption's features were reused
  const auto full =
      SafetensorsFile::open(home / "runs" / "rf" / "checkpoints" / "step-2" / "model.safetensors");
  CHECK(full.contains("dit.blocks.0.attn.qkv.weight"));
  for (const auto& name : full.names()) CHECK(name.rfind("dit.", 0) == 0);
  mugv("generate --run rf --prompt 'a red circle moving left' --frames 9 --size 32x32 --steps 2 --out " +
       (scratch / "rf.mp4").string());
  // The full fine-tune as an adapter: the SVD of its difference from the released DiT.
  auto extracted = nlohmann::json::parse(mugv("lora extract --run rf --rank 4 --targets attn --json --out " +
                                              (scratch / "rf.safetensors").string()));
  CHECK(extracted["base"] == model.string());
  CHECK(extracted["relative_error"].get<double>() < 1.0);
  auto with_adapter = nlohmann::json::parse(
      mugv("generate --model " + m + " --lora " + (scratch / "rf.safetensors").string() +
           ":1 --prompt 'a red circle' --frames 9 --size 32x32 --steps 2 --json --out " +
           (scratch / "adapted.mp4").string()));
  CHECK(with_adapter["metadata"]["lora"] == (scratch / "rf.safetensors").string() + ":1");

  // The planner reads the released model's shapes from its files: a LoRA fine-tune of it fits one small GPU.
  const std::string plan_args =
      " --lora rank=2,targets=attn --gpus 1 --gpus-per-node 1 --gpu-mem-gb 8 "
      "--frames 9 --size 32x32 --global-batch 2";
  const auto layouts = nlohmann::json::parse(mugv("plan --model " + m + plan_args + " --json"));
  REQUIRE(layouts.is_array());
  CHECK_FALSE(layouts.empty());
  CHECK_THAT(mugv("plan --model " + m + plan_args), Catch::Contains("MUG-V-tiny at 32x32, 9 frames"));

  // Latents of another encoder are refused with what to do.
  auto wrong = test::run_mugv_cli("train --from " + m + " --vae-run vae0 --run rw --steps 2" + common,
                                  scratch, home.path());
  CHECK(wrong->exit_code != 0);
  CHECK_THAT(wrong->err, Catch::Contains("mugv encode --model"));
}

TEST_CASE("adapters apply to a released model loaded in bf16, at run time and merged",
          "[sample][release][lora]") {
  ReleaseLoadOptions options;
  options.dtype = torch::kBFloat16;
  ModelBundle b = load_release_model(release_folder(), options);
  torch::manual_seed(5);
  LoraWeights w;
  for (const auto& linear : adaptable_linear_shapes(b.preset.dit))
    if (linear.path.find(".attn.") != std::string::npos)
      w.modules[linear.path] = {torch::randn({2, linear.in}) * 0.1, torch::randn({linear.out, 2}) * 0.1,
                                std::nullopt};
  TempDir dir;
  write_lora_file(dir / "a.safetensors", w, {});
  GenerateRequest r;
  r.prompt = "a red circle moving left";
  r.seed = 3;
  r.steps = 1;
  r.frames = 9;
  r.height = r.width = 32;
  const auto plain = sample(b, r, CancelToken());
  apply_lora_files(b, {{dir / "a.safetensors", 1.0}}, /*merge=*/false);  // bf16 adapters beside bf16 weights
  const auto adapted = sample(b, r, CancelToken());
  CHECK((adapted.latent.to(torch::kFloat32) - plain.latent.to(torch::kFloat32)).abs().max().item<double>() >
        0);
  ModelBundle merged = load_release_model(release_folder(), options);
  apply_lora_files(merged, {{dir / "a.safetensors", 1.0}}, /*merge=*/true);
  // bf16 rounds the merged weights and the run-time sum differently: agreement to bf16 precision.
  CHECK((sample(merged, r, CancelToken()).latent.to(torch::kFloat32) - adapted.latent.to(torch::kFloat32))
            .abs()
            .max()
            .item<double>() < 0.1);
}
