#include "service/client.h"

#include "core/error.h"
#include "core/strings.h"
#include "service/zmq_io.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>

namespace mugv {

using protocol::Message;
using protocol::MessageType;
using Clock = std::chrono::steady_clock;

namespace {

bool is_tcp(const std::string& endpoint) {
  return starts_with(endpoint, "tcp://");
}

std::string host_of(const std::string& tcp_endpoint) {
  std::string rest = tcp_endpoint.substr(6);
  size_t colon = rest.rfind(':');
  return colon == std::string::npos ? rest : rest.substr(0, colon);
}

// The events endpoint a client on `endpoint` can reach first: same transport, and a server that listens on
// every interface (tcp://0.0.0.0:P) is reached at the host the client used.
std::vector<std::string> order_events(std::vector<std::string> events, const std::string& endpoint) {
  const std::string scheme = endpoint.substr(0, endpoint.find("://") + 3);
  std::stable_partition(events.begin(), events.end(),
                        [&](const std::string& e) { return starts_with(e, scheme); });
  if (is_tcp(endpoint)) {
    for (auto& e : events) {
      if (!is_tcp(e)) continue;
      std::string host = host_of(e);
      if (host == "0.0.0.0" || host == "*" || host == "[::]" || host == "::")
        e = "tcp://" + host_of(endpoint) + e.substr(6 + host.size());
    }
  }
  return events;
}

// libzmq reports a socket's connection and handshake events on an inproc PAIR socket (zmq_socket_monitor);
// this reads them, so that a refused key can be told apart from a server that is not there.
class HandshakeWatch {
 public:
  HandshakeWatch(zmq::context_t& context, zmq::socket_t& socket) : pair_(context, zmq::socket_type::pair) {
    static std::atomic<int> counter{0};
    const std::string address = cat("inproc://mugv-client-handshake-", counter++);
    const int events = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                       ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                       ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    if (zmq_socket_monitor(socket.handle(), address.c_str(), events) != 0) throw zmq::error_t();
    pair_.set(zmq::sockopt::linger, 0);
    pair_.connect(address);
  }

  zmq::socket_t& socket() { return pair_; }

  struct Event {
    int id = 0;
    uint32_t value = 0;
  };

  // Reads the pending events; returns the first handshake failure among them.
  std::optional<Event> drain() {
    std::optional<Event> failure;
    while (true) {
      zmq::message_t head, address;
      if (!pair_.recv(head, zmq::recv_flags::dontwait)) return failure;
      if (head.more()) (void)pair_.recv(address, zmq::recv_flags::dontwait);
      if (head.size() < 6) continue;
      Event e;
      uint16_t id = 0;
      std::memcpy(&id, head.data(), 2);
      std::memcpy(&e.value, static_cast<const char*>(head.data()) + 2, 4);
      e.id = id;
      if (e.id == ZMQ_EVENT_CONNECTED) connected_ = true;
      if (e.id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) handshake_ok_ = true;
      if (!failure &&
          (e.id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || e.id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
           e.id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL))
        failure = e;
    }
  }

  bool connected() const { return connected_; }
  bool handshake_ok() const { return handshake_ok_; }

 private:
  zmq::socket_t pair_;
  bool connected_ = false, handshake_ok_ = false;
};

}  // namespace

struct Client::Impl {
  std::string endpoint;
  std::chrono::milliseconds timeout;
  std::optional<CurveClientKeys> curve;
  zmq::context_t context{1};
  std::unique_ptr<zmq::socket_t> socket;
  std::unique_ptr<HandshakeWatch> watch;
  std::vector<std::string> events;
  bool stale = false;  // the last exchange failed: reconnect before the next one

  Error handshake_error(const HandshakeWatch::Event& e) const {
    if (e.id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      return Error(
          ErrorCode::forbidden,
          cat("server at ", endpoint, " did not accept this client's key (not authorised?)",
              curve ? cat("; its owner can run `mugv keys authorize ", curve->client.public_key, "`") : ""));
    }
    if (e.id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
        e.value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      return Error(
          ErrorCode::protocol,
          curve && is_tcp(endpoint)
              ? cat("server at ", endpoint, " does not use CURVE security; is it a MUG-V server?")
              : cat("server at ", endpoint, " requires CURVE security: pass its public key (--server-key)"));
    }
    // A protocol failure carries a ZMQ_PROTOCOL_ERROR_* code, the others an errno (EPIPE: the server hung up,
    // which is what a server that cannot decrypt our hello does).
    char detail[64];
    if (e.id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
      std::snprintf(detail, sizeof detail, "protocol error 0x%x", e.value);
    else
      std::snprintf(detail, sizeof detail, "%s", zmq_strerror(static_cast<int>(e.value)));
    // Which side closed first decides whether a mechanism mismatch arrives as such or as a hang-up.
    const char* hint = curve ? "; is --server-key the server's public key?"
                       : is_tcp(endpoint)
                           ? "; MUG-V servers require CURVE on tcp://: pass their public key (--server-key)"
                           : "";
    return Error(ErrorCode::protocol,
                 cat("the security handshake with ", endpoint, " failed (", detail, ")", hint));
  }

  Error no_answer() const {
    if (watch && watch->connected() && !watch->handshake_ok() && is_tcp(endpoint))
      return Error(
          ErrorCode::protocol,
          cat("server at ", endpoint,
              " took the connection but the security handshake did not complete within ", timeout.count(),
              " ms", curve ? " (is --server-key the server's public key?)" : " (it requires CURVE keys?)"));
    return Error(ErrorCode::timeout, endpoint,
                 cat("no MUG-V server answered within ", timeout.count(), " ms"));
  }

  // The next reply, or an Error: a refused handshake as soon as libzmq reports it, else no answer in time.
  protocol::Incoming await_reply() {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) throw no_answer();
      zmq::pollitem_t items[] = {{socket->handle(), 0, ZMQ_POLLIN, 0},
                                 {watch->socket().handle(), 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 2, left);
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
      if (items[1].revents & ZMQ_POLLIN)
        if (auto failure = watch->drain()) throw handshake_error(*failure);
      if (items[0].revents & ZMQ_POLLIN)
        if (auto reply = protocol::receive(*socket, 0, std::chrono::milliseconds(0)))
          return std::move(*reply);
    }
  }
  nlohmann::json welcome = nlohmann::json::object();

  Message exchange(const Message& request) {
    if (stale) connect();
    protocol::send(*socket, {}, request);
    std::optional<protocol::Incoming> reply;
    try {
      reply = await_reply();
    } catch (const Error&) {
      // A late reply on this socket must never answer the next request: the next one starts on a new
      // socket, with a new hello.
      stale = true;
      throw;
    }
    if (auto* err = std::get_if<protocol::ProtocolError>(&reply->content))
      throw Error(ErrorCode::protocol, endpoint, cat("unreadable reply: ", err->message));
    return std::get<Message>(std::move(reply->content));
  }

  void connect_socket() {
    watch.reset();
    socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    protocol::apply_common_options(*socket);
    // A CURVE handshake that stalls (wrong server key) must not outlive the caller's patience.
    socket->set(zmq::sockopt::handshake_ivl, static_cast<int>(timeout.count()));
    protocol::apply_curve_client(*socket, endpoint, curve);
    watch = std::make_unique<HandshakeWatch>(context, *socket);
    socket->connect(endpoint);
  }

  void connect() {
    stale = true;  // until the hello is answered
    connect_socket();
    Message hello;
    hello.type = MessageType::hello;
    hello.header = {{"role", "client"}, {"version", protocol::kVersion}, {"capabilities", {"preview"}}};
    protocol::send(*socket, {}, hello);
    auto reply = await_reply();
    if (auto* err = std::get_if<protocol::ProtocolError>(&reply.content))
      throw Error(ErrorCode::protocol, endpoint, err->message);
    const Message& m = std::get<Message>(reply.content);
    if (m.type == MessageType::error)
      throw Error(ErrorCode::protocol, endpoint, m.header.value("message", "refused"));
    events = order_events(m.header.value("events", std::vector<std::string>{}), endpoint);
    stale = false;
    welcome = m.header;
  }
};

Client::Client(std::string endpoint, std::chrono::milliseconds timeout, std::optional<CurveClientKeys> curve)
    : impl_(std::make_unique<Impl>()) {
  impl_->endpoint = std::move(endpoint);
  impl_->timeout = timeout;
  impl_->curve = std::move(curve);
  try {
    impl_->connect();
  } catch (const zmq::error_t& e) {
    throw Error(ErrorCode::invalid_argument, impl_->endpoint, cat("cannot connect: ", e.what()));
  }
}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

nlohmann::json Client::request(MessageType type, const nlohmann::json& header,
                               std::vector<std::string>* blobs) {
  Message m;
  m.type = type;
  m.header = header;
  Message reply = impl_->exchange(m);
  if (reply.type == MessageType::error) {
    std::string code = reply.header.value("code", "unknown");
    throw Error(error_code_from_string(code).value_or(ErrorCode::protocol),
                reply.header.value("message", code));
  }
  if (blobs) *blobs = std::move(reply.blobs);
  return reply.header;
}

const std::vector<std::string>& Client::events_endpoints() const {
  return impl_->events;
}
const std::string& Client::endpoint() const {
  return impl_->endpoint;
}
const std::optional<CurveClientKeys>& Client::curve() const {
  return impl_->curve;
}
const nlohmann::json& Client::server_info() const {
  return impl_->welcome;
}

struct EventSubscriber::Impl {
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::sub};
};

EventSubscriber::EventSubscriber(const std::string& events_endpoint, const std::vector<std::string>& topics,
                                 const std::optional<CurveClientKeys>& curve)
    : impl_(std::make_unique<Impl>()) {
  protocol::apply_common_options(impl_->socket);
  protocol::apply_curve_client(impl_->socket, events_endpoint, curve);
  for (const auto& t : topics) impl_->socket.set(zmq::sockopt::subscribe, t);
  impl_->socket.connect(events_endpoint);
}

EventSubscriber::~EventSubscriber() = default;

std::optional<Message> EventSubscriber::next(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) return std::nullopt;
    auto in = protocol::receive(impl_->socket, 1, left);
    if (!in) return std::nullopt;
    if (auto* m = std::get_if<Message>(&in->content)) return std::move(*m);
  }
}

nlohmann::json JobSubmission::header() const {
  nlohmann::json h = {{"kind", kind}, {"params", params}};
  if (priority != 0) h["priority"] = priority;
  if (!depends_on.empty()) h["depends_on"] = depends_on;
  return h;
}

nlohmann::json submit_job(Client& client, const JobSubmission& job) {
  return client.request(protocol::MessageType::submit_job, job.header())["job"];
}

nlohmann::json get_job_with_events(Client& client, int64_t job_id, const std::vector<std::string>& types) {
  nlohmann::json all;
  nlohmann::json request = {{"job", job_id}};
  if (!types.empty()) request["types"] = types;
  while (true) {
    nlohmann::json page = client.request(protocol::MessageType::get_job, request);
    if (all.is_null()) {
      all = page;
    } else {
      all["job"] = page["job"];
      for (auto& e : page["events"]) all["events"].push_back(std::move(e));
    }
    if (!page.value("more", false)) break;
    request["after_event"] = page["next_after"];
  }
  all.erase("more");
  all.erase("next_after");
  return all;
}

}  // namespace mugv
