#include "service/client.h"

#include "core/error.h"
#include "core/strings.h"
#include "service/zmq_io.h"

namespace mugv {

using protocol::Message;
using protocol::MessageType;

struct Client::Impl {
  std::string endpoint;
  std::chrono::milliseconds timeout;
  zmq::context_t context{1};
  std::unique_ptr<zmq::socket_t> socket;
  std::vector<std::string> events;
  nlohmann::json welcome = nlohmann::json::object();

  Message exchange(const Message& request) {
    protocol::send(*socket, {}, request);
    auto reply = protocol::receive(*socket, 0, timeout);
    if (!reply) {
      connect();  // drop the old socket so its late reply can never answer the next request
      throw Error(ErrorCode::timeout, endpoint, cat("no MUG-V server answered within ", timeout.count(), " ms"));
    }
    if (auto* err = std::get_if<protocol::ProtocolError>(&reply->content))
      throw Error(ErrorCode::protocol, endpoint, cat("unreadable reply: ", err->message));
    return std::get<Message>(std::move(reply->content));
  }

  void connect() {
    socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    protocol::apply_common_options(*socket);
    socket->connect(endpoint);
    Message hello;
    hello.type = MessageType::hello;
    hello.header = {{"role", "client"}, {"version", protocol::kVersion}, {"capabilities", {"preview"}}};
    protocol::send(*socket, {}, hello);
    auto reply = protocol::receive(*socket, 0, timeout);
    if (!reply) throw Error(ErrorCode::timeout, endpoint, cat("no MUG-V server answered within ", timeout.count(), " ms"));
    if (auto* err = std::get_if<protocol::ProtocolError>(&reply->content)) throw Error(ErrorCode::protocol, endpoint, err->message);
    const Message& m = std::get<Message>(reply->content);
    if (m.type == MessageType::error) throw Error(ErrorCode::protocol, endpoint, m.header.value("message", "refused"));
    events = m.header.value("events", std::vector<std::string>{});
    welcome = m.header;
  }
};

Client::Client(std::string endpoint, std::chrono::milliseconds timeout) : impl_(std::make_unique<Impl>()) {
  impl_->endpoint = std::move(endpoint);
  impl_->timeout = timeout;
  try {
    impl_->connect();
  } catch (const zmq::error_t& e) {
    throw Error(ErrorCode::invalid_argument, impl_->endpoint, cat("cannot connect: ", e.what()));
  }
}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

nlohmann::json Client::request(MessageType type, const nlohmann::json& header) {
  Message m;
  m.type = type;
  m.header = header;
  Message reply = impl_->exchange(m);
  if (reply.type == MessageType::error) {
    std::string code = reply.header.value("code", "unknown");
    throw Error(error_code_from_string(code).value_or(ErrorCode::protocol), reply.header.value("message", code));
  }
  return reply.header;
}

const std::vector<std::string>& Client::events_endpoints() const { return impl_->events; }
const std::string& Client::endpoint() const { return impl_->endpoint; }
const nlohmann::json& Client::server_info() const { return impl_->welcome; }

struct EventSubscriber::Impl {
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::sub};
};

EventSubscriber::EventSubscriber(const std::string& events_endpoint, const std::vector<std::string>& topics)
    : impl_(std::make_unique<Impl>()) {
  protocol::apply_common_options(impl_->socket);
  for (const auto& t : topics) impl_->socket.set(zmq::sockopt::subscribe, t);
  impl_->socket.connect(events_endpoint);
}

EventSubscriber::~EventSubscriber() = default;

std::optional<Message> EventSubscriber::next(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) return std::nullopt;
    auto in = protocol::receive(impl_->socket, 1, left);
    if (!in) return std::nullopt;
    if (auto* m = std::get_if<Message>(&in->content)) return std::move(*m);
  }
}

}  // namespace mugv
