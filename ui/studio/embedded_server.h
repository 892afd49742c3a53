#pragma once
// The studio's private backend: `mugv serve` as a child process on an ipc endpoint inside a 0700 directory of
// $MUGV_HOME, started when no remote server is configured and stopped (SIGTERM, then kill) with the studio.
// Running jobs are separate worker processes: the next start of the embedded server adopts or recovers them.
// A server already running for the home (service/home_lock.h) is reused instead of started again.

#include <QObject>
#include <QProcess>
#include <QString>

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
  void stop();
  QString error() const { return error_; }
  QString home() const { return home_; }

  // The `mugv` binary beside `studio_dir`, or $MUGV_BIN when set.
  static QString find_mugv_binary(const QString& studio_dir);

 signals:
  void exited(const QString& message);

 private:
  QString mugv_;
  QString home_;
  QString error_;
  QProcess process_;
  bool stopping_ = false;
  long reused_pid_ = 0;
};

}  // namespace mugv::studio
