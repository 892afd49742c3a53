// The studio, offscreen, against real servers while things happen to them: the Runs page's gallery of the
// samples a run rendered while training (listed and played through the server).
#include "core/strings.h"
#include "main_window.h"
#include "studio_app.h"
#include "support/sample_runs.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <QTest>

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

}  // namespace mugv::studio
