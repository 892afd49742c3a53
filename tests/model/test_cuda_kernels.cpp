// The fused CUDA kernels' library (model/kernels/cuda_kernels.h) without LibTorch: it links wherever nvcc
// built it, and on a machine without a usable GPU or driver every call reports the CUDA runtime's error
// rather than crashing. The kernels' arithmetic is the CPU loops' (tests/model/test_fused_ops.cpp), and
// mugv-device-check runs the kernels themselves on a GPU.
#include "model/kernels/cuda_kernels.h"

#include <catch2/catch.hpp>

#include <string>

using namespace mugv::kernels;

TEST_CASE("the CUDA kernels library reports a machine without a GPU", "[unit][model][cuda]") {
  const char* error = nullptr;
  const int devices = cuda_device_count(&error);
  if (devices > 0) {
    SUCCEED("a GPU is present: mugv-device-check runs the kernels on it");
    return;
  }
  REQUIRE(error != nullptr);
  CHECK_FALSE(std::string(error).empty());

  RopeShape shape;
  shape.batch = 1;
  shape.heads = 1;
  shape.tokens = 2;
  shape.head_dim = 4;
  shape.pairs = 2;
  shape.stride_b = 8;
  shape.stride_h = 8;
  shape.stride_n = 4;
  float x[8] = {}, out[8] = {}, cos[4] = {}, sin[4] = {};
  const char* launch = rope_rotate_cuda(x, out, cos, sin, shape, ElementType::float32, false, nullptr);
  REQUIRE(launch != nullptr);
  CHECK_FALSE(std::string(launch).empty());
  // Nothing to rotate is no launch, so no error, GPU or not.
  shape.tokens = 0;
  CHECK(rope_rotate_cuda(x, out, cos, sin, shape, ElementType::bfloat16, true, nullptr) == nullptr);
}
