#include "train/data.h"

#include "core/error.h"
#include "core/strings.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <tuple>

namespace mugv {
namespace {

// std::shuffle's algorithm is implementation-defined; a hand-written Fisher–Yates over mt19937_64 keeps
// epoch orders identical across standard libraries (and so across machines of a cluster).
template <typename T>
void shuffle_in_place(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(rng() % i);
    std::swap(v[i - 1], v[j]);
  }
}

}  // namespace

LatentLoader::LatentLoader(std::vector<CachedClip> clips, DataOptions options, DataCursor start)
    : clips_(std::move(clips)), options_(options), cursor_(start) {
  if (clips_.empty()) throw Error(ErrorCode::invalid_argument, "data", "no cached clips to train on");
  if (options_.batch_size < 1) throw Error(ErrorCode::invalid_argument, "--batch", "must be at least 1");
  for (const auto& [geometry, size] : options_.bucket_batch_sizes)
    if (size < 1)
      throw Error(ErrorCode::invalid_argument, "--batch",
                  cat("the batch of the ", std::get<0>(geometry), "-frame ", std::get<2>(geometry), "x",
                      std::get<1>(geometry), " bucket must be at least 1, got ", size));
  if (options_.world < 1 || options_.rank < 0 || options_.rank >= options_.world)
    throw Error(ErrorCode::invalid_argument, "data",
                cat("rank ", options_.rank, " is outside world ", options_.world));
  if (batches_per_epoch() == 0)
    throw Error(ErrorCode::invalid_argument, "data",
                cat("too few batches for ", options_.world, " rank(s): ", clips_.size(), " clips, --batch ",
                    options_.batch_size,
                    options_.min_batch > 1 ? cat(", at least ", options_.min_batch, " per batch") : ""));
  if (cursor_.position >= batches_per_epoch()) cursor_ = {cursor_.epoch + 1, 0};
  if (options_.prefetch > 0) thread_ = std::thread([this] { worker(); });
}

LatentLoader::~LatentLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<std::vector<size_t>> LatentLoader::epoch_plan(int64_t epoch) const {
  std::mt19937_64 rng(options_.seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(epoch) + 1);
  std::vector<size_t> order(clips_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  shuffle_in_place(order, rng);
  std::map<std::tuple<int64_t, int64_t, int64_t, std::vector<int64_t>>, std::vector<size_t>> buckets;
  for (size_t i : order) {
    const auto& c = clips_[i];
    buckets[{c.frames, c.height, c.width, c.latent_shape}].push_back(i);
  }
  std::vector<std::vector<size_t>> batches;
  for (auto& [key, members] : buckets) {
    const auto size = static_cast<size_t>(batch_of(clips_[members.front()]));
    for (size_t s = 0; s < members.size(); s += size) {
      const size_t end = std::min(members.size(), s + size);
      if (int64_t(end - s) < options_.min_batch) continue;  // a bucket's short tail
      batches.emplace_back(members.begin() + s, members.begin() + end);
    }
  }
  shuffle_in_place(batches, rng);
  const size_t per_rank = batches.size() / static_cast<size_t>(options_.world);
  std::vector<std::vector<size_t>> mine;
  for (size_t k = 0; k < per_rank; ++k) mine.push_back(batches[k * options_.world + options_.rank]);
  return mine;
}

int64_t LatentLoader::batches_per_epoch() const {
  // Every epoch has the same number of batches: the bucket sizes do not depend on the order.
  std::map<std::tuple<int64_t, int64_t, int64_t, std::vector<int64_t>>, std::pair<int64_t, int64_t>> sizes;
  for (const auto& c : clips_) {
    auto& [n, size] = sizes[{c.frames, c.height, c.width, c.latent_shape}];
    ++n;
    size = batch_of(c);
  }
  int64_t batches = 0;
  for (const auto& [key, bucket] : sizes) {
    const auto [n, size] = bucket;
    const int64_t tail = n % size;
    batches += n / size + (tail > 0 && tail >= options_.min_batch ? 1 : 0);
  }
  return batches / options_.world;
}

int64_t LatentLoader::batch_of(const CachedClip& clip) const {
  const auto it = options_.bucket_batch_sizes.find({clip.frames, clip.height, clip.width});
  return it == options_.bucket_batch_sizes.end() ? options_.batch_size : it->second;
}

DataCursor LatentLoader::advance(DataCursor c) const {
  if (++c.position >= batches_per_epoch()) return {c.epoch + 1, 0};
  return c;
}

Batch LatentLoader::load(const DataCursor& at, PlanCache& cache) const {
  if (cache.epoch != at.epoch) {
    cache.plan = epoch_plan(at.epoch);
    cache.epoch = at.epoch;
  }
  const auto& plan = cache.plan;
  const auto& members = plan.at(static_cast<size_t>(at.position));
  Batch batch;
  std::vector<torch::Tensor> latents;
  std::vector<float> fps;
  for (size_t i : members) {
    const auto& c = clips_[i];
    latents.push_back(read_cached_latent(c));
    fps.push_back(static_cast<float>(c.fps));
    batch.captions.push_back(c.caption);
    batch.clip_ids.push_back(c.clip_id);
    batch.frames = c.frames;
    batch.height = c.height;
    batch.width = c.width;
  }
  batch.latents = torch::stack(latents);
  batch.fps = torch::tensor(fps, torch::kFloat32);
  batch.cursor = at;
  return batch;
}

void LatentLoader::worker() {
  DataCursor at = cursor_;
  PlanCache cache;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || static_cast<int64_t>(queue_.size()) < options_.prefetch; });
      if (stop_) return;
    }
    try {
      Batch b = load(at, cache);
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(b));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    cv_.notify_all();
    at = advance(at);
  }
}

Batch LatentLoader::next() {
  auto start = std::chrono::steady_clock::now();
  Batch b;
  if (options_.prefetch <= 0) {
    b = load(cursor_, plan_);
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return !queue_.empty() || error_; });
    if (queue_.empty() && error_) std::rethrow_exception(error_);
    b = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    cv_.notify_all();
  }
  b.wait_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  cursor_ = advance(cursor_);
  return b;
}

}  // namespace mugv
