// libFuzzer target: protocol::decode must never crash, hang or read out of bounds on any frames, and
// every message it accepts must survive encode -> decode unchanged. Input: frames separated by 0x1E.
#include "service/protocol.h"

#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> frames;
  size_t start = 0;
  for (size_t i = 0; i <= input.size(); ++i) {
    if (i == input.size() || input[i] == '\x1e') {
      frames.push_back(input.substr(start, i - start));
      start = i + 1;
    }
  }
  auto decoded = mugv::protocol::decode(frames);
  if (auto* message = std::get_if<mugv::protocol::Message>(&decoded)) {
    auto encoded = mugv::protocol::encode(*message);
    std::vector<std::string_view> views(encoded.begin(), encoded.end());
    auto again = mugv::protocol::decode(views);
    auto* round = std::get_if<mugv::protocol::Message>(&again);
    if (!round || round->type != message->type || round->header != message->header ||
        round->blobs != message->blobs)
      std::abort();
  }
  return 0;
}
