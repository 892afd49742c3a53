#pragma once
// Cancel tokens and progress reporting for long operations (decode, curate, train, generate).
// Every long operation takes a `const CancelToken&` and a `ProgressFn`; it calls
// token.throw_if_cancelled() once per step and reports through a ProgressMeter.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace mugv {

// Shared flag: copies observe the same cancellation. Thread-safe.
class CancelToken {
 public:
  CancelToken() : flag_(std::make_shared<std::atomic<bool>>(false)) {}
  void request_cancel() const { flag_->store(true); }
  bool cancel_requested() const { return flag_->load(); }
  // Throws Error(ErrorCode::cancelled) naming `what` when cancellation was requested.
  void throw_if_cancelled(const std::string& what = "operation") const;

 private:
  std::shared_ptr<std::atomic<bool>> flag_;
};

struct Progress {
  std::string stage;  // "decode", "curate", "train", ...
  std::string unit;   // "frames", "clips", "steps"
  int64_t done = 0;
  int64_t total = 0;      // 0 when unknown
  double rate_per_s = 0;  // smoothed units per second
  double eta_s = -1;      // negative when unknown
  std::string detail;     // free text: the current file, the loss, ...
};

using ProgressFn = std::function<void(const Progress&)>;

// Turns a sequence of "done" counts into Progress reports with a smoothed rate and ETA, calling
// the callback at most every `min_interval` (and always for the final update). Not thread-safe.
class ProgressMeter {
 public:
  ProgressMeter(ProgressFn fn, std::string stage, std::string unit, int64_t total,
                std::chrono::milliseconds min_interval = std::chrono::milliseconds(200));

  void set_total(int64_t total) { progress_.total = total; }
  void update(int64_t done, std::string detail = {});
  void advance(int64_t delta = 1, std::string detail = {}) {
    update(progress_.done + delta, std::move(detail));
  }
  // Reports the current state regardless of the interval (e.g. at the end of a stage).
  void flush();
  const Progress& current() const { return progress_; }

 private:
  using Clock = std::chrono::steady_clock;
  ProgressFn fn_;
  Progress progress_;
  std::chrono::milliseconds min_interval_;
  Clock::time_point start_, last_report_, last_sample_;
  int64_t last_sample_done_ = 0;
};

// Renders a one-line terminal progress bar: "train  [#####.....]  50/100 steps  12.3/s  ETA 4.1s  detail".
std::string render_progress_line(const Progress& progress, int bar_width = 30);

}  // namespace mugv
