#pragma once
// A tiny HTTP/1.1 server on 127.0.0.1 (ephemeral port) for captioner tests: every request gets the reply
// produced by a handler. Runs on its own thread until destroyed.

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mugv::test {

struct StubReply {
  int status = 200;
  std::string body;
  int delay_ms = 0;  // wait before answering (to provoke client timeouts)
};

class HttpStub {
 public:
  explicit HttpStub(std::function<StubReply(const std::string& request_body)> handler);
  ~HttpStub();
  std::string base_url() const;  // "http://127.0.0.1:<port>/v1"
  int requests() const { return requests_; }
  std::string last_body() const;

 private:
  void serve();
  std::function<StubReply(const std::string&)> handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  mutable std::mutex mutex_;
  std::string last_body_;
  std::thread thread_;
};

}  // namespace mugv::test
