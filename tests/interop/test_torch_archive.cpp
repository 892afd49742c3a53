#include "interop/torch_archive.h"

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"
#include "core/torch_pickle.h"
#include "core/zip_archive.h"
#include "interop/hand_assembly.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cstring>

using namespace mugv;
using mugv::test::PickleBytes;

namespace {

const uint8_t* u8(const std::string& s) {
  return reinterpret_cast<const uint8_t*>(s.data());
}

std::vector<float> floats(const TensorData& t) {
  std::vector<float> out(t.bytes.size() / 4);
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  return out;
}

}  // namespace

TEST_CASE("A torch.save archive assembled from the documented layout reads a strided view",
          "[unit][interop]") {
  // Storage of 12 floats 0..11; the tensor is the transposed 3x3 view starting at element 1:
  // element (i, j) = storage[1 + i + 3 j].
  std::vector<float> storage;
  for (int i = 0; i < 12; ++i) storage.push_back(float(i));
  const std::string bytes =
      test::hand_tensor_archive("FloatStorage", test::f32_bytes(storage), 12, 1, {3, 3}, {1, 3}, "chunk");
  const TorchArchive archive = TorchArchive::parse(u8(bytes), bytes.size(), "chunk.pt");
  CHECK(archive.archive_name() == "chunk");
  CHECK(TorchArchive::is_tensor(*archive.root()));
  const TensorData t = archive.single_tensor();
  CHECK(t.dtype == DType::f32);
  CHECK(t.shape == std::vector<int64_t>{3, 3});
  CHECK(floats(t) == std::vector<float>{1, 4, 7, 2, 5, 8, 3, 6, 9});
  const TorchTensorHeader h = archive.header(*archive.root(), "t");
  CHECK((h.dtype == DType::f32 && h.shape == std::vector<int64_t>{3, 3}));
}

TEST_CASE("A contiguous bf16 view at a storage offset reads its own elements", "[unit][interop]") {
  const std::string bytes = test::hand_tensor_archive("BFloat16Storage", test::bf16_bytes({9, 1, 2, 3, 4, 9}),
                                                      6, 1, {2, 2}, {2, 1});
  const TensorData t = TorchArchive::parse(u8(bytes), bytes.size(), "x").single_tensor();
  CHECK(t.dtype == DType::bf16);
  const std::string expected = test::bf16_bytes({1, 2, 3, 4});
  CHECK(t.bytes == std::vector<uint8_t>(expected.begin(), expected.end()));
}

TEST_CASE("The writer's archives read back, storages 64-byte aligned, every dtype kind", "[unit][interop]") {
  const std::vector<float> values{1.5f, -2, 3, 4, 5, 6};
  const std::string f32 = test::f32_bytes(values);
  const std::string bytes = save_torch_tensor(DType::f32, {2, 3}, f32.data(), f32.size());
  const TorchArchive archive = TorchArchive::parse(u8(bytes), bytes.size(), "w");
  const TensorData t = archive.single_tensor();
  CHECK(t.shape == std::vector<int64_t>{2, 3});
  CHECK(floats(t) == values);
  const ZipArchive zip = ZipArchive::parse(u8(bytes), bytes.size(), "w");
  REQUIRE(zip.find("archive/data/0"));
  CHECK(zip.find("archive/data/0")->data_offset % 64 == 0);
  CHECK(zip.find("archive/version"));
  CHECK(zip.find("archive/byteorder"));

  // float8 has no typed storage class: torch writes UntypedStorage and _rebuild_tensor_v3.
  const std::string f8 = "\x01\x02\x03";
  const std::string f8_archive = save_torch_tensor(DType::f8_e4m3, {3}, f8.data(), f8.size());
  const TorchArchive a8 = TorchArchive::parse(u8(f8_archive), f8_archive.size(), "f8");
  CHECK(a8.root()->is_object_of("_rebuild_tensor_v3", "torch._utils"));
  const TensorData t8 = a8.single_tensor();
  CHECK(t8.dtype == DType::f8_e4m3);
  CHECK(t8.bytes == std::vector<uint8_t>{1, 2, 3});

  // A dict of tensors and other values, as a state dict.
  TorchArchiveWriter w("sd");
  const int64_t i64[2] = {7, -8};
  PickleRef a = w.add_tensor(DType::i64, {2}, i64, sizeof i64);
  PickleRef scalar = w.add_tensor(DType::f32, {}, f32.data(), 4);
  const std::string sd = w.finish(
      make_dict({{make_string("a"), a}, {make_string("epoch"), make_int(3)}, {make_string("s"), scalar}}));
  const auto dict = TorchArchive::parse(u8(sd), sd.size(), "sd").tensor_dict();
  REQUIRE(dict.size() == 2);
  CHECK(dict[0].first == "a");
  CHECK(dict[0].second.dtype == DType::i64);
  CHECK(dict[1].second.shape.empty());
  CHECK(floats(dict[1].second) == std::vector<float>{1.5f});
}

TEST_CASE("The released-format golden dit checkpoint reads tensor for tensor like its safetensors twin",
          "[interop][golden]") {
  const auto pt = test::golden_data_file("mugv_dit_tiny.pt");
  const auto st = test::golden_data_file("mugv_dit_tiny.safetensors");
  if (!pt || !st) return;
  const MappedFile file = MappedFile::open(*pt);
  const TorchArchive archive = TorchArchive::parse(file.data(), file.size_bytes(), pt->string());
  const auto tensors = archive.tensor_dict();
  const SafetensorsFile reference = SafetensorsFile::open(*st);
  REQUIRE(tensors.size() == reference.size());
  for (const auto& [name, t] : tensors) {
    INFO(name);
    const TensorView& v = reference.at(name);
    CHECK(t.dtype == v.dtype);
    CHECK(t.shape == v.shape);
    REQUIRE(t.bytes.size() == v.size_bytes);
    CHECK(std::memcmp(t.bytes.data(), v.data, v.size_bytes) == 0);
  }
}

TEST_CASE("Damaged archives are errors naming the archive and the tensor", "[unit][interop]") {
  const std::vector<float> storage{1, 2, 3, 4};
  SECTION("a view past the end of its storage") {
    const std::string bytes =
        test::hand_tensor_archive("FloatStorage", test::f32_bytes(storage), 4, 2, {3}, {1});
    const Error e = test::expect_error(
        [&] { (void)TorchArchive::parse(u8(bytes), bytes.size(), "c.pt").single_tensor(); });
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK(e.subject() == "c.pt");
    CHECK_THAT(e.message(), Catch::Contains("the saved tensor") && Catch::Contains("past its storage"));
  }
  SECTION("a storage whose bytes fail their CRC") {
    std::string bytes = test::hand_tensor_archive("FloatStorage", test::f32_bytes(storage), 4, 0, {4}, {1});
    const size_t at = bytes.find(test::f32_bytes(storage));
    REQUIRE(at != std::string::npos);
    bytes[at + 5] ^= 0x40;
    const Error e = test::expect_error(
        [&] { (void)TorchArchive::parse(u8(bytes), bytes.size(), "c.pt").single_tensor(); });
    CHECK(e.code() == ErrorCode::corrupt);
  }
  SECTION("a storage shorter than declared") {
    const std::string bytes =
        test::hand_tensor_archive("FloatStorage", test::f32_bytes({1, 2}), 4, 0, {4}, {1});
    const Error e = test::expect_error(
        [&] { (void)TorchArchive::parse(u8(bytes), bytes.size(), "c.pt").single_tensor(); });
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK_THAT(e.message(), Catch::Contains("archive/data/0"));
  }
  SECTION("a storage class that is not read") {
    const std::string bytes =
        test::hand_tensor_archive("ComplexFloatStorage", std::string(32, '\0'), 4, 0, {4}, {1});
    const Error e = test::expect_error(
        [&] { (void)TorchArchive::parse(u8(bytes), bytes.size(), "c.pt").single_tensor(); });
    CHECK(e.code() == ErrorCode::unsupported);
    CHECK_THAT(e.message(), Catch::Contains("ComplexFloatStorage"));
  }
  SECTION("not a zip") {
    const std::string bytes = "\x80\x02N.";
    CHECK(test::expect_error([&] { (void)TorchArchive::parse(u8(bytes), bytes.size(), "c.pt"); }).code() ==
          ErrorCode::format);
  }
  SECTION("a zip without data.pkl") {
    const std::string bytes = test::torch_style_zip({{"archive/version", "3\n"}});
    const Error e = test::expect_error([&] { (void)TorchArchive::parse(u8(bytes), bytes.size(), "c.pt"); });
    CHECK(e.code() == ErrorCode::format);
    CHECK_THAT(e.message(), Catch::Contains("data.pkl"));
  }
  SECTION("big-endian data") {
    PickleBytes p;
    p.proto(2).none().stop();
    const std::string bytes =
        test::torch_style_zip({{"archive/data.pkl", p.bytes}, {"archive/byteorder", "big"}});
    CHECK(test::expect_error([&] { (void)TorchArchive::parse(u8(bytes), bytes.size(), "c.pt"); }).code() ==
          ErrorCode::unsupported);
  }
}

TEST_CASE("An expanded view is read up to a bound, and refused beyond it", "[unit][interop]") {
  SECTION("a small expanded view reads its repeated elements") {
    // x = torch.tensor([1., 2.]).expand(3, 2): stride 0 along the new axis.
    const std::string bytes =
        test::hand_tensor_archive("FloatStorage", test::f32_bytes({1, 2}), 2, 0, {3, 2}, {0, 1});
    const TensorData t = TorchArchive::parse(u8(bytes), bytes.size(), "e.pt").single_tensor();
    CHECK(t.shape == std::vector<int64_t>{3, 2});
    CHECK(floats(t) == std::vector<float>{1, 2, 1, 2, 1, 2});
  }
  SECTION("one element expanded to 4 TiB is an error, not an allocation") {
    const std::string bytes =
        test::hand_tensor_archive("FloatStorage", test::f32_bytes({1}), 1, 0, {1 << 20, 1 << 20}, {0, 0});
    const TorchArchive archive = TorchArchive::parse(u8(bytes), bytes.size(), "e.pt");
    const Error e = test::expect_error([&] { (void)archive.single_tensor(); });
    CHECK(e.code() == ErrorCode::unsupported);
    CHECK(e.subject() == "e.pt");
    CHECK_THAT(e.message(), Catch::Contains("the saved tensor") && Catch::Contains("expanded") &&
                                Catch::Contains("4398046511104 bytes"));
    CHECK(test::expect_error([&] { (void)archive.header(*archive.root(), "'w'"); }).code() ==
          ErrorCode::unsupported);
  }
  SECTION("a 100 MB view of 4 bytes is refused too") {
    const std::string bytes =
        test::hand_tensor_archive("FloatStorage", test::f32_bytes({1}), 1, 0, {5000, 5000}, {0, 0});
    const Error e = test::expect_error(
        [&] { (void)TorchArchive::parse(u8(bytes), bytes.size(), "e.pt").single_tensor(); });
    CHECK(e.code() == ErrorCode::unsupported);
  }
}

TEST_CASE("One tensor under many keys of a dict is materialised only up to a bound", "[unit][interop]") {
  // 1 MiB of storage named by 200 keys: the pickle fetches it from the memo, each key gets a copy.
  const std::vector<float> values(size_t(1) << 18, 0.5f);
  auto archive_of = [&](int keys) {
    TorchArchiveWriter writer;
    const PickleRef t =
        writer.add_tensor(DType::f32, {int64_t(values.size())}, values.data(), values.size() * 4);
    std::vector<std::pair<PickleRef, PickleRef>> entries;
    for (int i = 0; i < keys; ++i) entries.emplace_back(make_string("k" + std::to_string(i)), t);
    return writer.finish(make_dict(std::move(entries)));
  };
  const std::string some = archive_of(20);
  CHECK(TorchArchive::parse(u8(some), some.size(), "d.pt").tensor_dict().size() == 20);
  const std::string many = archive_of(200);
  const Error e =
      test::expect_error([&] { (void)TorchArchive::parse(u8(many), many.size(), "d.pt").tensor_dict(); });
  CHECK(e.code() == ErrorCode::unsupported);
  CHECK(e.subject() == "d.pt");
  CHECK_THAT(e.message(), Catch::Contains("many keys"));
}

TEST_CASE("A Parameter counts as a tensor one level deep, however deep a pickle nests them",
          "[unit][interop]") {
  const std::string bytes =
      test::hand_tensor_archive("FloatStorage", test::f32_bytes({1, 2}), 2, 0, {2}, {1});
  const TorchArchive archive = TorchArchive::parse(u8(bytes), bytes.size(), "p.pt");
  auto parameter = [](PickleRef data) {
    return make_reduce(
        make_global("torch._utils", "_rebuild_parameter"),
        {std::move(data), make_bool(true), make_reduce(make_global("collections", "OrderedDict"), {})});
  };
  const PickleRef once = parameter(archive.root());
  CHECK(TorchArchive::is_tensor(*once));
  CHECK(floats(archive.tensor(*once, "'p'")) == std::vector<float>{1, 2});
  // torch.save never nests Parameters; view() does not read them, so is_tensor() must not claim them.
  const PickleRef twice = parameter(once);
  CHECK(!TorchArchive::is_tensor(*twice));
  CHECK(test::expect_error([&] { (void)archive.tensor(*twice, "'p'"); }).code() == ErrorCode::format);
  // A chain as deep as a few MB of pickle can make is answered without recursion.
  const PickleRef rebuild = make_global("torch._utils", "_rebuild_parameter");
  PickleRef deep = archive.root();
  for (int i = 0; i < 100000; ++i) deep = make_reduce(rebuild, {deep});
  CHECK(!TorchArchive::is_tensor(*deep));
}

TEST_CASE("float8 state dicts cross between the checkpoint reader and writer and torch's form",
          "[unit][interop]") {
  // torch.save has no typed storage class for float8: it writes torch.UntypedStorage (numel in bytes) and
  // _rebuild_tensor_v3 with the dtype. The weights' reader and writer (core/torch_checkpoint.h) and this
  // library's archive reader and writer (written from torch's sources separately) must agree on that form.
  test::TempDir dir;
  const uint8_t e4m3[4] = {0x38, 0x40, 0x00, 0x7e};
  const float f32[2] = {1.5f, -2.0f};

  TorchCheckpointWriter checkpoint(dir / "w.pt");
  checkpoint.add("scale", DType::f32, {2}, f32, sizeof f32);
  checkpoint.add("weight", DType::f8_e4m3, {2, 2}, e4m3, sizeof e4m3);
  checkpoint.finish();
  const MappedFile file = MappedFile::open(dir / "w.pt");
  const TorchArchive archive = TorchArchive::parse(file.data(), file.size_bytes(), "w.pt");
  const auto& entries = archive.root()->entries;  // an OrderedDict: an object with SETITEMS entries
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].second->is_object_of("_rebuild_tensor_v2", "torch._utils"));
  CHECK(entries[1].first->text == "weight");
  CHECK(entries[1].second->is_object_of("_rebuild_tensor_v3", "torch._utils"));
  const auto dict = archive.tensor_dict();
  REQUIRE(dict.size() == 2);
  CHECK(dict[1].second.dtype == DType::f8_e4m3);
  CHECK(dict[1].second.shape == std::vector<int64_t>{2, 2});
  CHECK(dict[1].second.bytes == std::vector<uint8_t>(e4m3, e4m3 + 4));

  TorchArchiveWriter writer("torch_form");
  const PickleRef e5m2 = writer.add_tensor(DType::f8_e5m2, {4}, e4m3, sizeof e4m3);
  const std::string bytes = writer.finish(make_dict({{make_string("w"), e5m2}}));
  test::write_bytes(dir / "torch_form.pt", bytes);
  const TorchCheckpoint read = TorchCheckpoint::open(dir / "torch_form.pt");
  REQUIRE(read.contains("w"));
  CHECK(read.at("w").dtype == DType::f8_e5m2);
  CHECK(read.at("w").shape == std::vector<int64_t>{4});
  CHECK(std::memcmp(read.at("w").data, e4m3, 4) == 0);

  // An untyped storage that holds no whole number of elements is malformed.
  PickleBytes odd;
  odd.proto(2).global("collections", "OrderedDict").op(')').op('R').mark().binunicode("w");
  odd.global("torch._utils", "_rebuild_tensor_v3").mark().mark().binunicode("storage");
  odd.global("torch", "UntypedStorage").binunicode("0").binunicode("cpu").binint1(3).op('t').op('Q');
  odd.binint1(0).binint1(1).op(0x85).binint1(1).op(0x85).boolean(false);
  odd.global("collections", "OrderedDict").op(')').op('R').global("torch", "float32").op('t').op('R');
  odd.op('u').stop();
  const Error e = test::expect_error([&] {
    (void)parse_torch_pickle(reinterpret_cast<const uint8_t*>(odd.bytes.data()), odd.bytes.size(), "p");
  });
  CHECK(e.code() == ErrorCode::format);
  CHECK_THAT(e.message(), Catch::Contains("3 bytes holds no whole number of F32 elements"));
}
