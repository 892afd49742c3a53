#include "caption/command_captioner.h"

#include "core/error.h"
#include "core/process.h"
#include "core/strings.h"
#include "core/utf8.h"
#include "media/image.h"

#include <cstdlib>

namespace mugv {
namespace {

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = text.find(from, pos)) != std::string::npos; pos += to.size())
    text.replace(pos, from.size(), to);
  return text;
}

std::string last_line(const std::string& text) {
  std::string t = trim(text);
  size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

// A private folder for one clip's keyframes, removed when the call ends.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string tmpl = (fs::temp_directory_path() / "mugv-caption-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw Error(ErrorCode::io, tmpl, "cannot create a temporary folder");
    path = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

CommandCaptioner::CommandCaptioner(std::vector<std::string> argv, std::chrono::milliseconds timeout)
    : argv_(std::move(argv)), timeout_(timeout) {
  if (argv_.empty() || argv_[0].empty())
    throw Error(ErrorCode::invalid_argument, "--command", "the captioning command is empty");
}

std::string CommandCaptioner::producer() const {
  std::string s = "command:";
  for (const auto& a : argv_) s += (s.size() > 8 ? " " : "") + a;
  return s;
}

CaptionResult CommandCaptioner::caption(const CaptionInput& input) {
  CaptionResult result;
  try {
    ScratchDir scratch;
    std::vector<std::string> frame_paths;
    for (size_t i = 0; i < input.keyframes.size(); ++i) {
      fs::path p = scratch.path / cat("frame_", i, ".png");
      write_png(p, input.keyframes[i]);
      frame_paths.push_back(p.string());
    }
    std::vector<std::string> argv;
    for (const auto& arg : argv_) {
      if (arg == "{frames}") {
        argv.insert(argv.end(), frame_paths.begin(), frame_paths.end());
        continue;
      }
      std::string a = replace_all(arg, "{video}", input.source.string());
      a = replace_all(a, "{start}", cat(input.start_s));
      a = replace_all(a, "{end}", cat(input.end_s));
      a = replace_all(a, "{clip}", cat(input.clip_id));
      argv.push_back(a);
    }
    ProcessResult run = run_process(argv, timeout_);
    std::string text = trim(run.out);
    if (run.timed_out) {
      result.error = cat("timeout after ", timeout_.count(), " ms");
      result.retryable = true;
    } else if (run.exit_code != 0) {
      result.error = cat("exit code ", run.exit_code, run.err.empty() ? "" : ": " + last_line(run.err));
    } else if (text.empty()) {
      result.error = "the command printed no caption";
    } else if (!is_utf8(text)) {
      result.error = "the command printed a caption that is not UTF-8 text";
    } else {
      result.text = text;
    }
  } catch (const Error& e) {
    result.error = e.what();
  }
  return result;
}

}  // namespace mugv
