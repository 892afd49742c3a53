#include "train/step_log.h"

#include "core/paths.h"
#include "core/strings.h"

#include <system_error>

namespace mugv {

namespace {

void truncate_metrics(const RunPaths& paths, int64_t after_step) {
  std::error_code ec;
  if (!fs::is_regular_file(paths.metrics(), ec)) return;
  std::ifstream in(paths.metrics());
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) > after_step) continue;
    } catch (const std::exception&) {
      continue;  // a line cut by a crash
    }
    kept += line + "\n";
  }
  write_text_atomic(paths.metrics(), kept);
}

}  // namespace

MetricsLog::MetricsLog(const RunPaths& paths, int64_t resumed_step) {
  truncate_metrics(paths, resumed_step);
  out_.open(paths.metrics(), std::ios::app);
  if (!out_) throw Error(ErrorCode::io, paths.metrics().string(), "cannot append metrics");
}

void MetricsLog::append(const nlohmann::json& step) {
  if (out_.is_open()) out_ << step.dump() << "\n" << std::flush;
}

Error nonfinite_step_error(const std::string& run, int64_t step, const std::string& what, double value,
                           int64_t last_saved) {
  const std::string kept = last_saved > 0 ? cat("the last good checkpoint step-", last_saved, " is kept")
                                          : std::string("no checkpoint was saved yet");
  return Error(ErrorCode::invalid_argument, run,
               cat("step ", step, ": ", what, " is ", value, "; training stopped and ", kept,
                   " (lower --lr, raise --warmup or check the data)"));
}

}  // namespace mugv
