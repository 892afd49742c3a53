#include "service/reply_pool.h"

#include "core/error.h"

namespace mugv {

ReplyPool::ReplyPool(size_t threads, size_t max_pending) : max_pending_(max_pending) {
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

ReplyPool::~ReplyPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    queued_.clear();
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

bool ReplyPool::submit(std::vector<std::string> envelope, Work work) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queued_.size() + running_ >= max_pending_) return false;
    queued_.push_back({std::move(envelope), std::move(work)});
  }
  wake_.notify_one();
  return true;
}

size_t ReplyPool::drain(const Send& send) {
  std::deque<std::pair<std::vector<std::string>, protocol::Message>> finished;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    finished.swap(done_);
  }
  for (const auto& [envelope, reply] : finished) send(envelope, reply);
  return finished.size();
}

size_t ReplyPool::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queued_.size() + running_ + done_.size();
}

void ReplyPool::run() {
  while (true) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queued_.empty(); });
      if (stopping_) return;
      job = std::move(queued_.front());
      queued_.pop_front();
      ++running_;
    }
    protocol::Message reply;
    try {
      reply = job.work();
    } catch (const Error& e) {
      reply = protocol::make_error(to_string(e.code()), e.what());
    } catch (const std::exception& e) {
      reply = protocol::make_error("internal", e.what());
    }
    std::lock_guard<std::mutex> lock(mutex_);
    --running_;
    done_.emplace_back(std::move(job.envelope), std::move(reply));
  }
}

}  // namespace mugv
