#include "core/progress.h"

#include "core/error.h"
#include "core/strings.h"

#include <cstdio>

namespace mugv {

void CancelToken::throw_if_cancelled(const std::string& what) const {
  if (cancel_requested()) throw Error(ErrorCode::cancelled, what, "cancelled");
}

ProgressMeter::ProgressMeter(ProgressFn fn, std::string stage, std::string unit, int64_t total,
                             std::chrono::milliseconds min_interval)
    : fn_(std::move(fn)), min_interval_(min_interval) {
  progress_.stage = std::move(stage);
  progress_.unit = std::move(unit);
  progress_.total = total;
  start_ = last_report_ = last_sample_ = Clock::now();
}

void ProgressMeter::update(int64_t done, std::string detail) {
  progress_.done = done;
  if (!detail.empty()) progress_.detail = std::move(detail);
  auto now = Clock::now();
  double since_sample = std::chrono::duration<double>(now - last_sample_).count();
  if (since_sample >= 0.25) {
    // Exponential smoothing keeps the ETA steady while still following real speed changes.
    double instant = (done - last_sample_done_) / since_sample;
    progress_.rate_per_s = progress_.rate_per_s == 0 ? instant : 0.7 * progress_.rate_per_s + 0.3 * instant;
    last_sample_ = now;
    last_sample_done_ = done;
  } else if (progress_.rate_per_s == 0) {
    double elapsed = std::chrono::duration<double>(now - start_).count();
    if (elapsed > 0) progress_.rate_per_s = done / elapsed;
  }
  progress_.eta_s = (progress_.total > 0 && progress_.rate_per_s > 0)
                        ? (progress_.total - done) / progress_.rate_per_s
                        : -1;
  bool finished = progress_.total > 0 && done >= progress_.total;
  if (finished || now - last_report_ >= min_interval_) {
    last_report_ = now;
    if (fn_) fn_(progress_);
  }
}

void ProgressMeter::flush() {
  last_report_ = Clock::now();
  if (fn_) fn_(progress_);
}

std::string render_progress_line(const Progress& p, int bar_width) {
  std::string bar;
  if (p.total > 0) {
    int filled = static_cast<int>(bar_width * std::min<double>(1.0, double(p.done) / p.total));
    bar = "[" + std::string(filled, '#') + std::string(bar_width - filled, '.') + "]";
  }
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.1f/s", p.rate_per_s);
  std::string line = p.stage + "  " + bar + "  " + std::to_string(p.done);
  if (p.total > 0) line += "/" + std::to_string(p.total);
  line += " " + p.unit + "  " + rate;
  if (p.eta_s >= 0) line += "  ETA " + human_duration(p.eta_s);
  if (!p.detail.empty()) line += "  " + p.detail;
  return line;
}

}  // namespace mugv
