#pragma once
// Error type used throughout backend/: an exception with a machine-readable code, the subject it
// concerns (a file, a clip, a parameter) and a message a person can act on.
// Boundaries (CLI main, message handlers, worker main, Qt slots) catch it and turn it into an exit
// code or an error reply; nothing inside backend/ reports errors any other way.

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace mugv {

enum class ErrorCode {
  unknown = 0,
  usage,             // a command line or request that is malformed (CLI exit code 2)
  invalid_argument,  // well-formed but out of range / inconsistent
  not_found,         // a file, dataset, run or id that does not exist
  io,                // the OS refused: permissions, disk full, a directory where a file was expected
  format,            // a file that is not what it claims to be (not a video, bad safetensors header)
  corrupt,           // a file of the right kind that is damaged (truncated, bad checksum)
  unsupported,       // valid but not handled (codec, dtype, feature)
  conflict,          // state does not allow it (already exists, job already running)
  cancelled,         // a cancel token fired
  timeout,
  out_of_memory,
  protocol,   // peer spoke a different or malformed protocol
  forbidden,  // not allowed for this peer: a path outside the allowed roots, a key not authorised
  internal,   // a bug: an invariant was broken
};

const char* to_string(ErrorCode code);
std::optional<ErrorCode> error_code_from_string(std::string_view name);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string message);
  // `subject` names what the error is about (usually a path); what() reads "subject: message".
  Error(ErrorCode code, std::string subject, std::string message);

  ErrorCode code() const noexcept { return code_; }
  const std::string& subject() const noexcept { return subject_; }
  const std::string& message() const noexcept { return message_; }

 private:
  ErrorCode code_;
  std::string subject_;
  std::string message_;
};

// Process exit code a CLI should use for an error of this code: 2 for usage errors, 1 otherwise.
int exit_code_for(ErrorCode code);

}  // namespace mugv
