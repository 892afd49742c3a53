// The studio's responsiveness, offscreen (QT_QPA_PLATFORM=offscreen), on its embedded server (`mugv serve`
// from this build, private home). Prints one JSON line per measurement.
//
//   (a) open → first frame: from constructing the window (which starts the embedded server) to the first
//       denoising preview of a tiny-model generation (4 steps, 9 frames, 32×32) shown on the Generate page.
//       Generating needs the server's `generate` command, which exists only in a LibTorch build; elsewhere
//       the same clock measures open → connected → the first event of a submitted job, and says so.
//   (b) Runs-page event-loop latency: a 10 ms QTimer's lateness (max, p99) while the selected job's metrics
//       arrive at 10 Hz and are charted, against the same timer on the idle page. The metrics come through
//       the real server from this program, started by the server as its worker (MUGV_WORKER) — a worker-like
//       publisher that sends metrics and log lines at 10 Hz, as a training job does.
//
// Usage: bench_studio [--seconds N (b's duration, default 10)] [--keep]
#include "job_params.h"
#include "main_window.h"

#include "core/error.h"
#include "core/strings.h"
#include "service/worker_link.h"

#include <nlohmann/json.hpp>

#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QProcess>
#include <QSettings>
#include <QTemporaryDir>
#include <QThread>
#include <QTimer>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <thread>
#include <vector>

namespace {

using mugv::protocol::MessageType;
using namespace mugv::studio;
using Clock = std::chrono::steady_clock;

QString bin(const char* name) {
  return QDir(MUGV_BIN_DIR).filePath(name);
}

// Runs the event loop until `done` or `timeout_ms`; false on timeout.
bool wait_for(const std::function<bool()>& done, int timeout_ms) {
  QElapsedTimer t;
  t.start();
  while (!done()) {
    if (t.elapsed() > timeout_ms) return false;
    QApplication::processEvents(QEventLoop::AllEvents, 5);
    QThread::msleep(1);
  }
  return true;
}

bool run_mugv(const QString& home, const QStringList& args) {
  QProcess p;
  QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
  env.insert("MUGV_HOME", home);
  env.remove("MUGV_WORKER");
  p.setProcessEnvironment(env);
  p.start(bin("mugv"), args);
  if (!p.waitForFinished(600000) || p.exitCode() != 0) {
    std::fprintf(stderr, "bench_studio: mugv %s failed: %s\n", args.join(' ').toLocal8Bit().constData(),
                 p.readAllStandardError().constData());
    return false;
  }
  return true;
}

bool server_can_generate() {
  QProcess p;
  p.start(bin("mugv"), {"generate", "--help"});
  return p.waitForFinished(30000) && p.exitCode() == 0;
}

StudioOptions options_for(const QString& home) {
  StudioOptions o;
  o.home = home;
  o.mugv_binary = bin("mugv");
  o.offer_starter = false;
  return o;
}

double ms_since(const QElapsedTimer& t) {
  return double(t.nsecsElapsed()) / 1e6;
}

// (a), LibTorch build: a tiny trained model first (not timed), then open → connected → first preview.
nlohmann::json open_to_first_preview(const QString& home) {
  nlohmann::json out = {{"bench", "studio_open_to_first_frame"},
                        {"generation", "tiny, 4 steps, 9 frames, 32x32"}};
  if (!run_mugv(home, {"make-dataset", "shapes", "--out", home + "/shapes", "--count", "8", "--size", "32",
                       "--frames", "9"}) ||
      !run_mugv(home, {"dataset", "import", home + "/shapes", "--name", "shapes"}) ||
      !run_mugv(home, {"train-vae", "--preset", "tiny", "--dataset", "shapes", "--run", "vae0", "--steps",
                       "2", "--batch", "2", "--size", "32x32", "--frames", "9", "--heldout-clips", "1"}) ||
      !run_mugv(home, {"encode", "--dataset", "shapes", "--vae-run", "vae0"}) ||
      !run_mugv(home, {"train", "--preset", "tiny", "--dataset", "shapes", "--vae-run", "vae0", "--run",
                       "dit0", "--steps", "2", "--batch", "2"})) {
    out["error"] = "could not prepare the tiny model (see stderr)";
    return out;
  }
  QElapsedTimer clock;
  clock.start();
  MainWindow window(options_for(home));
  window.show();
  if (!wait_for([&] { return window.link().is_connected(); }, 30000)) {
    out["error"] = "the embedded server did not answer within 30 s";
    return out;
  }
  out["open_to_connected_ms"] = ms_since(clock);
  GeneratePage* generate = window.generate_page();
  window.show_page(Page::generate);
  generate->refresh();
  if (!wait_for([&] { return generate->run()->findText("dit0") >= 0; }, 30000)) {
    out["error"] = "the run dit0 was not listed";
    return out;
  }
  generate->run()->setCurrentText("dit0");
  generate->prompt()->setText("a red circle moving right on a black background");
  generate->steps()->setValue(4);
  generate->frames()->setValue(9);
  generate->size()->setText("32x32");
  const double submit = ms_since(clock);
  generate->generate();
  if (!wait_for([&] { return generate->preview_events() >= 1 && generate->preview()->frame_count() > 0; },
                300000)) {
    out["error"] = "no preview frame within 300 s";
    return out;
  }
  out["open_to_first_frame_ms"] = ms_since(clock);
  out["submit_to_first_frame_ms"] = ms_since(clock) - submit;
  bool finished = false;
  QObject::connect(generate, &GeneratePage::finished, [&](bool) { finished = true; });
  wait_for([&] { return finished; }, 300000);  // let the worker end before the window (and server) go
  return out;
}

// (a), no LibTorch: open → connected → the first event of a submitted job (the starter dataset's maker).
nlohmann::json open_to_first_job_event(const QString& home) {
  nlohmann::json out = {{"bench", "studio_open_to_first_frame"},
                        {"generation",
                         "unavailable: this build has no LibTorch, so its server has no generate "
                         "command; measured open -> connected -> first job event instead"}};
  QElapsedTimer clock;
  clock.start();
  MainWindow window(options_for(home));
  window.show();
  if (!wait_for([&] { return window.link().is_connected(); }, 30000)) {
    out["error"] = "the embedded server did not answer within 30 s";
    return out;
  }
  out["open_to_connected_ms"] = ms_since(clock);
  int64_t job = 0;
  double first_event = -1, submitted = -1, finished = -1;
  QObject::connect(&window.link(), &BackendLink::event,
                   [&](const QString& topic, const nlohmann::json& h, const QList<QByteArray>&) {
                     if (job == 0 || topic.section('/', 1, 1).toLongLong() != job) return;
                     if (first_event < 0) first_event = ms_since(clock);
                     const std::string state = h.value("state", "");
                     if (h.value("type", "") == "state" &&
                         (state == "succeeded" || state == "failed" || state == "cancelled"))
                       finished = ms_since(clock);
                   });
  const double submit = ms_since(clock);
  submit_job(
      window.link(), make_starter_job((home + "/shapes").toStdString(), 2).header(),
      [&](int64_t id) {
        job = id;
        submitted = ms_since(clock);
      },
      [&](const QString& m) { out["error"] = m.toStdString(); });
  if (!wait_for([&] { return first_event >= 0 || out.contains("error"); }, 60000))
    out["error"] = "no job event within 60 s";
  if (first_event >= 0) {
    out["open_to_first_job_event_ms"] = first_event;
    out["submit_to_reply_ms"] = submitted - submit;
    out["submit_to_first_job_event_ms"] = first_event - submit;
  }
  wait_for([&] { return finished >= 0; }, 60000);
  return out;
}

struct Lateness {
  std::vector<double> ms;
  nlohmann::json summary() const {
    std::vector<double> s = ms;
    std::sort(s.begin(), s.end());
    auto at = [&](double q) {
      return s.empty() ? 0.0 : s[std::min(s.size() - 1, size_t(q * double(s.size())))];
    };
    return {{"ticks", s.size()},
            {"p50_ms", at(0.5)},
            {"p99_ms", at(0.99)},
            {"max_ms", s.empty() ? 0.0 : s.back()}};
  }
};

// Lateness of every tick of a 10 ms timer for `seconds`: how much later than 10 ms after the previous one.
Lateness measure_ticks(double seconds) {
  Lateness l;
  QElapsedTimer clock;
  QTimer tick;
  tick.setTimerType(Qt::PreciseTimer);
  tick.setInterval(10);
  qint64 last = -1;
  QObject::connect(&tick, &QTimer::timeout, [&] {
    const qint64 now = clock.nsecsElapsed();
    if (last >= 0) l.ms.push_back(std::max(0.0, double(now - last) / 1e6 - 10.0));
    last = now;
  });
  clock.start();
  tick.start();
  wait_for([&] { return clock.elapsed() >= qint64(seconds * 1000); }, int(seconds * 1000) + 5000);
  return l;
}

// (b): the Runs page showing a job whose metrics arrive at 10 Hz.
nlohmann::json runs_page_latency(const QString& home, double seconds) {
  nlohmann::json out = {
      {"bench", "studio_runs_event_loop"}, {"metrics_hz", 10}, {"seconds", seconds}, {"tick_ms", 10}};
  // The embedded server inherits these: this program is its worker, sending metrics for `seconds` + 2 s.
  qputenv("MUGV_WORKER", QCoreApplication::applicationFilePath().toLocal8Bit());
  qputenv("MUGV_BENCH_METRICS_S", QByteArray::number(seconds + 2));
  MainWindow window(options_for(home));
  window.show();
  if (!wait_for([&] { return window.link().is_connected(); }, 30000)) {
    out["error"] = "the embedded server did not answer within 30 s";
    return out;
  }
  RunsPage* runs = window.runs_page();
  window.show_page(Page::runs);
  wait_for([] { return false; }, 500);
  out["idle"] = measure_ticks(seconds / 2).summary();

  int64_t job = 0;
  int metrics_events = 0;
  QObject::connect(
      &window.link(), &BackendLink::event,
      [&](const QString& topic, const nlohmann::json& h, const QList<QByteArray>&) {
        if (job && topic.section('/', 1, 1).toLongLong() == job && h.value("type", "") == "metrics")
          ++metrics_events;
      });
  submit_job(
      window.link(), make_starter_job((home + "/unused").toStdString(), 1).header(),
      [&](int64_t id) { job = id; }, [&](const QString& m) { out["error"] = m.toStdString(); });
  if (!wait_for([&] { return metrics_events > 0 || out.contains("error"); }, 30000)) {
    out["error"] = "no metrics arrived within 30 s";
    return out;
  }
  runs->select_job(job);  // its charts now take every point
  wait_for([&] { return runs->loss_chart()->point_count() > 0; }, 5000);
  const int before = metrics_events;
  out["with_metrics"] = measure_ticks(seconds).summary();
  out["metrics_events"] = metrics_events - before;
  out["points_charted"] = runs->loss_chart()->point_count();
  wait_for([&] { return runs->jobs()->findItems("succeeded", Qt::MatchExactly).size() > 0; }, 15000);
  qunsetenv("MUGV_WORKER");
  return out;
}

// This program as the server's worker (MUGV_WORKER): metrics and a log line at 10 Hz, like a training job.
int fake_worker(int argc, char** argv) {
  std::string server;
  int64_t job = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--server") == 0) server = argv[i + 1];
    if (std::strcmp(argv[i], "--job") == 0) job = std::atoll(argv[i + 1]);
  }
  const double seconds = std::atof(qgetenv("MUGV_BENCH_METRICS_S").constData());
  try {
    mugv::WorkerLink link(server, job);
    const auto start = Clock::now();
    for (int64_t step = 1; std::chrono::duration<double>(Clock::now() - start).count() < seconds; ++step) {
      if (link.cancel_token().cancel_requested()) break;
      const double loss = 1.0 / std::sqrt(double(step)) + 0.05 * std::sin(double(step));
      link.metrics(step, {{"loss", loss}, {"lr", 1e-4}, {"tokens_per_s", 5000.0 + step}, {"mfu", 0.3}});
      std::this_thread::sleep_until(start + std::chrono::milliseconds(100 * step));
    }
    link.finish(mugv::JobState::succeeded);
  } catch (const mugv::Error& e) {
    std::fprintf(stderr, "bench_studio worker: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--job") == 0) return fake_worker(argc, argv);
  double seconds = 10;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = std::max(1.0, std::atof(argv[++i]));
    else if (std::strcmp(argv[i], "--keep") == 0)
      keep = true;
    else {
      std::fprintf(stderr, "usage: bench_studio [--seconds N] [--keep]\n");
      return 2;
    }
  }
  qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  QApplication::setOrganizationName("mugv-bench");
  QApplication::setApplicationName("bench_studio");
  QTemporaryDir settings;
  QSettings::setPath(QSettings::NativeFormat, QSettings::UserScope, settings.path());
  QTemporaryDir home_a(QDir::temp().filePath("mugv-bench-studio-XXXXXX")),
      home_b(QDir::temp().filePath("mugv-bench-studio-XXXXXX"));
  home_a.setAutoRemove(!keep);
  home_b.setAutoRemove(!keep);
  try {
    const nlohmann::json a =
        server_can_generate() ? open_to_first_preview(home_a.path()) : open_to_first_job_event(home_a.path());
    std::cout << a.dump() << std::endl;
    std::cout << runs_page_latency(home_b.path(), seconds).dump() << std::endl;
  } catch (const mugv::Error& e) {
    std::fprintf(stderr, "bench_studio: %s\n", e.what());
    return 1;
  }
  if (keep)
    std::fprintf(stderr, "homes kept: %s %s\n", home_a.path().toLocal8Bit().constData(),
                 home_b.path().toLocal8Bit().constData());
  return 0;
}
