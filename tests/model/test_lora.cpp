// LoRA on the DiT (model/lora.h) and adapter files in the ecosystem's layouts (model/lora_file.h).
#include "model/lora.h"
#include "model/lora_file.h"

#include "core/error.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "model/dit.h"
#include "model/weights.h"
#include "support/model_fixtures.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>

using namespace mugv;
using mugv::test::TempDir;

namespace {

// The message of the mugv::Error `fn` throws (the test fails when it throws none).
std::string error_text(const std::function<void()>& fn) {
  return test::expect_error(fn).what();
}

DiT random_dit(uint64_t seed = 3) {
  torch::manual_seed(seed);
  DiT dit(test::micro_dit_config());
  torch::NoGradGuard no_grad;
  // adaLN-zero makes a fresh DiT predict zero; random weights make every linear matter.
  for (auto& p : dit->parameters()) p.add_(torch::randn_like(p) * 0.05);
  dit->eval();
  return dit;
}

struct Inputs {
  torch::Tensor x, t, text, mask, fps;
};

Inputs inputs() {
  torch::manual_seed(11);
  Inputs in;
  in.x = torch::randn({2, 4, 3, 4, 6});
  in.t = torch::tensor({300.0f, 800.0f});
  in.text = torch::randn({2, 6, 16});
  in.mask = torch::ones({2, 6});
  in.mask[1].narrow(0, 4, 2).zero_();
  in.fps = torch::tensor({8.0f, 8.0f});
  return in;
}

torch::Tensor run(DiT& dit, const Inputs& in) {
  torch::NoGradGuard no_grad;
  return dit->forward(in.x, in.t, in.text, in.mask, in.fps);
}

// An adapter of rank 4 with random A and B on the targets.
LoraWeights random_adapter(const DiT& dit, const std::vector<std::string>& targets, double alpha = 8) {
  LoraWeights w;
  w.alpha = alpha;
  for (const auto& path : resolve_lora_targets(*dit, targets)) {
    int64_t in = 0, out = 0;
    for (const auto& item : dit->named_parameters())
      if (item.key() == path + ".weight") {
        out = item.value().size(0);
        in = item.value().size(1);
      }
    w.modules[path] = {torch::randn({4, in}) * 0.1, torch::randn({out, 4}) * 0.1, std::nullopt};
  }
  return w;
}

// A torch.save file of named tensors (nested modules, one parameter per leaf), as a PEFT-injected model's
// state dict is saved.
void save_torch_named(const std::map<std::string, torch::Tensor>& tensors, const std::filesystem::path& path,
                      const std::string& prefix) {
  torch::nn::Module root;
  for (const auto& [name, t] : tensors) {
    auto parts = split(name, '.');
    torch::nn::Module* node = &root;
    std::shared_ptr<torch::nn::Module> holder;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto children = node->named_children();
      auto* found = children.find(parts[i]);
      holder = found ? *found : node->register_module(parts[i], std::make_shared<torch::nn::Module>());
      node = holder.get();
    }
    node->register_parameter(parts.back(), t.clone());
  }
  save_module_torch(root, path, prefix);
}

}  // namespace

TEST_CASE("LoRA settings parse from the --lora spec and print back canonically", "[unit][model][lora]") {
  auto c = parse_lora_config("rank=32,alpha=16,targets=attn,mlp");
  CHECK(c.rank == 32);
  CHECK(c.alpha == 16);
  CHECK(c.targets == std::vector<std::string>{"attn", "mlp"});
  CHECK(c.scale() == 0.5);
  CHECK(parse_lora_config(to_string(c)).targets == c.targets);
  CHECK(parse_lora_config("rank=8").alpha == 8);  // alpha defaults to the rank
  CHECK(parse_lora_config("r=4,targets=blocks.*.attn.qkv+final").targets.size() == 2);
  CHECK_THAT(error_text([] { (void)parse_lora_config("rank=0"); }), Catch::Contains("rank"));
  CHECK_THAT(error_text([] { (void)parse_lora_config("rank=4,dropout=1.5"); }), Catch::Contains("dropout"));
  CHECK_THAT(error_text([] { (void)parse_lora_config("rank=4,mlp"); }),
             Catch::Contains("'mlp' is not key=value"));
  CHECK_THAT(error_text([] { (void)parse_lora_config("size=4"); }),
             Catch::Contains("'size' is not a LoRA setting"));
}

TEST_CASE("LoRA targets name groups, patterns and suffixes; one that names nothing is refused",
          "[unit][model][lora]") {
  DiT dit(test::micro_dit_config());
  CHECK(adaptable_linears(*dit).size() == 4 + 2 * 7);
  CHECK(resolve_lora_targets(*dit, {"attn"}) ==
        std::vector<std::string>{"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.attn.qkv",
                                 "blocks.1.attn.proj"});
  CHECK(resolve_lora_targets(*dit, {"cross", "mlp"}).size() == 2 * 5);
  CHECK(resolve_lora_targets(*dit, {"adaln"}) == std::vector<std::string>{"t_block.1"});
  CHECK(resolve_lora_targets(*dit, {"blocks.1.*"}).size() == 7);
  CHECK(resolve_lora_targets(*dit, {"qkv"}).size() == 2);  // PEFT's suffix rule
  CHECK(resolve_lora_targets(*dit, {"all"}).size() == adaptable_linears(*dit).size());
  CHECK_THAT(error_text([&] { (void)resolve_lora_targets(*dit, {"self_attn.q"}); }),
             Catch::Contains("self_attn.q") && Catch::Contains("names no linear"));
  // A linear the forward pass does not route through the adapters is not offered.
  CHECK_THROWS(resolve_lora_targets(*dit, {"t_embedder.mlp.0"}));
}

TEST_CASE("a fresh trainable adapter changes nothing; trained, its parameters carry PEFT names",
          "[unit][model][lora]") {
  DiT dit = random_dit();
  const auto in = inputs();
  const auto before = run(dit, in);
  auto& set = lora_set_of(*dit);
  set.attach_trainable(*dit, parse_lora_config("rank=4,alpha=4,targets=all"));
  CHECK(torch::equal(run(dit, in), before));  // B starts at zero
  std::vector<std::string> lora_names;
  for (const auto& item : dit->named_parameters())
    if (item.key().find("lora_") != std::string::npos) lora_names.push_back(item.key());
  CHECK(lora_names.size() == 2 * adaptable_linears(*dit).size());
  CHECK(std::count(lora_names.begin(), lora_names.end(), "blocks.0.attn.qkv.lora_A.weight") == 1);
  CHECK(std::count(lora_names.begin(), lora_names.end(), "blocks.1.mlp.fc2.lora_B.weight") == 1);
  // Gradients reach A and B only through the adapter path; a second trainable adapter is refused.
  dit->train();
  for (auto& p : dit->parameters()) p.set_requires_grad(false);
  for (const auto& item : dit->named_parameters())
    if (item.key().find("lora_") != std::string::npos) item.value().set_requires_grad(true);
  {
    torch::NoGradGuard no;
    for (const auto& item : dit->named_parameters())
      if (item.key().find("lora_B") != std::string::npos) item.value().normal_(0, 0.1);
  }
  auto out = dit->forward(in.x, in.t, in.text, in.mask, in.fps);
  out.pow(2).mean().backward();
  for (const auto& item : dit->named_parameters()) {
    INFO(item.key());
    CHECK(item.value().grad().defined() == (item.key().find("lora_") != std::string::npos));
  }
  CHECK_THAT(error_text([&] { set.attach_trainable(*dit, LoraConfig{}); }), Catch::Contains("already"));
}

TEST_CASE("merged and unmerged adapters give the same output within 1e-5 (fp32), also with full recompute",
          "[unit][model][lora]") {
  const auto in = inputs();
  DiT base = random_dit();
  const auto plain = run(base, in);
  const LoraWeights a = random_adapter(base, {"all"});
  const LoraWeights b = random_adapter(base, {"attn", "cross"}, 2);

  DiT unmerged = random_dit();
  lora_set_of(*unmerged).attach(*unmerged, a, 0.8, "a");
  lora_set_of(*unmerged).attach(*unmerged, b, -0.5, "b");
  const auto out_unmerged = run(unmerged, in);
  CHECK((out_unmerged - plain).abs().max().item<double>() > 1e-3);  // the adapters matter

  DiT merged = random_dit();
  merge_lora(*merged, a, 0.8, "a");
  merge_lora(*merged, b, -0.5, "b");
  const auto out_merged = run(merged, in);
  CHECK((out_merged - out_unmerged).abs().max().item<double>() < 1e-5);

  // Recomputed blocks rebuild the adapter path in backward: the same gradients as stored activations.
  auto grads = [&](Recompute mode) {
    DiT dit = random_dit();
    lora_set_of(*dit).attach_trainable(*dit, parse_lora_config("rank=4,targets=all"));
    torch::manual_seed(5);
    {
      torch::NoGradGuard no;
      for (const auto& item : dit->named_parameters())
        if (item.key().find("lora_B") != std::string::npos) item.value().normal_(0, 0.1);
    }
    dit->set_recompute(mode);
    dit->forward(in.x, in.t, in.text, in.mask, in.fps).pow(2).sum().backward();
    std::vector<torch::Tensor> out;
    for (const auto& item : dit->named_parameters())
      if (item.key().find("lora_A") != std::string::npos) out.push_back(item.value().grad().clone());
    return out;
  };
  const auto stored = grads(Recompute::none), recomputed = grads(Recompute::full);
  REQUIRE(stored.size() == recomputed.size());
  for (size_t i = 0; i < stored.size(); ++i) CHECK(torch::allclose(stored[i], recomputed[i], 1e-5, 1e-6));
}

TEST_CASE("a training block swap of the frozen base gives the adapters the gradients of an all-on-device run",
          "[unit][model][lora]") {
  torch::manual_seed(21);
  auto in = inputs();
  auto make = [] {
    torch::manual_seed(4);
    DiT dit(test::micro_dit_config(4));
    torch::NoGradGuard no_grad;
    for (auto& p : dit->parameters()) p.add_(torch::randn_like(p) * 0.05);
    for (auto& p : dit->parameters()) p.set_requires_grad(false);  // the frozen base
    torch::manual_seed(5);
    lora_set_of(*dit).attach_trainable(*dit, parse_lora_config("rank=2,targets=attn,cross,mlp"));
    for (const auto& item : dit->named_parameters())
      if (item.key().find("lora_B") != std::string::npos) item.value().normal_(0, 0.1);
    return dit;
  };
  // Two steps' worth of forward + backward, and the gradients of the adapters and of the input.
  auto grads = [&](DiT& dit) {
    std::vector<torch::Tensor> out;
    for (int step = 0; step < 2; ++step) {
      auto x = in.x.clone().requires_grad_(true);
      dit->zero_grad();
      dit->forward(x, in.t, in.text, in.mask, in.fps).pow(2).sum().backward();
      out.push_back(x.grad().clone());
    }
    for (const auto& item : dit->named_parameters())
      if (item.value().requires_grad()) out.push_back(item.value().grad().clone());
    return out;
  };
  DiT kept = make();
  const auto expected = grads(kept);

  DiT swapped = make();
  auto offload = std::make_shared<BlockOffload>(*swapped, torch::Device(torch::kCPU), OffloadUse::training);
  swapped->set_block_offload(offload);
  const auto got = grads(swapped);
  REQUIRE(got.size() == expected.size());
  CHECK(got.size() == 2 + 4 * 2 * 7);  // the input twice; A and B on 7 linears in each of 4 blocks
  for (size_t i = 0; i < got.size(); ++i) CHECK(torch::allclose(got[i], expected[i], 1e-5, 1e-7));
  CHECK(offload->peak_resident_blocks() == 2);  // forward and backward each hold a block and the next one
  // Only the frozen tensors wait in host memory: the adapters' bytes are not in a block's swapped bytes.
  int64_t block0 = 0;
  for (const auto& p : swapped->blocks->ptr<DiTBlockImpl>(0)->parameters())
    if (!p.requires_grad()) block0 += p.numel() * int64_t(p.element_size());
  for (const auto& b : swapped->blocks->ptr<DiTBlockImpl>(0)->buffers())
    block0 += b.numel() * int64_t(b.element_size());
  CHECK(offload->block_bytes() == block0);

  // A model whose blocks all train has nothing to swap.
  DiT full(test::micro_dit_config(2));
  CHECK_THAT(error_text([&] { BlockOffload(*full, torch::Device(torch::kCPU), OffloadUse::training); }),
             Catch::Contains("frozen base"));
}

TEST_CASE("an adapter whose keys match no module is refused with the keys named, the model unchanged",
          "[unit][model][lora]") {
  DiT dit = random_dit();
  const auto in = inputs();
  const auto before = run(dit, in);
  LoraWeights w = random_adapter(dit, {"attn"});
  w.modules["blocks.0.self_attn.q"] = w.modules.begin()->second;
  w.modules["blocks.7.attn.qkv"] = w.modules.begin()->second;
  const std::string message = error_text([&] { lora_set_of(*dit).attach(*dit, w, 1.0, "wan.safetensors"); });
  CHECK_THAT(message, Catch::Contains("wan.safetensors") && Catch::Contains("blocks.0.self_attn.q") &&
                          Catch::Contains("blocks.7.attn.qkv") && Catch::Contains("2 of 6"));
  CHECK(torch::equal(run(dit, in), before));
  CHECK_THROWS(merge_lora(*dit, w, 1.0, "wan.safetensors"));
  CHECK(torch::equal(run(dit, in), before));
  LoraWeights misshapen = random_adapter(dit, {"attn.qkv"});
  misshapen.modules.begin()->second.down = torch::zeros({4, 7});
  CHECK_THAT(error_text([&] { lora_set_of(*dit).attach(*dit, misshapen, 1.0, "f"); }),
             Catch::Contains("blocks.0.attn.qkv") && Catch::Contains("do not fit"));
}

TEST_CASE("SVD extraction recovers a low-rank difference exactly and approximates a full one",
          "[unit][model][lora]") {
  DiT base = random_dit();
  DiT tuned = random_dit();
  const LoraWeights delta = random_adapter(base, {"mlp"});
  merge_lora(*tuned, delta, 1.0, "delta");
  double error = 1;
  const LoraWeights rank4 = extract_lora(*base, *tuned, 4, {"mlp"}, &error);
  CHECK(error < 1e-5);
  DiT rebuilt = random_dit();
  merge_lora(*rebuilt, rank4, 1.0, "extracted");
  CHECK((run(rebuilt, inputs()) - run(tuned, inputs())).abs().max().item<double>() < 1e-5);
  (void)extract_lora(*base, *tuned, 2, {"mlp"}, &error);
  CHECK(error > 0.05);  // rank 2 cannot hold a rank-4 difference
}

TEST_CASE("adapter files round-trip in the PEFT layout and read back by name", "[unit][model][lora]") {
  TempDir dir;
  DiT dit = random_dit();
  const LoraWeights w = random_adapter(dit, {"attn", "adaln"}, 8);
  write_lora_file(dir / "a.safetensors", w, {{"base_model", "dit0@step-3"}});
  auto st = SafetensorsFile::open(dir / "a.safetensors");
  CHECK(st.contains("base_model.model.blocks.0.attn.qkv.lora_A.weight"));
  CHECK(st.contains("base_model.model.t_block.1.lora_B.weight"));
  CHECK(st.metadata().at("lora_alpha") == "8");
  CHECK(st.metadata().at("lora_rank") == "4");

  const LoraFile back = read_lora_file(dir / "a.safetensors");
  CHECK(back.info.layout == "peft");
  CHECK(back.info.prefix == "base_model.model.");
  CHECK(back.info.alpha_source == "metadata lora_alpha");
  REQUIRE(back.weights.modules.size() == w.modules.size());
  for (const auto& [path, m] : w.modules) {
    INFO(path);
    CHECK(torch::equal(back.weights.modules.at(path).down, m.down));
    CHECK(torch::equal(back.weights.modules.at(path).up, m.up));
    CHECK(back.weights.scale_of(path) == 2.0);
  }
  CHECK(to_json(back)["modules"].size() == w.modules.size());
  write_peft_adapter_config(dir.path(), w, 0.05);
  auto config = nlohmann::json::parse(std::ifstream(dir / "adapter_config.json"));
  CHECK(config["r"] == 4);
  CHECK(config["lora_alpha"] == 8.0);
  CHECK(config["target_modules"].size() == w.modules.size());
}

TEST_CASE(
    "foreign adapter layouts load: kohya with alpha tensors, PEFT-injected torch files as the enhancer's",
    "[unit][model][lora]") {
  TempDir dir;
  DiT dit = random_dit();
  const LoraWeights w = random_adapter(dit, {"mlp"});

  SECTION("kohya-style lora_down / lora_up with per-module alpha, diffusion_model. prefix") {
    SafetensorsWriter writer;
    std::vector<torch::Tensor> keep;
    auto add = [&](const std::string& name, torch::Tensor t) {
      keep.push_back(t.contiguous());
      writer.add_borrowed(name, DType::f32, keep.back().sizes().vec(), keep.back().data_ptr(),
                          keep.back().nbytes());
    };
    for (const auto& [path, m] : w.modules) {
      add("diffusion_model." + path + ".lora_down.weight", m.down);
      add("diffusion_model." + path + ".lora_up.weight", m.up);
      add("diffusion_model." + path + ".alpha", torch::tensor(2.0f));
    }
    writer.write(dir / "k.safetensors");
    const LoraFile f = read_lora_file(dir / "k.safetensors");
    CHECK(f.info.layout == "kohya");
    CHECK(f.info.prefix == "diffusion_model.");
    CHECK(f.info.alpha_source == "per-module alpha tensors");
    CHECK(f.weights.scale_of("blocks.0.mlp.fc1") == 0.5);
    DiT a = random_dit(), b = random_dit();
    lora_set_of(*a).attach(*a, f.weights, 1.0, "k");
    LoraWeights halved = w;
    for (auto& [path, m] : halved.modules) m.alpha = 2.0;
    lora_set_of(*b).attach(*b, halved, 1.0, "w");
    CHECK(torch::equal(run(a, inputs()), run(b, inputs())));
  }

  SECTION(
      "a torch.save state dict of a PEFT-injected model: pipe.dit. prefix, adapter 'default', alpha "
      "from adapter_config.json") {
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& [path, m] : w.modules) {
      tensors[path + ".lora_A.default.weight"] = m.down;
      tensors[path + ".lora_B.default.weight"] = m.up;
    }
    save_torch_named(tensors, dir / "pytorch_model.bin", "pipe.dit.");
    std::ofstream(dir / "adapter_config.json") << R"({"r": 4, "lora_alpha": 1.0})";
    const LoraFile f = read_lora_file(dir / "pytorch_model.bin");
    CHECK(f.info.layout == "peft-in-model");
    CHECK(f.info.prefix == "pipe.dit.");
    CHECK(f.info.adapter == "default");
    CHECK(f.info.alpha_source == "adapter_config.json");
    CHECK(f.weights.scale_of("blocks.1.mlp.fc2") == 0.25);
    CHECK(f.weights.modules.size() == w.modules.size());
  }

  SECTION("a Wan-style adapter (the enhancer's module names) is refused by this DiT with the keys named") {
    std::map<std::string, torch::Tensor> tensors{
        {"blocks.0.self_attn.q.lora_A.default.weight", torch::zeros({4, 48})},
        {"blocks.0.self_attn.q.lora_B.default.weight", torch::zeros({48, 4})},
        {"blocks.0.ffn.0.lora_A.default.weight", torch::zeros({4, 48})},
        {"blocks.0.ffn.0.lora_B.default.weight", torch::zeros({48, 4})}};
    save_torch_named(tensors, dir / "enhancer.bin", "pipe.dit.");
    const LoraFile f = read_lora_file(dir / "enhancer.bin");
    CHECK(f.info.alpha_source == "none in the file: alpha = rank (scale 1)");
    CHECK_THAT(error_text([&] { lora_set_of(*dit).attach(*dit, f.weights, 1.0, "enhancer.bin"); }),
               Catch::Contains("blocks.0.ffn.0") && Catch::Contains("blocks.0.self_attn.q") &&
                   Catch::Contains("2 of 2"));
  }

  SECTION("a file with tensors that are not LoRA tensors is refused naming them") {
    save_module(*dit, dir / "model.safetensors");
    CHECK_THAT(error_text([&] { (void)read_lora_file(dir / "model.safetensors"); }),
               Catch::Contains("are not LoRA tensors") && Catch::Contains("blocks.0.attn.qkv.weight"));
    SafetensorsWriter writer;
    auto half = torch::zeros({4, 48});
    writer.add_borrowed("base_model.model.blocks.0.mlp.fc1.lora_A.weight", DType::f32, {4, 48},
                        half.data_ptr(), half.nbytes());
    writer.write(dir / "half.safetensors");
    CHECK_THAT(error_text([&] { (void)read_lora_file(dir / "half.safetensors"); }),
               Catch::Contains("blocks.0.mlp.fc1") && Catch::Contains("without a matching"));
  }
}

TEST_CASE("a lora argument splits FILE:SCALE at the last colon when a number follows",
          "[unit][model][lora]") {
  CHECK(parse_lora_argument("a.safetensors").scale == 1.0);
  CHECK(parse_lora_argument("a.safetensors:0.5").scale == 0.5);
  CHECK(parse_lora_argument("a.safetensors:0.5").file == "a.safetensors");
  CHECK(parse_lora_argument("/x:y/a.safetensors").file == "/x:y/a.safetensors");
  CHECK(parse_lora_argument("a.safetensors:-1").scale == -1.0);
  CHECK_THROWS(parse_lora_argument(":2"));
}
