#include "core/dtype_convert.h"
#include "core/error.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

using namespace mugv;

TEST_CASE("bf16 and f16 conversions round to nearest even and keep specials", "[unit][core]") {
  CHECK(float_to_bf16(1.0f) == 0x3F80);
  CHECK(float_to_bf16(-2.0f) == 0xC000);
  CHECK(float_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);      // a tie goes to the even neighbour
  CHECK(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82);  // ... and up when that is the even one
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(bf16_to_float(float_to_bf16(std::numeric_limits<float>::infinity())) ==
        std::numeric_limits<float>::infinity());

  CHECK(float_to_f16(1.0f) == 0x3C00);
  CHECK(float_to_f16(-2.0f) == 0xC000);
  CHECK(float_to_f16(0.1f) == 0x2E66);
  CHECK(float_to_f16(65504.0f) == 0x7BFF);
  CHECK(float_to_f16(65520.0f) == 0x7C00);  // halfway to the next step beyond the largest half: infinity
  CHECK(float_to_f16(std::ldexp(1.0f, -24)) == 0x0001);  // the smallest subnormal
  CHECK(float_to_f16(std::ldexp(1.0f, -26)) == 0x0000);  // below half of it: zero
  CHECK(std::isnan(f16_to_float(float_to_f16(std::numeric_limits<float>::quiet_NaN()))));

  // Every half and every bf16 value survives the round trip through float.
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const auto b = static_cast<uint16_t>(bits);
    const float h = f16_to_float(b);
    if (!std::isnan(h)) REQUIRE(float_to_f16(h) == b);
    const float f = bf16_to_float(b);
    if (!std::isnan(f)) REQUIRE(float_to_bf16(f) == b);
  }
}

TEST_CASE("convert_elements converts buffers between float dtypes and refuses the rest", "[unit][core]") {
  const std::vector<float> values = {0.0f, 1.5f, -3.25f, 1e-3f, 65504.0f};
  std::vector<uint16_t> halves(values.size());
  convert_elements(DType::f32, values.data(), DType::f16, halves.data(), values.size());
  std::vector<double> doubles(values.size());
  convert_elements(DType::f16, halves.data(), DType::f64, doubles.data(), values.size());
  for (size_t i = 0; i < values.size(); ++i) CHECK(doubles[i] == Approx(values[i]).epsilon(1e-3));
  std::vector<uint16_t> brains(values.size());
  convert_elements(DType::f64, doubles.data(), DType::bf16, brains.data(), values.size());
  CHECK(bf16_to_float(brains[1]) == 1.5f);

  std::vector<int64_t> ints = {1, 2};
  std::vector<int64_t> copy(2);
  convert_elements(DType::i64, ints.data(), DType::i64, copy.data(), 2);
  CHECK(copy == ints);
  std::vector<float> out(2);
  Error e = test::expect_error([&] { convert_elements(DType::i64, ints.data(), DType::f32, out.data(), 2); });
  CHECK(e.code() == ErrorCode::unsupported);
}
