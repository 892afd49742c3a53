#include "catalog/schema.h"

#include "catalog/catalog.h"
#include "core/strings.h"

#include <string>

namespace mugv {
namespace {

// Enum columns hold the enum's to_string() text, so the file stays readable with the sqlite3 shell
// and adding an enum value needs no migration.
constexpr const char* kBaselineSql = R"sql(
CREATE TABLE datasets (
  id            INTEGER PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE,
  kind          TEXT NOT NULL,
  root_dir      TEXT NOT NULL,
  description   TEXT NOT NULL DEFAULT '',
  created_at_ms INTEGER NOT NULL
);

CREATE TABLE sources (
  id                  INTEGER PRIMARY KEY,
  path                TEXT NOT NULL,
  content_hash        TEXT NOT NULL UNIQUE,
  size_bytes          INTEGER NOT NULL,
  duration_s          REAL,
  fps                 REAL,
  width               INTEGER,
  height              INTEGER,
  variable_frame_rate INTEGER NOT NULL DEFAULT 0,
  status              TEXT NOT NULL,
  error_message       TEXT NOT NULL DEFAULT '',
  probed_at_ms        INTEGER,
  info_json           TEXT NOT NULL DEFAULT '{}',
  created_at_ms       INTEGER NOT NULL
);
CREATE INDEX sources_path ON sources(path);
CREATE INDEX sources_status ON sources(status);

CREATE TABLE clips (
  id             INTEGER PRIMARY KEY,
  dataset_id     INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
  source_id      INTEGER NOT NULL REFERENCES sources(id) ON DELETE RESTRICT,
  start_s        REAL NOT NULL,
  end_s          REAL NOT NULL,
  start_frame    INTEGER NOT NULL,
  end_frame      INTEGER NOT NULL,
  fps            REAL NOT NULL,
  width          INTEGER NOT NULL,
  height         INTEGER NOT NULL,
  sharpness      REAL,
  motion         REAL,
  aesthetic      REAL,
  artifact_score REAL,
  artifact_flags INTEGER NOT NULL DEFAULT 0,
  phash          INTEGER,
  scores_json    TEXT NOT NULL DEFAULT '{}',
  decision       TEXT NOT NULL DEFAULT 'unknown',
  reason         TEXT NOT NULL DEFAULT '',
  tags           TEXT NOT NULL DEFAULT '',
  created_at_ms  INTEGER NOT NULL,
  CHECK (end_s >= start_s),
  CHECK (end_frame >= start_frame)
);
CREATE INDEX clips_dataset_decision ON clips(dataset_id, decision, reason);
CREATE INDEX clips_source ON clips(source_id);

CREATE TABLE captions (
  id            INTEGER PRIMARY KEY,
  clip_id       INTEGER NOT NULL REFERENCES clips(id) ON DELETE CASCADE,
  text          TEXT NOT NULL,
  origin        TEXT NOT NULL,
  producer      TEXT NOT NULL DEFAULT '',
  version       INTEGER NOT NULL,
  is_current    INTEGER NOT NULL DEFAULT 0,
  created_at_ms INTEGER NOT NULL,
  UNIQUE (clip_id, version)
);
CREATE UNIQUE INDEX captions_one_current ON captions(clip_id) WHERE is_current;

CREATE TABLE prompts (
  id            INTEGER PRIMARY KEY,
  text          TEXT NOT NULL,
  negative      TEXT NOT NULL DEFAULT '',
  tags_json     TEXT NOT NULL DEFAULT '[]',
  created_at_ms INTEGER NOT NULL
);
CREATE INDEX prompts_created ON prompts(created_at_ms);

CREATE TABLE runs (
  id            INTEGER PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE,
  kind          TEXT NOT NULL,
  preset        TEXT NOT NULL DEFAULT '',
  dataset_id    INTEGER REFERENCES datasets(id) ON DELETE SET NULL,
  config_json   TEXT NOT NULL DEFAULT '{}',
  state         TEXT NOT NULL,
  dir           TEXT NOT NULL DEFAULT '',
  created_at_ms INTEGER NOT NULL
);
CREATE INDEX runs_dataset ON runs(dataset_id);

CREATE TABLE checkpoints (
  id            INTEGER PRIMARY KEY,
  run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step          INTEGER NOT NULL,
  path          TEXT NOT NULL,
  sha256        TEXT NOT NULL DEFAULT '',
  created_at_ms INTEGER NOT NULL,
  UNIQUE (run_id, step)
);

-- AUTOINCREMENT: job and event ids are never reused, so "events since id" never skips one.
CREATE TABLE jobs (
  id             INTEGER PRIMARY KEY AUTOINCREMENT,
  kind           TEXT NOT NULL,
  state          TEXT NOT NULL,
  params_json    TEXT NOT NULL DEFAULT '{}',
  run_id         INTEGER REFERENCES runs(id) ON DELETE SET NULL,
  created_at_ms  INTEGER NOT NULL,
  started_at_ms  INTEGER,
  finished_at_ms INTEGER,
  exit_code      INTEGER,
  error_code     TEXT NOT NULL DEFAULT '',
  error_message  TEXT NOT NULL DEFAULT '',
  worker_pid     INTEGER,
  host           TEXT NOT NULL DEFAULT '',
  attempts       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_state ON jobs(state);
CREATE INDEX jobs_run ON jobs(run_id);

CREATE TABLE job_events (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id       INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  time_ms      INTEGER NOT NULL,
  type         TEXT NOT NULL,
  payload_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX job_events_job ON job_events(job_id, id);
)sql";

void apply_baseline(Catalog& catalog) {
  catalog.connection().exec(kBaselineSql);
}

// Tags were a comma-separated column; filtering by tag needs an indexed table.
void apply_clip_tags_and_queue(Catalog& catalog) {
  auto& db = catalog.connection();
  db.exec(R"sql(
CREATE TABLE clip_tags (
  clip_id INTEGER NOT NULL REFERENCES clips(id) ON DELETE CASCADE,
  tag     TEXT NOT NULL,
  PRIMARY KEY (clip_id, tag)
) WITHOUT ROWID;
CREATE INDEX clip_tags_tag ON clip_tags(tag, clip_id);
)sql");
  {
    auto select = catalog.prepare("SELECT id, tags FROM clips WHERE tags <> ''");
    auto insert = catalog.prepare("INSERT OR IGNORE INTO clip_tags (clip_id, tag) VALUES (?1, ?2)");
    while (select.step()) {
      const int64_t clip_id = select.int64(0);
      for (const auto& piece : split(select.text(1), ',')) {
        const std::string tag = trim(piece);
        if (tag.empty()) continue;
        insert.reset();
        insert.bind_all(clip_id, tag).run();
      }
    }
  }
  db.exec(R"sql(
ALTER TABLE clips DROP COLUMN tags;
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN queue_position INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET queue_position = id;
CREATE INDEX jobs_queue ON jobs(state, priority DESC, queue_position, id);
)sql");
}

void apply_generations(Catalog& catalog) {
  catalog.connection().exec(R"sql(
CREATE TABLE generations (
  id            INTEGER PRIMARY KEY,
  prompt_id     INTEGER REFERENCES prompts(id) ON DELETE SET NULL,
  prompt_text   TEXT NOT NULL,
  negative      TEXT NOT NULL DEFAULT '',
  run_id        INTEGER REFERENCES runs(id) ON DELETE SET NULL,
  checkpoint_id INTEGER REFERENCES checkpoints(id) ON DELETE SET NULL,
  seed          INTEGER NOT NULL,
  steps         INTEGER NOT NULL,
  cfg_scale     REAL NOT NULL,
  width         INTEGER NOT NULL,
  height        INTEGER NOT NULL,
  frames        INTEGER NOT NULL,
  image_path    TEXT NOT NULL DEFAULT '',
  output_path   TEXT NOT NULL DEFAULT '',
  settings_json TEXT NOT NULL DEFAULT '{}',
  created_at_ms INTEGER NOT NULL
);
CREATE INDEX generations_prompt ON generations(prompt_id, created_at_ms);
CREATE INDEX generations_run ON generations(run_id);
CREATE INDEX generations_checkpoint ON generations(checkpoint_id);
)sql");
}

void apply_preferences(Catalog& catalog) {
  catalog.connection().exec(R"sql(
CREATE TABLE preferences (
  id             INTEGER PRIMARY KEY,
  generation_a   INTEGER NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
  generation_b   INTEGER REFERENCES generations(id) ON DELETE CASCADE,
  choice         TEXT NOT NULL DEFAULT '',
  labeller       TEXT NOT NULL DEFAULT '',
  created_at_ms  INTEGER NOT NULL,
  labelled_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX preferences_choice ON preferences(choice, id);
CREATE INDEX preferences_a ON preferences(generation_a);
CREATE INDEX preferences_b ON preferences(generation_b);
)sql");
}

// A job may wait for earlier jobs to succeed (jobs.h). An edge's dependency cannot be deleted while a job
// depends on it (RESTRICT): a dependent would otherwise lose what it waits for and run too early.
void apply_job_dependencies(Catalog& catalog) {
  catalog.connection().exec(R"sql(
CREATE TABLE job_dependencies (
  job_id     INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  depends_on INTEGER NOT NULL REFERENCES jobs(id) ON DELETE RESTRICT,
  PRIMARY KEY (job_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX job_dependencies_on ON job_dependencies(depends_on, job_id);
)sql");
}

}  // namespace

const std::vector<Migration>& schema_migrations() {
  static const std::vector<Migration> migrations{
      {1, "baseline", apply_baseline},
      {2, "clip_tags table; jobs priority and queue_position", apply_clip_tags_and_queue},
      {3, "generations table", apply_generations},
      {4, "preferences table (pairs and single labels of generations)", apply_preferences},
      {5, "job_dependencies table (jobs that wait for earlier jobs to succeed)", apply_job_dependencies},
  };
  return migrations;
}

void migrate(Catalog& catalog, int target_version) {
  for (const Migration& migration : schema_migrations()) {
    if (migration.version > target_version) break;
    if (catalog.schema_version() >= migration.version) continue;
    Transaction transaction(catalog, TransactionMode::write);
    // Another process may have migrated while this one waited for the write lock.
    if (catalog.schema_version() >= migration.version) continue;
    try {
      migration.apply(catalog);
    } catch (const Error& e) {
      throw Error(e.code(), catalog.path().string(),
                  cat("migration to schema version ", migration.version, " (", migration.summary,
                      ") failed: ", e.message()));
    }
    catalog.connection().exec(cat("PRAGMA user_version = ", migration.version));
    transaction.commit();
  }
}

}  // namespace mugv
