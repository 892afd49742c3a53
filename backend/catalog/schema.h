#pragma once
// The catalog schema as an ordered list of migrations. Version N is reached by applying migrations
// 1..N in order, each in its own write transaction that also sets PRAGMA user_version = N, so a crash
// leaves the file at a complete version. Migrations are append-only: never edit a released one.
//   1  baseline: datasets, sources, clips (tags as comma text), captions, prompts, runs, checkpoints,
//      jobs, job_events
//   2  clip tags move to their own indexed table (clip_tags); jobs gain priority and queue_position
//   3  generations (prompt, run, checkpoint, seed, sampler settings, output)
//   4  preferences: labelled pairs and single good/bad labels of generations (post-training)
//   5  job_dependencies: the earlier jobs a job waits for (jobs.h); existing jobs depend on none

#include <string>
#include <vector>

namespace mugv {

class Catalog;

struct Migration {
  int version = 0;
  std::string summary;
  void (*apply)(Catalog& catalog) = nullptr;
};

// All migrations, ascending by version; the last one's version is Catalog::current_schema_version().
const std::vector<Migration>& schema_migrations();

// Brings the open file up to `target_version` (no-op when it is already there or above). Safe when
// several processes open the same old file at once: the version is re-read under the write lock.
void migrate(Catalog& catalog, int target_version);

}  // namespace mugv
