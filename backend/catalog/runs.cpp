#include "catalog/runs.h"

#include "catalog/detail.h"

namespace mugv {
namespace {

using namespace catalog_detail;

constexpr EnumNames<RunKind, 6> kKindNames{{
    {RunKind::unknown, "unknown"},
    {RunKind::pretrain, "pretrain"},
    {RunKind::finetune, "finetune"},
    {RunKind::lora, "lora"},
    {RunKind::preference, "preference"},
    {RunKind::vae, "vae"},
}};

constexpr EnumNames<RunState, 7> kStateNames{{
    {RunState::unknown, "unknown"},
    {RunState::created, "created"},
    {RunState::running, "running"},
    {RunState::paused, "paused"},
    {RunState::succeeded, "succeeded"},
    {RunState::failed, "failed"},
    {RunState::cancelled, "cancelled"},
}};

constexpr const char* kRunColumns =
    "SELECT id, name, kind, preset, dataset_id, config_json, state, dir, created_at_ms FROM runs ";
constexpr const char* kCheckpointColumns =
    "SELECT id, run_id, step, path, sha256, created_at_ms FROM checkpoints ";

Run read_run(Catalog& catalog, const sqlite::Statement& s) {
  Run r;
  r.id = s.int64(0);
  r.name = s.text(1);
  r.kind = enum_column(s, 2, kKindNames);
  r.preset = s.text(3);
  r.dataset_id = s.optional_int64(4);
  r.config = json_column(catalog, s, 5, cat("run ", r.id));
  r.state = enum_column(s, 6, kStateNames);
  r.dir = s.text(7);
  r.created_at_ms = s.int64(8);
  return r;
}

Checkpoint read_checkpoint(const sqlite::Statement& s) {
  Checkpoint c;
  c.id = s.int64(0);
  c.run_id = s.int64(1);
  c.step = s.int64(2);
  c.path = s.text(3);
  c.sha256 = s.text(4);
  c.created_at_ms = s.int64(5);
  return c;
}

bool exists(Catalog& catalog, const char* sql, int64_t id) {
  auto s = catalog.prepare(sql);
  s.bind_all(id);
  return s.step();
}

void require_changed(Catalog& catalog, int64_t run_id) {
  if (catalog.connection().changes() == 0) throw_not_found(catalog, cat("run ", run_id));
}

}  // namespace

const char* to_string(RunKind kind) {
  return enum_name(kKindNames, kind);
}
std::optional<RunKind> run_kind_from_string(std::string_view name) {
  return enum_value(kKindNames, name);
}
const char* to_string(RunState state) {
  return enum_name(kStateNames, state);
}
std::optional<RunState> run_state_from_string(std::string_view name) {
  return enum_value(kStateNames, name);
}

Run create_run(Catalog& catalog, Run run) {
  const std::string file = catalog.path().string();
  if (trim(run.name).empty()) throw Error(ErrorCode::invalid_argument, file, "a run needs a name");
  if (run.kind == RunKind::unknown)
    throw Error(ErrorCode::invalid_argument, file, cat("run \"", run.name, "\": kind is unknown"));
  if (run.state == RunState::unknown) run.state = RunState::created;
  Transaction transaction(catalog, TransactionMode::write);
  if (find_run(catalog, run.name))
    throw Error(ErrorCode::conflict, file,
                cat("a run named \"", run.name, "\" already exists; choose another name"));
  if (run.dataset_id && !exists(catalog, "SELECT 1 FROM datasets WHERE id = ?1", *run.dataset_id))
    throw Error(ErrorCode::not_found, file,
                cat("run \"", run.name, "\": dataset ", *run.dataset_id, " does not exist"));
  run.created_at_ms = now_ms();
  catalog
      .prepare(
          "INSERT INTO runs (name, kind, preset, dataset_id, config_json, state, dir, created_at_ms) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
      .bind_all(run.name, run.kind, run.preset, run.dataset_id, json_text(run.config, "{}"), run.state,
                run.dir.string(), run.created_at_ms)
      .run();
  run.id = catalog.connection().last_insert_id();
  transaction.commit();
  return run;
}

std::optional<Run> get_run(Catalog& catalog, int64_t id) {
  auto s = catalog.prepare(std::string(kRunColumns) + "WHERE id = ?1");
  s.bind_all(id);
  if (!s.step()) return std::nullopt;
  return read_run(catalog, s);
}

std::optional<Run> find_run(Catalog& catalog, std::string_view name) {
  auto s = catalog.prepare(std::string(kRunColumns) + "WHERE name = ?1");
  s.bind_all(name);
  if (!s.step()) return std::nullopt;
  return read_run(catalog, s);
}

std::vector<Run> list_runs(Catalog& catalog, std::optional<RunState> state) {
  auto s = catalog.prepare(std::string(kRunColumns) + "WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC");
  s.bind_all(state);
  std::vector<Run> out;
  while (s.step()) out.push_back(read_run(catalog, s));
  return out;
}

void set_run_state(Catalog& catalog, int64_t id, RunState state) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("UPDATE runs SET state = ?2 WHERE id = ?1").bind_all(id, state).run();
  require_changed(catalog, id);
  transaction.commit();
}

void set_run_config(Catalog& catalog, int64_t id, const nlohmann::json& config) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("UPDATE runs SET config_json = ?2 WHERE id = ?1")
      .bind_all(id, json_text(config, "{}"))
      .run();
  require_changed(catalog, id);
  transaction.commit();
}

bool delete_run(Catalog& catalog, int64_t id) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("DELETE FROM runs WHERE id = ?1").bind_all(id).run();
  const bool deleted = catalog.connection().changes() > 0;
  transaction.commit();
  return deleted;
}

Checkpoint add_checkpoint(Catalog& catalog, Checkpoint checkpoint) {
  const std::string file = catalog.path().string();
  Transaction transaction(catalog, TransactionMode::write);
  if (!exists(catalog, "SELECT 1 FROM runs WHERE id = ?1", checkpoint.run_id))
    throw_not_found(catalog, cat("run ", checkpoint.run_id));
  {
    auto same = catalog.prepare("SELECT path FROM checkpoints WHERE run_id = ?1 AND step = ?2");
    same.bind_all(checkpoint.run_id, checkpoint.step);
    if (same.step())
      throw Error(ErrorCode::conflict, file,
                  cat("run ", checkpoint.run_id, " already has a checkpoint at step ", checkpoint.step, " (",
                      same.text(0), ")"));
  }
  checkpoint.created_at_ms = now_ms();
  catalog
      .prepare(
          "INSERT INTO checkpoints (run_id, step, path, sha256, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")
      .bind_all(checkpoint.run_id, checkpoint.step, checkpoint.path.string(), checkpoint.sha256,
                checkpoint.created_at_ms)
      .run();
  checkpoint.id = catalog.connection().last_insert_id();
  transaction.commit();
  return checkpoint;
}

std::vector<Checkpoint> list_checkpoints(Catalog& catalog, int64_t run_id) {
  auto s = catalog.prepare(std::string(kCheckpointColumns) + "WHERE run_id = ?1 ORDER BY step");
  s.bind_all(run_id);
  std::vector<Checkpoint> out;
  while (s.step()) out.push_back(read_checkpoint(s));
  return out;
}

std::optional<Checkpoint> latest_checkpoint(Catalog& catalog, int64_t run_id) {
  auto s = catalog.prepare(std::string(kCheckpointColumns) + "WHERE run_id = ?1 ORDER BY step DESC LIMIT 1");
  s.bind_all(run_id);
  if (!s.step()) return std::nullopt;
  return read_checkpoint(s);
}

bool delete_checkpoint(Catalog& catalog, int64_t id) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("DELETE FROM checkpoints WHERE id = ?1").bind_all(id).run();
  const bool deleted = catalog.connection().changes() > 0;
  transaction.commit();
  return deleted;
}

}  // namespace mugv
