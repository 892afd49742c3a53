#include "backend_link.h"

#include "core/error.h"
#include "service/client.h"

#include <QElapsedTimer>
#include <QMetaObject>
#include <QTimer>

#include <chrono>
#include <optional>

namespace mugv::studio {

// Owns the sockets; every slot runs on the network thread.
class NetworkWorker : public QObject {
  Q_OBJECT
 public:
  NetworkWorker() = default;

  // Called through a queued functor (the key type is not a Qt meta-type), on the network thread.
  void open(const QString& endpoint, std::optional<CurveClientKeys> curve) {
    endpoint_ = endpoint.toStdString();
    curve_ = std::move(curve);
    client_.reset();
    subscriber_.reset();
    if (!poll_) {
      poll_ = new QTimer(this);
      poll_->setInterval(20);
      connect(poll_, &QTimer::timeout, this, &NetworkWorker::poll);
      poll_->start();
      reconnect_ = new QTimer(this);
      reconnect_->setInterval(2000);
      connect(reconnect_, &QTimer::timeout, this, &NetworkWorker::try_connect);
      ping_ = new QTimer(this);
      ping_->setInterval(kPingAfterMs);
      connect(ping_, &QTimer::timeout, this, &NetworkWorker::ping);
      ping_->start();
    }
    try_connect();
  }

  // Drops the connection and stops reconnecting; the UI side reports it.
  void close() {
    client_.reset();
    subscriber_.reset();
    if (reconnect_) reconnect_->stop();
  }

 public slots:
  void request(quint64 tag, int type, const QByteArray& header) {
    if (!client_) {
      emit failed(tag, QString("not connected to %1").arg(QString::fromStdString(endpoint_)));
      return;
    }
    try {
      std::vector<std::string> blobs;
      auto payload = client_->request(static_cast<protocol::MessageType>(type),
                                      nlohmann::json::parse(header.toStdString()), &blobs);
      last_answer_.start();
      QList<QByteArray> frames;
      for (const auto& b : blobs) frames.push_back(QByteArray(b.data(), static_cast<qsizetype>(b.size())));
      emit replied(tag, QByteArray::fromStdString(payload.dump()), frames);
    } catch (const Error& e) {
      emit failed(tag, QString::fromStdString(e.what()));
      if (e.code() == ErrorCode::timeout) lose_connection(QString::fromStdString(e.what()));
    } catch (const std::exception& e) {
      emit failed(tag, QString::fromStdString(e.what()));
    }
  }

 signals:
  void connected(const QByteArray& server_info);
  void disconnected(const QString& message);
  void replied(quint64 tag, const QByteArray& payload, const QList<QByteArray>& frames);
  void failed(quint64 tag, const QString& message);
  void event(const QString& topic, const QByteArray& header, const QList<QByteArray>& blobs);

 private:
  void try_connect() {
    try {
      client_ = std::make_unique<Client>(endpoint_, std::chrono::milliseconds(3000), curve_);
      const auto& events = client_->events_endpoints();
      if (!events.empty())
        subscriber_ =
            std::make_unique<EventSubscriber>(events.front(), std::vector<std::string>{"job/"}, curve_);
      reconnect_->stop();
      last_answer_.start();
      nlohmann::json info = {{"endpoint", endpoint_}};
      emit connected(QByteArray::fromStdString(info.dump()));
    } catch (const std::exception& e) {
      client_.reset();
      subscriber_.reset();
      emit disconnected(QString::fromStdString(e.what()));
      if (!reconnect_->isActive()) reconnect_->start();
    }
  }

  // A server that died while nothing was asked would go unnoticed until the next request: after a second
  // without an answer, ask for one job.
  void ping() {
    if (!client_ || (last_answer_.isValid() && last_answer_.elapsed() < kPingAfterMs)) return;
    try {
      (void)client_->request(protocol::MessageType::list_jobs, {{"limit", 1}});
      last_answer_.start();
    } catch (const Error& e) {
      if (e.code() == ErrorCode::timeout) lose_connection(QString::fromStdString(e.what()));
    } catch (const std::exception&) {
      // another refusal still proves the server answers
      last_answer_.start();
    }
  }

  void lose_connection(const QString& message) {
    client_.reset();
    subscriber_.reset();
    emit disconnected(message);
    if (!reconnect_->isActive()) reconnect_->start();
  }

  void poll() {
    if (!subscriber_) return;
    // Drain what has arrived without waiting; the timer paces the loop.
    for (int i = 0; i < 200; ++i) {
      std::optional<protocol::Message> m;
      try {
        m = subscriber_->next(std::chrono::milliseconds(0));
      } catch (const std::exception&) {
        return;
      }
      if (!m) return;
      QList<QByteArray> blobs;
      for (const auto& b : m->blobs) blobs.push_back(QByteArray(b.data(), static_cast<qsizetype>(b.size())));
      emit event(QString::fromStdString(m->header.value("topic", "")),
                 QByteArray::fromStdString(m->header.dump()), blobs);
    }
  }

  std::string endpoint_;
  std::optional<CurveClientKeys> curve_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<EventSubscriber> subscriber_;
  static constexpr int kPingAfterMs = 1000;

  QTimer* poll_ = nullptr;
  QTimer* reconnect_ = nullptr;
  QTimer* ping_ = nullptr;
  QElapsedTimer last_answer_;  // since the server last answered
};

BackendLink::BackendLink(QObject* parent) : QObject(parent) {
  qRegisterMetaType<nlohmann::json>();
  worker_ = new NetworkWorker;
  worker_->moveToThread(&thread_);
  connect(&thread_, &QThread::finished, worker_, &QObject::deleteLater);
  connect(worker_, &NetworkWorker::connected, this, [this](const QByteArray& info) {
    connected_ = true;
    last_error_.clear();
    server_info_ = nlohmann::json::parse(info.toStdString());
    emit connected();
  });
  connect(worker_, &NetworkWorker::disconnected, this, [this](const QString& message) {
    connected_ = false;
    last_error_ = message;
    emit disconnected(message);
  });
  connect(worker_, &NetworkWorker::replied, this, &BackendLink::on_reply);
  connect(worker_, &NetworkWorker::failed, this, &BackendLink::on_failure);
  connect(worker_, &NetworkWorker::event, this,
          [this](const QString& topic, const QByteArray& header, const QList<QByteArray>& blobs) {
            emit event(topic, nlohmann::json::parse(header.toStdString(), nullptr, false), blobs);
          });
  thread_.setObjectName("mugv-network");
  thread_.start();
}

BackendLink::~BackendLink() {
  thread_.quit();
  thread_.wait();
}

void BackendLink::open(const QString& endpoint, std::optional<CurveClientKeys> curve) {
  endpoint_ = endpoint;
  connected_ = false;
  server_info_ = nlohmann::json::object();
  NetworkWorker* worker = worker_;
  QMetaObject::invokeMethod(
      worker_, [worker, endpoint, curve] { worker->open(endpoint, curve); }, Qt::QueuedConnection);
}

void BackendLink::close(const QString& reason) {
  NetworkWorker* worker = worker_;
  QMetaObject::invokeMethod(
      worker_, [worker] { worker->close(); }, Qt::QueuedConnection);
  connected_ = false;
  last_error_ = reason;
  emit disconnected(reason);
}

void BackendLink::call(protocol::MessageType type, const nlohmann::json& header, Reply on_reply,
                       Failure on_failure) {
  FramesReply reply;
  if (on_reply)
    reply = [on_reply = std::move(on_reply)](const nlohmann::json& payload, const QList<QByteArray>&) {
      on_reply(payload);
    };
  call_frames(type, header, std::move(reply), std::move(on_failure));
}

void BackendLink::call_frames(protocol::MessageType type, const nlohmann::json& header, FramesReply on_reply,
                              Failure on_failure) {
  const quint64 tag = next_tag_++;
  pending_[tag] = {std::move(on_reply), std::move(on_failure)};
  QMetaObject::invokeMethod(
      worker_, "request", Qt::QueuedConnection, Q_ARG(quint64, tag), Q_ARG(int, static_cast<int>(type)),
      Q_ARG(QByteArray, QByteArray::fromStdString(header.is_null() ? "{}" : header.dump())));
}

void BackendLink::on_reply(quint64 tag, const QByteArray& payload, const QList<QByteArray>& frames) {
  auto it = pending_.find(tag);
  if (it == pending_.end()) return;
  auto callbacks = std::move(it->second);
  pending_.erase(it);
  if (callbacks.reply) callbacks.reply(nlohmann::json::parse(payload.toStdString()), frames);
}

void BackendLink::on_failure(quint64 tag, const QString& message) {
  auto it = pending_.find(tag);
  if (it == pending_.end()) return;
  auto callbacks = std::move(it->second);
  pending_.erase(it);
  if (callbacks.failure) callbacks.failure(message);
}

}  // namespace mugv::studio

#include "backend_link.moc"
