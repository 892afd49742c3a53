#pragma once
// Sending and receiving protocol messages on ZeroMQ sockets. Envelope frames (the peer identity that a
// ROUTER adds) are kept apart from the message frames. Sockets are not thread-safe: use each from one thread.

#include "service/curve_keys.h"
#include "service/protocol.h"

#include <zmq.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace mugv::protocol {

// The ZeroMQ library this process runs with: its version ("4.3.4"), and whether it was built with CURVE
// (libsodium), without which a tcp:// server cannot encrypt or authenticate (curve_keys.h).
std::string zeromq_version();
bool zeromq_has_curve();

struct Incoming {
  std::vector<std::string> envelope;  // identity frames (ROUTER sockets), empty otherwise
  // The connection's "User-Id" as the ZAP handler set it (zap_handler.h); empty where no ZAP handler was
  // asked (ipc).
  std::string user_id;
  std::variant<Message, ProtocolError> content;
};

// Receives one multipart message without blocking longer than `timeout` (nullopt on timeout).
// `envelope_frames` is how many leading frames are routing (1 on a ROUTER, 0 on DEALER/SUB after the topic).
std::optional<Incoming> receive(zmq::socket_t& socket, size_t envelope_frames,
                                std::chrono::milliseconds timeout);
void send(zmq::socket_t& socket, const std::vector<std::string>& envelope, const Message& message);
// PUB: the topic frame, then the message.
void publish(zmq::socket_t& socket, const std::string& topic, const Message& message);

// Socket options every MUG-V socket uses: a receive size limit (oversized messages are dropped by ZeroMQ
// before they are read) and no lingering on close.
void apply_common_options(zmq::socket_t& socket);

// The CURVE client options for a socket about to connect to `endpoint`: nothing for an ipc endpoint or
// without keys; Error(invalid_argument) for a malformed server key.
void apply_curve_client(zmq::socket_t& socket, const std::string& endpoint,
                        const std::optional<CurveClientKeys>& curve);

// The PUB endpoint that goes with a request endpoint: ipc://X.sock -> ipc://X.events.sock,
// tcp://host:P -> tcp://host:P+1.
std::string events_endpoint_for(const std::string& request_endpoint);

}  // namespace mugv::protocol
