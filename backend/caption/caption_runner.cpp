#include "caption/caption_runner.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/utf8.h"
#include "media/image.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace mugv {
namespace {

struct Job {
  Clip clip;
  CaptionInput input;
};

struct Done {
  int64_t clip_id = 0;
  CaptionResult result;
};

bool in_scope(Catalog& catalog, const Clip& clip, CaptionScope scope) {
  auto current = current_caption(catalog, clip.id);
  bool uncaptioned = std::find(clip.tags.begin(), clip.tags.end(), kUncaptionedTag) != clip.tags.end();
  switch (scope) {
    case CaptionScope::missing:
      return !current || uncaptioned;
    case CaptionScope::not_human:
      return !current || current->origin != CaptionOrigin::human;
    case CaptionScope::all:
      return true;
    default:
      return false;
  }
}

std::vector<RgbFrame> keyframes(const fs::path& video, double start_s, double end_s) {
  double span = std::max(0.0, end_s - start_s);
  std::vector<RgbFrame> frames;
  for (double f : {0.05, 0.5, 0.95}) frames.push_back(thumbnail(video, start_s + f * span, 512));
  return frames;
}

CaptionResult caption_with_retries(Captioner& captioner, Job& job, const CaptionRunOptions& options,
                                   const CancelToken& cancel) {
  CaptionResult result;
  try {
    if (job.input.keyframes.empty())
      job.input.keyframes = keyframes(job.input.source, job.input.start_s, job.input.end_s);
  } catch (const Error& e) {
    result.error = cat("cannot read keyframes: ", e.what());
    return result;
  }
  for (int attempt = 0; attempt <= options.retries && !cancel.cancel_requested(); ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(options.retry_backoff * (1 << (attempt - 1)));
    result = captioner.caption(job.input);
    if (result.text || !result.retryable) break;
  }
  return result;
}

void record_failure(Catalog& catalog, int64_t clip_id, const std::string& error) {
  auto clip = get_clip(catalog, clip_id);
  if (!clip) return;
  ClipScores scores = clip->scores;
  scores.extra["caption_error"] = error;
  Transaction tx(catalog, TransactionMode::write);
  update_clip_scores(catalog, clip_id, scores);
  add_clip_tag(catalog, clip_id, kUncaptionedTag);
  tx.commit();
}

}  // namespace

const char* to_string(CaptionScope scope) {
  switch (scope) {
    case CaptionScope::missing:
      return "missing";
    case CaptionScope::not_human:
      return "not_human";
    case CaptionScope::all:
      return "all";
    default:
      return "unknown";
  }
}

std::optional<CaptionScope> caption_scope_from_string(const std::string& name) {
  for (auto s : {CaptionScope::missing, CaptionScope::not_human, CaptionScope::all})
    if (name == to_string(s)) return s;
  return std::nullopt;
}

CaptionRunReport caption_dataset(Catalog& catalog, Captioner& captioner, const CaptionRunOptions& options,
                                 const CancelToken& cancel, const ProgressFn& progress) {
  auto dataset = find_dataset(catalog, options.dataset);
  if (!dataset) throw Error(ErrorCode::not_found, options.dataset, "no such dataset");
  ClipFilter filter;
  filter.dataset_id = dataset->id;
  if (options.kept_only) filter.decision = ClipDecision::keep;

  std::deque<Job> jobs;
  for (auto& clip : list_clips(catalog, filter)) {
    if (!in_scope(catalog, clip, options.scope)) continue;
    auto source = get_source(catalog, clip.source_id);
    if (!source) continue;
    Job job;
    job.input.clip_id = clip.id;
    job.input.source = source->path;
    job.input.start_s = clip.start_s;
    job.input.end_s = clip.end_s;
    auto current = current_caption(catalog, clip.id);
    job.input.metadata = {{"clip_id", clip.id},
                          {"source_name", source->path.filename().string()},
                          {"duration_s", clip.end_s - clip.start_s},
                          {"width", clip.width},
                          {"height", clip.height},
                          {"fps", clip.fps},
                          {"tags", clip.tags},
                          {"caption", current ? current->text : ""}};
    for (auto [name, score] : {std::pair{"sharpness", clip.scores.sharpness},
                               {"motion", clip.scores.motion},
                               {"aesthetic", clip.scores.aesthetic}})
      if (score) job.input.metadata[name] = *score;
    for (auto it = clip.scores.extra.begin(); it != clip.scores.extra.end(); ++it)
      if (!job.input.metadata.contains(it.key())) job.input.metadata[it.key()] = it.value();
    job.clip = std::move(clip);
    jobs.push_back(std::move(job));
  }

  CaptionRunReport report;
  report.clips = static_cast<int>(jobs.size());
  ProgressMeter meter(progress, "caption", "clips", report.clips);

  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Done> done;
  std::atomic<size_t> next{0};
  int workers = std::max(1, std::min(options.concurrency, report.clips));
  std::atomic<int> running{report.clips > 0 ? workers : 0};
  std::vector<std::thread> threads;
  for (int w = 0; w < workers && report.clips > 0; ++w) {
    threads.emplace_back([&] {
      for (size_t i = next++; i < jobs.size() && !cancel.cancel_requested(); i = next++) {
        CaptionResult r = caption_with_retries(captioner, jobs[i], options, cancel);
        std::lock_guard<std::mutex> lock(mutex);
        done.push_back({jobs[i].clip.id, std::move(r)});
        ready.notify_one();
      }
      std::lock_guard<std::mutex> lock(mutex);
      --running;
      ready.notify_one();
    });
  }
  // Only this thread touches the catalog.
  int handled = 0;
  while (handled < report.clips) {
    std::unique_lock<std::mutex> lock(mutex);
    ready.wait(lock, [&] { return !done.empty() || running == 0; });
    if (done.empty()) break;  // every worker stopped (cancelled) and all results are written
    Done d = std::move(done.front());
    done.pop_front();
    lock.unlock();
    ++handled;
    if (d.result.text) {
      Caption c = add_caption(
          catalog, d.clip_id, *d.result.text,
          captioner.kind() == CaptionerKind::template_ ? CaptionOrigin::template_ : CaptionOrigin::model,
          captioner.producer());
      (void)remove_clip_tag(catalog, d.clip_id, kUncaptionedTag);
      if (c.current)
        ++report.captioned;
      else
        ++report.kept_human;
    } else {
      // An error may quote another program's output (stderr, an HTTP body cut at 200 bytes): made valid
      // UTF-8 before it is stored in the clip's JSON scores.
      const std::string error = valid_utf8(d.result.error);
      record_failure(catalog, d.clip_id, error);
      report.failures.push_back({d.clip_id, error});
      log_warning(cat("clip ", d.clip_id, ": uncaptioned: ", error));
    }
    meter.advance(1);
  }
  for (auto& t : threads) t.join();
  meter.flush();
  cancel.throw_if_cancelled("caption");
  return report;
}

}  // namespace mugv
