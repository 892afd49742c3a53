#include "dataset/importer.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "dataset/manifest.h"
#include "dataset/starter.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <algorithm>

using namespace mugv;
using mugv::test::TempDir;

namespace {

ShapesDatasetResult make_small_set(const fs::path& dir, int count) {
  ShapesDatasetOptions o;
  o.out_dir = dir;
  o.count = count;
  o.size = 32;
  o.frames = 9;
  return make_shapes_dataset(o, CancelToken(), nullptr);
}

}  // namespace

TEST_CASE("a CSV manifest imports its clips with ranges and captions; bad lines and files are reported",
          "[dataset]") {
  TempDir dir;
  make_small_set(dir / "shapes", 2);
  auto entries = read_manifest(dir / "shapes" / "manifest.jsonl").entries;
  // Two ranges of the first clip, the second clip whole, a missing file and a line without a path.
  std::string csv = "path,caption,start,end,sharpness\n";
  csv += entries[0].path.string() + ",first half,0,0.5,300\n";
  csv += entries[0].path.string() + ",\"second, half\",0.5,1.0,\n";
  csv += entries[1].path.string() + ",whole,,,\n";
  csv += (dir / "missing.mp4").string() + ",gone,,,\n";
  csv += ",no path,,,\n";
  mugv::test::write_bytes(dir / "m.csv", csv);

  Catalog catalog = Catalog::open(dir / "catalog.sqlite");
  ImportOptions o;
  o.dataset_name = "csv";
  o.input = dir / "m.csv";
  auto report = import_dataset(catalog, o, CancelToken(), nullptr);
  CHECK(report.dataset_created);
  CHECK(report.clips_added == 3);
  CHECK(report.sources_added == 2);
  CHECK(report.sources_known == 1);  // the first file's second range reuses its source
  REQUIRE(report.failures.size() == 2);
  CHECK(report.failures[0].reason.find("line 6") != std::string::npos);
  CHECK(report.failures[1].path.filename() == "missing.mp4");

  ClipFilter filter;
  filter.dataset_id = report.dataset_id;
  auto clips = list_clips(catalog, filter);
  REQUIRE(clips.size() == 3);
  CHECK(clips[0].start_s == 0.0);
  CHECK(clips[0].end_s == 0.5);
  CHECK(clips[0].start_frame == 0);
  CHECK(clips[0].end_frame == 4);
  CHECK(current_caption(catalog, clips[1].id)->text == "second, half");
  CHECK(current_caption(catalog, clips[1].id)->origin == CaptionOrigin::import);
  CHECK(clips[2].end_frame == 9);
}

TEST_CASE("a folder whose manifest is a JSON array imports the clips it lists", "[dataset]") {
  TempDir dir;
  make_small_set(dir / "shapes", 2);
  fs::create_directories(dir / "listed");
  write_manifest(dir / "listed" / "manifest.json", read_manifest(dir / "shapes" / "manifest.jsonl").entries);
  Catalog catalog = Catalog::open(dir / "catalog.sqlite");
  ImportOptions o;
  o.dataset_name = "listed";
  o.input = dir / "listed";
  const auto report = import_dataset(catalog, o, CancelToken(), nullptr);
  CHECK(report.failures.empty());
  CHECK(report.clips_added == 2);
  CHECK(report.captions_added == 2);
}

TEST_CASE("importing twice adds nothing, and a broken file becomes a failed source with its reason",
          "[dataset]") {
  TempDir dir;
  make_small_set(dir / "shapes", 3);
  mugv::test::write_bytes(dir / "shapes" / "train" / "zero.mp4", "");
  mugv::test::write_bytes(dir / "shapes" / "train" / "text.mp4", "not a video at all\n");
  Catalog catalog = Catalog::open(dir / "catalog.sqlite");
  ImportOptions o;
  o.dataset_name = "folder";
  o.input = dir / "shapes" / "train";
  auto first = import_dataset(catalog, o, CancelToken(), nullptr);
  CHECK(first.clips_added == 3);
  CHECK(first.captions_added == 3);
  REQUIRE(first.failures.size() == 2);
  for (const auto& f : first.failures) CHECK_FALSE(f.reason.empty());
  auto failed = list_sources(catalog, SourceStatus::failed);
  CHECK(failed.size() == 2);

  auto second = import_dataset(catalog, o, CancelToken(), nullptr);
  CHECK(second.clips_added == 0);
  CHECK(second.clips_known == 3);
  CHECK(second.failures.size() == 2);
  CHECK_FALSE(second.dataset_created);
}

TEST_CASE("import refuses a missing input and an empty name, and stops on cancel keeping earlier clips",
          "[dataset]") {
  TempDir dir;
  Catalog catalog = Catalog::open(dir / "catalog.sqlite");
  ImportOptions o;
  o.dataset_name = "x";
  o.input = dir / "nope";
  CHECK_THROWS_AS(import_dataset(catalog, o, CancelToken(), nullptr), Error);
  o.dataset_name = " ";
  o.input = dir.path();
  CHECK_THROWS_AS(import_dataset(catalog, o, CancelToken(), nullptr), Error);

  make_small_set(dir / "shapes", 4);
  o.dataset_name = "cancelled";
  o.input = dir / "shapes" / "train";
  CancelToken cancel;
  auto stop_after_two = [&](const Progress& p) {
    if (p.done >= 2) cancel.request_cancel();
  };
  try {
    (void)import_dataset(catalog, o, cancel, stop_after_two);
    FAIL("expected the import to be cancelled");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::cancelled);
  }
  ClipFilter filter;
  filter.dataset_id = find_dataset(catalog, "cancelled")->id;
  CHECK(count_clips(catalog, filter) == 2);
}

TEST_CASE("a caption file that is not UTF-8 leaves its clip out with the file named; the others import",
          "[dataset]") {
  TempDir dir;
  make_small_set(dir / "shapes", 2);
  std::vector<fs::path> videos;
  for (const auto& e : fs::directory_iterator(dir / "shapes" / "train"))
    if (e.path().extension() == ".mp4") videos.push_back(e.path());
  std::sort(videos.begin(), videos.end());
  REQUIRE(videos.size() >= 2);
  fs::create_directories(dir / "side");
  fs::copy_file(videos[0], dir / "side" / "a.mp4");
  fs::copy_file(videos[1], dir / "side" / "b.mp4");
  mugv::test::write_bytes(dir / "side" / "a.txt", "caf\xE9 au lait");  // Latin-1
  mugv::test::write_bytes(dir / "side" / "b.txt", "caf\xC3\xA9 au lait");
  CHECK_THROWS_WITH(read_sidecar_caption(dir / "side" / "a.mp4"),
                    Catch::Contains("a.txt") && Catch::Contains("UTF-8"));

  Catalog catalog = Catalog::open(dir / "catalog.sqlite");
  ImportOptions o;
  o.dataset_name = "side";
  o.input = dir / "side";
  const ImportReport report = import_dataset(catalog, o, CancelToken(), nullptr);
  REQUIRE(report.failures.size() == 1);
  CHECK(report.failures[0].path.filename() == "a.mp4");
  CHECK_THAT(report.failures[0].reason, Catch::Contains("a.txt") && Catch::Contains("not UTF-8"));
  ClipFilter filter;
  filter.dataset_id = find_dataset(catalog, "side")->id;
  CHECK(count_clips(catalog, filter) == 1);
}
