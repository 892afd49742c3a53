#include "embedded_server.h"

#include "service/home_lock.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QThread>

#include <sys/stat.h>

#include <filesystem>
#include <utility>

namespace mugv::studio {

EmbeddedServer::EmbeddedServer(QString mugv_binary, QString home, QObject* parent)
    : QObject(parent), mugv_(std::move(mugv_binary)), home_(std::move(home)) {
  connect(&process_, &QProcess::finished, this, [this](int code, QProcess::ExitStatus status) {
    if (stopping_) return;
    emit exited(
        status == QProcess::CrashExit
            ? QString("the embedded server crashed or was killed; see %1/server.log").arg(home_)
            : QString("the embedded server stopped (exit code %1); see %2/server.log").arg(code).arg(home_));
  });
  reused_watch_.setInterval(500);
  connect(&reused_watch_, &QTimer::timeout, this, &EmbeddedServer::watch_reused);
}

void EmbeddedServer::watch_reused() {
  // The kernel frees the home's lock when its holder dies, so a lock held by another pid, or by none, means
  // the reused server is gone.
  const auto running = server_running_for(std::filesystem::path(home_.toStdString()));
  if (running && running->pid == reused_pid_) return;
  reused_watch_.stop();
  const long pid = std::exchange(reused_pid_, 0);
  emit exited(QString("the server of %1 (pid %2) stopped").arg(home_).arg(pid));
}

long EmbeddedServer::pid() const {
  if (reused_pid_) return reused_pid_;
  return process_.state() == QProcess::NotRunning ? 0 : static_cast<long>(process_.processId());
}

EmbeddedServer::~EmbeddedServer() {
  stop();
}

QString EmbeddedServer::find_mugv_binary(const QString& studio_dir) {
  const QByteArray env = qgetenv("MUGV_BIN");
  if (!env.isEmpty()) return QString::fromLocal8Bit(env);
  return QDir(studio_dir).filePath("mugv");
}

QString EmbeddedServer::start() {
  if (!QFileInfo(mugv_).isExecutable()) {
    error_ =
        QString("%1: the mugv binary is missing; the studio needs it to run its embedded server").arg(mugv_);
    return {};
  }
  stopping_ = false;
  reused_pid_ = 0;
  error_.clear();
  QDir().mkpath(home_);
  // One server per home: one already running here (left by a studio that crashed, or a `mugv serve` started
  // in a terminal) is found through its lock and reused, never doubled.
  if (const auto running = server_running_for(std::filesystem::path(home_.toStdString()))) {
    for (const auto& endpoint : running->endpoints) {
      if (endpoint.rfind("ipc://", 0) == 0) {
        reused_pid_ = running->pid;
        reused_watch_.start();
        return QString::fromStdString(endpoint);
      }
    }
    error_ = QString(
                 "a server already runs for %1 (pid %2) and listens on no local socket; connect to it with "
                 "File › Connect to server, or stop it")
                 .arg(home_)
                 .arg(running->pid);
    return {};
  }
  const QString ipc_dir = QDir(home_).filePath("ipc");
  QDir().mkpath(ipc_dir);
  ::chmod(QFile::encodeName(ipc_dir).constData(), 0700);  // the socket is as private as the catalog
  const QString socket = QDir(ipc_dir).filePath("studio.sock");
  const QString endpoint = "ipc://" + socket;
  QFile::remove(socket);

  QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
  env.insert("MUGV_HOME", home_);
  process_.setProcessEnvironment(env);
  process_.setStandardOutputFile(QDir(home_).filePath("server.log"), QIODevice::Append);
  process_.setStandardErrorFile(QDir(home_).filePath("server.log"), QIODevice::Append);
  // The server confines the files a job may name to its home plus --allow-root folders; that keeps remote
  // clients out of the machine. This server listens only on a socket in a 0700 folder, so its one client is
  // this user, who may already read every file the file dialogs offer (other disks included): allow them all.
  process_.start(mugv_, {"serve", "--listen", endpoint, "--home", home_, "--allow-root", QDir::rootPath()});
  if (!process_.waitForStarted(5000)) {
    error_ = QString("%1: could not start the embedded server (%2)").arg(mugv_, process_.errorString());
    return {};
  }
  // The server binds at once; wait (bounded) for the socket so the first connect succeeds.
  for (int i = 0; i < 100 && !QFileInfo::exists(socket); ++i) {
    if (process_.state() != QProcess::Running) break;
    QThread::msleep(50);
  }
  if (process_.state() != QProcess::Running) {
    stopping_ = true;  // reported here, not again by `exited`
    error_ = QString("the embedded server exited at start; see %1/server.log").arg(home_);
    return {};
  }
  return endpoint;
}

void EmbeddedServer::stop() {
  reused_watch_.stop();
  if (process_.state() == QProcess::NotRunning) return;
  stopping_ = true;
  process_.terminate();
  if (!process_.waitForFinished(5000)) {
    process_.kill();
    process_.waitForFinished(2000);
  }
}

}  // namespace mugv::studio
