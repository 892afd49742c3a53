#pragma once
// The training data loader over a latent cache (latent_cache.h). Training never decodes video.
//
// Batches: clips are grouped into buckets by (frames, height, width) so that every batch stacks into
// one tensor. An epoch's order is a pure function of (seed, epoch): the clips are shuffled, each
// bucket is cut into batches of its batch size (`batch_size`, or the bucket's own in `bucket_batch_sizes`:
// short clips can take more per batch than long ones in the same memory; the last batch of a bucket may be
// smaller), and the
// batches are shuffled again. With `world` > 1, rank r takes batches r, r + world, ... of that list
// (the data-parallel sharding hook); each rank sees the same number of batches per epoch.
//
// Resume: cursor() is (epoch, position) of the NEXT batch next() returns; a loader constructed with
// that cursor continues with exactly the batches an uninterrupted one would have returned.
//
// A background thread reads up to `prefetch` batches ahead. next() blocks until its batch is ready
// and reports how long it waited (the "data wait" metric). Errors reading a file surface from next()
// (Error(corrupt) naming the file). The loader is not thread-safe: call next() from one thread.

#include "train/latent_cache.h"

#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mugv {

struct DataCursor {
  int64_t epoch = 0;
  int64_t position = 0;  // batches of this epoch already consumed (on this rank)
  bool operator==(const DataCursor& o) const { return epoch == o.epoch && position == o.position; }
};

// A bucket's pixel geometry: frames, height, width.
using BucketGeometry = std::tuple<int64_t, int64_t, int64_t>;

struct DataOptions {
  int64_t batch_size = 1;
  // Batch sizes of particular buckets (each at least 1); the others take batch_size.
  std::map<BucketGeometry, int64_t> bucket_batch_sizes;
  uint64_t seed = 0;
  int64_t rank = 0;
  int64_t world = 1;
  int64_t prefetch = 2;  // 0: read on the calling thread
  // Batches smaller than this (a bucket's tail) are left out of the plan: data-parallel ranks split each
  // batch, so it must hold at least one sample per rank.
  int64_t min_batch = 1;
};

struct Batch {
  torch::Tensor latents;                      // [B, C, T, H, W] float32
  torch::Tensor fps;                          // [B] float32
  std::vector<std::string> captions;          // B
  std::vector<int64_t> clip_ids;              // B
  int64_t frames = 0, height = 0, width = 0;  // pixel geometry of the bucket
  DataCursor cursor;                          // where this batch sits (epoch, position)
  double wait_ms = 0;                         // how long next() waited for it
};

class LatentLoader {
 public:
  // Throws Error(invalid_argument) for an empty clip list, batch_size or a bucket's batch size < 1, or rank
  // outside [0, world).
  LatentLoader(std::vector<CachedClip> clips, DataOptions options, DataCursor start = {});
  ~LatentLoader();
  LatentLoader(const LatentLoader&) = delete;
  LatentLoader& operator=(const LatentLoader&) = delete;

  [[nodiscard]] Batch next();
  // Cursor of the next batch next() will return.
  DataCursor cursor() const { return cursor_; }
  // Batches per epoch on this rank.
  int64_t batches_per_epoch() const;
  size_t clip_count() const { return clips_.size(); }

  // The clip indices (into the constructor's list) of each batch of `epoch` on this rank.
  [[nodiscard]] std::vector<std::vector<size_t>> epoch_plan(int64_t epoch) const;

 private:
  struct PlanCache {
    int64_t epoch = -1;
    std::vector<std::vector<size_t>> plan;
  };
  Batch load(const DataCursor& at, PlanCache& cache) const;
  DataCursor advance(DataCursor c) const;
  int64_t batch_of(const CachedClip& clip) const;
  void worker();

  std::vector<CachedClip> clips_;
  DataOptions options_;
  DataCursor cursor_;
  PlanCache plan_;  // the calling thread's plan when prefetch is 0

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace mugv
