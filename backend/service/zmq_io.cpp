#include "service/zmq_io.h"

#include "core/error.h"
#include "core/strings.h"

#include <zmq_addon.hpp>

#include <cerrno>

namespace mugv::protocol {

std::string zeromq_version() {
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

bool zeromq_has_curve() {
  return zmq_has("curve") != 0;
}

void apply_common_options(zmq::socket_t& socket) {
  socket.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxMessageBytes));
  socket.set(zmq::sockopt::linger, 0);
}

void apply_curve_client(zmq::socket_t& socket, const std::string& endpoint,
                        const std::optional<CurveClientKeys>& curve) {
  if (!curve || !starts_with(endpoint, "tcp://")) return;
  check_z85_key(curve->server_public_key, "server key");
  socket.set(zmq::sockopt::curve_serverkey, curve->server_public_key);
  socket.set(zmq::sockopt::curve_publickey, curve->client.public_key);
  socket.set(zmq::sockopt::curve_secretkey, curve->client.secret_key);
}

std::optional<Incoming> receive(zmq::socket_t& socket, size_t envelope_frames,
                                std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  try {
    if (zmq::poll(&item, 1, timeout) <= 0) return std::nullopt;
  } catch (const zmq::error_t& e) {
    // A signal (SIGTERM asking the server to stop, SIGCHLD of a worker) interrupts the wait: the caller's
    // loop checks why and polls again.
    if (e.num() == EINTR) return std::nullopt;
    throw;
  }
  std::vector<zmq::message_t> parts;
  if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) return std::nullopt;
  Incoming in;
  // The frames read from the wire carry the connection's metadata; a ROUTER's identity frame does not.
  if (!parts.empty())
    if (const char* user = zmq_msg_gets(parts.back().handle(), "User-Id")) in.user_id = user;
  size_t i = 0;
  for (; i < envelope_frames && i < parts.size(); ++i) in.envelope.push_back(parts[i].to_string());
  std::vector<std::string_view> frames;
  for (; i < parts.size(); ++i) frames.push_back(parts[i].to_string_view());
  in.content = decode(frames);
  return in;
}

void send(zmq::socket_t& socket, const std::vector<std::string>& envelope, const Message& message) {
  std::vector<zmq::const_buffer> buffers;
  auto frames = encode(message);
  for (const auto& e : envelope) buffers.emplace_back(e.data(), e.size());
  for (const auto& f : frames) buffers.emplace_back(f.data(), f.size());
  zmq::send_multipart(socket, buffers);
}

void publish(zmq::socket_t& socket, const std::string& topic, const Message& message) {
  send(socket, {topic}, message);
}

std::string events_endpoint_for(const std::string& endpoint) {
  if (starts_with(endpoint, "ipc://")) {
    std::string path = endpoint.substr(6);
    if (ends_with(path, ".sock")) path = path.substr(0, path.size() - 5);
    return "ipc://" + path + ".events.sock";
  }
  if (starts_with(endpoint, "tcp://")) {
    size_t colon = endpoint.rfind(':');
    if (colon != std::string::npos && colon > 6) {
      int port = std::atoi(endpoint.c_str() + colon + 1);
      if (port > 0 && port < 65535) return endpoint.substr(0, colon + 1) + std::to_string(port + 1);
    }
  }
  if (starts_with(endpoint, "inproc://")) return endpoint + "-events";
  throw Error(ErrorCode::invalid_argument, endpoint, "expected ipc://PATH, tcp://HOST:PORT or inproc://NAME");
}

}  // namespace mugv::protocol
