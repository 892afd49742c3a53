#include "http_stub.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>

namespace mugv::test {

HttpStub::HttpStub(std::function<StubReply(const std::string&)> handler) : handler_(std::move(handler)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 16) != 0)
    throw std::runtime_error("stub server: cannot listen on 127.0.0.1");
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

HttpStub::~HttpStub() {
  stop_ = true;
  thread_.join();
  ::close(listen_fd_);
}

std::string HttpStub::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/v1";
}

std::string HttpStub::last_body() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_body_;
}

void HttpStub::serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) continue;
    std::string request;
    char buf[65536];
    size_t header_end = std::string::npos, content_length = 0;
    while (true) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
      if (header_end == std::string::npos && (header_end = request.find("\r\n\r\n")) != std::string::npos) {
        auto pos = request.find("Content-Length:");
        if (pos == std::string::npos) pos = request.find("content-length:");
        if (pos != std::string::npos && pos < header_end)
          content_length = std::stoul(request.substr(pos + 15));
      }
      if (header_end != std::string::npos && request.size() >= header_end + 4 + content_length) break;
    }
    std::string body = header_end == std::string::npos ? "" : request.substr(header_end + 4);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      last_body_ = body;
    }
    ++requests_;
    StubReply reply = handler_(body);
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(reply.delay_ms);
    while (std::chrono::steady_clock::now() < until && !stop_)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::string response =
        "HTTP/1.1 " + std::to_string(reply.status) + " X\r\nContent-Type: application/json\r\n" +
        "Content-Length: " + std::to_string(reply.body.size()) + "\r\nConnection: close\r\n\r\n" + reply.body;
    (void)!::send(fd, response.data(), response.size(), MSG_NOSIGNAL);
    ::close(fd);
  }
}

}  // namespace mugv::test
