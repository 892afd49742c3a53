#include "train/rng_state.h"

#include "core/base64.h"
#include "core/error.h"
#include "core/strings.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cstring>

namespace mugv {

std::string torch_rng_state_base64() {
  auto state = at::detail::getDefaultCPUGenerator().get_state();
  return base64_encode(state.data_ptr<uint8_t>(), static_cast<size_t>(state.numel()));
}

void set_torch_rng_state_base64(const std::string& state, const std::string& subject) {
  auto bytes = base64_decode(state, subject);
  auto t = torch::empty({int64_t(bytes.size())}, torch::kUInt8);
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  try {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(t);
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::corrupt, subject, cat("RNG state rejected: ", e.what_without_backtrace()));
  }
}

}  // namespace mugv
