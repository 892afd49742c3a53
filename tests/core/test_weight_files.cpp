#include "core/paths.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"
#include "core/torch_pickle.h"
#include "core/weight_files.h"
#include "core/zip_archive.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <numeric>

using namespace mugv;

namespace {

template <typename T>
std::string bytes_of(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

std::string view_bytes(const TensorView& view) {
  return view.size_bytes ? std::string(reinterpret_cast<const char*>(view.data), view.size_bytes)
                         : std::string();
}

Error open_error(const fs::path& path) {
  return test::expect_error([&] { (void)WeightFiles::open(path); });
}

// A string literal with its embedded NULs.
template <size_t N>
std::string lit(const char (&text)[N]) {
  return std::string(text, N - 1);
}

// Pickle pieces for hand-made data.pkl files (opcodes as in CPython's pickletools).
struct Pickle {
  std::string out;
  Pickle& raw(const std::string& bytes) {
    out += bytes;
    return *this;
  }
  Pickle& op(char code) {
    out += code;
    return *this;
  }
  Pickle& str(const std::string& text) {
    out += 'X';
    for (int i = 0; i < 4; ++i) out += static_cast<char>((text.size() >> (8 * i)) & 0xff);
    out += text;
    return *this;
  }
  Pickle& small(int v) {  // BININT1
    out += 'K';
    out += static_cast<char>(v);
    return *this;
  }
  Pickle& ints(const std::vector<int>& values) {
    out += '(';
    for (int v : values) small(v);
    out += 't';
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    out += "c" + module + "\n" + name + "\n";
    return *this;
  }
  // _rebuild_tensor_v2(('storage', torch.FloatStorage, key, 'cpu', numel), offset, size, stride, False, {})
  Pickle& tensor(const std::string& key, int numel, int offset, const std::vector<int>& size,
                 const std::vector<int>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    op('(').str("storage").global("torch", "FloatStorage").str(key).str("cpu").small(numel).op('t').op('Q');
    small(offset).ints(size).ints(stride).raw("\x89").global("collections", "OrderedDict").op(')').op('R');
    return op('t').op('R');
  }
};

// A torch-style zip: <archive>/data.pkl, the storages given, <archive>/version.
void write_checkpoint_zip(const fs::path& path, const std::string& pickle,
                          const std::vector<std::pair<std::string, std::string>>& storages) {
  ZipWriter zip(path);
  zip.add("arch/data.pkl", pickle.data(), pickle.size());
  for (const auto& [key, bytes] : storages) zip.add("arch/data/" + key, bytes.data(), bytes.size());
  zip.add("arch/version", "3\n", 2);
  zip.finish();
}

std::string floats(int count, float start = 0.0f) {
  std::vector<float> v(static_cast<size_t>(count));
  std::iota(v.begin(), v.end(), start);
  return bytes_of(v);
}

void cut_copy(const fs::path& from, const fs::path& to, size_t keep) {
  std::string bytes = read_text_file(from);
  REQUIRE(keep < bytes.size());
  test::write_bytes(to, bytes.substr(0, keep));
}

}  // namespace

TEST_CASE("weight format names round trip", "[unit][core]") {
  for (int i = 0; i <= static_cast<int>(WeightFormat::torch_zip_sharded); ++i) {
    auto f = static_cast<WeightFormat>(i);
    CHECK(weight_format_from_string(to_string(f)) == f);
  }
  CHECK(std::string(to_string(WeightFormat::torch_zip)) == "torch_zip");
  CHECK_FALSE(weight_format_from_string("pt"));
}

TEST_CASE("crc32 is zip's CRC-32", "[unit][core]") {
  CHECK(crc32("123456789", 9) == 0xCBF43926u);
  CHECK(crc32("", 0) == 0u);
  std::string text(1000, 'x');
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>(i * 7);
  CHECK(crc32(text.data() + 400, 600, crc32(text.data(), 400)) == crc32(text.data(), text.size()));
}

TEST_CASE("the golden torch.save checkpoint holds exactly the golden safetensors", "[unit][core]") {
  auto pt = test::golden_data_file("mugv_dit_tiny.pt");
  auto st = test::golden_data_file("mugv_dit_tiny.safetensors");
  if (!pt || !st) return;

  WeightFiles torch = WeightFiles::open(*pt);
  WeightFiles safe = WeightFiles::open(*st);
  CHECK(torch.format() == WeightFormat::torch_zip);
  CHECK(safe.format() == WeightFormat::safetensors);
  CHECK(torch.files() == std::vector<fs::path>{*pt});
  REQUIRE(torch.size() == 63);
  REQUIRE(torch.names() == safe.names());
  CHECK(torch.total_bytes() == safe.total_bytes());
  for (const std::string& name : torch.names()) {
    INFO(name);
    const TensorView& a = torch.at(name);
    const TensorView& b = safe.at(name);
    CHECK(a.dtype == b.dtype);
    CHECK(a.shape == b.shape);
    REQUIRE(a.size_bytes == b.size_bytes);
    CHECK(std::memcmp(a.data, b.data, a.size_bytes) == 0);
    CHECK(reinterpret_cast<uintptr_t>(a.data) % 64 == 0);
    CHECK(torch.file_of(name) == *pt);
  }
  CHECK(torch.at("x_embedder.proj.weight").shape == std::vector<int64_t>{96, 4, 1, 2, 2});

  TorchCheckpoint checkpoint = TorchCheckpoint::open(*pt);
  CHECK(checkpoint.archive_name() == "mugv_dit_tiny");
  CHECK(checkpoint.size() == 63);

  SECTION("the writer reproduces it tensor for tensor") {
    test::TempDir dir;
    TorchCheckpointWriter writer(dir / "copy.pt");
    for (const std::string& name : safe.names()) {
      const TensorView& v = safe.at(name);
      writer.add(name, v.dtype, v.shape, v.data, v.size_bytes);
    }
    writer.finish();
    WeightFiles copy = WeightFiles::open(dir / "copy.pt");
    REQUIRE(copy.names() == safe.names());
    for (const std::string& name : copy.names())
      CHECK(view_bytes(copy.at(name)) == view_bytes(safe.at(name)));
  }
}

TEST_CASE("torch checkpoint writer and reader round trip", "[unit][core]") {
  test::TempDir dir;
  const bool zip64 = GENERATE(false, true);
  INFO("force_zip64 " << zip64);
  fs::path path = dir / "model.pt";

  std::vector<float> weights = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};
  std::vector<uint16_t> halves = {0x3f80, 0xc000, 0x7f7f, 0x0001};
  std::vector<int64_t> steps = {-1, int64_t(1) << 40, INT64_MIN};
  std::vector<uint8_t> flags = {1, 0, 1};
  double scale = 0.125;
  uint8_t fp8[5] = {0x38, 0x40, 0x00, 0xff, 0x7e};

  TorchCheckpointWriter::Options options;
  options.force_zip64 = zip64;
  TorchCheckpointWriter writer(path, options);
  writer.add("blocks.0.weight", DType::f32, {2, 3}, weights.data(), 24);
  writer.add("blocks.0.norm", DType::bf16, {4}, halves.data(), 8);
  writer.add("step", DType::i64, {3}, steps.data(), 24);
  writer.add("mask", DType::boolean, {3}, flags.data(), 3);
  writer.add("scale", DType::f64, {}, &scale, 8);
  writer.add("empty", DType::f32, {0, 5}, nullptr, 0);
  writer.add("fp8", DType::f8_e4m3, {5}, fp8, 5);
  CHECK(writer.size() == 7);
  CHECK_FALSE(fs::exists(path));  // nothing appears before finish()

  auto misuse = [&](auto&& fn) { return test::expect_error(fn).code(); };
  CHECK(misuse([&] { writer.add("step", DType::i64, {3}, steps.data(), 24); }) ==
        ErrorCode::invalid_argument);
  CHECK(misuse([&] { writer.add("", DType::i64, {3}, steps.data(), 24); }) == ErrorCode::invalid_argument);
  CHECK(misuse([&] { writer.add("x", DType::f32, {2}, weights.data(), 12); }) == ErrorCode::invalid_argument);
  CHECK(misuse([&] { writer.add("x", DType::unknown, {2}, weights.data(), 8); }) ==
        ErrorCode::invalid_argument);
  writer.finish();

  std::string raw = read_text_file(path);
  CHECK((raw.find(std::string("PK\x06\x07", 4)) != std::string::npos) == zip64);

  TorchCheckpoint file = TorchCheckpoint::open(path);
  CHECK(file.archive_name() == "model");
  CHECK(file.names() == std::vector<std::string>{"blocks.0.norm", "blocks.0.weight", "empty", "fp8", "mask",
                                                 "scale", "step"});
  CHECK(view_bytes(file.at("blocks.0.weight")) == bytes_of(weights));
  CHECK(file.at("blocks.0.weight").shape == std::vector<int64_t>{2, 3});
  CHECK(file.at("blocks.0.norm").dtype == DType::bf16);
  CHECK(view_bytes(file.at("blocks.0.norm")) == bytes_of(halves));
  CHECK(view_bytes(file.at("step")) == bytes_of(steps));
  CHECK(file.at("mask").dtype == DType::boolean);
  CHECK(view_bytes(file.at("mask")) == bytes_of(flags));
  CHECK(file.at("scale").shape.empty());
  CHECK(file.at("scale").dtype == DType::f64);
  CHECK(view_bytes(file.at("scale")) == std::string(reinterpret_cast<const char*>(&scale), 8));
  CHECK(file.at("empty").shape == std::vector<int64_t>{0, 5});
  CHECK(file.at("empty").size_bytes == 0);
  CHECK(file.at("fp8").dtype == DType::f8_e4m3);
  CHECK(view_bytes(file.at("fp8")) == std::string(reinterpret_cast<const char*>(fp8), 5));
  for (const std::string& name : file.names())
    if (file.at(name).data) CHECK(reinterpret_cast<uintptr_t>(file.at(name).data) % 64 == 0);

  // Every entry carries a correct CRC-32, so zip tools and torch.load accept the file.
  ZipArchive zip = ZipArchive::parse(reinterpret_cast<const uint8_t*>(raw.data()), raw.size(), path.string());
  CHECK(zip.entries().size() == 10);
  for (const ZipEntry& entry : zip.entries()) CHECK_NOTHROW(zip.verify_crc(entry));
  REQUIRE(zip.find("model/version"));
  CHECK(std::string(reinterpret_cast<const char*>(zip.data(*zip.find("model/version"))), 2) == "3\n");
  REQUIRE(zip.find("model/byteorder"));

  CHECK(test::expect_error([&] { (void)file.at("nope"); }).code() == ErrorCode::not_found);
}

TEST_CASE("tensors sharing a storage at offsets, and contiguity", "[unit][core]") {
  test::TempDir dir;
  fs::path path = dir / "shared.pt";
  std::string storage = floats(12);

  SECTION("contiguous views of one storage read in place") {
    TorchCheckpointWriter writer(path);
    std::string key = writer.add_storage(DType::f32, storage.data(), storage.size());
    writer.add_view("a", key, 0, {2, 3});
    writer.add_view("b", key, 6, {3, 2});
    writer.add_view("c", key, 5, {});
    writer.add_view("column", key, 11, {1, 1}, {7, 9});  // size-1 dims: any stride is contiguous
    CHECK(test::expect_error([&] {
            writer.add_view("d", key, 7, {2, 3});
          }).code() == ErrorCode::invalid_argument);
    CHECK(test::expect_error([&] { writer.add_view("d", "9", 0, {1}); }).code() ==
          ErrorCode::invalid_argument);
    writer.finish();

    WeightFiles file = WeightFiles::open(path);
    CHECK(file.size() == 4);
    CHECK(view_bytes(file.at("a")) == storage.substr(0, 24));
    CHECK(view_bytes(file.at("b")) == storage.substr(24, 24));
    CHECK(file.at("b").data == file.at("a").data + 24);
    CHECK(view_bytes(file.at("c")) == storage.substr(20, 4));
    CHECK(view_bytes(file.at("column")) == storage.substr(44, 4));
    CHECK(file.total_bytes() == 24 + 24 + 4 + 4);
  }

  SECTION("a non-contiguous tensor is refused by name") {
    TorchCheckpointWriter writer(path);
    std::string key = writer.add_storage(DType::f32, storage.data(), storage.size());
    writer.add_view("fine", key, 0, {12});
    writer.add_view("blocks.3.transposed", key, 0, {2, 3}, {1, 2});
    writer.finish();
    Error e = open_error(path);
    CHECK(e.code() == ErrorCode::unsupported);
    CHECK(e.subject() == path.string());
    CHECK_THAT(e.message(), Catch::Contains("'blocks.3.transposed'") && Catch::Contains(".contiguous()"));
  }

  SECTION("hand-written pickle: storage shared and offsets beyond it") {
    Pickle ok;
    ok.raw("\x80\x02").op('}').op('(').str("w").tensor("0", 8, 2, {2, 3}, {3, 1});
    ok.str("v").tensor("0", 8, 0, {2}, {1}).op('u').op('.');
    write_checkpoint_zip(path, ok.out, {{"0", floats(8)}});
    WeightFiles file = WeightFiles::open(path);
    CHECK(view_bytes(file.at("w")) == floats(8).substr(8, 24));
    CHECK(view_bytes(file.at("v")) == floats(8).substr(0, 8));

    Pickle beyond;
    beyond.raw("\x80\x02").op('}').str("w").tensor("0", 8, 3, {2, 3}, {3, 1}).op('s').op('.');
    write_checkpoint_zip(path, beyond.out, {{"0", floats(8)}});
    Error e = open_error(path);
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK_THAT(e.message(), Catch::Contains("'w'"));

    Pickle short_storage;
    short_storage.raw("\x80\x02").op('}').str("w").tensor("0", 8, 0, {8}, {1}).op('s').op('.');
    write_checkpoint_zip(path, short_storage.out, {{"0", floats(7)}});
    e = open_error(path);
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK_THAT(e.message(), Catch::Contains("'w'") && Catch::Contains("arch/data/0"));

    write_checkpoint_zip(path, short_storage.out, {{"1", floats(8)}});
    e = open_error(path);
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK_THAT(e.message(), Catch::Contains("'w'") && Catch::Contains("missing"));
  }
}

TEST_CASE("pickle layouts torch.save produces are understood", "[unit][core]") {
  test::TempDir dir;
  fs::path path = dir / "nested.pt";
  const std::vector<std::pair<std::string, std::string>> storage{{"0", floats(4, 1.0f)}};
  // write_torch_pickle's stream without PROTO and STOP: an expression for the OrderedDict.
  TorchTensorRecord record;
  record.name = "layer.weight";
  record.dtype = DType::f32;
  record.storage_key = "0";
  record.storage_numel = 4;
  record.shape = {2, 2};
  record.stride = {2, 1};
  const std::string flat = write_torch_pickle({record});
  const std::string expression = flat.substr(2, flat.size() - 3);

  SECTION("a flat OrderedDict") {
    write_checkpoint_zip(path, flat, storage);
    CHECK(WeightFiles::open(path).names() == std::vector<std::string>{"layer.weight"});
  }
  SECTION("nested under 'model' beside non-tensor values") {
    Pickle p;
    p.raw("\x80\x02").op('}').op('(').str("epoch").small(3).str("model").raw(expression);
    p.str("lr").raw(lit("G\x3f\x50\x62\x4d\xd2\xf1\xa9\xfc")).str("done").raw("\x88").op('u').op('.');
    write_checkpoint_zip(path, p.out, storage);
    WeightFiles file = WeightFiles::open(path);
    CHECK(file.names() == std::vector<std::string>{"layer.weight"});
    CHECK(view_bytes(file.at("layer.weight")) == floats(4, 1.0f));
  }
  SECTION("nested twice: {'module': {'state_dict': ...}}") {
    Pickle p;
    p.raw("\x80\x02").op('}').str("module").op('}').str("state_dict").raw(expression).op('s').op('s').op('.');
    write_checkpoint_zip(path, p.out, storage);
    CHECK(WeightFiles::open(path).size() == 1);
  }
  SECTION("two candidate state dicts are ambiguous") {
    Pickle p;
    p.raw("\x80\x02").op('}').op('(').str("model").raw(expression).str("state_dict").raw(expression);
    p.op('u').op('.');
    write_checkpoint_zip(path, p.out, storage);
    Error e = open_error(path);
    CHECK(e.code() == ErrorCode::unsupported);
    CHECK_THAT(e.message(), Catch::Contains("'model'") && Catch::Contains("'state_dict'"));
  }
  SECTION("no tensors at all") {
    Pickle p;
    p.raw("\x80\x02").op('}').str("epoch").small(3).op('s').op('.');
    write_checkpoint_zip(path, p.out, {});
    Error e = open_error(path);
    CHECK(e.code() == ErrorCode::format);
    CHECK_THAT(e.message(), Catch::Contains("'epoch'"));
  }
  SECTION("protocol 4 opcodes, parameters, memo, BUILD with _metadata") {
    // FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, BINGET, _rebuild_parameter, dict via DICT.
    Pickle p;
    p.raw("\x80\x04").raw(lit("\x95\x10\x00\x00\x00\x00\x00\x00\x00"));
    p.raw("\x8c\x0ctorch._utils\x94\x8c\x12_rebuild_parameter\x94\x93\x94");  // memo 0,1,2
    p.op('(').raw("\x8c\x01p\x94");                                           // memo 3
    p.raw("h\x02").op('(').tensor("0", 4, 0, {4}, {1}).raw("\x88").op('}').op('t').op('R');
    p.raw("\x8c\x01q").raw("h\x03").op('d');  // {"p": param, "q": "p"}
    p.op('}').str("_metadata").op('}').op('s').op('b').op('.');
    write_checkpoint_zip(path, p.out, storage);
    WeightFiles file = WeightFiles::open(path);
    CHECK(file.names() == std::vector<std::string>{"p"});
    CHECK(file.at("p").shape == std::vector<int64_t>{4});
  }
}

TEST_CASE("damaged, foreign and hostile pickles give clear errors", "[unit][core]") {
  test::TempDir dir;
  fs::path path = dir / "bad.pt";
  auto rejected = [&](const std::string& pickle) {
    write_checkpoint_zip(path, pickle, {{"0", floats(4)}});
    Error e = open_error(path);
    CHECK(e.subject() == path.string());
    return e;
  };

  Error e =
      rejected(lit("\x80\x02}q\x00X\x01\x00\x00\x00"
                   "aZ"));
  CHECK(e.code() == ErrorCode::unsupported);
  CHECK_THAT(e.message(), Catch::Contains("0x5a") && Catch::Contains("data.pkl byte 11"));

  e =
      rejected(lit("\x80\x02"
                   "cos\nsystem\n"
                   "X\x02\x00\x00\x00ls\x85R."));
  CHECK(e.code() == ErrorCode::unsupported);
  CHECK_THAT(e.message(), Catch::Contains("'os.system'"));

  e = rejected(
      "\x80\x02"
      "cbuiltins\neval\n");
  CHECK(e.code() == ErrorCode::unsupported);

  e = rejected(lit("\x80\x02}q\x00X\x05\x00\x00"));  // cut inside a string length
  CHECK(e.code() == ErrorCode::format);
  CHECK_THAT(e.message(), Catch::Contains("truncated"));

  e = rejected("\x80\x02}");  // no STOP
  CHECK(e.code() == ErrorCode::format);

  e = rejected("\x80\x02s.");  // SETITEM on an empty stack
  CHECK(e.code() == ErrorCode::format);
  CHECK_THAT(e.message(), Catch::Contains("underflow"));

  e = rejected("\x80\x02h\x07.");
  CHECK(e.code() == ErrorCode::format);
  CHECK_THAT(e.message(), Catch::Contains("memo"));

  e = rejected(lit("\x80\x02]q\x00."));  // a list, not a dict
  CHECK(e.code() == ErrorCode::format);

  Pickle cycle;  // a list appended to itself must not leak or loop
  cycle.raw(
      lit("\x80\x02]q\x00h\x00"
          "a}X\x01\x00\x00\x00xh\x00s."));
  e = rejected(cycle.out);
  CHECK(e.code() == ErrorCode::format);

  Pickle other_pid;
  other_pid.raw(lit("\x80\x02}X\x01\x00\x00\x00x(X\x06\x00\x00\x00moduleK\x01tQs."));
  e = rejected(other_pid.out);
  CHECK(e.code() == ErrorCode::unsupported);

  SECTION("a garbage byte in the golden data.pkl fails its CRC") {
    auto pt = test::golden_data_file("mugv_dit_tiny.pt");
    if (!pt) return;
    std::string bytes = read_text_file(*pt);
    bytes[64 + 300] = static_cast<char>(bytes[64 + 300] ^ 0x5a);  // data.pkl's data starts at 64
    test::write_bytes(path, bytes);
    Error crc = open_error(path);
    CHECK(crc.code() == ErrorCode::corrupt);
    CHECK(crc.subject() == path.string());
    CHECK_THAT(crc.message(), Catch::Contains("data.pkl") && Catch::Contains("CRC"));
  }
}

TEST_CASE("truncated checkpoints are corrupt, naming the file", "[unit][core]") {
  test::TempDir dir;
  std::vector<fs::path> sources;
  if (auto pt = test::golden_data_file("mugv_dit_tiny.pt")) sources.push_back(*pt);
  fs::path written = dir / "written.pt";
  {
    TorchCheckpointWriter::Options options;
    options.force_zip64 = true;
    TorchCheckpointWriter writer(written, options);
    std::string a = floats(1000), b = floats(3000);
    writer.add("a", DType::f32, {1000}, a.data(), a.size());
    writer.add("b", DType::f32, {3000}, b.data(), b.size());
    writer.finish();
  }
  sources.push_back(written);

  for (const fs::path& source : sources) {
    const size_t size = fs::file_size(source);
    for (size_t keep : {size_t(0), size_t(3), size_t(20), size_t(100), size / 3, size / 2, size - 300,
                        size - 60, size - 30, size - 1}) {
      INFO(source.filename().string() << " cut to " << keep << " of " << size << " bytes");
      fs::path cut = dir / "cut.pt";
      cut_copy(source, cut, keep);
      Error e = open_error(cut);
      CHECK((e.code() == ErrorCode::corrupt || e.code() == ErrorCode::format));
      CHECK(e.subject() == cut.string());
      if (keep >= 4) CHECK(e.code() == ErrorCode::corrupt);
    }
  }

  SECTION("an entry pointing beyond the end of the file") {
    // Drop the middle of the file but keep its directory: the entries behind the gap now overrun.
    std::string bytes = read_text_file(written);
    std::string damaged = bytes.substr(0, 2000) + bytes.substr(bytes.size() - 600);
    test::write_bytes(dir / "gap.pt", damaged);
    Error e = open_error(dir / "gap.pt");
    CHECK(e.code() == ErrorCode::corrupt);
  }
}

TEST_CASE("legacy and foreign files are recognised by content", "[unit][core]") {
  test::TempDir dir;
  test::write_bytes(dir / "old.pt", lit("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."));
  Error e = open_error(dir / "old.pt");
  CHECK(e.code() == ErrorCode::unsupported);
  CHECK_THAT(e.message(), Catch::Contains("legacy"));

  test::write_bytes(dir / "junk.bin", "hello, this is not a model");
  CHECK(open_error(dir / "junk.bin").code() == ErrorCode::format);
  CHECK(open_error(dir / "absent.pt").code() == ErrorCode::not_found);

  // A safetensors file named .pt, and a checkpoint named .safetensors, open as what they are.
  std::string data = floats(2);
  SafetensorsWriter st;
  st.add("t", DType::f32, {2}, data.data(), data.size());
  st.write(dir / "really_safetensors.pt");
  CHECK(WeightFiles::open(dir / "really_safetensors.pt").format() == WeightFormat::safetensors);
  TorchCheckpointWriter pt(dir / "really_torch.safetensors");
  pt.add("t", DType::f32, {2}, data.data(), data.size());
  pt.finish();
  WeightFiles torch = WeightFiles::open(dir / "really_torch.safetensors");
  CHECK(torch.format() == WeightFormat::torch_zip);
  CHECK(view_bytes(torch.at("t")) == data);
  CHECK(detect_weight_file(dir / "really_torch.safetensors") == WeightFormat::torch_zip);
}

TEST_CASE("sharded weights through an index json", "[unit][core]") {
  test::TempDir dir;
  std::string a = floats(6), b = floats(4, 10.0f), c = floats(2, 20.0f);

  SECTION("safetensors shards") {
    SafetensorsWriter one, two;
    one.add("blocks.0.w", DType::f32, {2, 3}, a.data(), a.size());
    one.add("unlisted", DType::f32, {2}, c.data(), c.size());
    two.add("blocks.1.w", DType::f32, {4}, b.data(), b.size());
    two.set_metadata("format", "pt");
    one.write(dir / "model-00001-of-00002.safetensors");
    two.write(dir / "model-00002-of-00002.safetensors");
    write_text_atomic(dir / "model.safetensors.index.json",
                      R"({"metadata": {"total_size": 40}, "weight_map": {
                           "blocks.0.w": "model-00001-of-00002.safetensors",
                           "blocks.1.w": "model-00002-of-00002.safetensors"}})");
    for (const fs::path& opened : {dir / "model.safetensors.index.json", dir.path()}) {
      WeightFiles w = WeightFiles::open(opened);
      CHECK(w.path() == opened);
      CHECK(w.format() == WeightFormat::safetensors_sharded);
      CHECK(w.names() == std::vector<std::string>{"blocks.0.w", "blocks.1.w"});
      CHECK_FALSE(w.contains("unlisted"));
      CHECK(w.files().size() == 2);
      CHECK(w.file_of("blocks.1.w") == dir / "model-00002-of-00002.safetensors");
      CHECK(view_bytes(w.at("blocks.1.w")) == b);
      CHECK(w.total_bytes() == 40);
      CHECK(w.metadata().at("total_size") == "40");
      CHECK(w.metadata().at("format") == "pt");
      Error missing = test::expect_error([&] { (void)w.at("blocks.2.w"); });
      CHECK(missing.code() == ErrorCode::not_found);
      CHECK_THAT(missing.message(),
                 Catch::Contains("'blocks.2.w'") && Catch::Contains("model-00001-of-00002"));
    }

    write_text_atomic(dir / "model.safetensors.index.json",
                      R"({"weight_map": {"blocks.0.w": "model-00001-of-00002.safetensors",
                                         "blocks.9.w": "model-00002-of-00002.safetensors"}})");
    Error e = open_error(dir / "model.safetensors.index.json");
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK(e.subject() == (dir / "model.safetensors.index.json").string());
    CHECK_THAT(e.message(), Catch::Contains("'blocks.9.w'") && Catch::Contains("model-00002-of-00002"));

    write_text_atomic(dir / "model.safetensors.index.json",
                      R"({"weight_map": {"blocks.0.w": "model-00001-of-00002.safetensors",
                                         "blocks.1.w": "model-00003-of-00002.safetensors"}})");
    e = open_error(dir / "model.safetensors.index.json");
    CHECK(e.code() == ErrorCode::not_found);
    CHECK_THAT(e.message(),
               Catch::Contains("model-00003-of-00002.safetensors") && Catch::Contains("blocks.1.w"));

    write_text_atomic(dir / "model.safetensors.index.json",
                      R"({"weight_map": {"x": "../elsewhere.safetensors"}})");
    CHECK(open_error(dir / "model.safetensors.index.json").code() == ErrorCode::format);
    write_text_atomic(dir / "model.safetensors.index.json", R"({"weight_map": )");
    e = open_error(dir / "model.safetensors.index.json");
    CHECK(e.code() == ErrorCode::format);
    CHECK_THAT(e.message(), Catch::Contains("invalid JSON at line 1"));
    // Valid JSON that nlohmann refuses with out_of_range rather than parse_error: still Error(format).
    write_text_atomic(dir / "model.safetensors.index.json", R"({"metadata": {"total_size": 1e999}})");
    e = open_error(dir / "model.safetensors.index.json");
    CHECK(e.code() == ErrorCode::format);
    CHECK_THAT(e.message(), Catch::Contains("number overflow"));
    write_text_atomic(dir / "model.safetensors.index.json", R"({"metadata": {}})");
    CHECK(open_error(dir / "model.safetensors.index.json").code() == ErrorCode::format);
  }

  SECTION("torch .bin shards") {
    TorchCheckpointWriter one(dir / "pytorch_model-00001-of-00002.bin");
    one.add("blocks.0.w", DType::f32, {2, 3}, a.data(), a.size());
    one.finish();
    TorchCheckpointWriter two(dir / "pytorch_model-00002-of-00002.bin");
    two.add("blocks.1.w", DType::f32, {4}, b.data(), b.size());
    two.finish();
    write_text_atomic(dir / "pytorch_model.bin.index.json",
                      R"({"metadata": {"total_size": 40}, "weight_map": {
                           "blocks.0.w": "pytorch_model-00001-of-00002.bin",
                           "blocks.1.w": "pytorch_model-00002-of-00002.bin"}})");
    WeightFiles w = WeightFiles::open(dir.path());
    CHECK(w.format() == WeightFormat::torch_zip_sharded);
    CHECK(w.names() == std::vector<std::string>{"blocks.0.w", "blocks.1.w"});
    CHECK(view_bytes(w.at("blocks.0.w")) == a);
    CHECK(w.file_of("blocks.0.w") == dir / "pytorch_model-00001-of-00002.bin");
  }
}

TEST_CASE("directories are opened the way Hugging Face lays them out", "[unit][core]") {
  test::TempDir dir;
  std::string data = floats(3);
  auto safetensors = [&](const fs::path& path) {
    SafetensorsWriter w;
    w.add("t", DType::f32, {3}, data.data(), data.size());
    w.write(path);
  };
  auto checkpoint = [&](const fs::path& path) {
    TorchCheckpointWriter w(path);
    w.add("t", DType::f32, {3}, data.data(), data.size());
    w.finish();
  };

  Error e = open_error(dir.path());
  CHECK(e.code() == ErrorCode::not_found);
  CHECK_THAT(e.message(), Catch::Contains("empty"));

  write_text_atomic(dir / "README.md", "# a model\n");
  e = open_error(dir.path());
  CHECK(e.code() == ErrorCode::not_found);
  CHECK_THAT(e.message(), Catch::Contains("README.md"));

  checkpoint(dir / "dit.pt");
  CHECK(WeightFiles::open(dir.path()).format() == WeightFormat::torch_zip);
  safetensors(dir / "model.safetensors");  // safetensors wins over .bin/.pt
  WeightFiles w = WeightFiles::open(dir.path());
  CHECK(w.format() == WeightFormat::safetensors);
  CHECK(w.files() == std::vector<fs::path>{dir / "model.safetensors"});

  safetensors(dir / "ema.safetensors");
  e = open_error(dir.path());
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK_THAT(e.message(), Catch::Contains("ema.safetensors") && Catch::Contains("model.safetensors"));

  fs::remove(dir / "ema.safetensors");
  fs::remove(dir / "model.safetensors");
  checkpoint(dir / "vae.pt");
  e = open_error(dir.path());
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK_THAT(e.message(), Catch::Contains("dit.pt") && Catch::Contains("vae.pt"));
}

TEST_CASE("release() drops pages and the data reads back the same", "[unit][core]") {
  test::TempDir dir;
  // Tensors of several pages, so whole pages are really dropped.
  std::string big = floats(1 << 16), other = floats(3000, 5.0f);
  TorchCheckpointWriter pt(dir / "m.pt");
  pt.add("big", DType::f32, {256, 256}, big.data(), big.size());
  pt.add("other", DType::f32, {3000}, other.data(), other.size());
  pt.finish();
  SafetensorsWriter st;
  st.add("big", DType::f32, {256, 256}, big.data(), big.size());
  st.add("other", DType::f32, {3000}, other.data(), other.size());
  st.write(dir / "m.safetensors");

  for (const char* name : {"m.pt", "m.safetensors"}) {
    INFO(name);
    WeightFiles w = WeightFiles::open(dir / name);
    CHECK(view_bytes(w.at("big")) == big);
    for (int round = 0; round < 2; ++round) {
      w.release("big");
      w.release("other");
      CHECK(view_bytes(w.at("big")) == big);
      CHECK(view_bytes(w.at("other")) == other);
    }
    CHECK(test::expect_error([&] { w.release("absent"); }).code() == ErrorCode::not_found);
    WeightFiles moved = std::move(w);
    moved.release("big");
    CHECK(view_bytes(moved.at("big")) == big);
  }

  SafetensorsFile file = SafetensorsFile::open(dir / "m.safetensors");
  file.release("big");
  CHECK(view_bytes(file.at("big")) == big);
  TorchCheckpoint checkpoint = TorchCheckpoint::open(dir / "m.pt");
  checkpoint.release("other");
  CHECK(view_bytes(checkpoint.at("other")) == other);
  release_mapped_pages(nullptr, 0);
  release_mapped_pages(big.data(), 10);  // less than a page: nothing to drop
}

TEST_CASE("release() gives back the resident memory of a copied tensor", "[unit][core]") {
  // File-backed pages of a mapping count in RssFile (Linux) once touched, until released.
  auto rss_file_bytes = []() -> int64_t {
    std::string status = read_text_file("/proc/self/status");
    size_t at = status.find("RssFile:");
    return at == std::string::npos ? -1 : std::stoll(status.substr(at + 8)) * 1024;
  };
  if (rss_file_bytes() < 0) {
    WARN("no RssFile in /proc/self/status; skipping");
    return;
  }
  test::TempDir dir;
  constexpr size_t kBytes = size_t(16) << 20;
  {
    std::string big(kBytes, '\x01');
    TorchCheckpointWriter writer(dir / "big.pt");
    writer.add("big", DType::u8, {int64_t(kBytes)}, big.data(), big.size());
    writer.finish();
  }
  WeightFiles w = WeightFiles::open(dir / "big.pt");
  const TensorView& view = w.at("big");
  const int64_t before = rss_file_bytes();
  uint64_t sum = 0;
  for (size_t i = 0; i < view.size_bytes; i += 512) sum += view.data[i];
  CHECK(sum == kBytes / 512);
  const int64_t touched = rss_file_bytes();
  w.release("big");
  const int64_t released = rss_file_bytes();
  INFO("RssFile before " << before << ", touched " << touched << ", released " << released);
  CHECK(touched - before > int64_t(kBytes) * 3 / 4);
  CHECK(touched - released > int64_t(kBytes) * 3 / 4);
}

TEST_CASE("streaming SafetensorsWriter writes the same bytes as add()", "[unit][core]") {
  test::TempDir dir;
  std::string a = floats(1000), b = floats(7, -3.0f);
  std::vector<uint16_t> h = {1, 2, 3};

  SafetensorsWriter copied;
  copied.add("b", DType::f32, {7}, b.data(), b.size());
  copied.add("a", DType::f32, {10, 100}, a.data(), a.size());
  copied.add("h", DType::bf16, {3}, h.data(), 6);
  copied.add("e", DType::f32, {0}, nullptr, 0);
  copied.set_metadata("format", "pt");
  copied.write(dir / "copied.safetensors");

  int calls = 0;
  auto from = [&](const std::string& bytes) {
    return [&calls, bytes](uint8_t* out) {
      ++calls;
      std::memcpy(out, bytes.data(), bytes.size());
    };
  };
  SafetensorsWriter streamed;
  streamed.add_generated("b", DType::f32, {7}, b.size(), from(b));
  streamed.add_generated("a", DType::f32, {10, 100}, a.size(), from(a));
  streamed.add("h", DType::bf16, {3}, h.data(), 6);
  streamed.add_generated("e", DType::f32, {0}, 0, from(""));
  streamed.set_metadata("format", "pt");
  CHECK(calls == 0);
  streamed.write(dir / "streamed.safetensors");
  CHECK(calls == 2);  // empty tensors need no bytes
  CHECK(read_text_file(dir / "streamed.safetensors") == read_text_file(dir / "copied.safetensors"));

  CHECK(test::expect_error([&] { streamed.add_generated("z", DType::f32, {2}, 4, from("")); }).code() ==
        ErrorCode::invalid_argument);
  CHECK(test::expect_error([&] { streamed.add_generated("z", DType::f32, {1}, 4, nullptr); }).code() ==
        ErrorCode::invalid_argument);

  SafetensorsWriter failing;
  failing.add_generated("x", DType::f32, {1}, 4,
                        [](uint8_t*) { throw Error(ErrorCode::cancelled, "x", "stop"); });
  CHECK(test::expect_error([&] { failing.write(dir / "failed.safetensors"); }).code() ==
        ErrorCode::cancelled);
  CHECK_FALSE(fs::exists(dir / "failed.safetensors"));
}

TEST_CASE("zip archives: alignment, zip64 and directory damage", "[unit][core]") {
  test::TempDir dir;
  for (bool zip64 : {false, true}) {
    INFO("force_zip64 " << zip64);
    fs::path path = dir / "a.zip";
    ZipWriter zip(path, ZipWriter::Options{64, zip64});
    zip.add("top/one", "1", 1);
    zip.add("top/empty", "", 0);
    std::string long_name(300, 'n');
    zip.add("top/" + long_name, "abc", 3);
    CHECK(test::expect_error([&] { zip.add("top/one", "1", 1); }).code() == ErrorCode::invalid_argument);
    zip.finish();
    std::string raw = read_text_file(path);
    ZipArchive archive = ZipArchive::parse(reinterpret_cast<const uint8_t*>(raw.data()), raw.size(), "a.zip");
    REQUIRE(archive.entries().size() == 3);
    for (const ZipEntry& entry : archive.entries()) {
      CHECK(entry.data_offset % 64 == 0);
      CHECK_NOTHROW(archive.verify_crc(entry));
    }
    CHECK(archive.find("top/" + long_name)->size_bytes == 3);
    CHECK(archive.find("top/missing") == nullptr);

    // A damaged directory signature.
    std::string damaged = raw;
    size_t directory = damaged.find(std::string("PK\x01\x02", 4));
    damaged[directory + 1] = 'X';
    Error e = test::expect_error([&] {
      (void)ZipArchive::parse(reinterpret_cast<const uint8_t*>(damaged.data()), damaged.size(), "a.zip");
    });
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK(e.subject() == "a.zip");
  }
  CHECK(test::expect_error([&] {
          ZipWriter(dir / "b.zip", ZipWriter::Options{48, false});
        }).code() == ErrorCode::invalid_argument);
}
