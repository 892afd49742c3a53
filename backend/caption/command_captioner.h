#pragma once
// Captions from an external program, run without a shell (no quoting pitfalls): each argument may contain
// {video}, {start}, {end}, {clip} and {frames} (expands to one argument per keyframe PNG, written to a
// private temporary folder). The program's stdout, trimmed, is the caption; a non-zero exit, empty output
// or exceeding the timeout (the process is killed) is a failed clip with the reason and stderr's last line.

#include "caption/captioner.h"

#include <chrono>

namespace mugv {

class CommandCaptioner final : public Captioner {
 public:
  CommandCaptioner(std::vector<std::string> argv, std::chrono::milliseconds timeout);
  CaptionResult caption(const CaptionInput& input) override;
  std::string producer() const override;
  CaptionerKind kind() const override { return CaptionerKind::command; }

 private:
  std::vector<std::string> argv_;
  std::chrono::milliseconds timeout_;
};

}  // namespace mugv
