#include "interop/dist_checkpoint.h"

#include "core/error.h"
#include "interop/hand_assembly.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

using namespace mugv;
namespace fs = std::filesystem;

namespace {

std::vector<float> floats(const TensorData& t) {
  std::vector<float> out(t.bytes.size() / 4);
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  return out;
}

std::vector<uint8_t> bytes_of(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

// A torch_dist folder as two tensor-parallel ranks of Megatron would leave it:
//   W  "decoder.layers.mlp.linear_fc1.weight", f32 [4, 3] = 0..11, rows 0-1 from rank 0 in __0_0.distcp,
//      rows 2-3 from rank 1 in __1_0.distcp (that chunk stored column-major, as a clone of a transposed
//      tensor keeps its strides)
//   B  "final_layer.linear.bias", bf16 [3] = 1, 2, 3, whole, in __0_0.distcp
//   O  "decoder.layers.mlp.linear_fc1._extra_state/shard_0_1", torch.save([None]) as raw bytes, first in
//      __0_0.distcp (torch writes a rank's bytes items before its tensors)
struct HandCheckpoint {
  std::string object, chunk0, bias, chunk1;
  std::vector<test::HandTensor> tensors;
  std::vector<test::HandObject> objects;

  HandCheckpoint() {
    test::PickleBytes none_list;
    none_list.proto(2).op(']').binput(0).none().op('a').stop();
    object = test::torch_style_zip({{"archive/data.pkl", none_list.bytes}, {"archive/version", "3\n"}});
    chunk0 =
        test::hand_tensor_archive("FloatStorage", test::f32_bytes({0, 1, 2, 3, 4, 5}), 6, 0, {2, 3}, {3, 1});
    // Rows 2-3 (values 6..11) column-major: storage 6, 9, 7, 10, 8, 11 with stride [1, 2].
    chunk1 = test::hand_tensor_archive("FloatStorage", test::f32_bytes({6, 9, 7, 10, 8, 11}), 6, 0, {2, 3},
                                       {1, 2});
    bias = test::hand_tensor_archive("BFloat16Storage", test::bf16_bytes({1, 2, 3}), 3, 0, {3}, {1});
    const uint64_t at_chunk0 = object.size(), at_bias = object.size() + chunk0.size();
    tensors = {
        {"decoder.layers.mlp.linear_fc1.weight",
         "float32",
         {4, 3},
         {{{0, 0}, {2, 3}, "__0_0.distcp", at_chunk0, chunk0.size()},
          {{2, 0}, {2, 3}, "__1_0.distcp", 0, chunk1.size()}}},
        {"final_layer.linear.bias", "bfloat16", {3}, {{{0}, {3}, "__0_0.distcp", at_bias, bias.size()}}},
    };
    objects = {{"decoder.layers.mlp.linear_fc1._extra_state/shard_0_1", "__0_0.distcp", 0, object.size()}};
  }

  void write(const fs::path& dir, bool new_torch = false) const {
    fs::create_directories(dir);
    test::write_bytes(dir / ".metadata", test::hand_dcp_metadata(tensors, objects, new_torch));
    test::write_bytes(dir / "__0_0.distcp", object + chunk0 + bias);
    test::write_bytes(dir / "__1_0.distcp", chunk1);
  }
};

}  // namespace

TEST_CASE("A torch_dist folder assembled from the documented structure reads whole and by region",
          "[unit][interop]") {
  test::TempDir tmp;
  const HandCheckpoint hand;
  const bool new_torch = GENERATE(false, true);
  hand.write(tmp.path(), new_torch);
  const DistCheckpointReader r = DistCheckpointReader::open(tmp.path());
  CHECK(r.version() == (new_torch ? "1.0.0" : ""));
  REQUIRE(r.tensors().size() == 2);
  REQUIRE(r.objects().size() == 1);

  const DistTensor* w = r.find("decoder.layers.mlp.linear_fc1.weight");
  REQUIRE(w);
  CHECK(w->dtype == DType::f32);
  CHECK(w->shape == std::vector<int64_t>{4, 3});
  REQUIRE(w->chunks.size() == 2);
  CHECK(w->chunks[1].file == "__1_0.distcp");
  CHECK(w->chunks[1].offsets == std::vector<int64_t>{2, 0});

  CHECK(floats(r.read("decoder.layers.mlp.linear_fc1.weight")) ==
        std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  // Rows 1-2, columns 1-2: across both chunks and both files.
  const TensorData region = r.read_region("decoder.layers.mlp.linear_fc1.weight", {1, 1}, {2, 2});
  CHECK(region.shape == std::vector<int64_t>{2, 2});
  CHECK(floats(region) == std::vector<float>{4, 5, 7, 8});

  const TensorData b = r.read("final_layer.linear.bias");
  CHECK(b.dtype == DType::bf16);
  CHECK(b.bytes == bytes_of(test::bf16_bytes({1, 2, 3})));
  CHECK(r.read_object("decoder.layers.mlp.linear_fc1._extra_state/shard_0_1") == hand.object);

  CHECK(test::expect_error([&] { (void)r.read("nope"); }).code() == ErrorCode::not_found);
  CHECK(test::expect_error([&] { (void)r.read_region("final_layer.linear.bias", {2}, {2}); }).code() ==
        ErrorCode::invalid_argument);
}

TEST_CASE("The writer's torch_dist folders read back, and say what torch expects", "[unit][interop]") {
  test::TempDir tmp;
  const std::vector<float> w{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  const std::vector<float> scalar{2.5f};
  {
    DistCheckpointWriter out(tmp.path());
    // Columns split over two ranks (a row-parallel weight): each chunk's bytes are its own box.
    const std::string left = test::f32_bytes({0, 1, 3, 4, 6, 7, 9, 10});
    const std::string right = test::f32_bytes({2, 5, 8, 11});
    out.add_chunk("w", DType::f32, {4, 3}, {0, 2}, {4, 1}, right.data(), right.size(), 1);
    out.add_chunk("w", DType::f32, {4, 3}, {0, 0}, {4, 2}, left.data(), left.size(), 0);
    out.add_tensor("scalar", DType::f32, {}, scalar.data(), 4);
    out.add_object("obj/shard_0_1", "raw bytes");
    out.finish();
  }
  CHECK(fs::exists(tmp / "__0_0.distcp"));
  CHECK(fs::exists(tmp / "__1_0.distcp"));
  const DistCheckpointReader r = DistCheckpointReader::open(tmp.path());
  CHECK(floats(r.read("w")) == w);
  CHECK(r.read("scalar").shape.empty());
  CHECK(floats(r.read("scalar")) == scalar);
  CHECK(r.read_object("obj/shard_0_1") == "raw bytes");

  // The pickle names the classes torch unpickles.
  const std::string meta = [&] {
    std::ifstream in(tmp / ".metadata", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  const PickleRef md = parse_pickle(reinterpret_cast<const uint8_t*>(meta.data()), meta.size(), "m");
  CHECK(md->class_name() == "torch.distributed.checkpoint.metadata.Metadata");
  const PickleValue* sdm = md->find("state_dict_metadata");
  REQUIRE(sdm);
  const PickleValue* tsm = sdm->find("w");
  REQUIRE(tsm);
  CHECK(tsm->class_name() == "torch.distributed.checkpoint.metadata.TensorStorageMetadata");
  CHECK(tsm->find("properties")->class_name() ==
        "torch.distributed._shard.sharded_tensor.metadata.TensorProperties");
  CHECK(tsm->find("properties")->state->items[0]->is_global("torch", "float32"));
  CHECK(sdm->find("obj/shard_0_1")->class_name() ==
        "torch.distributed.checkpoint.metadata.BytesStorageMetadata");
  const PickleValue* storage = md->find("storage_data");
  REQUIRE(storage->entries.size() == 4);
  CHECK(storage->entries[0].second->class_name() == "torch.distributed.checkpoint.filesystem._StorageInfo");
}

TEST_CASE("The writer refuses chunks that do not tile their tensor, and existing checkpoints",
          "[unit][interop]") {
  test::TempDir tmp;
  const std::string six = test::f32_bytes({1, 2, 3, 4, 5, 6});
  SECTION("a chunk outside the tensor") {
    DistCheckpointWriter out(tmp / "a");
    const Error e = test::expect_error([&] {
      out.add_chunk("w", DType::f32, {4, 3}, {3, 0}, {2, 3}, six.data(), 24);
    });
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK_THAT(e.message(), Catch::Contains("'w'") && Catch::Contains("outside"));
  }
  SECTION("overlapping chunks") {
    DistCheckpointWriter out(tmp / "b");
    out.add_chunk("w", DType::f32, {4, 3}, {0, 0}, {2, 3}, six.data(), 24);
    out.add_chunk("w", DType::f32, {4, 3}, {1, 0}, {2, 3}, six.data(), 24);
    const Error e = test::expect_error([&] { out.finish(); });
    CHECK_THAT(e.message(), Catch::Contains("'w'") && Catch::Contains("overlap"));
    CHECK(!fs::exists(tmp / "b" / ".metadata"));
  }
  SECTION("a tensor left partly uncovered") {
    DistCheckpointWriter out(tmp / "c");
    out.add_chunk("w", DType::f32, {4, 3}, {0, 0}, {2, 3}, six.data(), 24);
    CHECK_THAT(test::expect_error([&] { out.finish(); }).message(), Catch::Contains("cover 6 of the 12"));
  }
  SECTION("bytes that do not match the chunk") {
    DistCheckpointWriter out(tmp / "d");
    CHECK(test::expect_error([&] {
            out.add_chunk("w", DType::f32, {4, 3}, {0, 0}, {2, 3}, six.data(), 20);
          }).code() == ErrorCode::invalid_argument);
  }
  SECTION("an existing checkpoint") {
    { DistCheckpointWriter(tmp / "e").finish(); }
    CHECK(test::expect_error([&] { DistCheckpointWriter again(tmp / "e"); }).code() == ErrorCode::conflict);
    DistCheckpointWriter replace(tmp / "e", DistCheckpointWriter::Options{true});
    replace.add_tensor("x", DType::f32, {6}, six.data(), 24);
    replace.finish();
    CHECK(DistCheckpointReader::open(tmp / "e").tensors().count("x") == 1);
  }
}

TEST_CASE("Damaged torch_dist folders are errors naming the file and the tensor", "[unit][interop]") {
  test::TempDir tmp;
  HandCheckpoint hand;
  const std::string tensor = "decoder.layers.mlp.linear_fc1.weight";
  SECTION("a truncated .distcp file") {
    hand.write(tmp.path());
    test::write_bytes(tmp / "__1_0.distcp", hand.chunk1.substr(0, hand.chunk1.size() - 10));
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); });
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK(e.subject() == (tmp / "__1_0.distcp").string());
    CHECK_THAT(e.message(), Catch::Contains("truncated") && Catch::Contains(tensor));
  }
  SECTION("a missing .distcp file") {
    hand.write(tmp.path());
    fs::remove(tmp / "__1_0.distcp");
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); });
    CHECK(e.code() == ErrorCode::not_found);
    CHECK(e.subject() == (tmp / "__1_0.distcp").string());
    CHECK_THAT(e.message(), Catch::Contains(tensor));
  }
  SECTION("a chunk missing from the metadata") {
    hand.tensors[0].chunks.pop_back();
    hand.write(tmp.path());
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); });
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK(e.subject() == (tmp / ".metadata").string());
    CHECK_THAT(e.message(), Catch::Contains(tensor) && Catch::Contains("cover 6 of the 12"));
  }
  SECTION("overlapping chunks in the metadata") {
    hand.tensors[0].chunks[1].offsets = {1, 0};
    hand.write(tmp.path());
    CHECK_THAT(test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); }).message(),
               Catch::Contains("overlap"));
  }
  SECTION("a chunk that decodes to another shape") {
    hand.chunk1 = test::hand_tensor_archive("FloatStorage", test::f32_bytes({6, 7, 8, 9, 10, 11}), 6, 0,
                                            {3, 2}, {2, 1});
    hand.tensors[0].chunks[1].length = hand.chunk1.size();
    hand.write(tmp.path());
    const DistCheckpointReader r = DistCheckpointReader::open(tmp.path());
    const Error e = test::expect_error([&] { (void)r.read(tensor); });
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK_THAT(e.subject(), Catch::Contains("__1_0.distcp"));
    CHECK_THAT(e.message(), Catch::Contains(tensor) && Catch::Contains("[3, 2]"));
    // The other chunk alone still reads.
    CHECK(floats(r.read_region(tensor, {0, 0}, {2, 3})) == std::vector<float>{0, 1, 2, 3, 4, 5});
  }
  SECTION("a bad opcode in .metadata") {
    std::string meta = test::hand_dcp_metadata(hand.tensors, hand.objects);
    // After PROTO and FRAME (2 + 9 bytes) comes the first opcode; make it protocol 0's INT.
    meta[11] = 'I';
    fs::create_directories(tmp.path());
    test::write_bytes(tmp / ".metadata", meta);
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); });
    CHECK(e.code() == ErrorCode::unsupported);
    CHECK(e.subject() == (tmp / ".metadata").string());
    CHECK_THAT(e.message(), Catch::Contains("byte 11") && Catch::Contains("'I'"));
  }
  SECTION("no .metadata") {
    fs::create_directories(tmp.path());
    CHECK(test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); }).code() ==
          ErrorCode::not_found);
  }
  SECTION("a chunk listed twice") {
    hand.tensors[0].chunks.push_back(hand.tensors[0].chunks[0]);
    hand.write(tmp.path());
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); });
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK_THAT(e.message(), Catch::Contains(tensor) && Catch::Contains("two chunks at [0, 0]"));
  }
  SECTION("a shape of 65 dimensions") {
    hand.tensors[1].shape = std::vector<int64_t>(65, 1);
    hand.write(tmp.path());
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); });
    CHECK(e.code() == ErrorCode::format);
    CHECK_THAT(e.message(), Catch::Contains("'final_layer.linear.bias' size has 65 dimensions"));
  }
  SECTION("a relative path of 5000 bytes") {
    hand.tensors[1].chunks[0].file = std::string(5000, 'f');
    hand.write(tmp.path());
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); });
    CHECK(e.code() == ErrorCode::format);
    CHECK_THAT(e.message(), Catch::Contains("relative_path is 5000 bytes long"));
  }
  SECTION("a chunk whose stored bytes cannot hold its elements") {
    hand.tensors[0].chunks[1].length = 20;
    hand.write(tmp.path());
    CHECK_THAT(test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); }).message(),
               Catch::Contains("cannot fit"));
  }
}

TEST_CASE("Items sharing bytes of a .distcp file are refused when the folder is opened", "[unit][interop]") {
  test::TempDir tmp;
  HandCheckpoint hand;
  const std::string file0 = (tmp / "__0_0.distcp").string();
  SECTION("a thousand chunks of one tensor on the same 1 KB") {
    // Each chunk decodes whole when read, so 1 KB of file would stand for a [2000, 3] tensor.
    const std::string extra = hand.chunk0;
    const uint64_t at = hand.object.size() + hand.chunk0.size() + hand.bias.size();
    test::HandTensor big{"big", "float32", {2000, 3}, {}};
    for (int64_t i = 0; i < 1000; ++i)
      big.chunks.push_back({{2 * i, 0}, {2, 3}, "__0_0.distcp", at, extra.size()});
    hand.tensors.push_back(big);
    hand.write(tmp.path());
    test::write_bytes(tmp / "__0_0.distcp", hand.object + hand.chunk0 + hand.bias + extra);
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); });
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK(e.subject() == file0);
    CHECK_THAT(e.message(), Catch::Contains("the chunk of 'big' at [") && Catch::Contains("overlap"));
  }
  SECTION("an object over part of a tensor's chunk") {
    hand.objects[0].at = hand.object.size() + hand.chunk0.size() + 8;  // inside the bias chunk
    hand.objects[0].length = 16;
    hand.write(tmp.path());
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); });
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK(e.subject() == file0);
    CHECK_THAT(e.message(),
               Catch::Contains("the chunk of 'final_layer.linear.bias' at [0]") &&
                   Catch::Contains("object 'decoder.layers.mlp.linear_fc1._extra_state/shard_0_1'"));
  }
  SECTION("items in different files may share offsets") {
    hand.write(tmp.path());
    CHECK(DistCheckpointReader::open(tmp.path()).tensors().size() == 2);
  }
}

namespace {

// A folder whose .metadata gives tensor `name` (f32 `shape`) the chunks `boxes`, each 4 bytes of one file;
// the chunks are never decoded, only checked by open().
void write_chunk_grid(const fs::path& dir, const std::vector<int64_t>& shape,
                      const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>>& boxes) {
  test::HandTensor t{"t", "float32", shape, {}};
  uint64_t at = 0;
  for (const auto& [off, size] : boxes) {
    t.chunks.push_back({off, size, "__0_0.distcp", at, 4});
    at += 4;
  }
  fs::create_directories(dir);
  test::write_bytes(dir / ".metadata", test::hand_dcp_metadata({t}, {}));
  test::write_bytes(dir / "__0_0.distcp", std::string(size_t(at), '\0'));
}

}  // namespace

TEST_CASE("Tens of thousands of chunks are checked in n log n when split along one or two dimensions",
          "[unit][interop]") {
  test::TempDir tmp;
  using Boxes = std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>>;
  SECTION("a row of 20000 single elements: every chunk shares its first offset") {
    Boxes boxes;
    for (int64_t i = 0; i < 20000; ++i) boxes.push_back({{0, i}, {1, 1}});
    write_chunk_grid(tmp.path(), {1, 20000}, boxes);
    CHECK(DistCheckpointReader::open(tmp.path()).find("t")->chunks.size() == 20000);
    // One in the middle grown over its neighbour.
    boxes[10000].second = {1, 2};
    write_chunk_grid(tmp / "bad", {1, 20000}, boxes);
    CHECK_THAT(test::expect_error([&] { (void)DistCheckpointReader::open(tmp / "bad"); }).message(),
               Catch::Contains("chunks at [0, 10000] and [0, 10001] overlap"));
  }
  SECTION("5000 rows over 5000 columns: no order of the chunks keeps neighbours together") {
    // [10000, 5000]: rows 0-4999 as one chunk each, then rows 5000-9999 as one chunk per column.
    Boxes boxes;
    for (int64_t i = 0; i < 5000; ++i) boxes.push_back({{i, 0}, {1, 5000}});
    for (int64_t j = 0; j < 5000; ++j) boxes.push_back({{5000, j}, {5000, 1}});
    write_chunk_grid(tmp.path(), {10000, 5000}, boxes);
    // The chunks' 4 bytes cannot hold 5000 elements: that is checked after the tiling.
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp.path()); });
    CHECK_THAT(e.message(), Catch::Contains("cannot fit"));
    boxes.push_back({{4999, 2500}, {2, 1}});  // the last row and the first of the columns
    write_chunk_grid(tmp / "bad", {10000, 5000}, boxes);
    CHECK_THAT(test::expect_error([&] { (void)DistCheckpointReader::open(tmp / "bad"); }).message(),
               Catch::Contains("[4999, 2500]") && Catch::Contains("overlap"));
  }
  SECTION("split along three dimensions: 4096 chunks are checked, more are refused") {
    Boxes boxes;
    for (int64_t a = 0; a < 16; ++a)
      for (int64_t b = 0; b < 16; ++b)
        for (int64_t c = 0; c < 16; ++c) boxes.push_back({{a, b, c}, {1, 1, 1}});
    write_chunk_grid(tmp.path(), {16, 16, 16}, boxes);
    CHECK(DistCheckpointReader::open(tmp.path()).find("t")->chunks.size() == 4096);
    for (int64_t b = 0; b < 16; ++b)
      for (int64_t c = 0; c < 16; ++c) boxes.push_back({{16, b, c}, {1, 1, 1}});
    write_chunk_grid(tmp / "many", {17, 16, 16}, boxes);
    const Error e = test::expect_error([&] { (void)DistCheckpointReader::open(tmp / "many"); });
    CHECK(e.code() == ErrorCode::unsupported);
    CHECK_THAT(e.message(), Catch::Contains("'t'") && Catch::Contains("4352 chunks"));
  }
}

TEST_CASE("Chunk tilings are judged as a cell-by-cell count judges them", "[unit][interop]") {
  test::TempDir tmp;
  using Box = std::pair<std::vector<int64_t>, std::vector<int64_t>>;
  int trial = 0;
  // Writes `boxes` through the writer; returns finish()'s message, "added: ..." when add_chunk refused, or
  // an empty string.
  auto judge = [&](const std::vector<int64_t>& shape, const std::vector<Box>& boxes) -> std::string {
    DistCheckpointWriter out(tmp / std::to_string(trial++));
    try {
      for (const auto& [off, size] : boxes) {
        int64_t n = 1;
        for (int64_t d : size) n *= d;
        const std::string data(size_t(n) * 4, '\0');
        out.add_chunk("w", DType::f32, shape, off, size, data.data(), data.size());
      }
    } catch (const Error& e) {
      return "added: " + e.message();
    }
    try {
      out.finish();
    } catch (const Error& e) {
      return e.message();
    }
    return {};
  };
  // 0: uncovered somewhere, 1: a tiling, 2: overlapping somewhere.
  auto count = [](const std::vector<int64_t>& shape, const std::vector<Box>& boxes) {
    int64_t total = 1;
    for (int64_t d : shape) total *= d;
    std::vector<int> cells(size_t(total), 0);
    for (const auto& [off, size] : boxes) {
      std::vector<int64_t> i(shape.size(), 0);
      int64_t n = 1;
      for (int64_t d : size) n *= d;
      for (int64_t e = 0; e < n; ++e) {
        int64_t rest = e, flat = 0;
        for (size_t k = shape.size(); k-- > 0;) {
          i[k] = off[k] + rest % size[k];
          rest /= size[k];
        }
        for (size_t k = 0; k < shape.size(); ++k) flat = flat * shape[k] + i[k];
        ++cells[size_t(flat)];
      }
    }
    int verdict = 1;
    for (int c : cells) {
      if (c > 1) return 2;
      if (c == 0) verdict = 0;
    }
    return verdict;
  };
  auto expect = [&](const std::vector<int64_t>& shape, const std::vector<Box>& boxes) {
    const int truth = count(shape, boxes);
    const std::string said = judge(shape, boxes);
    INFO("trial " << trial << ": " << said);
    if (truth == 1) {
      CHECK(said.empty());
    } else if (truth == 2) {
      CHECK_THAT(said, Catch::Contains("overlap") || Catch::Contains("already added"));
    } else {
      CHECK_THAT(said, Catch::Contains("cover"));
    }
  };
  // A pinwheel (no cut runs across it) and a brick wall tile; nudged, they do not.
  expect({3, 3}, {{{0, 0}, {1, 2}}, {{0, 2}, {2, 1}}, {{2, 1}, {1, 2}}, {{1, 0}, {2, 1}}, {{1, 1}, {1, 1}}});
  expect({3, 3}, {{{0, 0}, {1, 2}}, {{0, 2}, {2, 1}}, {{2, 1}, {1, 2}}, {{1, 0}, {2, 1}}, {{1, 1}, {2, 1}}});
  expect({2, 4}, {{{0, 0}, {1, 2}}, {{0, 2}, {1, 2}}, {{1, 0}, {1, 1}}, {{1, 1}, {1, 2}}, {{1, 3}, {1, 1}}});
  expect({2, 4}, {{{0, 0}, {2, 3}}, {{1, 2}, {1, 2}}, {{0, 3}, {1, 1}}});  // meets its left neighbour
  expect({2, 4}, {{{0, 2}, {2, 2}}, {{1, 0}, {1, 3}}, {{0, 0}, {1, 2}}});  // meets its right neighbour
  expect({2, 2, 2}, {{{0, 0, 0}, {2, 2, 2}}, {{1, 1, 1}, {1, 1, 1}}});
  // Random guillotine tilings of shapes of one to four dimensions, most of them then nudged.
  std::mt19937 rng(20240611);
  auto pick = [&rng](int64_t n) { return int64_t(std::uniform_int_distribution<int64_t>(0, n - 1)(rng)); };
  const std::vector<std::vector<int64_t>> shapes{{7}, {4, 5}, {3, 4, 3}, {2, 3, 2, 3}};
  for (const auto& shape : shapes)
    for (int round = 0; round < 30; ++round) {
      std::vector<Box> boxes{{std::vector<int64_t>(shape.size(), 0), shape}};
      for (int cut = 0; cut < 7; ++cut) {
        Box& b = boxes[size_t(pick(int64_t(boxes.size())))];
        const size_t k = size_t(pick(int64_t(shape.size())));
        if (b.second[k] < 2) continue;
        const int64_t at = 1 + pick(b.second[k] - 1);
        Box other = b;
        other.first[k] += at;
        other.second[k] -= at;
        b.second[k] = at;
        boxes.push_back(other);
      }
      if (round % 5 != 0) {
        Box& b = boxes[size_t(pick(int64_t(boxes.size())))];
        const size_t k = size_t(pick(int64_t(shape.size())));
        switch (pick(4)) {
          case 0:
            if (b.first[k] > 0) --b.first[k];
            break;
          case 1:
            if (b.first[k] + b.second[k] < shape[k]) ++b.first[k];
            break;
          case 2:
            if (b.first[k] + b.second[k] < shape[k]) ++b.second[k];
            break;
          default:
            if (b.second[k] > 1) --b.second[k];
            break;
        }
      }
      expect(shape, boxes);
    }
}
