#include "catalog/catalog.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/generations.h"
#include "catalog/jobs.h"
#include "catalog/schema.h"
#include "catalog/sources.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <string>

using namespace mugv;
using mugv::test::TempDir;

namespace {

int64_t pragma_int(Catalog& catalog, const char* pragma) {
  auto s = catalog.prepare(pragma);
  REQUIRE(s.step());
  return s.int64(0);
}

int64_t count_rows(Catalog& catalog, const std::string& table) {
  auto s = catalog.prepare("SELECT count(*) FROM " + table);
  REQUIRE(s.step());
  return s.int64(0);
}

}  // namespace

TEST_CASE("opening a new catalog creates the file with the newest schema and shared-use settings",
          "[catalog][unit]") {
  TempDir dir;
  const auto path = dir / "home/nested/catalog.sqlite";
  auto catalog = Catalog::open(path);
  CHECK(fs::exists(path));
  CHECK(catalog.schema_version() == Catalog::current_schema_version());
  CHECK(Catalog::current_schema_version() == schema_migrations().back().version);
  CHECK(Catalog::current_schema_version() >= 2);
  CHECK(catalog.journal_mode() == "wal");
  CHECK(pragma_int(catalog, "PRAGMA foreign_keys") == 1);
  CHECK(pragma_int(catalog, "PRAGMA synchronous") == 1);  // NORMAL
  CHECK(pragma_int(catalog, "PRAGMA busy_timeout") == Catalog::kBusyTimeoutMs);
}

TEST_CASE("data survives closing and reopening the catalog", "[catalog][unit]") {
  TempDir dir;
  const auto path = dir / "catalog.sqlite";
  {
    auto catalog = Catalog::open(path);
    (void)create_dataset(catalog, {0, "shapes", DatasetKind::video, "/data/shapes", "starter", 0});
  }
  auto catalog = Catalog::open(path);
  auto found = find_dataset(catalog, "shapes");
  REQUIRE(found);
  CHECK(found->description == "starter");
}

TEST_CASE("a file that is not SQLite is refused as a format error naming it", "[catalog][unit]") {
  TempDir dir;
  const auto path = dir / "notes.sqlite";
  mugv::test::write_bytes(path, std::string(4096, 'x') + "this is a text file, not a database\n");
  try {
    (void)Catalog::open(path);
    FAIL("opening a text file as a catalog must fail");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::format);
    CHECK(e.subject() == path.string());
    CHECK_THAT(e.message(), Catch::Contains("not an SQLite database"));
  }
}

TEST_CASE("a catalog from a newer build is refused naming the file and both versions", "[catalog][unit]") {
  TempDir dir;
  const auto path = dir / "catalog.sqlite";
  {
    auto catalog = Catalog::open(path);
    catalog.connection().exec("PRAGMA user_version = 99");
  }
  try {
    (void)Catalog::open(path);
    FAIL("a newer schema must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK(e.subject() == path.string());
    CHECK_THAT(e.message(),
               Catch::Contains("99") && Catch::Contains(std::to_string(Catalog::current_schema_version())));
  }
}

TEST_CASE("a version 1 catalog is migrated with its rows kept and the new features usable",
          "[catalog][unit]") {
  TempDir dir;
  const auto path = dir / "catalog.sqlite";
  const int64_t clip_id = 1, old_job_id = 1;
  {
    auto v1 = Catalog::open(path, 1);
    REQUIRE(v1.schema_version() == 1);
    auto& db = v1.connection();
    // Rows written the way a version 1 build wrote them: tags as comma text, jobs without a queue order.
    db.exec(
        "INSERT INTO datasets (name, kind, root_dir, created_at_ms) VALUES ('old', 'video', '/d', 1);"
        "INSERT INTO sources (path, content_hash, size_bytes, status, created_at_ms)"
        "  VALUES ('/d/a.mp4', 'h:a', 10, 'ok', 1);"
        "INSERT INTO clips (dataset_id, source_id, start_s, end_s, start_frame, end_frame, fps, width, "
        "height,"
        "  sharpness, decision, reason, tags, created_at_ms)"
        "  VALUES (1, 1, 0, 2, 0, 48, 24, 640, 360, 512.5, 'keep', 'ok', 'outdoor, slow ,,night', 1);"
        "INSERT INTO captions (clip_id, text, origin, version, is_current, created_at_ms)"
        "  VALUES (1, 'a dog runs', 'human', 1, 1, 1);"
        "INSERT INTO jobs (kind, state, created_at_ms) VALUES ('curate', 'queued', 1);");
    auto has_generations = v1.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'generations'");
    REQUIRE(has_generations.step());
    CHECK(has_generations.int64(0) == 0);
  }

  auto catalog = Catalog::open(path);
  CHECK(catalog.schema_version() == Catalog::current_schema_version());

  auto clip = get_clip(catalog, clip_id);
  REQUIRE(clip);
  CHECK(clip->scores.sharpness == Approx(512.5));
  CHECK(clip->decision == ClipDecision::keep);
  CHECK(clip->tags == std::vector<std::string>{"night", "outdoor", "slow"});
  ClipFilter by_tag;
  by_tag.tag = "slow";
  CHECK(count_clips(catalog, by_tag) == 1);
  add_clip_tag(catalog, clip_id, "dusk");
  CHECK(get_clip(catalog, clip_id)->tags.size() == 4);

  // The old job keeps its place; a new high-priority job overtakes it.
  auto old_job = get_job(catalog, old_job_id);
  REQUIRE(old_job);
  CHECK(old_job->queue_position == old_job_id);
  Job urgent;
  urgent.kind = JobKind::generate;
  urgent.priority = 5;
  urgent = enqueue_job(catalog, urgent);
  CHECK(next_queued_job(catalog)->id == urgent.id);

  Generation g;
  g.prompt_text = "a red circle moving left";
  g.seed = 42;
  g.steps = 25;
  g.cfg_scale = 4.0;
  g.width = 64;
  g.height = 64;
  g.frames = 9;
  CHECK(add_generation(catalog, g).id > 0);
}

TEST_CASE("a version 4 catalog gains job dependencies with its jobs, their states and events kept",
          "[catalog][unit]") {
  TempDir dir;
  const auto path = dir / "catalog.sqlite";
  {
    auto v4 = Catalog::open(path, 4);
    REQUIRE(v4.schema_version() == 4);
    // Rows as a version 4 build wrote them: a finished job and a queued one, with their events.
    v4.connection().exec(
        "INSERT INTO jobs (kind, state, params_json, created_at_ms, priority, queue_position, attempts)"
        "  VALUES ('make_dataset', 'succeeded', '{\"n\": 8}', 1, 0, 1, 1);"
        "INSERT INTO jobs (kind, state, created_at_ms, priority, queue_position) VALUES ('import', 'queued', "
        "2, 3, 2);"
        "INSERT INTO job_events (job_id, time_ms, type, payload_json) VALUES (2, 2, 'state', '{\"to\": "
        "\"queued\"}');");
    auto has_table = v4.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'job_dependencies'");
    REQUIRE(has_table.step());
    CHECK(has_table.int64(0) == 0);
  }
  auto catalog = Catalog::open(path);
  REQUIRE(catalog.schema_version() == Catalog::current_schema_version());
  const auto jobs = list_jobs(catalog);
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[0].id == 2);  // priority 3 first, as before
  CHECK(jobs[0].state == JobState::queued);
  CHECK(jobs[0].depends_on.empty());
  CHECK(jobs[0].waiting_on.empty());
  CHECK(jobs[1].params["n"] == 8);
  CHECK(jobs[1].attempts == 1);
  CHECK(list_job_events(catalog, 2).size() == 1);
  // The old queued job is ready as it was; a new job can wait for the old finished one.
  CHECK(next_queued_job(catalog)->id == 2);
  Job curate;
  curate.kind = JobKind::curate;
  curate.depends_on = {1, 2};
  curate = enqueue_job(catalog, curate);
  CHECK(curate.waiting_on == std::vector<int64_t>{2});
}

TEST_CASE("migrations apply one version at a time and can stop at a given version", "[catalog][unit]") {
  TempDir dir;
  const auto path = dir / "catalog.sqlite";
  CHECK(Catalog::open(path, 0).schema_version() == 0);
  CHECK(Catalog::open(path, 2).schema_version() == 2);
  {
    auto v2 = Catalog::open(path, 2);
    auto s = v2.prepare("SELECT count(*) FROM sqlite_schema WHERE name IN ('clip_tags', 'generations')");
    REQUIRE(s.step());
    CHECK(s.int64(0) == 1);
  }
  CHECK(Catalog::open(path).schema_version() == Catalog::current_schema_version());
  // Asking for an older version never downgrades.
  CHECK(Catalog::open(path, 1).schema_version() == Catalog::current_schema_version());
  CHECK_THROWS_AS(Catalog::open(path, Catalog::current_schema_version() + 1), Error);
}

TEST_CASE("transactions roll back unless committed, and nested ones roll back only their own work",
          "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  {
    Transaction outer(catalog, TransactionMode::write);
    (void)create_dataset(catalog, {0, "kept", DatasetKind::video, "/k", "", 0});
    {
      Transaction inner(catalog, TransactionMode::write);
      (void)create_dataset(catalog, {0, "dropped", DatasetKind::video, "/d", "", 0});
    }
    outer.commit();
  }
  CHECK(find_dataset(catalog, "kept"));
  CHECK_FALSE(find_dataset(catalog, "dropped"));
  {
    Transaction abandoned(catalog, TransactionMode::write);
    (void)create_dataset(catalog, {0, "abandoned", DatasetKind::video, "/a", "", 0});
  }
  CHECK_FALSE(find_dataset(catalog, "abandoned"));
  CHECK(count_rows(catalog, "datasets") == 1);

  Transaction read(catalog, TransactionMode::read);
  CHECK_THROWS_AS(Transaction(catalog, TransactionMode::write), Error);
}

TEST_CASE("enum names round-trip and unknown names are rejected", "[catalog][unit]") {
  for (auto origin :
       {CaptionOrigin::human, CaptionOrigin::model, CaptionOrigin::template_, CaptionOrigin::import})
    CHECK(caption_origin_from_string(to_string(origin)) == origin);
  CHECK(std::string(to_string(CaptionOrigin::template_)) == "template");
  CHECK(std::string(to_string(JobKind::export_)) == "export");
  for (auto state : {JobState::queued, JobState::starting, JobState::running, JobState::paused,
                     JobState::succeeded, JobState::failed, JobState::cancelled, JobState::interrupted})
    CHECK(job_state_from_string(to_string(state)) == state);
  CHECK_FALSE(job_state_from_string("exploded"));
  CHECK(clip_decision_from_string("reject") == ClipDecision::reject);
  CHECK(source_status_from_string("failed") == SourceStatus::failed);
  CHECK(dataset_kind_from_string("mixed") == DatasetKind::mixed);
  CHECK(transaction_mode_from_string("write") == TransactionMode::write);
}
