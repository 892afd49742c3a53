#pragma once
// The studio's connection to a MUG-V server. Two objects:
//   NetworkWorker lives on its own QThread and owns the mugv::Client and the event subscriber, so the UI
//   thread never blocks on the network (a slow or dead server only delays replies);
//   BackendLink lives on the UI thread: call() queues a request and runs the callback with the reply (or
//   the error) later on the UI thread; events arrive as the `event` signal.
// When a request times out the link reports `disconnected` and reconnects every two seconds; `connected`
// fires again after a server restart, so pages refresh and running jobs are watched again. A server that dies
// while the studio is idle is noticed too: the network thread pings it (a one-job list) after a second
// without an answer from it, so a dead server is reported within about four seconds (the ping's 3 s
// timeout). close() drops the connection at once, for a server known to be gone (the embedded one exited).
// tcp:// servers need CURVE keys (open()'s `curve`); a refused key is reported by `disconnected` with the
// client library's words (they name `mugv keys authorize KEY`), and the link keeps trying, so the studio
// connects as soon as the server's owner authorises the key.

#include "service/curve_keys.h"
#include "service/protocol.h"

#include <QObject>
#include <QStringList>
#include <QThread>

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>

namespace mugv::studio {

class NetworkWorker;

class BackendLink : public QObject {
  Q_OBJECT
 public:
  using Reply = std::function<void(const nlohmann::json& payload)>;
  using Failure = std::function<void(const QString& message)>;
  using FramesReply = std::function<void(const nlohmann::json& payload, const QList<QByteArray>& frames)>;

  explicit BackendLink(QObject* parent = nullptr);
  ~BackendLink() override;

  // Connects (asynchronously) to `endpoint`; replaces any previous connection. `curve` is used for tcp://.
  void open(const QString& endpoint, std::optional<CurveClientKeys> curve = std::nullopt);
  // Drops the connection without trying again (until the next open()) and reports `disconnected` with
  // `reason` now; requests made meanwhile fail with "not connected".
  void close(const QString& reason);
  QString endpoint() const { return endpoint_; }
  bool is_connected() const { return connected_; }
  const nlohmann::json& server_info() const { return server_info_; }

  // Sends a request; exactly one of `on_reply` / `on_failure` runs later on the UI thread.
  void call(protocol::MessageType type, const nlohmann::json& header, Reply on_reply,
            Failure on_failure = {});
  // The same for a reply that carries binary frames (clip_frames).
  void call_frames(protocol::MessageType type, const nlohmann::json& header, FramesReply on_reply,
                   Failure on_failure = {});
  // The last reason the link is not connected (empty while connected).
  QString last_error() const { return last_error_; }
  // Requests sent and not yet answered (0: the link is idle).
  int pending() const { return static_cast<int>(pending_.size()); }

 signals:
  void connected();
  void disconnected(const QString& message);
  // A server event (job state, progress, metrics, log lines, previews) with its raw binary frames.
  void event(const QString& topic, const nlohmann::json& header, const QList<QByteArray>& blobs);

 private:
  void on_reply(quint64 tag, const QByteArray& payload, const QList<QByteArray>& frames);
  void on_failure(quint64 tag, const QString& message);

  QThread thread_;
  NetworkWorker* worker_ = nullptr;
  QString endpoint_;
  bool connected_ = false;
  nlohmann::json server_info_ = nlohmann::json::object();
  quint64 next_tag_ = 1;
  QString last_error_;
  struct Pending {
    FramesReply reply;
    Failure failure;
  };
  std::map<quint64, Pending> pending_;
};

}  // namespace mugv::studio

Q_DECLARE_METATYPE(nlohmann::json)
