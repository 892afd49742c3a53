#include "core/error.h"
#include "core/presets.h"
#include "model/config.h"
#include "model/info.h"
#include "model/tokenizer.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

using namespace mugv;
using mugv::test::expect_error;

namespace {

ModelPreset source_preset(const std::string& name) {
  const std::filesystem::path path = std::filesystem::path(MUGV_MODEL_PRESETS_DIR) / (name + ".toml");
  return model_preset_from_json(load_preset_file(path, "models"), name, path.string());
}

std::vector<std::string> captions() {
  std::vector<std::string> out;
  for (const char* color : {"red", "green", "blue", "yellow", "white"}) {
    for (const char* shape : {"circle", "square", "triangle"}) {
      for (const char* dir : {"left", "right", "up", "down"}) {
        out.push_back(std::string("a ") + color + " " + shape + " moving " + dir + " on a black background");
      }
    }
  }
  return out;
}

}  // namespace

TEST_CASE("model presets load and have the MUG-V family shapes", "[unit][model]") {
  for (const char* name : {"tiny", "small", "mugv-1b", "mugv-4b", "mugv-10b", "mugv-18b"}) {
    INFO(name);
    ModelPreset p = source_preset(name);
    CHECK(p.dit.hidden == p.dit.heads * p.dit.head_dim);
    CHECK(p.dit.in_channels == p.vae.latent_channels);
    CHECK(p.dit.text_dim == p.text.dim);
    CHECK_FALSE(p.description.empty());
  }
  ModelPreset tiny = source_preset("tiny");
  CHECK(tiny.dit.head_dim % 6 == 0);
  CHECK(tiny.text.kind == TextEncoderKind::small_transformer);
  ModelPreset small = source_preset("small");
  CHECK(small.dit.hidden == 512);
  CHECK(small.dit.depth == 8);
  CHECK(small.dit.heads == 8);

  const int64_t hidden[] = {1152, 2304, 3456, 4608};
  const char* names[] = {"mugv-1b", "mugv-4b", "mugv-10b", "mugv-18b"};
  int64_t previous = 0;
  for (int i = 0; i < 4; ++i) {
    ModelPreset p = source_preset(names[i]);
    INFO(names[i]);
    CHECK(p.dit.hidden == hidden[i]);
    CHECK(p.dit.depth == 56);
    CHECK(p.dit.head_dim == 72);
    CHECK(p.vae.latent_channels == 24);
    CHECK(p.vae.compress_t == 8);
    CHECK(p.vae.compress_h == 8);
    CHECK(p.text.kind == TextEncoderKind::t5);
    CHECK(p.text.dim == 4096);
    CHECK(p.dit.text_tokens == 300);
    const int64_t n = dit_parameter_count(p.dit);
    CHECK(n > previous);
    previous = n;
  }
  const int64_t ten = dit_parameter_count(source_preset("mugv-10b").dit);
  CHECK(ten > 10'600'000'000LL);
  CHECK(ten < 11'000'000'000LL);
  // T5-v1.1-XXL's encoder is ~4.76 B parameters.
  const int64_t t5 = text_encoder_parameter_count(source_preset("mugv-10b").text);
  CHECK(t5 > 4'700'000'000LL);
  CHECK(t5 < 4'800'000'000LL);
}

TEST_CASE("model presets resolve through the preset search path", "[unit][model]") {
  ModelPreset tiny = load_model_preset("tiny");
  CHECK(tiny.name == "tiny");
  auto names = model_preset_names();
  CHECK(std::find(names.begin(), names.end(), "mugv-10b") != names.end());
}

TEST_CASE("model preset errors name the key", "[unit][model]") {
  nlohmann::json base = {
      {"dit", {{"hidden", 96}, {"depth", 2}, {"heads", 2}}},
      {"vae",
       {{"latent_channels", 4}, {"compress", {4, 8, 8}}, {"base_channels", 8}, {"channel_mult", {1, 2, 2}}}},
      {"text",
       {{"kind", "small_transformer"},
        {"vocab_size", 64},
        {"dim", 32},
        {"layers", 1},
        {"heads", 2},
        {"ff_dim", 64},
        {"max_tokens", 8}}}};
  ModelPreset ok = model_preset_from_json(base, "t", "t.toml");
  CHECK(ok.dit.head_dim == 48);
  CHECK(ok.dit.text_tokens == 8);

  auto typo = base;
  typo["dit"]["hiden"] = 3;
  Error e = expect_error([&] { (void)model_preset_from_json(typo, "t", "t.toml"); });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK(std::string(e.what()).find("dit.hiden") != std::string::npos);

  auto inconsistent = base;
  inconsistent["dit"]["head_dim"] = 40;
  e = expect_error([&] { (void)model_preset_from_json(inconsistent, "t", "t.toml"); });
  CHECK(std::string(e.what()).find("heads 2 x head_dim 40") != std::string::npos);

  auto shallow = base;
  shallow["vae"]["channel_mult"] = {1, 2};
  e = expect_error([&] { (void)model_preset_from_json(shallow, "t", "t.toml"); });
  CHECK(std::string(e.what()).find("channel_mult") != std::string::npos);

  auto patch = base;
  patch["vae"]["patch"] = 3;
  e = expect_error([&] { (void)model_preset_from_json(patch, "t", "t.toml"); });
  CHECK(std::string(e.what()).find("vae.patch 3") != std::string::npos);
  patch["vae"]["patch"] = 4;  // 8 / 4 leaves one spatial stride, two temporal: [1, 2, 2] is deep enough
  CHECK(model_preset_from_json(patch, "t", "t.toml").vae.patch == 4);

  auto norm = base;
  norm["vae"]["norm"] = "batch";
  e = expect_error([&] { (void)model_preset_from_json(norm, "t", "t.toml"); });
  CHECK(std::string(e.what()).find("vae.norm \"batch\"") != std::string::npos);

  auto shortcut = base;
  shortcut["vae"]["pixel_shortcut"] = true;
  shortcut["vae"]["latent_channels"] = 2;
  shortcut["dit"]["in_channels"] = 2;
  e = expect_error([&] { (void)model_preset_from_json(shortcut, "t", "t.toml"); });
  CHECK(std::string(e.what()).find("pixel_shortcut") != std::string::npos);
  shortcut["vae"]["pixel_shortcut"] = "yes";
  e = expect_error([&] { (void)model_preset_from_json(shortcut, "t", "t.toml"); });
  CHECK(std::string(e.what()).find("true or false") != std::string::npos);

  auto kind = base;
  kind["text"]["kind"] = "bert";
  e = expect_error([&] { (void)model_preset_from_json(kind, "t", "t.toml"); });
  CHECK(std::string(e.what()).find("bert") != std::string::npos);
}

TEST_CASE("FLOPs per token follow 6N + 12LdS + 12LdS_text", "[unit][model]") {
  DiTConfig c = source_preset("mugv-10b").dit;
  const double n = static_cast<double>(dit_parameter_count(c));
  const double ld = 56.0 * 3456.0;
  CHECK(dit_flops_per_token(c, 50400, 300) == Approx(6 * n + 12 * ld * 50402 + 12 * ld * 300));
  // At 720p 5 s attention is most of the compute (docs/MUGV.md §6).
  CHECK(12 * ld * 50402 > 6 * n);
  CHECK(dit_flops_per_token(c, 1000, 300) < dit_flops_per_token(c, 2000, 300));
}

TEST_CASE("describe gives latent shape, tokens and counts", "[unit][model]") {
  ModelInfo ten = describe(source_preset("mugv-10b"), 105, 720, 1280);
  CHECK(ten.latent_frames == 14);
  CHECK(ten.latent_height == 90);
  CHECK(ten.latent_width == 160);
  CHECK(ten.video_tokens == 50400);  // docs/MUGV.md §3: 720p 5 s
  CHECK(ten.latent_channels == 24);
  CHECK(ten.total_parameters == ten.dit_parameters + ten.vae_parameters + ten.text_parameters);
  CHECK(ten.flops_per_sample == Approx(ten.flops_per_token * 50400));

  ModelInfo tiny = describe(source_preset("tiny"), 17, 64, 64);
  CHECK(tiny.latent_frames == 5);
  CHECK(tiny.latent_height == 8);
  CHECK(tiny.video_tokens == 5 * 4 * 4);

  CHECK(vae_latent_frames(source_preset("mugv-10b").vae, 17) == 3);
  CHECK(vae_latent_frames(source_preset("mugv-10b").vae, 16) == 2);
  Error e = expect_error([&] { (void)describe(source_preset("tiny"), 17, 70, 64); });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK(std::string(e.what()).find("height 70 is not a multiple of 8") != std::string::npos);
  e = expect_error([&] { (void)describe(source_preset("mugv-10b"), 18, 64, 64); });
  CHECK(std::string(e.what()).find("frames 18") != std::string::npos);
}

TEST_CASE("tokenizer trains, round-trips, pads and enforces the limit", "[unit][model]") {
  Tokenizer tok = Tokenizer::train(captions(), 200);
  CHECK(tok.vocab_size() > 8);
  CHECK(tok.vocab_size() <= 200);
  CHECK(tok.pad_id() == 0);
  CHECK(tok.eos_id() == 2);

  const std::string prompt = "a blue triangle moving up on a black background";
  INFO("vocab " << tok.vocab_size() << " pieces " << tok.pieces(prompt).size());
  TokenizedText t = tok.encode(prompt, 32, TokenLimitPolicy::refuse);
  REQUIRE(t.ids.size() == 32);
  REQUIRE(t.mask.size() == 32);
  CHECK(t.length > 1);
  CHECK(t.length < 32);
  CHECK_FALSE(t.truncated);
  CHECK(t.ids[t.length - 1] == tok.eos_id());
  for (int64_t i = 0; i < 32; ++i) {
    CHECK(t.mask[i] == (i < t.length ? 1 : 0));
    if (i >= t.length) CHECK(t.ids[i] == tok.pad_id());
  }
  CHECK(tok.decode(t.ids) == prompt);

  // An unseen combination still round-trips (pieces are subwords, not captions).
  TokenizedText unseen = tok.encode("a yellow triangle moving left", 32, TokenLimitPolicy::refuse);
  CHECK(tok.decode(unseen.ids) == "a yellow triangle moving left");

  const int64_t needed = t.length;
  Error e =
      expect_error([&] { (void)tok.encode(prompt, static_cast<int>(needed - 1), TokenLimitPolicy::refuse); });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK(std::string(e.what()).find("the limit is " + std::to_string(needed - 1)) != std::string::npos);
  TokenizedText cut = tok.encode(prompt, static_cast<int>(needed - 1), TokenLimitPolicy::truncate);
  CHECK(cut.truncated);
  CHECK(cut.length == needed - 1);
  CHECK(cut.ids.back() == tok.eos_id());

  test::TempDir dir("mugv-tokenizer");
  tok.save(dir / "tok.model");
  Tokenizer loaded = Tokenizer::from_file(dir / "tok.model");
  CHECK(loaded.encode(prompt, 32, TokenLimitPolicy::refuse).ids == t.ids);
  test::write_bytes(dir / "bad.model", "not a model");
  CHECK(expect_error([&] { (void)Tokenizer::from_file(dir / "bad.model"); }).code() == ErrorCode::format);
  CHECK(expect_error([&] { (void)Tokenizer::from_file(dir / "absent.model"); }).code() ==
        ErrorCode::not_found);
}

TEST_CASE("model enums round-trip through strings", "[unit][model]") {
  for (auto k : {TextEncoderKind::unknown, TextEncoderKind::small_transformer, TextEncoderKind::t5}) {
    CHECK(text_encoder_kind_from_string(to_string(k)) == k);
  }
  for (auto p : {TokenLimitPolicy::unknown, TokenLimitPolicy::truncate, TokenLimitPolicy::refuse}) {
    CHECK(token_limit_policy_from_string(to_string(p)) == p);
  }
  for (auto n : {VAENorm::group, VAENorm::channel_rms, VAENorm::none})
    CHECK(vae_norm_from_string(to_string(n)) == n);
  CHECK_FALSE(text_encoder_kind_from_string("bert"));
  CHECK_FALSE(vae_norm_from_string("batch"));
}

TEST_CASE("a Hugging Face T5 config.json gives the T5 v1.1 encoder", "[unit][model]") {
  // The fields of google/t5-v1_1-xxl's config.json that the encoder reads.
  const auto xxl = nlohmann::json::parse(R"({"model_type": "t5", "d_model": 4096, "d_kv": 64, "d_ff": 10240,
    "num_layers": 24, "num_heads": 64, "vocab_size": 32128, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-06})");
  const TextEncoderConfig c = t5_config_from_hf_json(xxl, 300, "t5/config.json");
  CHECK(c.kind == TextEncoderKind::t5);
  CHECK(c.dim == 4096);
  CHECK(c.head_dim == 64);
  CHECK(c.heads == 64);
  CHECK(c.ff_dim == 10240);
  CHECK(c.layers == 24);
  CHECK(c.max_tokens == 300);
  CHECK(text_encoder_parameter_count(c) == text_encoder_parameter_count(source_preset("mugv-10b").text));

  auto relu = xxl;
  relu["feed_forward_proj"] = "relu";
  Error e = expect_error([&] { (void)t5_config_from_hf_json(relu, 300, "t5/config.json"); });
  CHECK(e.code() == ErrorCode::unsupported);
  CHECK(e.subject() == "t5/config.json");
  auto bert = xxl;
  bert["model_type"] = "bert";
  CHECK(expect_error([&] { (void)t5_config_from_hf_json(bert, 300, "x"); }).code() == ErrorCode::unsupported);
  auto missing = xxl;
  missing.erase("d_kv");
  e = expect_error([&] { (void)t5_config_from_hf_json(missing, 300, "x"); });
  CHECK(e.code() == ErrorCode::format);
  CHECK(std::string(e.what()).find("d_kv") != std::string::npos);
  // Wrong types and sizes are format errors naming the key, not library exceptions or wrapped numbers.
  auto numeric_feed_forward = xxl;
  numeric_feed_forward["feed_forward_proj"] = 3;
  e = expect_error([&] { (void)t5_config_from_hf_json(numeric_feed_forward, 300, "x"); });
  CHECK(e.code() == ErrorCode::format);
  CHECK(std::string(e.what()).find("feed_forward_proj") != std::string::npos);
  auto huge = xxl;
  huge["d_model"] = int64_t(1) << 32;
  e = expect_error([&] { (void)t5_config_from_hf_json(huge, 300, "x"); });
  CHECK(e.code() == ErrorCode::format);
  CHECK(std::string(e.what()).find("d_model") != std::string::npos);
}

TEST_CASE("inference memory: phases, block swap and the attention kernel", "[unit][model]") {
  const ModelPreset p = source_preset("mugv-10b");
  InferenceMemoryInput in;
  in.dit = p.dit;
  in.vae_parameters = 400'000'000;
  in.text_parameters = text_encoder_parameter_count(p.text);
  in.latent_frames = 14;
  in.latent_height = 90;
  in.latent_width = 160;
  in.height = 720;
  in.width = 1280;
  in.text_tokens = 300;
  in.weight_bytes = 2;
  in.activation_bytes = 2;
  in.fused_attention = true;
  const InferenceMemory all = estimate_inference_memory(in);
  CHECK(all.dit_weight_bytes == dit_parameter_count(p.dit) * 2);
  CHECK(all.dit_resident_weight_bytes == all.dit_weight_bytes);
  CHECK(all.peak_bytes() == std::max(all.sample_phase_bytes(), all.decode_phase_bytes()));
  CHECK(all.weight_bytes() == all.dit_weight_bytes + all.vae_weight_bytes + all.text_weight_bytes);
  // 10.8 B parameters in bf16 are ~21.7 GB; 50 400 tokens of width 3456 at batch 2 about 7 GB more.
  CHECK(all.dit_weight_bytes > int64_t(21e9));
  CHECK(all.dit_activation_bytes > int64_t(3e9));
  CHECK(all.dit_activation_bytes < int64_t(10e9));

  in.block_swap = true;
  const InferenceMemory swapped = estimate_inference_memory(in);
  CHECK(swapped.dit_resident_weight_bytes < all.dit_weight_bytes / 20);  // 2 of 56 blocks + the rest
  CHECK(swapped.sample_phase_bytes() < all.sample_phase_bytes());

  in.fused_attention = false;  // the math kernel materialises [2, 48, N, N] scores: hundreds of GB here
  CHECK(estimate_inference_memory(in).dit_activation_bytes > int64_t(400e9));
}
