#include "core/names.h"

#include "core/error.h"

namespace mugv {

void check_path_component_name(const std::string& name, const std::string& what) {
  auto refuse = [&](const std::string& why) {
    throw Error(ErrorCode::invalid_argument, name.empty() ? what : name, "a " + what + " name " + why);
  };
  if (name.empty()) refuse("cannot be empty");
  if (name == "." || name == "..") refuse("cannot be '.' or '..'");
  if (name.size() > 200) refuse("has at most 200 bytes");
  for (const char c : name) {
    if (c == '/' || c == '\\') refuse(std::string("cannot contain '") + c + "'");
    if (static_cast<unsigned char>(c) < 32 || c == 127) refuse("cannot contain control characters");
  }
}

}  // namespace mugv
