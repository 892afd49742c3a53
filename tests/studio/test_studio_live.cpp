// The studio, offscreen, against real servers while things happen to them: the Runs page's gallery of the
// samples a run rendered while training (listed and played through the server), and a backend that dies —
// the embedded one or a remote one killed like a crash — noticed within seconds, and brought back.
#include "machine_check.h"
#include "main_window.h"
#include "service/client.h"
#include "studio_app.h"
#include "support/sample_runs.h"
#include "support/serve_process.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <QAction>
#include <QElapsedTimer>
#include <QTest>

#include <signal.h>

namespace mugv::studio {
namespace {

StudioOptions embedded_options(const test::TempDir& home) {
  StudioOptions options;
  options.home = QString::fromStdString(home.path().string());
  options.mugv_binary = mugv_binary();
  options.offer_starter = false;
  return options;
}

int row_of(QTableWidget* table, const QString& first_cell) {
  for (int r = 0; r < table->rowCount(); ++r)
    if (table->item(r, 0) && table->item(r, 0)->text() == first_cell) return r;
  return -1;
}

QString job_state(RunsPage* runs, int64_t job) {
  const int row = row_of(runs->jobs(), QString::number(job));
  return row < 0 ? QString() : runs->jobs()->item(row, 2)->text();
}

bool any_job_running(RunsPage* runs) {
  for (int r = 0; r < runs->jobs()->rowCount(); ++r)
    if (runs->jobs()->item(r, 2)->text() == "running") return true;
  return false;
}

// A player that has frames and moves through them by itself.
bool plays_looped(FramePlayer* player, int frames) {
  if (!QTest::qWaitFor([&] { return player->frame_count() == frames; }, 10000)) return false;
  const int first = player->current_frame();
  return QTest::qWaitFor([&] { return player->current_frame() != first; }, 5000);
}

const std::vector<test::SampleVideo> kVideos = {
    {100, "a red circle moving left on a black background", {220, 30, 30}},
    {100, "a blue square moving up on a white background", {30, 30, 220}},
    {200, "a green triangle moving right on a gray background", {30, 200, 30}},
};

}  // namespace

TEST_CASE(
    "the Runs page's gallery lists a run's sample steps newest first and plays the chosen step's videos",
    "[studio]") {
  app();
  test::TempDir home("mugv-studio-gallery");
  test::write_sample_run(home.path(), "demo", kVideos);
  test::write_sample_run(home.path(), "fresh", {});
  MainWindow window(embedded_options(home));
  window.show();
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  window.show_page(Page::runs);
  RunsPage* runs = window.runs_page();
  runs->details()->setCurrentIndex(1);
  REQUIRE(QTest::qWaitFor([&] { return row_of(runs->runs(), "demo") >= 0; }, 10000));

  runs->runs()->selectRow(row_of(runs->runs(), "demo"));
  CHECK(runs->samples_run() == "demo");
  QListWidget* steps = runs->sample_steps();
  REQUIRE(QTest::qWaitFor([&] { return steps->count() == 2; }, 10000));
  CHECK(steps->item(0)->text().startsWith("step 200"));
  CHECK(steps->item(0)->text().contains(QString::fromStdString(kVideos[2].prompt)));
  CHECK(steps->item(1)->text().startsWith("step 100"));
  CHECK(steps->item(1)->text().contains(QString::fromStdString(kVideos[0].prompt)));
  CHECK(steps->item(1)->text().contains(QString::fromStdString(kVideos[1].prompt)));

  // The newest step plays at once: its one video, looped.
  CHECK(steps->currentRow() == 0);
  REQUIRE(runs->sample_players().size() == 1);
  CHECK(plays_looped(runs->sample_players()[0], test::kSampleFrames));
  CHECK(runs->sample_prompt(0).contains(QString::fromStdString(kVideos[2].prompt)));

  // The older step: both of its videos side by side, each with its prompt.
  steps->setCurrentRow(1);
  REQUIRE(runs->sample_players().size() == 2);
  for (int i = 0; i < 2; ++i) {
    INFO("video " << i);
    CHECK(plays_looped(runs->sample_players()[i], test::kSampleFrames));
    CHECK(runs->sample_prompt(i).contains(QString::fromStdString(kVideos[size_t(i)].prompt)));
  }

  // A new step appears (a training job sampled again): listing again keeps the chosen step playing.
  test::write_sample_run(home.path(), "demo",
                         {kVideos[0], kVideos[1], kVideos[2], {300, "later", {9, 9, 9}}});
  runs->show_samples("demo");
  REQUIRE(QTest::qWaitFor([&] { return steps->count() == 3; }, 10000));
  CHECK(steps->item(0)->text().startsWith("step 300"));
  CHECK(steps->currentItem()->text().startsWith("step 100"));
  CHECK(runs->sample_players().size() == 2);

  // A run without samples says so.
  runs->runs()->selectRow(row_of(runs->runs(), "fresh"));
  CHECK(QTest::qWaitFor([&] { return runs->samples_run() == "fresh" && steps->count() == 0; }, 10000));
  CHECK(runs->sample_players().isEmpty());
}

TEST_CASE("Help's machine check shows the findings of mugv doctor on the server's machine", "[studio]") {
  app();
  test::TempDir home("mugv-studio-doctor");
  // A released-model folder with only a (broken) DiT file: the check warns that it is incomplete.
  std::filesystem::create_directories(home / "models" / "half");
  test::write_bytes(home / "models" / "half" / "dit.safetensors", "not weights");
  MainWindow window(embedded_options(home));
  window.show();
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  // The quick check made on connecting puts the warning in the status bar, its finding in the tooltip.
  REQUIRE(QTest::qWaitFor([&] { return window.machine_warning()->isVisible(); }, 30000));
  // (A machine short of disk space has a second warning, so the count is not checked.)
  CHECK(window.machine_warning()->text().contains("warning"));
  CHECK(window.machine_warning()->text().contains("0 failures"));
  CHECK(window.machine_warning()->toolTip().contains("warn models"));
  CHECK(window.machine_warning()->toolTip().contains("half"));
  MachineCheckDialog* dialog = window.check_machine();
  REQUIRE(dialog);
  CHECK(dialog->isVisible());
  REQUIRE(QTest::qWaitFor([&] { return dialog->findings()->rowCount() > 0; }, 60000));
  CHECK(dialog->summary().contains("0 failure(s)"));
  QStringList checks;
  for (int r = 0; r < dialog->findings()->rowCount(); ++r) checks << dialog->findings()->item(r, 1)->text();
  CHECK(checks.contains("home"));
  CHECK(checks.contains("ffmpeg"));
  const int home_row = int(checks.indexOf("home"));
  CHECK(dialog->findings()->item(home_row, 2)->text().contains(QString::fromStdString(home.path().string())));
  const int models_row = int(checks.indexOf("models"));
  REQUIRE(models_row >= 0);
  CHECK(dialog->findings()->item(models_row, 0)->text() == "warn");
  CHECK(dialog->findings()->item(models_row, 3)->text().contains("mugv model list"));
  dialog->close();
}

TEST_CASE("a killed embedded backend is reported within seconds and Restart backend brings the jobs back",
          "[studio][slow]") {
  app();
  test::TempDir home("mugv-studio-restart");
  MainWindow window(embedded_options(home));
  window.show();
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  RunsPage* runs = window.runs_page();
  CHECK_FALSE(window.backend_notice()->isVisible());

  // A job that runs for a while (thousands of clips), seen running on the Runs page.
  int64_t job = 0;
  {
    Client client(window.link().endpoint().toStdString(), std::chrono::milliseconds(5000));
    job = client
              .request(protocol::MessageType::submit_job,
                       {{"kind", "make_dataset"},
                        {"params", test::make_dataset_params(home / "big", 3000)}})["job"]["id"]
              .get<int64_t>();
  }
  REQUIRE(QTest::qWaitFor([&] { return job_state(runs, job) == "running"; }, 20000));

  // Killed the way a crash ends it: no goodbye on the socket.
  const long pid = window.embedded_server()->pid();
  REQUIRE(pid > 0);
  QElapsedTimer noticed;
  noticed.start();
  REQUIRE(::kill(static_cast<pid_t>(pid), SIGKILL) == 0);
  REQUIRE(QTest::qWaitFor(
      [&] {
        return window.status_text().contains("backend stopped") && window.backend_notice()->isVisible();
      },
      5000));
  INFO("status: " << window.status_text().toStdString());
  CHECK(noticed.elapsed() < 5000);
  CHECK_FALSE(window.link().is_connected());
  CHECK_FALSE(any_job_running(runs));
  CHECK(job_state(runs, job).startsWith("unknown"));
  CHECK(window.restart_button()->isVisible());
  CHECK(window.restart_action()->isEnabled());

  // Restart: a new server on the same home, and the job list again (the server itself recovers the job the
  // dead one left running).
  window.restart_action()->trigger();
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 20000));
  CHECK(window.embedded_server()->pid() > 0);
  CHECK(window.embedded_server()->pid() != pid);
  CHECK_FALSE(window.backend_notice()->isVisible());
  CHECK(QTest::qWaitFor(
      [&] {
        const QString state = job_state(runs, job);
        return !state.isEmpty() && !state.startsWith("unknown");
      },
      15000));
  CHECK(window.status_text().contains("●"));

  // No worker outlives the test.
  Client client(window.link().endpoint().toStdString(), std::chrono::milliseconds(5000));
  try {
    (void)client.request(protocol::MessageType::cancel_job, {{"job", job}, {"force", true}});
  } catch (const Error&) {
    // it already ended
  }
  CHECK(test::wait_until(
      [&] {
        const std::string state =
            client.request(protocol::MessageType::get_job, {{"job", job}})["job"]["state"].get<std::string>();
        return state != "running" && state != "starting" && state != "queued";
      },
      std::chrono::seconds(30)));
}

TEST_CASE(
    "a remote server that dies is reported within seconds and the studio attaches again when it is back",
    "[studio]") {
  app();
  test::TempDir home("mugv-studio-remote-death");
  auto serve = std::make_unique<test::ServeProcess>(home.path());
  test::TempDir studio_home("mugv-studio-remote-client");
  StudioOptions options = embedded_options(studio_home);
  options.server = QString::fromStdString(serve->endpoint());
  MainWindow window(options);
  window.show();
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  CHECK_FALSE(window.restart_action()->isEnabled());

  // Once the pages' requests are all answered, the server is killed like a crash while nothing is asked of
  // it: only the link's pings can tell.
  REQUIRE(QTest::qWaitFor([&] { return window.link().pending() == 0; }, 10000));
  QElapsedTimer noticed;
  noticed.start();
  serve->kill();
  REQUIRE(QTest::qWaitFor([&] { return !window.link().is_connected(); }, 8000));
  CHECK(noticed.elapsed() < 6000);
  CHECK(window.status_text().contains("not connected"));
  CHECK(window.backend_notice()->isVisible());
  CHECK_FALSE(window.restart_button()->isVisible());  // a remote server is not this studio's to start

  serve = std::make_unique<test::ServeProcess>(home.path());
  CHECK(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  CHECK_FALSE(window.backend_notice()->isVisible());
}

}  // namespace mugv::studio
