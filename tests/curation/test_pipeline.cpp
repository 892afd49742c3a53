#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "curation/balance.h"
#include "curation/dedup.h"
#include "curation/export.h"
#include "curation/pipeline.h"
#include "curation/synthetic_video.h"
#include "dataset/importer.h"
#include "dataset/manifest.h"
#include "media/media_fixtures.h"
#include "media/probe.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <set>
#include <tuple>

using namespace mugv;
using mugv::test::TempDir;

namespace {

// Three small sources of two shots each (a hard cut at 2.5 s), generated once for the whole suite.
const std::vector<fs::path>& synthetic_sources() {
  static TempDir dir("mugv-pipeline-src");
  static const std::vector<fs::path> files = [] {
    std::vector<fs::path> out;
    for (int v = 0; v < 3; ++v) {
      test::Look a;
      a.hue_deg = 40.0 + 100 * v;
      a.seed = 10 + v;
      a.grain = 6;
      test::Look b = a;
      b.hue_deg += 160;
      b.seed += 50;
      b.vx_px = -3;
      test::Shot first{a, 60, test::Transition::hard, 0};
      test::Shot second{b, 60, test::Transition::hard, 0};
      out.push_back(test::write_shots(dir / cat("video_", v, ".mp4"), {first, second}, 192, 108, 24).path);
    }
    return out;
  }();
  return files;
}

// The source folder with the synthetic videos only.
fs::path source_folder() {
  return synthetic_sources().front().parent_path();
}

CurateOptions options_for(std::vector<fs::path> inputs, const std::string& dataset = "raw") {
  CurateOptions o;
  o.inputs = std::move(inputs);
  o.dataset_name = dataset;
  o.preset = "mugv";
  return o;
}

using Signature = std::tuple<std::string, double, double, std::string, std::string, double>;

// What a run produced, independent of ids: (source hash, start, end, decision, reason, sharpness).
std::multiset<Signature> signature(Catalog& catalog, const std::string& dataset) {
  std::multiset<Signature> out;
  auto d = find_dataset(catalog, dataset);
  REQUIRE(d);
  ClipFilter f;
  f.dataset_id = d->id;
  for (const Clip& c : list_clips(catalog, f)) {
    auto s = get_source(catalog, c.source_id);
    out.insert({s->content_hash, std::round(c.start_s * 1000) / 1000, std::round(c.end_s * 1000) / 1000,
                to_string(c.decision), c.reason, c.scores.sharpness.value_or(-1)});
  }
  return out;
}

int64_t clip_count(Catalog& catalog, const std::string& dataset,
                   std::optional<ClipDecision> decision = std::nullopt) {
  ClipFilter f;
  f.dataset_id = find_dataset(catalog, dataset)->id;
  f.decision = decision;
  return count_clips(catalog, f);
}

// A dataset of clips with hand-set scores, for the steps that never decode.
int64_t scored_dataset(Catalog& catalog, const std::string& name) {
  Dataset d;
  d.name = name;
  d.root_dir = "/nonexistent";
  d = create_dataset(catalog, d);
  Source s;
  s.path = "/nonexistent/source.mp4";
  s.content_hash = "hash-" + name;
  s.status = SourceStatus::ok;
  s = add_source(catalog, s);
  return d.id * 1000000 + s.id;
}

Clip scored_clip(int64_t ids, double start_s, uint64_t phash, double aesthetic, double sharpness) {
  Clip c;
  c.dataset_id = ids / 1000000;
  c.source_id = ids % 1000000;
  c.start_s = start_s;
  c.end_s = start_s + 3;
  c.fps = 24;
  c.start_frame = static_cast<int64_t>(start_s * 24);
  c.end_frame = c.start_frame + 72;
  c.width = 320;
  c.height = 180;
  ClipAnalysis a;
  a.start_s = c.start_s;
  a.end_s = c.end_s;
  a.sharpness = sharpness;
  a.motion = 5;
  a.aesthetic = aesthetic;
  a.phash = {phash, phash, phash};
  c.scores = clip_scores_from_analysis(a, CutKind::hard);
  c.decision = ClipDecision::keep;
  return c;
}

}  // namespace

TEST_CASE("curate splits, scores and decides every source into the catalog; a rerun adds nothing",
          "[curation][pipeline][catalog]") {
  TempDir tmp("mugv-pipeline");
  Catalog catalog = Catalog::open(tmp / "catalog.sqlite");
  std::vector<Progress> reports;
  CurateReport r = curate(catalog, options_for({source_folder()}), CancelToken(),
                          [&](const Progress& p) { reports.push_back(p); });
  CHECK(r.dataset_created);
  CHECK(r.files_seen == 3);
  CHECK(r.sources_analyzed == 3);
  CHECK(r.failures.empty());
  // Each source is two 2.5 s shots: two clips, split at the cut.
  REQUIRE(r.clips_added == 6);
  CHECK(r.clips_kept + r.clips_rejected == 6);
  CHECK(r.frames_decoded == 360);
  REQUIRE_FALSE(reports.empty());
  CHECK(reports.back().stage == "curate");
  CHECK(reports.back().done == 360);
  CHECK(reports.back().detail.find("file 3/3") != std::string::npos);
  CHECK(reports.back().detail.find("fps") != std::string::npos);

  ClipFilter f;
  f.dataset_id = r.dataset_id;
  const CurationThresholds thresholds = resolve_curation_preset("mugv").thresholds;
  for (const Clip& c : list_clips(catalog, f)) {
    CHECK(c.decision != ClipDecision::unknown);
    CHECK(c.scores.sharpness);
    CHECK(c.scores.extra.contains("shake_px"));
    CHECK(c.scores.extra["phash"].size() == 3);
    CHECK(c.scores.extra.contains("aesthetic_parts"));
    CHECK(c.scores.extra["cut_kind"] == (c.start_s < 0.01 ? "none" : "hard"));
    CHECK(c.end_s - c.start_s == Approx(2.5).margin(0.05));
    // The stored scores reproduce the stored decision.
    auto a = clip_analysis_from_scores(c);
    REQUIRE(a);
    const Decision d = decide(*a, thresholds);
    CHECK(d.reason == c.reason);
  }

  CurateReport again = curate(catalog, options_for({source_folder()}), CancelToken(), {});
  CHECK(again.clips_added == 0);
  CHECK(again.sources_analyzed == 0);
  CHECK(again.sources_skipped == 3);
  CHECK(again.frames_decoded == 0);
  CHECK(clip_count(catalog, "raw") == 6);
}

TEST_CASE("bad inputs become failed sources with reasons and the run goes on",
          "[curation][pipeline][catalog]") {
  TempDir tmp("mugv-pipeline-bad");
  fs::create_directories(tmp / "in");
  fs::copy_file(synthetic_sources()[0], tmp / "in" / "good.mp4");
  test::write_bytes(tmp / "in" / "broken.mp4", "this is not a video at all, just text");
  {
    const std::string bytes = read_text_file(synthetic_sources()[1]);
    test::write_bytes(tmp / "in" / "truncated.mp4", bytes.substr(0, bytes.size() / 3));
  }
  test::write_wav(tmp / "in" / "audio_only.mkv", 8000);
  test::write_bytes(tmp / "in" / "empty.mp4", "");
  Catalog catalog = Catalog::open(tmp / "catalog.sqlite");
  CurateReport r = curate(catalog, options_for({tmp / "in"}), CancelToken(), {});
  CHECK(r.files_seen == 5);
  CHECK(r.sources_analyzed == 1);
  CHECK(r.clips_added == 2);
  REQUIRE(r.failures.size() == 4);
  for (const auto& f : r.failures) {
    INFO(f.path << ": " << f.reason);
    CHECK_FALSE(f.reason.empty());
  }
  auto reason_of = [&](const std::string& name) {
    for (const auto& f : r.failures)
      if (f.path.filename() == name) return f.reason;
    return std::string();
  };
  CHECK(reason_of("audio_only.mkv").find("no video stream") != std::string::npos);
  const auto failed = list_sources(catalog, SourceStatus::failed);
  CHECK(failed.size() == 4);
  for (const Source& s : failed) CHECK_FALSE(s.error_message.empty());

  // A rerun reports the same failures from the catalog without analysing anything again.
  CurateReport again = curate(catalog, options_for({tmp / "in"}), CancelToken(), {});
  CHECK(again.failures.size() == 4);
  CHECK(again.clips_added == 0);
}

TEST_CASE("an interrupted curate resumes where it stopped and ends like an uninterrupted run",
          "[curation][pipeline][catalog]") {
  TempDir tmp("mugv-pipeline-resume");
  Catalog whole = Catalog::open(tmp / "whole.sqlite");
  (void)curate(whole, options_for({source_folder()}), CancelToken(), {});

  Catalog catalog = Catalog::open(tmp / "catalog.sqlite");
  CancelToken cancel;
  auto cancel_on_second = [&](const Progress& p) {
    if (starts_with(p.detail, "file 2/")) cancel.request_cancel();
  };
  try {
    (void)curate(catalog, options_for({source_folder()}), cancel, cancel_on_second);
    FAIL("the run was not cancelled");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::cancelled);
  }
  CHECK(clip_count(catalog, "raw") == 2);  // the first source, complete

  CurateReport resumed = curate(catalog, options_for({source_folder()}), CancelToken(), {});
  CHECK(resumed.sources_skipped == 1);
  CHECK(resumed.sources_analyzed == 2);
  CHECK(signature(catalog, "raw") == signature(whole, "raw"));
}

TEST_CASE("redecide changes decisions from stored scores without decoding", "[curation][pipeline][catalog]") {
  TempDir tmp("mugv-pipeline-redecide");
  fs::create_directories(tmp / "in");
  for (const auto& f : synthetic_sources()) fs::copy_file(f, tmp / "in" / f.filename());
  Catalog catalog = Catalog::open(tmp / "catalog.sqlite");
  (void)curate(catalog, options_for({tmp / "in"}), CancelToken(), {});
  // No decoder can open the sources any more.
  fs::remove_all(tmp / "in");

  CurationThresholds everything;
  everything.sharpness_min = 0;
  everything.sharpness_max = 1e9;
  everything.motion_min = 0;
  everything.motion_max = 1e9;
  everything.aesthetic_min = 0;
  everything.reject_flags = ArtifactFlags::none;
  const auto start = std::chrono::steady_clock::now();
  RedecideReport open = redecide(catalog, "raw", everything);
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 2.0);
  CHECK(open.clips == 6);
  CHECK(open.kept == 6);
  CHECK(clip_count(catalog, "raw", ClipDecision::keep) == 6);

  CurationThresholds strict = everything;
  strict.sharpness_min = 1e8;
  RedecideReport closed = redecide(catalog, "raw", strict);
  CHECK(closed.rejected == 6);
  CHECK(closed.changed == 6);
  ClipFilter f;
  f.dataset_id = find_dataset(catalog, "raw")->id;
  for (const Clip& c : list_clips(catalog, f)) CHECK(c.reason == "sharpness<100000000");
  // Nothing was deleted: loosening again brings every clip back.
  CHECK(redecide(catalog, "raw", everything).kept == 6);
}

TEST_CASE("threshold overrides apply on top of a preset", "[curation][pipeline][unit]") {
  const CurationPreset p = resolve_curation_preset(
      "lenient", overrides_from_assignments({"thresholds.sharpness_min=100", "motion_max=30",
                                             "reject=letterbox", "scene.adaptive_ratio=2.5"}));
  CHECK(p.thresholds.sharpness_min == 100);
  CHECK(p.thresholds.motion_max == 30);
  CHECK(p.thresholds.aesthetic_min == 3.0);  // from lenient
  CHECK(p.thresholds.reject_flags == ArtifactFlags::letterbox);
  CHECK(p.scene.adaptive_ratio == 2.5);
  CHECK_THROWS_AS(resolve_curation_preset("mugv", overrides_from_assignments({"thresholds.sharpnes_min=1"})),
                  Error);
  CHECK_THROWS_AS(overrides_from_assignments({"no_equals"}), Error);
  CHECK(shard_spec_from_string("1/4")->index == 1);
  CHECK_FALSE(shard_spec_from_string("4/4"));
  CHECK_FALSE(shard_spec_from_string("x/2"));
}

TEST_CASE("dedup keeps the best scored clip of each near-duplicate group", "[curation][pipeline][catalog]") {
  TempDir tmp("mugv-pipeline-dedup");
  Catalog catalog = Catalog::open(tmp / "catalog.sqlite");
  const int64_t ids = scored_dataset(catalog, "dups");
  const uint64_t base = 0x9f3a5c7e12345678ULL;
  const uint64_t other = 0x0123456789abcdefULL;
  // Three near copies of `base` (2, 7 and 0 bits apart), one unrelated clip.
  auto added =
      add_clips(catalog, {scored_clip(ids, 0, base, 5.0, 500), scored_clip(ids, 10, base ^ 0x3ULL, 6.5, 400),
                          scored_clip(ids, 20, base ^ 0x7f000ULL, 5.5, 900),
                          scored_clip(ids, 30, other, 5.0, 500), scored_clip(ids, 40, base, 6.5, 450)});
  DedupReport r = dedup_dataset(catalog, "dups", DedupOptions{});
  CHECK(r.clips_checked == 5);
  CHECK(r.duplicates == 3);
  // The best (aesthetic 6.5, then sharpness 450 > 400) is clip 5; the others name it.
  CHECK(get_clip(catalog, added[4])->decision == ClipDecision::keep);
  CHECK(get_clip(catalog, added[3])->decision == ClipDecision::keep);
  for (int i : {0, 1, 2}) {
    auto c = get_clip(catalog, added[i]);
    CHECK(c->decision == ClipDecision::reject);
    CHECK(c->reason == cat("duplicate of clip ", added[4]));
  }
  // A tighter distance restores the 7-bit neighbour; re-running is stable.
  DedupOptions tight;
  tight.max_distance = 4;
  DedupReport r2 = dedup_dataset(catalog, "dups", tight);
  CHECK(r2.restored == 1);
  CHECK(get_clip(catalog, added[2])->decision == ClipDecision::keep);
  CHECK(dedup_dataset(catalog, "dups", tight).duplicates == r2.duplicates);

  // The index finds every pair a brute-force comparison finds.
  std::vector<HashedClip> many;
  uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < 400; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    uint64_t h = (i % 4 == 0 || many.empty())
                     ? x
                     : many.back().phash[0] ^ (1ULL << (x % 64)) ^ (1ULL << ((x >> 8) % 64));
    many.push_back({i + 1, {h, h, h}, static_cast<double>(x % 7), 0});
  }
  const auto found = find_duplicates(many, DedupOptions{});
  std::sort(many.begin(), many.end(), [](const HashedClip& a, const HashedClip& b) {
    return a.aesthetic != b.aesthetic ? a.aesthetic > b.aesthetic : a.id < b.id;
  });
  std::vector<int64_t> accepted;
  size_t brute_duplicates = 0;
  for (const auto& c : many) {
    bool dup = std::any_of(accepted.begin(), accepted.end(), [&](int64_t id) {
      auto it = std::find_if(many.begin(), many.end(), [&](const HashedClip& k) { return k.id == id; });
      return hamming_distance(it->phash[1], c.phash[1]) <= 10;
    });
    if (dup)
      ++brute_duplicates;
    else
      accepted.push_back(c.id);
  }
  CHECK(found.size() == brute_duplicates);
  CHECK(brute_duplicates > 100);
}

TEST_CASE("balance tags clips from captions and caps each tag, preferring higher scores",
          "[curation][pipeline][catalog]") {
  TempDir tmp("mugv-pipeline-balance");
  Catalog catalog = Catalog::open(tmp / "catalog.sqlite");
  const int64_t ids = scored_dataset(catalog, "bal");
  std::vector<Clip> clips;
  for (int i = 0; i < 6; ++i) clips.push_back(scored_clip(ids, i * 10, 1000 + i, 4.0 + i * 0.5, 500));
  const auto added = add_clips(catalog, clips);
  const char* captions[] = {"a dog running on the beach",
                            "A DOG walking in a street",
                            "a dog, running",
                            "a cat running indoors",
                            "two dogs running",
                            "a red circle moving left on a black background"};
  for (int i = 0; i < 6; ++i) (void)add_caption(catalog, added[i], captions[i], CaptionOrigin::model, "test");

  const TagVocabulary vocabulary = load_tag_vocabulary("tags");
  CHECK(extract_tags("a dog running on the beach", vocabulary) ==
        std::vector<std::string>{"action:running", "scene:beach", "subject:dog"});
  CHECK(extract_tags("a red circle moving left on a black background", vocabulary) ==
        std::vector<std::string>{"action:moving_left", "scene:black_background", "subject:circle"});
  CHECK(extract_tags("a cathedral", vocabulary).empty());

  TagReport t = tag_dataset(catalog, "bal", vocabulary);
  CHECK(t.tagged == 6);
  ClipFilter dogs;
  dogs.tag = "subject:dog";
  CHECK(count_clips(catalog, dogs) == 4);

  BalanceOptions o;
  o.cap_per_tag = 2;
  o.categories = {"subject"};
  BalanceReport r = balance_dataset(catalog, "bal", o);
  CHECK(r.rejected == 2);
  // Of the four dog clips (aesthetic 4.0, 4.5, 5.0, 6.0) the two best stay.
  CHECK(get_clip(catalog, added[4])->decision == ClipDecision::keep);
  CHECK(get_clip(catalog, added[2])->decision == ClipDecision::keep);
  for (int i : {0, 1}) {
    auto c = get_clip(catalog, added[i]);
    CHECK(c->decision == ClipDecision::reject);
    CHECK(c->reason == "balance: subject:dog over cap 2");
  }
  CHECK(get_clip(catalog, added[3])->decision == ClipDecision::keep);
  // Deterministic, and a larger cap brings the rejected clips back.
  CHECK(balance_dataset(catalog, "bal", o).rejected == 2);
  o.cap_per_tag = 10;
  CHECK(balance_dataset(catalog, "bal", o).rejected == 0);
  CHECK(get_clip(catalog, added[0])->decision == ClipDecision::keep);
}

TEST_CASE("export as manifest and as clip folder imports back as the same clips",
          "[curation][pipeline][catalog][media]") {
  TempDir tmp("mugv-pipeline-export");
  Catalog catalog = Catalog::open(tmp / "catalog.sqlite");
  CurateOptions o = options_for({synthetic_sources()[0]}, "cur");
  o.overrides = {{"sharpness_min", 0}, {"motion_min", 0}, {"aesthetic_min", 0}, {"reject", ""}};
  CurateReport r = curate(catalog, o, CancelToken(), {});
  REQUIRE(r.clips_kept == 2);
  ClipFilter f;
  f.dataset_id = r.dataset_id;
  const auto clips = list_clips(catalog, f);
  for (const Clip& c : clips)
    (void)add_caption(catalog, c.id, cat("caption of clip at ", c.start_s), CaptionOrigin::human, "test");

  SECTION("jsonl and json manifests over the sources") {
    for (const std::string name : {"cur.jsonl", "cur.json"}) {
      INFO(name);
      ExportReport e = export_dataset(catalog, "cur", tmp / "out" / name);
      CHECK(e.clips == 2);
      CHECK(e.format == (name == "cur.json" ? ExportFormat::json : ExportFormat::jsonl));
      ImportReport back =
          import_dataset(catalog, {"back-" + name, tmp / "out" / name, ""}, CancelToken(), {});
      CHECK(back.failures.empty());
      CHECK(back.clips_added == 2);
      ClipFilter b;
      b.dataset_id = back.dataset_id;
      const auto imported = list_clips(catalog, b);
      REQUIRE(imported.size() == 2);
      for (size_t i = 0; i < 2; ++i) {
        CHECK(imported[i].source_id == clips[i].source_id);
        CHECK(imported[i].start_s == Approx(clips[i].start_s));
        CHECK(imported[i].end_s == Approx(clips[i].end_s));
        CHECK(current_caption(catalog, imported[i].id)->text == current_caption(catalog, clips[i].id)->text);
      }
    }
  }
  SECTION("csv manifest") {
    ExportReport e = export_dataset(catalog, "cur", tmp / "cur.csv");
    CHECK(e.clips == 2);
    const auto read = read_manifest(tmp / "cur.csv");
    CHECK(read.problems.empty());
    REQUIRE(read.entries.size() == 2);
    CHECK(read.entries[0].extra.contains("sharpness"));
  }
  SECTION("folder of clips with sidecar captions") {
    ExportReport e = export_dataset(catalog, "cur", tmp / "clips");
    CHECK(e.failures.empty());
    CHECK(e.clips == 2);
    for (const Clip& c : clips) {
      const fs::path file = tmp / "clips" / cat("clip_", c.id, ".mp4");
      REQUIRE(fs::exists(file));
      CHECK(read_sidecar_caption(file) == current_caption(catalog, c.id)->text);
      const MediaInfo info = probe(file);
      CHECK(info.frame_count == 60);
      CHECK(info.width == 192);
    }
    ImportReport back = import_dataset(catalog, {"folder", tmp / "clips", ""}, CancelToken(), {});
    CHECK(back.failures.empty());
    CHECK(back.clips_added == 2);
    CHECK(back.captions_added == 2);
  }
}

TEST_CASE("shard 0/2 and 1/2 in their own catalogs merge into what one run gives",
          "[curation][pipeline][catalog]") {
  TempDir tmp("mugv-pipeline-shards");
  Catalog single = Catalog::open(tmp / "single.sqlite");
  (void)curate(single, options_for({source_folder()}), CancelToken(), {});

  int analysed = 0;
  for (int i = 0; i < 2; ++i) {
    Catalog shard = Catalog::open(tmp / cat("shard", i, ".sqlite"));
    CurateOptions o = options_for({source_folder()});
    o.shard = {i, 2};
    CurateReport r = curate(shard, o, CancelToken(), {});
    analysed += r.sources_analyzed;
  }
  CHECK(analysed == 3);  // every source in exactly one shard

  Catalog main = Catalog::open(tmp / "main.sqlite");
  MergeReport m0 = merge_catalog(main, tmp / "shard0.sqlite", "raw");
  MergeReport m1 = merge_catalog(main, tmp / "shard1.sqlite", "raw");
  CHECK(m0.clips_added + m1.clips_added == 6);
  CHECK(signature(main, "raw") == signature(single, "raw"));
  // Merging again adds nothing, and the merged catalog knows every source is done.
  CHECK(merge_catalog(main, tmp / "shard0.sqlite", "raw").clips_added == 0);
  CurateReport rerun = curate(main, options_for({source_folder()}), CancelToken(), {});
  CHECK(rerun.sources_skipped == 3);
  CHECK(rerun.clips_added == 0);
  CHECK_THROWS_AS(merge_catalog(main, tmp / "missing.sqlite", "raw"), Error);
}

TEST_CASE("curate on real footage splits at the known cuts", "[curation][pipeline][real]") {
  auto goldeneye = test::real_data_file("goldeneye-vfr-drop3.mp4");
  if (!goldeneye) return;
  auto counter = test::real_data_file("counter.mp4");
  TempDir tmp("mugv-pipeline-real");
  Catalog catalog = Catalog::open(tmp / "catalog.sqlite");
  CurateOptions o = options_for({*goldeneye, *counter}, "real");
  o.preset = "lenient";
  CurateReport r = curate(catalog, o, CancelToken(), {});
  CHECK(r.failures.empty());
  CHECK(r.sources_analyzed == 2);
  ClipFilter f;
  f.dataset_id = r.dataset_id;
  std::vector<double> starts;
  for (const Clip& c : list_clips(catalog, f)) {
    if (get_source(catalog, c.source_id)->path.filename() == "goldeneye-vfr-drop3.mp4")
      starts.push_back(c.start_s);
    CHECK(c.decision != ClipDecision::unknown);
  }
  REQUIRE(starts.size() == 3);
  CHECK(starts[1] == Approx(3.754).margin(0.05));
  CHECK(starts[2] == Approx(8.759).margin(0.05));
}
