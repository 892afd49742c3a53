#pragma once
// The studio's private backend: `mugv serve` as a child process on an ipc endpoint inside a 0700 directory of
// $MUGV_HOME, started when no remote server is configured and stopped (SIGTERM, then kill) with the studio.
// Running jobs are separate worker processes: the next start of the embedded server adopts or recovers them.
// A server already running for the home (service/home_lock.h) is reused instead of started again.
//
// Its end is noticed at once: `exited` fires when the child exits or is killed (not after stop()), and for
// a reused server when it no longer holds the home's lock (checked twice a second). start() may be called
// again after that (the studio's "Restart backend"): it starts a new server on the same home and endpoint,
// or reuses one that another program started there meanwhile (one server per home).

#include <QObject>
#include <QProcess>
#include <QString>
#include <QTimer>

namespace mugv::studio {

class EmbeddedServer : public QObject {
  Q_OBJECT
 public:
  // `mugv_binary`: the `mugv` executable (next to mugv-studio, or $MUGV_BIN); `home`: $MUGV_HOME.
  EmbeddedServer(QString mugv_binary, QString home, QObject* parent = nullptr);
  ~EmbeddedServer() override;

  // Starts the server, or finds the one already running for the home; returns its endpoint, or an empty
  // string with error() set.
  QString start();
  // The pid of the running server start() reused (0: it started its own); stop() leaves a reused one running.
  long reused_pid() const { return reused_pid_; }
  // The pid of the server in use, started or reused (0: none runs).
  long pid() const;
  void stop();
  QString error() const { return error_; }
  QString home() const { return home_; }

  // The `mugv` binary beside `studio_dir`, or $MUGV_BIN when set.
  static QString find_mugv_binary(const QString& studio_dir);

 signals:
  // The server stopped without stop() being called: `message` says how and where its log is.
  void exited(const QString& message);

 private:
  void watch_reused();

  QString mugv_;
  QString home_;
  QString error_;
  QProcess process_;
  QTimer reused_watch_;
  bool stopping_ = false;
  long reused_pid_ = 0;
};

}  // namespace mugv::studio
