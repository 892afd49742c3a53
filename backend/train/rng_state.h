#pragma once
// The global CPU generator's state as base64 text, for trainer_state.json (exact resume: a resumed run draws
// what an uninterrupted one would). Not thread-safe: the generator is process-wide.

#include <string>

namespace mugv {

// The state, and back; Error(format / corrupt) naming `subject` for text that is not a saved state.
[[nodiscard]] std::string torch_rng_state_base64();
void set_torch_rng_state_base64(const std::string& state, const std::string& subject);

}  // namespace mugv
