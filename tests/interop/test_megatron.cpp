#include "core/error.h"
#include "core/paths.h"
#include "core/safetensors.h"
#include "core/weight_files.h"
#include "interop/dist_checkpoint.h"
#include "interop/megatron_checkpoint.h"
#include "interop/megatron_convert.h"
#include "interop/megatron_names.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <map>

using namespace mugv;
namespace fs = std::filesystem;

namespace {

// The per-block names of the released dit.pt (and of the golden tiny model).
const std::vector<std::string> kBlockSuffixes{"scale_shift_table",
                                              "attn.qkv.weight",
                                              "attn.qkv.bias",
                                              "attn.q_norm.weight",
                                              "attn.k_norm.weight",
                                              "attn.proj.weight",
                                              "attn.proj.bias",
                                              "cross_attn_norm.weight",
                                              "cross_attn_norm.bias",
                                              "cross_attn.q_linear.weight",
                                              "cross_attn.q_linear.bias",
                                              "cross_attn.kv_linear.weight",
                                              "cross_attn.kv_linear.bias",
                                              "cross_attn.q_norm.weight",
                                              "cross_attn.k_norm.weight",
                                              "cross_attn.proj.weight",
                                              "cross_attn.proj.bias",
                                              "mlp.fc1.weight",
                                              "mlp.fc1.bias",
                                              "mlp.fc2.weight",
                                              "mlp.fc2.bias"};

TensorData f32_tensor(std::vector<int64_t> shape, float seed) {
  TensorData t;
  t.dtype = DType::f32;
  t.shape = std::move(shape);
  std::vector<float> v(size_t(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = seed + 0.001f * float(i);
  t.bytes.resize(v.size() * 4);
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

// A MUG-V DiT of hidden 8, 2 heads of 4, 2 blocks, MLP 32, text width 4, 3 latent channels, with a null
// caption, every tensor distinct.
std::map<std::string, TensorData> tiny_model() {
  const int64_t h = 8, text = 4;
  std::map<std::string, std::vector<int64_t>> shapes{
      {"start_token", {h}},
      {"end_token", {h}},
      {"x_embedder.proj.weight", {h, 3, 1, 2, 2}},
      {"x_embedder.proj.bias", {h}},
      {"t_embedder.mlp.0.weight", {h, 16}},
      {"t_embedder.mlp.0.bias", {h}},
      {"t_embedder.mlp.2.weight", {h, h}},
      {"t_embedder.mlp.2.bias", {h}},
      {"fps_embedder.mlp.0.weight", {h, 16}},
      {"fps_embedder.mlp.0.bias", {h}},
      {"fps_embedder.mlp.2.weight", {h, h}},
      {"fps_embedder.mlp.2.bias", {h}},
      {"t_block.1.weight", {6 * h, h}},
      {"t_block.1.bias", {6 * h}},
      {"y_embedder.y_proj.fc1.weight", {h, text}},
      {"y_embedder.y_proj.fc1.bias", {h}},
      {"y_embedder.y_proj.fc2.weight", {h, h}},
      {"y_embedder.y_proj.fc2.bias", {h}},
      {"null_caption", {5, text}},
      {"final_layer.scale_shift_table", {2, h}},
      {"final_layer.linear.weight", {24, h}},
      {"final_layer.linear.bias", {24}},
  };
  const std::map<std::string, std::vector<int64_t>> block{
      {"scale_shift_table", {6, h}},
      {"attn.qkv.weight", {3 * h, h}},
      {"attn.qkv.bias", {3 * h}},
      {"attn.q_norm.weight", {4}},
      {"attn.k_norm.weight", {4}},
      {"attn.proj.weight", {h, h}},
      {"attn.proj.bias", {h}},
      {"cross_attn_norm.weight", {h}},
      {"cross_attn_norm.bias", {h}},
      {"cross_attn.q_linear.weight", {h, h}},
      {"cross_attn.q_linear.bias", {h}},
      {"cross_attn.kv_linear.weight", {2 * h, h}},
      {"cross_attn.kv_linear.bias", {2 * h}},
      {"cross_attn.q_norm.weight", {4}},
      {"cross_attn.k_norm.weight", {4}},
      {"cross_attn.proj.weight", {h, h}},
      {"cross_attn.proj.bias", {h}},
      {"mlp.fc1.weight", {4 * h, h}},
      {"mlp.fc1.bias", {4 * h}},
      {"mlp.fc2.weight", {h, 4 * h}},
      {"mlp.fc2.bias", {h}},
  };
  for (int b = 0; b < 2; ++b)
    for (const auto& [suffix, shape] : block) shapes["blocks." + std::to_string(b) + "." + suffix] = shape;
  std::map<std::string, TensorData> model;
  float seed = 1;
  for (const auto& [name, shape] : shapes) model[name] = f32_tensor(shape, seed++);
  return model;
}

WeightSource source_of(const std::map<std::string, TensorData>& model) {
  WeightSource s;
  for (const auto& [name, t] : model) s.names.push_back(name);
  s.at = [&model](const std::string& name) {
    const TensorData& t = model.at(name);
    TensorView v;
    v.dtype = t.dtype;
    v.shape = t.shape;
    v.data = t.bytes.data();
    v.size_bytes = t.bytes.size();
    return v;
  };
  return s;
}

float f32_at(const TensorData& t, size_t i) {
  float v = 0;
  std::memcpy(&v, t.bytes.data() + 4 * i, 4);
  return v;
}

}  // namespace

TEST_CASE("Every released dit.pt name maps to a Megatron key and back", "[unit][interop]") {
  std::vector<std::string> names{"start_token",
                                 "end_token",
                                 "x_embedder.proj.weight",
                                 "x_embedder.proj.bias",
                                 "t_embedder.mlp.0.weight",
                                 "t_embedder.mlp.2.bias",
                                 "fps_embedder.mlp.0.weight",
                                 "t_block.1.weight",
                                 "t_block.1.bias",
                                 "y_embedder.y_proj.fc1.weight",
                                 "y_embedder.y_proj.fc2.bias",
                                 "final_layer.scale_shift_table",
                                 "final_layer.linear.weight",
                                 "final_layer.linear.bias",
                                 "null_caption"};
  for (int b : {0, 55})
    for (const auto& s : kBlockSuffixes) names.push_back("blocks." + std::to_string(b) + "." + s);
  for (const auto& name : names) {
    INFO(name);
    const auto key = megatron_key_for(name);
    REQUIRE(key);
    CHECK(megatron_key_role(key->name) == MegatronKeyRole::weight);
    const auto back = engine_key_for(key->name, key->layer);
    REQUIRE(back);
    CHECK(back->name == name);
    CHECK(back->heads == key->heads);
  }
  const auto qkv = megatron_key_for("blocks.55.attn.qkv.weight");
  CHECK(qkv->name == "decoder.layers.self_attention.linear_qkv.weight");
  CHECK((qkv->layer == 55 && qkv->heads == HeadLayout::qkv && qkv->tp_axis == 0));
  CHECK(megatron_key_for("blocks.0.cross_attn.kv_linear.bias")->heads == HeadLayout::kv);
  CHECK(megatron_key_for("blocks.0.mlp.fc2.weight")->tp_axis == 1);
  CHECK(megatron_key_for("blocks.0.mlp.fc2.bias")->tp_axis == -1);
  CHECK(megatron_key_for("blocks.3.scale_shift_table")->name == "decoder.layers.scale_shift_table.bias");
  CHECK(megatron_key_for("t_embedder.mlp.0.weight")->name == "timestep_embedder.mlp.0.weight");
  CHECK(megatron_key_for("t_block.1.bias")->name == "timestep_block.1.bias");
  CHECK(megatron_key_for("y_embedder.y_proj.fc1.weight")->name == "context_embedder.proj.fc1.weight");
  CHECK(megatron_key_for("final_layer.scale_shift_table")->name == "final_layer.scale_shift_table.bias");
  CHECK(megatron_key_for("null_caption")->name == "context_embedder.drop_emb");
  CHECK(megatron_key_for("y_embedder.y_embedding")->name == "context_embedder.drop_emb");
  CHECK_FALSE(megatron_key_for("blocks.0.attn.rope"));
  CHECK_FALSE(megatron_key_for("blocks.x.attn.qkv.weight"));
  CHECK_FALSE(megatron_key_for("pos_embed"));

  // The per-layer form (non-homogeneous layers) names its layer itself.
  CHECK(engine_key_for("decoder.layers.7.mlp.linear_fc1.weight")->name == "blocks.7.mlp.fc1.weight");
  CHECK(is_stacked_layer_key("decoder.layers.mlp.linear_fc1.weight"));
  CHECK_FALSE(is_stacked_layer_key("decoder.layers.7.mlp.linear_fc1.weight"));
  CHECK_FALSE(engine_key_for("decoder.layers.mlp.linear_fc1.weight"));  // stacked: needs a layer

  CHECK(megatron_key_role("optimizer.state.exp_avg.decoder.layers.mlp.linear_fc1.weight") ==
        MegatronKeyRole::optimizer);
  CHECK(megatron_key_role("decoder.layers.mlp.linear_fc1._extra_state/shard_3_56") ==
        MegatronKeyRole::extra_state);
  CHECK(megatron_key_role("rng_state/shard_0.0_1.1") == MegatronKeyRole::training_state);
  CHECK(megatron_key_role("decoder.layers.mlp.router.weight") == MegatronKeyRole::unknown);
}

TEST_CASE("Fused projections are re-laid per head as Megatron keeps them, and back", "[unit][interop]") {
  // 2 heads of 2 channels, one column: row r holds r. Release order (part, head, channel):
  // q0 q0 q1 q1 k0 k0 k1 k1 v0 v0 v1 v1 = rows 0..11.
  TensorData qkv;
  qkv.dtype = DType::f32;
  qkv.shape = {12, 1};
  for (int r = 0; r < 12; ++r) {
    const float v = float(r);
    qkv.bytes.insert(qkv.bytes.end(), reinterpret_cast<const uint8_t*>(&v),
                     reinterpret_cast<const uint8_t*>(&v) + 4);
  }
  const TensorData m = heads_to_megatron(qkv, HeadLayout::qkv, 2, "qkv");
  // Megatron (head, part, channel): q0 k0 v0 of head 0, then of head 1.
  std::vector<float> got;
  for (size_t i = 0; i < 12; ++i) got.push_back(f32_at(m, i));
  CHECK(got == std::vector<float>{0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11});
  CHECK(heads_to_engine(m, HeadLayout::qkv, 2, "qkv").bytes == qkv.bytes);

  TensorData kv = qkv;
  kv.shape = {8, 1};
  kv.bytes.resize(32);
  const TensorData mkv = heads_to_megatron(kv, HeadLayout::kv, 2, "kv");
  got.clear();
  for (size_t i = 0; i < 8; ++i) got.push_back(f32_at(mkv, i));
  CHECK(got == std::vector<float>{0, 1, 4, 5, 2, 3, 6, 7});
  CHECK(heads_to_engine(mkv, HeadLayout::kv, 2, "kv").bytes == kv.bytes);

  const Error e = test::expect_error(
      [&] { (void)heads_to_megatron(qkv, HeadLayout::qkv, 5, "blocks.0.attn.qkv.weight"); });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK_THAT(e.message(), Catch::Contains("blocks.0.attn.qkv.weight"));
}

TEST_CASE("Extra-state object keys follow Megatron-Core's ShardedObject naming", "[unit][interop]") {
  const auto keys = megatron_extra_state_keys(2);
  CHECK(keys.size() == 17);
  CHECK(std::count(keys.begin(), keys.end(),
                   "decoder.layers.self_attention.linear_qkv._extra_state/shard_1_2") == 1);
  CHECK(std::count(keys.begin(), keys.end(), "decoder.layers.scale_shift_table._extra_state/shard_0_2") == 1);
  CHECK(keys.back() == "final_layer.scale_shift_table._extra_state/shard_0_1");
  for (const auto& k : keys) CHECK(megatron_key_role(k) == MegatronKeyRole::extra_state);
}

TEST_CASE("Engine weights exported as a Megatron checkpoint come back unchanged", "[unit][interop]") {
  test::TempDir tmp;
  const auto model = tiny_model();
  MegatronExportOptions options;
  options.tensor_parallel = 2;
  options.file_per_rank = true;
  options.iteration = 5;
  const MegatronExportReport report = export_megatron_checkpoint(source_of(model), tmp / "root", options);
  CHECK(report.num_heads == 2);
  CHECK(report.num_layers == 2);
  CHECK(report.checkpoint == tmp / "root" / "iter_0000005");
  CHECK(report.unknown.empty());

  // The Megatron side of the folder.
  CHECK(read_text_file(tmp / "root" / "latest_checkpointed_iteration.txt") == "5");
  CHECK(resolve_megatron_checkpoint(tmp / "root") == report.checkpoint);
  const auto config = read_megatron_config(report.checkpoint);
  REQUIRE(config);
  CHECK(config->sharded_backend == "torch_dist");
  const MegatronCommonState common = read_megatron_common(report.checkpoint);
  CHECK(common.has_args);
  CHECK(common.iteration == 5);
  CHECK(common.checkpoint_version == 3.0);
  CHECK((common.tensor_parallel == 2 && common.pipeline_parallel == 1));
  CHECK((common.num_layers == 2 && common.hidden_size == 8 && common.num_attention_heads == 2));

  // The stacked, tensor-parallel layout: linear_qkv is [layers, 24, 8] in 2 x 2 chunks, rank 1's rows in
  // __1_0.distcp, and layer 1's rows per head (q, k, v of head 0, then of head 1).
  const DistCheckpointReader ckpt = DistCheckpointReader::open(report.checkpoint);
  const DistTensor* qkv = ckpt.find("decoder.layers.self_attention.linear_qkv.weight");
  REQUIRE(qkv);
  CHECK(qkv->shape == std::vector<int64_t>{2, 24, 8});
  REQUIRE(qkv->chunks.size() == 4);
  for (const auto& c : qkv->chunks) {
    CHECK(c.sizes == std::vector<int64_t>{1, 12, 8});
    CHECK(c.file == (c.offsets[1] == 0 ? "__0_0.distcp" : "__1_0.distcp"));
  }
  const TensorData layer1 = ckpt.read_region(qkv->name, {1, 0, 0}, {1, 24, 8});
  const TensorData& engine = model.at("blocks.1.attn.qkv.weight");
  for (int head = 0; head < 2; ++head)
    for (int part = 0; part < 3; ++part)
      for (int c = 0; c < 4; ++c)
        for (int col = 0; col < 8; ++col) {
          const size_t megatron_row = size_t(head * 12 + part * 4 + c),
                       engine_row = size_t(part * 8 + head * 4 + c);
          REQUIRE(f32_at(layer1, megatron_row * 8 + col) == f32_at(engine, engine_row * 8 + col));
        }
  // Row-parallel weights split along columns.
  const DistTensor* fc2 = ckpt.find("decoder.layers.mlp.linear_fc2.weight");
  REQUIRE(fc2);
  CHECK(fc2->chunks[1].sizes == std::vector<int64_t>{1, 8, 16});
  CHECK(ckpt.find("context_embedder.drop_emb"));
  CHECK(ckpt.objects().size() == 17);

  const MegatronImportPlan plan = plan_megatron_import(ckpt);
  CHECK(plan.num_heads == 2);
  CHECK(plan.num_layers == 2);
  CHECK(plan.unknown.empty());
  CHECK(plan.skipped.size() == 17);
  REQUIRE(plan.items.size() == model.size());
  for (const auto& item : plan.items) {
    INFO(item.engine_name);
    REQUIRE(model.count(item.engine_name));
    const TensorData back = read_megatron_tensor(ckpt, plan, item);
    CHECK(back.shape == model.at(item.engine_name).shape);
    CHECK(back.bytes == model.at(item.engine_name).bytes);
  }
}

TEST_CASE("The golden dit weights go to a Megatron checkpoint and back to identical safetensors",
          "[interop][golden]") {
  const auto golden = test::golden_data_file("mugv_dit_tiny.safetensors");
  if (!golden) return;
  test::TempDir tmp;
  const WeightFiles files = WeightFiles::open(*golden);
  MegatronExportOptions options;
  options.tensor_parallel = 2;
  const MegatronExportReport report =
      export_megatron_checkpoint(weight_source(files), tmp / "megatron", options);
  CHECK(report.checkpoint == tmp / "megatron" / "release");
  CHECK(report.num_heads == 2);
  CHECK(report.notes.size() == 2);  // no drop_emb; extra-state versions
  const MegatronImportPlan plan = import_megatron_to_safetensors(tmp / "megatron", tmp / "back.safetensors");
  const SafetensorsFile back = SafetensorsFile::open(tmp / "back.safetensors");
  REQUIRE(back.size() == files.size());
  for (const auto& name : files.names()) {
    INFO(name);
    const TensorView& a = files.at(name);
    const TensorView& b = back.at(name);
    CHECK(a.shape == b.shape);
    REQUIRE(a.size_bytes == b.size_bytes);
    CHECK(std::memcmp(a.data, b.data, a.size_bytes) == 0);
  }
}

TEST_CASE("A Megatron training checkpoint's optimizer and training state are skipped, unknown keys named",
          "[unit][interop]") {
  test::TempDir tmp;
  const TensorData qnorm = f32_tensor({3, 4}, 1);  // 3 layers, head_dim 4
  const TensorData embed = f32_tensor({8, 3, 1, 2, 2}, 2);
  const TensorData qkv = f32_tensor({3, 24, 8}, 3);
  {
    DistCheckpointWriter out(tmp.path());
    out.add_tensor("decoder.layers.self_attention.q_layernorm.weight", DType::f32, qnorm.shape,
                   qnorm.bytes.data(), qnorm.bytes.size());
    out.add_tensor("x_embedder.proj.weight", DType::f32, embed.shape, embed.bytes.data(), embed.bytes.size());
    out.add_tensor("decoder.layers.self_attention.linear_qkv.weight", DType::f32, qkv.shape, qkv.bytes.data(),
                   qkv.bytes.size());
    out.add_tensor("optimizer.state.exp_avg.decoder.layers.self_attention.linear_qkv.weight", DType::f32,
                   qkv.shape, qkv.bytes.data(), qkv.bytes.size());
    out.add_tensor("decoder.layers.mlp.router.weight", DType::f32, qnorm.shape, qnorm.bytes.data(),
                   qnorm.bytes.size());
    out.add_object("rng_state/shard_0.0_1.1", "rng");
    out.finish();
  }
  const DistCheckpointReader ckpt = DistCheckpointReader::open(tmp.path());
  const Error e = test::expect_error([&] { (void)plan_megatron_import(ckpt); });
  CHECK(e.code() == ErrorCode::unsupported);
  CHECK_THAT(e.message(), Catch::Contains("decoder.layers.mlp.router.weight"));

  MegatronImportOptions lenient;
  lenient.allow_unknown = true;
  const MegatronImportPlan plan = plan_megatron_import(ckpt, lenient);
  CHECK(plan.unknown == std::vector<std::string>{"decoder.layers.mlp.router.weight"});
  CHECK(plan.skipped ==
        std::vector<std::string>{"optimizer.state.exp_avg.decoder.layers.self_attention.linear_qkv.weight",
                                 "rng_state/shard_0.0_1.1"});
  // No common.pt: heads from hidden 8 over q_layernorm's width 4.
  CHECK(plan.num_heads == 2);
  CHECK(plan.num_layers == 3);
  CHECK(plan.items.size() == 3 + 1 + 3);
}

TEST_CASE("Export refuses weights it cannot place", "[unit][interop]") {
  test::TempDir tmp;
  SECTION("a name outside the map") {
    auto model = tiny_model();
    model["blocks.0.attn.rope_freqs"] = f32_tensor({4}, 0);
    const Error e =
        test::expect_error([&] { (void)export_megatron_checkpoint(source_of(model), tmp / "a"); });
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK_THAT(e.message(), Catch::Contains("blocks.0.attn.rope_freqs"));
    MegatronExportOptions lenient;
    lenient.allow_unknown = true;
    const auto report = export_megatron_checkpoint(source_of(model), tmp / "b", lenient);
    CHECK(report.unknown == std::vector<std::string>{"blocks.0.attn.rope_freqs"});
  }
  SECTION("a block missing a tensor") {
    auto model = tiny_model();
    model.erase("blocks.1.mlp.fc1.bias");
    CHECK_THAT(
        test::expect_error([&] { (void)export_megatron_checkpoint(source_of(model), tmp / "c"); }).message(),
        Catch::Contains("layer 1 of decoder.layers.mlp.linear_fc1.bias"));
  }
  SECTION("a tensor-parallel size that does not divide the heads") {
    MegatronExportOptions options;
    options.tensor_parallel = 4;
    CHECK_THAT(test::expect_error([&] {
                 (void)export_megatron_checkpoint(source_of(tiny_model()), tmp / "d", options);
               }).message(),
               Catch::Contains("tensor parallel size 4"));
  }
}

TEST_CASE("Import refuses layer counts no DiT has, and plans that do not fit the checkpoint",
          "[unit][interop]") {
  test::TempDir tmp;
  const float none = 0;
  auto plan_of = [&](const std::string& dir, const std::string& name, const std::vector<int64_t>& shape) {
    {
      DistCheckpointWriter out(tmp / dir);
      out.add_tensor(name, DType::f32, shape, &none, 0);
      out.finish();
    }
    const DistCheckpointReader ckpt = DistCheckpointReader::open(tmp / dir);
    return test::expect_error([&] { (void)plan_megatron_import(ckpt); });
  };
  SECTION("a stacked key of a billion layers and no elements") {
    // [1e9, 0] holds no bytes and tiles with one chunk; planned, it would be a billion items.
    const Error e = plan_of("a", "decoder.layers.self_attention.q_layernorm.weight", {1000000000, 0});
    CHECK(e.code() == ErrorCode::format);
    CHECK(e.subject() == (tmp / "a").string());
    CHECK_THAT(e.message(), Catch::Contains("decoder.layers.self_attention.q_layernorm.weight") &&
                                Catch::Contains("1000000000 layers"));
  }
  SECTION("5000 layers") {
    CHECK_THAT(plan_of("b", "decoder.layers.self_attention.q_layernorm.weight", {5000, 0}).message(),
               Catch::Contains("5000 layers"));
  }
  SECTION("no layers") {
    CHECK_THAT(plan_of("c", "decoder.layers.self_attention.q_layernorm.weight", {0, 4}).message(),
               Catch::Contains("0 layers"));
  }
  SECTION("a per-layer key beyond the limit") {
    CHECK_THAT(plan_of("d", "decoder.layers.5000.self_attention.q_layernorm.weight", {0}).message(),
               Catch::Contains("layer 5000"));
  }
  SECTION("a plan item of another shape") {
    const TensorData qnorm = f32_tensor({3, 4}, 1);
    {
      DistCheckpointWriter out(tmp / "e");
      out.add_tensor("decoder.layers.self_attention.q_layernorm.weight", DType::f32, qnorm.shape,
                     qnorm.bytes.data(), qnorm.bytes.size());
      out.finish();
    }
    const DistCheckpointReader ckpt = DistCheckpointReader::open(tmp / "e");
    MegatronImportPlan plan = plan_megatron_import(ckpt);
    REQUIRE(plan.items.size() == 3);
    CHECK(f32_at(read_megatron_tensor(ckpt, plan, plan.items[1]), 0) == f32_at(qnorm, 4));
    plan.items[1].shape = {8};
    const Error e = test::expect_error([&] { (void)read_megatron_tensor(ckpt, plan, plan.items[1]); });
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK_THAT(e.message(), Catch::Contains("blocks.1.attn.q_norm.weight") && Catch::Contains("[8]"));
  }
}
