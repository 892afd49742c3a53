#pragma once
// Element conversion between the floating-point dtypes of weight files (core/safetensors.h DType): F64, F32,
// F16 and BF16, as `mugv convert` writes them. Narrowing rounds to nearest, ties to even (what LibTorch's
// .to(torch::kBFloat16) and .to(torch::kHalf) do), keeps infinities and NaNs, and gives infinity for a value
// beyond the target's range. Same-dtype conversion is a byte copy; other dtypes (integers, bool, F8) may only
// be copied as they are. Pure functions; thread-safe.

#include "core/safetensors.h"

#include <cstddef>
#include <cstdint>

namespace mugv {

// True for F64, F32, F16 and BF16.
[[nodiscard]] bool is_float_dtype(DType dtype);

// Converts `count` elements from `source` (dtype `from`, little-endian, any alignment) to `target` (dtype
// `to`). Throws Error(unsupported) when from != to and either is not a float dtype.
void convert_elements(DType from, const void* source, DType to, void* target, size_t count);

[[nodiscard]] uint16_t float_to_bf16(float value);
[[nodiscard]] float bf16_to_float(uint16_t bits);
[[nodiscard]] uint16_t float_to_f16(float value);
[[nodiscard]] float f16_to_float(uint16_t bits);

}  // namespace mugv
