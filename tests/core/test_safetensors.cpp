#include "core/paths.h"
#include "core/safetensors.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cstring>

using namespace mugv;

namespace {

std::string le64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

// A file exactly as the format describes it: length prefix, header, buffer.
std::string file_bytes(const std::string& header, const std::string& buffer) {
  return le64(header.size()) + header + buffer;
}

std::string f32_bytes(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) out.append(reinterpret_cast<const char*>(&v), sizeof v);
  return out;
}

struct Rejected {
  ErrorCode code;
  std::string message;
};

Rejected open_rejected(const test::TempDir& dir, const std::string& bytes) {
  fs::path p = dir / "bad.safetensors";
  test::write_bytes(p, bytes);
  try {
    (void)SafetensorsFile::open(p);
  } catch (const Error& e) {
    CHECK(e.subject() == p.string());
    return {e.code(), e.message()};
  }
  FAIL("malformed file was accepted");
  return {ErrorCode::unknown, ""};
}

}  // namespace

TEST_CASE("dtype names and sizes", "[unit][core]") {
  for (int i = 1; i <= static_cast<int>(DType::f8_e5m2); ++i) {
    auto d = static_cast<DType>(i);
    CHECK(dtype_from_string(to_string(d)) == d);
    CHECK(dtype_size_bytes(d) >= 1);
  }
  CHECK(std::string(to_string(DType::bf16)) == "BF16");
  CHECK(std::string(to_string(DType::boolean)) == "BOOL");
  CHECK(std::string(to_string(DType::f8_e4m3)) == "F8_E4M3");
  CHECK(dtype_size_bytes(DType::f64) == 8);
  CHECK(dtype_size_bytes(DType::bf16) == 2);
  CHECK(dtype_size_bytes(DType::unknown) == 0);
  CHECK_FALSE(dtype_from_string("f32"));
  CHECK_FALSE(dtype_from_string("unknown"));
}

TEST_CASE("safetensors round trip: several dtypes, empty and scalar tensors, metadata", "[unit][core]") {
  test::TempDir dir;
  fs::path path = dir / "model.safetensors";

  std::vector<float> weights = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};
  std::vector<uint16_t> halves = {0x3c00, 0xc000, 0x7bff, 0x0001};
  std::vector<int64_t> steps = {-1, int64_t(1) << 40};
  std::vector<uint8_t> flags = {1, 0, 1};
  double scale = 0.125;
  uint8_t fp8[5] = {0x38, 0x40, 0x00, 0xff, 0x7e};

  SafetensorsWriter writer;
  writer.add("blocks.0.weight", DType::f32, {2, 3}, weights.data(), weights.size() * 4);
  writer.add("blocks.0.norm", DType::bf16, {4}, halves.data(), 8);
  writer.add_borrowed("half", DType::f16, {2, 2}, halves.data(), 8);
  writer.add("step", DType::i64, {2}, steps.data(), 16);
  writer.add("mask", DType::boolean, {3}, flags.data(), 3);
  writer.add("scale", DType::f64, {}, &scale, 8);
  writer.add("empty", DType::i32, {0}, nullptr, 0);
  writer.add("empty2d", DType::f16, {4, 0}, nullptr, 0);
  writer.add("fp8", DType::f8_e4m3, {5}, fp8, 5);
  writer.set_metadata("format", "pt");
  writer.set_metadata("mugv.step", "1200");
  writer.write(path);

  SafetensorsFile file = SafetensorsFile::open(path);
  CHECK(file.size() == 9);
  CHECK(file.names() == std::vector<std::string>{"blocks.0.norm", "blocks.0.weight", "empty", "empty2d",
                                                 "fp8", "half", "mask", "scale", "step"});
  CHECK(file.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"mugv.step", "1200"}});
  CHECK((8 + file.header_size_bytes()) % 8 == 0);

  const TensorView& w = file.at("blocks.0.weight");
  CHECK(w.dtype == DType::f32);
  CHECK(w.shape == std::vector<int64_t>{2, 3});
  CHECK(w.numel() == 6);
  REQUIRE(w.size_bytes == 24);
  std::vector<float> back(6);
  std::memcpy(back.data(), w.data, 24);
  CHECK(back == weights);

  CHECK(std::memcmp(file.at("blocks.0.norm").data, halves.data(), 8) == 0);
  CHECK(file.at("half").shape == std::vector<int64_t>{2, 2});
  CHECK(std::memcmp(file.at("step").data, steps.data(), 16) == 0);
  CHECK(std::memcmp(file.at("mask").data, flags.data(), 3) == 0);
  CHECK(file.at("mask").dtype == DType::boolean);
  const TensorView& s = file.at("scale");
  CHECK(s.shape.empty());
  CHECK(s.numel() == 1);
  double scale_back = 0;
  std::memcpy(&scale_back, s.data, 8);
  CHECK(scale_back == 0.125);
  CHECK(file.at("empty").shape == std::vector<int64_t>{0});
  CHECK(file.at("empty").size_bytes == 0);
  CHECK(file.at("empty").numel() == 0);
  CHECK(file.at("empty2d").shape == std::vector<int64_t>{4, 0});
  CHECK(std::memcmp(file.at("fp8").data, fp8, 5) == 0);

  try {
    (void)file.at("missing");
    FAIL("expected not_found");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::not_found);
    CHECK_THAT(e.message(), Catch::Contains("missing"));
  }

  SECTION("writing is deterministic and moving the reader keeps views valid") {
    fs::path again = dir / "again.safetensors";
    writer.write(again);
    CHECK(read_text_file(again) == read_text_file(path));
    SafetensorsFile moved = std::move(file);
    CHECK(std::memcmp(moved.at("blocks.0.weight").data, weights.data(), 24) == 0);
  }
}

TEST_CASE("safetensors bytes match the format layout exactly", "[unit][core]") {
  test::TempDir dir;
  std::string data = f32_bytes({1.0f, 2.0f});
  REQUIRE(data == std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8));

  SECTION("one tensor, no metadata") {
    SafetensorsWriter writer;
    writer.add("a", DType::f32, {2}, data.data(), data.size());
    writer.write(dir / "a.safetensors");
    std::string json = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    REQUIRE(json.size() == 54);
    std::string header = json + std::string(2, ' ');  // padded to 56, a multiple of 8
    std::string expected = std::string("\x38\0\0\0\0\0\0\0", 8) + header + data;
    CHECK(read_text_file(dir / "a.safetensors") == expected);
  }

  SECTION("metadata first, tensors sorted by name, offsets follow that order") {
    SafetensorsWriter writer;
    writer.add("z", DType::u8, {1}, "\x07", 1);
    writer.add("b", DType::f32, {2}, data.data(), data.size());
    writer.set_metadata("format", "pt");
    writer.write(dir / "b.safetensors");
    std::string json =
        R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
        R"("z":{"dtype":"U8","shape":[1],"data_offsets":[8,9]}})";
    std::string header = json + std::string((8 - json.size() % 8) % 8, ' ');
    CHECK(writer.header() == header);
    CHECK(read_text_file(dir / "b.safetensors") == le64(header.size()) + header + data + "\x07");
  }

  SECTION("no tensors") {
    SafetensorsWriter writer;
    writer.write(dir / "empty.safetensors");
    CHECK(read_text_file(dir / "empty.safetensors") == le64(8) + "{}      ");
    CHECK(SafetensorsFile::open(dir / "empty.safetensors").size() == 0);
  }

  SECTION("hand-written files from other writers are read (unpadded header, any key order)") {
    std::string json =
        R"({"x":{"data_offsets":[4,8],"shape":[1],"dtype":"F32"},"y":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"__metadata__":{"k":"v"}})";
    test::write_bytes(dir / "other.safetensors", file_bytes(json, data));
    SafetensorsFile file = SafetensorsFile::open(dir / "other.safetensors");
    float x = 0, y = 0;
    std::memcpy(&x, file.at("x").data, 4);
    std::memcpy(&y, file.at("y").data, 4);
    CHECK(x == 2.0f);
    CHECK(y == 1.0f);
    CHECK(file.metadata().at("k") == "v");
  }
}

TEST_CASE("every malformed safetensors file is rejected with a typed error", "[unit][core]") {
  test::TempDir dir;
  const std::string eight(8, '\x11');
  auto one = [](const std::string& entry) { return R"({"t":)" + entry + "}"; };
  auto f32x2 = [&](const std::string& offsets) {
    return one(R"({"dtype":"F32","shape":[2],"data_offsets":)" + offsets + "}");
  };

  struct Case {
    const char* what;
    std::string bytes;
    ErrorCode code;
    const char* message_part;
  };
  const std::vector<Case> cases = {
      {"shorter than 8 bytes", "\x05\0\0", ErrorCode::format, "too short"},
      {"empty file", "", ErrorCode::format, "too short"},
      {"header length 0", le64(0) + "{}", ErrorCode::format, "header length is 0"},
      {"header length beyond the file", le64(100) + "{}", ErrorCode::corrupt, "larger than the 2 bytes"},
      {"header length over 100 MiB", le64(uint64_t(100) << 20 | 1) + "{}", ErrorCode::format, "100 MiB"},
      {"header length near 2^64", le64(~uint64_t(0)) + "{}", ErrorCode::format, "100 MiB"},
      {"header not starting with {", file_bytes(" {}", ""), ErrorCode::format, "does not start with '{'"},
      {"header an array", file_bytes("[1]", ""), ErrorCode::format, "does not start with '{'"},
      {"header not JSON", file_bytes("{\"t\":", ""), ErrorCode::format, "not valid JSON"},
      {"header invalid UTF-8", file_bytes("{\"\xff\":1}", ""), ErrorCode::format, "not valid JSON"},
      {"trailing garbage in header", file_bytes("{}x", ""), ErrorCode::format, "not valid JSON"},
      {"number beyond a double",  // valid JSON that nlohmann refuses with out_of_range, not parse_error
       file_bytes(one(R"({"dtype":"U8","shape":[1e999],"data_offsets":[0,1]})"), "x"), ErrorCode::format,
       "not valid JSON: number overflow"},
      {"entry not an object", file_bytes(one("3"), ""), ErrorCode::format, "expected an object"},
      {"missing dtype", file_bytes(one(R"({"shape":[],"data_offsets":[0,0]})"), ""), ErrorCode::format,
       "missing"},
      {"unknown dtype", file_bytes(one(R"({"dtype":"F4","shape":[1],"data_offsets":[0,1]})"), "x"),
       ErrorCode::format, "unknown dtype 'F4'"},
      {"dtype not a string", file_bytes(one(R"({"dtype":4,"shape":[1],"data_offsets":[0,4]})"), "xxxx"),
       ErrorCode::format, "dtype is not a string"},
      {"negative dimension", file_bytes(one(R"({"dtype":"U8","shape":[-1],"data_offsets":[0,0]})"), ""),
       ErrorCode::format, "non-negative integers"},
      {"fractional dimension", file_bytes(one(R"({"dtype":"U8","shape":[1.0],"data_offsets":[0,1]})"), "x"),
       ErrorCode::format, "non-negative integers"},
      {"shape not a list", file_bytes(one(R"({"dtype":"U8","shape":"1","data_offsets":[0,1]})"), "x"),
       ErrorCode::format, "non-negative integers"},
      {"nested shape", file_bytes(one(R"({"dtype":"U8","shape":[[1]],"data_offsets":[0,1]})"), "x"),
       ErrorCode::format, "non-negative integers"},
      {"one offset", file_bytes(f32x2("[0]"), eight), ErrorCode::format, "two non-negative integers"},
      {"three offsets", file_bytes(f32x2("[0,8,8]"), eight), ErrorCode::format, "two non-negative integers"},
      {"string offset", file_bytes(f32x2(R"(["0",8])"), eight), ErrorCode::format,
       "two non-negative integers"},
      {"negative offset", file_bytes(f32x2("[-8,0]"), eight), ErrorCode::format, "two non-negative integers"},
      {"begin after end", file_bytes(f32x2("[8,0]"), eight), ErrorCode::format, "begin 8 is after end 0"},
      {"end beyond buffer", file_bytes(f32x2("[0,8]"), "1234"), ErrorCode::corrupt,
       "beyond the 4-byte data buffer"},
      {"huge end", file_bytes(f32x2("[0,18446744073709551615]"), eight), ErrorCode::format,
       "two non-negative integers"},
      {"byte count mismatch", file_bytes(f32x2("[0,4]"), "1234"), ErrorCode::format, "needs 8 bytes"},
      {"numel overflow",
       file_bytes(one(R"({"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]})"), ""),
       ErrorCode::format, "overflows"},
      {"numel wraps to the span",  // 2^62 * 4 bytes wraps to 0 in 64 bits
       file_bytes(one(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]})"), ""),
       ErrorCode::format, "overflows"},
      {"overlapping tensors",
       file_bytes(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           eight),
       ErrorCode::format, "overlap"},
      {"empty tensor inside another",
       file_bytes(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
           eight),
       ErrorCode::format, "overlap"},
      {"hole between tensors",
       file_bytes(
           R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
           "123456"),
       ErrorCode::format, "bytes 2..4 of the data buffer belong to no tensor"},
      {"hole at the start", file_bytes(one(R"({"dtype":"U8","shape":[2],"data_offsets":[2,4]})"), "1234"),
       ErrorCode::format, "bytes 0..2"},
      {"trailing bytes", file_bytes(f32x2("[0,8]"), eight + "xx"), ErrorCode::corrupt,
       "2 bytes after the last tensor"},
      {"bytes but no tensors", file_bytes("{}", "abc"), ErrorCode::corrupt, "3 bytes after the last tensor"},
      {"metadata value not a string", file_bytes(R"({"__metadata__":{"step":10}})", ""), ErrorCode::format,
       "value of 'step' is not a string"},
      {"metadata not an object", file_bytes(R"({"__metadata__":["a"]})", ""), ErrorCode::format,
       "__metadata__ is not an object"},
      {"duplicate tensor name",
       file_bytes(
           R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
           "12"),
       ErrorCode::format, "'a' appears twice"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    Rejected r = open_rejected(dir, c.bytes);
    CHECK(to_string(r.code) == std::string(to_string(c.code)));
    CHECK_THAT(r.message, Catch::Contains(c.message_part));
  }

  SECTION("missing file is not_found, a directory is io") {
    try {
      (void)SafetensorsFile::open(dir / "none.safetensors");
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::not_found);
    }
    try {
      (void)SafetensorsFile::open(dir.path());
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::io);
    }
  }
}

TEST_CASE("safetensors writer rejects inconsistent tensors", "[unit][core]") {
  SafetensorsWriter writer;
  float four[4] = {};
  writer.add("ok", DType::f32, {4}, four, 16);
  auto code_of = [&](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::unknown;
  };
  CHECK(code_of([&] { writer.add("ok", DType::f32, {4}, four, 16); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { writer.add("", DType::f32, {4}, four, 16); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { writer.add("__metadata__", DType::f32, {4}, four, 16); }) ==
        ErrorCode::invalid_argument);
  CHECK(code_of([&] { writer.add("n", DType::f32, {-4}, four, 16); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { writer.add("m", DType::f32, {4}, four, 12); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { writer.add("u", DType::unknown, {4}, four, 16); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { writer.add("bad\xff", DType::f32, {4}, four, 16); }) == ErrorCode::invalid_argument);
  CHECK(writer.size() == 1);

  test::TempDir dir;
  fs::path blocker = dir / "file";
  test::write_bytes(blocker, "x");
  CHECK(code_of([&] { writer.write(blocker / "model.safetensors"); }) == ErrorCode::io);
}
