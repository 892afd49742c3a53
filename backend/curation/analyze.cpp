#include "curation/analyze.h"

#include "core/error.h"
#include "media/decoder.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

namespace mugv {

namespace {

// Single producer, single consumer; close() ends the stream (after an error too).
class FrameQueue {
 public:
  explicit FrameQueue(size_t capacity) : capacity_(capacity) {}

  // False when the consumer has stopped listening.
  bool push(RgbFrame frame) {
    std::unique_lock<std::mutex> lock(mutex_);
    not_full_.wait(lock, [&] { return frames_.size() < capacity_ || stopped_; });
    if (stopped_) return false;
    frames_.push_back(std::move(frame));
    not_empty_.notify_one();
    return true;
  }
  std::optional<RgbFrame> pop() {
    std::unique_lock<std::mutex> lock(mutex_);
    not_empty_.wait(lock, [&] { return !frames_.empty() || closed_; });
    if (frames_.empty()) return std::nullopt;
    RgbFrame frame = std::move(frames_.front());
    frames_.pop_front();
    not_full_.notify_one();
    return frame;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    not_empty_.notify_all();
  }
  void stop() {
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
    not_full_.notify_all();
  }

 private:
  size_t capacity_;
  std::mutex mutex_;
  std::condition_variable not_full_, not_empty_;
  std::deque<RgbFrame> frames_;
  bool closed_ = false;
  bool stopped_ = false;
};

}  // namespace

VideoAnalysis analyze_video(const fs::path& path, const AnalyzeOptions& options, const CancelToken* cancel,
                            const ProgressFn& progress) {
  DecodeOptions decode;
  decode.width = kScoreAnalysisWidth;
  decode.threads = options.decode_threads;
  VideoDecoder decoder(path, decode);  // opened here so that open errors reach the caller directly
  ProgressMeter meter(progress, "curate", "frames", decoder.info().frame_count);

  FrameQueue queue(8);
  std::exception_ptr decode_error;
  std::thread producer([&] {
    try {
      while (auto frame = decoder.next()) {
        if (!queue.push(std::move(*frame))) break;
      }
    } catch (...) {
      decode_error = std::current_exception();
    }
    queue.close();
  });

  SceneDetector detector(options.scene);
  ClipScorer scorer(options.scores);
  VideoAnalysis result;
  try {
    while (auto frame = queue.pop()) {
      if (cancel) cancel->throw_if_cancelled(path.string());
      detector.push(*frame);
      scorer.push(*frame);
      ++result.frames;
      if (progress) meter.advance(1, path.filename().string());
    }
  } catch (...) {
    queue.stop();
    producer.join();
    throw;
  }
  producer.join();
  if (decode_error) std::rethrow_exception(decode_error);
  if (progress) meter.flush();

  result.scenes = detector.finish();
  for (const Scene& clip :
       split_into_clips(result.scenes.scenes, options.clip_min_len_s, options.clip_max_len_s)) {
    result.clips.push_back(scorer.analyze(clip.start_s, clip.end_s));
  }
  return result;
}

}  // namespace mugv
