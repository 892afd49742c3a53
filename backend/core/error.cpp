#include "core/error.h"

#include <array>
#include <utility>

namespace mugv {
namespace {

constexpr std::array<std::pair<ErrorCode, const char*>, 15> kNames{{
    {ErrorCode::unknown, "unknown"},
    {ErrorCode::usage, "usage"},
    {ErrorCode::invalid_argument, "invalid_argument"},
    {ErrorCode::not_found, "not_found"},
    {ErrorCode::io, "io"},
    {ErrorCode::format, "format"},
    {ErrorCode::corrupt, "corrupt"},
    {ErrorCode::unsupported, "unsupported"},
    {ErrorCode::conflict, "conflict"},
    {ErrorCode::cancelled, "cancelled"},
    {ErrorCode::timeout, "timeout"},
    {ErrorCode::out_of_memory, "out_of_memory"},
    {ErrorCode::protocol, "protocol"},
    {ErrorCode::forbidden, "forbidden"},
    {ErrorCode::internal, "internal"},
}};

std::string compose(const std::string& subject, const std::string& message) {
  return subject.empty() ? message : subject + ": " + message;
}

}  // namespace

const char* to_string(ErrorCode code) {
  for (const auto& [c, name] : kNames)
    if (c == code) return name;
  return "unknown";
}

std::optional<ErrorCode> error_code_from_string(std::string_view name) {
  for (const auto& [c, n] : kNames)
    if (name == n) return c;
  return std::nullopt;
}

Error::Error(ErrorCode code, std::string message) : Error(code, std::string(), std::move(message)) {}

Error::Error(ErrorCode code, std::string subject, std::string message)
    : std::runtime_error(compose(subject, message)),
      code_(code),
      subject_(std::move(subject)),
      message_(std::move(message)) {}

int exit_code_for(ErrorCode code) {
  return code == ErrorCode::usage ? 2 : 1;
}

}  // namespace mugv
