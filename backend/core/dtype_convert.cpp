#include "core/dtype_convert.h"

#include "core/error.h"

#include <cmath>
#include <cstring>
#include <string>

namespace mugv {
namespace {

uint32_t bits_of(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

float float_of(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

double read_element(DType dtype, const uint8_t* p) {
  switch (dtype) {
    case DType::f64: {
      double v;
      std::memcpy(&v, p, sizeof v);
      return v;
    }
    case DType::f32: {
      float v;
      std::memcpy(&v, p, sizeof v);
      return v;
    }
    case DType::f16: {
      uint16_t b;
      std::memcpy(&b, p, sizeof b);
      return f16_to_float(b);
    }
    case DType::bf16: {
      uint16_t b;
      std::memcpy(&b, p, sizeof b);
      return bf16_to_float(b);
    }
    default:
      break;
  }
  return 0.0;
}

void write_element(DType dtype, double value, uint8_t* p) {
  switch (dtype) {
    case DType::f64:
      std::memcpy(p, &value, sizeof value);
      return;
    case DType::f32: {
      const float v = static_cast<float>(value);
      std::memcpy(p, &v, sizeof v);
      return;
    }
    case DType::f16: {
      const uint16_t b = float_to_f16(static_cast<float>(value));
      std::memcpy(p, &b, sizeof b);
      return;
    }
    case DType::bf16: {
      const uint16_t b = float_to_bf16(static_cast<float>(value));
      std::memcpy(p, &b, sizeof b);
      return;
    }
    default:
      return;
  }
}

}  // namespace

bool is_float_dtype(DType dtype) {
  return dtype == DType::f64 || dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16;
}

uint16_t float_to_bf16(float value) {
  const uint32_t bits = bits_of(value);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // stays a (quiet) NaN
  const uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);                     // to nearest, ties to even
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float bf16_to_float(uint16_t bits) {
  return float_of(static_cast<uint32_t>(bits) << 16);
}

uint16_t float_to_f16(float value) {
  const uint32_t bits = bits_of(value);
  const uint32_t sign = (bits >> 16) & 0x8000;
  const uint32_t magnitude = bits & 0x7FFFFFFF;
  if (magnitude > 0x7F800000) return static_cast<uint16_t>(sign | 0x7E00);   // NaN
  if (magnitude >= 0x477FF000) return static_cast<uint16_t>(sign | 0x7C00);  // rounds beyond 65504: infinity
  if (magnitude < 0x38800000) {
    // Subnormal in half (or zero): value / 2^-24 rounded to nearest even.
    const float scaled = float_of(magnitude) * 16777216.0f;  // exact: a power of two
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits, ties to even.
  const uint32_t rebased = magnitude - 0x38000000;
  const uint32_t rounding = 0xFFF + ((rebased >> 13) & 1);
  return static_cast<uint16_t>(sign | ((rebased + rounding) >> 13));
}

float f16_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000) << 16;
  const uint32_t exponent = (half >> 10) & 0x1F;
  const uint32_t mantissa = half & 0x3FF;
  if (exponent == 0x1F) return float_of(sign | 0x7F800000 | (mantissa << 13));  // inf / NaN
  if (exponent == 0) {
    const float v = static_cast<float>(mantissa) / 16777216.0f;  // subnormal: mantissa · 2^-24
    return sign ? -v : v;
  }
  return float_of(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

void convert_elements(DType from, const void* source, DType to, void* target, size_t count) {
  if (from == to) {
    std::memcpy(target, source, count * dtype_size_bytes(from));
    return;
  }
  if (!is_float_dtype(from) || !is_float_dtype(to))
    throw Error(ErrorCode::unsupported, "dtype",
                std::string("cannot convert ") + to_string(from) + " to " + to_string(to) +
                    ": only F64, F32, F16 and BF16 convert into each other");
  const auto* in = static_cast<const uint8_t*>(source);
  auto* out = static_cast<uint8_t*>(target);
  const size_t in_size = dtype_size_bytes(from), out_size = dtype_size_bytes(to);
  if (from == DType::f32 && to == DType::bf16) {  // the common case, without the double round trip
    for (size_t i = 0; i < count; ++i) {
      float v;
      std::memcpy(&v, in + i * 4, 4);
      const uint16_t b = float_to_bf16(v);
      std::memcpy(out + i * 2, &b, 2);
    }
    return;
  }
  for (size_t i = 0; i < count; ++i)
    write_element(to, read_element(from, in + i * in_size), out + i * out_size);
}

}  // namespace mugv
