#pragma once
// The studio's private backend: `mugv serve` as a child process on an ipc endpoint inside a 0700 directory of
// $MUGV_HOME, started when no remote server is configured and stopped (SIGTERM, then kill) with the studio.
// Running jobs are separate worker processes: the next start of the embedded server adopts or recovers them.

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

  // Starts the server; returns its endpoint, or an empty string with error() set.
  QString start();
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
};

}  // namespace mugv::studio
