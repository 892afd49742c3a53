#pragma once
// Requests whose work is too heavy for the server's one thread (decoding a clip's frames for a player):
// the server checks the request and reads the catalog on its thread, hands the rest to this pool as a
// closure, and sends the replies the pool finished from its loop (drain). So a few large decodes never hold
// up other clients' requests or the workers' heartbeats.
//
// A fixed number of threads run the closures in order of submission; at most `max_pending` wait or run at
// once, beyond which submit() refuses at once (the server answers "busy"). A closure that throws becomes an
// error reply carrying the Error's code and text. The ROUTER socket is never touched here: replies go back
// through drain(), called on the server's thread. Thread-safe; the destructor lets running closures finish
// and drops the ones not started.

#include "service/protocol.h"

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mugv {

class ReplyPool {
 public:
  using Work = std::function<protocol::Message()>;
  using Send = std::function<void(const std::vector<std::string>& envelope, const protocol::Message& reply)>;

  ReplyPool(size_t threads, size_t max_pending);
  ~ReplyPool();
  ReplyPool(const ReplyPool&) = delete;
  ReplyPool& operator=(const ReplyPool&) = delete;

  // False (nothing queued) when max_pending closures are already waiting or running.
  [[nodiscard]] bool submit(std::vector<std::string> envelope, Work work);
  // Sends every finished reply through `send` (on the caller's thread); returns how many.
  size_t drain(const Send& send);
  [[nodiscard]] size_t pending() const;

 private:
  struct Job {
    std::vector<std::string> envelope;
    Work work;
  };
  void run();

  const size_t max_pending_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queued_;
  std::deque<std::pair<std::vector<std::string>, protocol::Message>> done_;
  size_t running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mugv
