// The studio, offscreen, against a real embedded server (`mugv serve` from this build) and real workers:
// the starter dataset's clips and captions, a short training run whose metrics reach the charts, a
// generation whose denoising previews arrive live, the player, export, and the bad-input paths.
#include "job_params.h"
#include "main_window.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <QApplication>
#include <QFileInfo>
#include <QProcess>
#include <QTest>

#include <cstdlib>

namespace mugv::studio {
namespace {

QApplication& app() {
  static int argc = 1;
  static char name[] = "test_studio";
  static char* argv[] = {name, nullptr};
  static QApplication* instance = [] {
    qputenv("QT_QPA_PLATFORM", "offscreen");
    return new QApplication(argc, argv);
  }();
  return *instance;
}

QString mugv_binary() { return QString::fromStdString((test::binary_dir() / "bin" / "mugv").string()); }

// Runs `mugv ARGS` with MUGV_HOME=home; true when it exits 0.
bool run_mugv(const QString& home, const QStringList& args) {
  QProcess p;
  QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
  env.insert("MUGV_HOME", home);
  p.setProcessEnvironment(env);
  p.start(mugv_binary(), args);
  if (!p.waitForFinished(120000)) return false;
  if (p.exitCode() != 0) WARN("mugv " << args.join(' ').toStdString() << ": " << p.readAllStandardError().toStdString());
  return p.exitCode() == 0;
}

bool has_torch_commands() {
  QProcess p;
  p.start(mugv_binary(), {"generate", "--help"});
  return p.waitForFinished(30000) && p.exitCode() == 0;
}

// A home with the starter dataset (8 clips, 32x32, 9 frames) and, with LibTorch, a VAE run and a DiT run.
void prepare_home(const QString& home, bool with_models) {
  REQUIRE(run_mugv(home, {"make-dataset", "shapes", "--out", home + "/shapes", "--count", "8", "--size", "32", "--frames", "9"}));
  REQUIRE(run_mugv(home, {"dataset", "import", home + "/shapes", "--name", "shapes"}));
  if (!with_models) return;
  REQUIRE(run_mugv(home, {"train-vae", "--preset", "tiny", "--dataset", "shapes", "--run", "vae0", "--steps", "2", "--batch", "2",
                          "--size", "32x32", "--frames", "9", "--heldout-clips", "1"}));
  REQUIRE(run_mugv(home, {"encode", "--dataset", "shapes", "--vae-run", "vae0"}));
  REQUIRE(run_mugv(home, {"train", "--preset", "tiny", "--dataset", "shapes", "--vae-run", "vae0", "--run", "dit0",
                          "--steps", "2", "--batch", "2"}));
}

}  // namespace

TEST_CASE("the studio drives datasets, training and generation on its embedded server", "[studio][slow]") {
  app();
  test::TempDir tmp("mugv-studio");
  const QString home = QString::fromStdString(tmp.path().string());
  const bool torch = has_torch_commands();
  if (!torch) WARN("this build has no LibTorch commands: training and generation are not exercised");
  prepare_home(home, torch);

  StudioOptions options;
  options.home = home;
  options.mugv_binary = mugv_binary();
  options.offer_starter = false;
  MainWindow window(options);
  window.show();
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));

  // Datasets: the imported dataset, its clips and an undoable caption edit.
  DatasetsPage* datasets = window.datasets_page();
  REQUIRE(QTest::qWaitFor([&] { return datasets->datasets()->count() == 1; }, 10000));
  datasets->datasets()->setCurrentRow(0);
  REQUIRE(QTest::qWaitFor([&] { return datasets->clips()->rowCount() > 0; }, 10000));
  const int64_t clip = datasets->clips()->item(0, 0)->text().toLongLong();
  const QString before = datasets->clips()->item(0, 8)->text();
  datasets->edit_caption(clip, before, "a hand-written caption");
  auto caption_of_first = [&] { return datasets->clips()->rowCount() ? datasets->clips()->item(0, 8)->text() : QString(); };
  CHECK(QTest::qWaitFor([&] { return caption_of_first() == "a hand-written caption"; }, 10000));
  datasets->undo_stack()->undo();
  CHECK(QTest::qWaitFor([&] { return caption_of_first() == before; }, 10000));

  if (!torch) return;

  // Runs: a short training run; its metrics arrive in the charts while it runs.
  RunsPage* runs = window.runs_page();
  window.show_page(Page::runs);
  TrainForm form;
  form.run = "studio-run";
  form.dataset = "shapes";
  form.vae_run = "vae0";
  form.steps = 6;
  form.batch = 2;
  form.sample_every = 3;
  REQUIRE(validate(form).empty());
  runs->start_training(form);
  CHECK(QTest::qWaitFor([&] { return runs->loss_chart()->point_count() >= 1; }, 90000));

  // Generate: the button is disabled without a prompt; previews arrive during denoising; the result plays.
  GeneratePage* generate = window.generate_page();
  window.show_page(Page::generate);
  generate->refresh();
  REQUIRE(QTest::qWaitFor([&] { return generate->run()->findText("dit0") >= 0; }, 10000));
  generate->run()->setCurrentText("dit0");
  generate->prompt()->clear();
  CHECK_FALSE(generate->generate_button()->isEnabled());
  generate->prompt()->setText("a red circle moving right on a black background");
  generate->steps()->setValue(4);
  generate->frames()->setValue(9);
  generate->size()->setText("32x32");
  REQUIRE(generate->generate_button()->isEnabled());
  bool finished = false, ok = false;
  QObject::connect(generate, &GeneratePage::finished, [&](bool success) {
    finished = true;
    ok = success;
  });
  QTest::mouseClick(generate->generate_button(), Qt::LeftButton);
  REQUIRE(QTest::qWaitFor([&] { return finished; }, 120000));
  CHECK(ok);
  CHECK(generate->preview_events() >= 1);
  CHECK(generate->player()->frame_count() == 9);
  QTest::keyClick(generate->player(), Qt::Key_Right);
  CHECK(generate->player()->current_frame() == 1);

  const QString gif = home + "/exported.gif";
  QString error;
  CHECK(generate->export_to(gif, &error));
  CHECK(QFileInfo(gif).size() > 0);
  CHECK_FALSE(generate->export_to("/proc/not-writable/out.mp4", &error));
  CHECK(error.contains("not-writable"));
}

TEST_CASE("an unreachable server is reported and the window stays responsive", "[studio]") {
  app();
  test::TempDir tmp("mugv-studio");
  StudioOptions options;
  options.server = "ipc://" + QString::fromStdString((tmp.path() / "nobody.sock").string());
  options.home = QString::fromStdString(tmp.path().string());
  options.offer_starter = false;
  MainWindow window(options);
  window.show();
  QElapsedTimer timer;
  timer.start();
  int ticks = 0;
  QTimer heartbeat;
  QObject::connect(&heartbeat, &QTimer::timeout, [&] { ++ticks; });
  heartbeat.start(20);
  CHECK(QTest::qWaitFor([&] { return window.status_text().contains("not connected"); }, 15000));
  CHECK_FALSE(window.link().is_connected());
  // The event loop kept running while the network thread waited for the server.
  CHECK(ticks >= timer.elapsed() / 20 / 4);
}

}  // namespace mugv::studio
