#pragma once
// The catalog: one SQLite file ($MUGV_HOME/catalog.sqlite) shared by the CLI, the server and workers.
// It holds datasets, sources, clips, captions, prompts, runs, checkpoints, jobs, job events and
// generations; the typed queries live in datasets.h, sources.h, clips.h, captions.h, prompts.h, runs.h,
// jobs.h and generations.h, each taking a Catalog&.
//
// Concurrency: each Catalog owns one connection and is NOT thread-safe; open one per thread or
// process. Many processes may use one file at once: the file is in WAL mode, so readers never block
// and never block the writer; writes run in BEGIN IMMEDIATE transactions (one writer at a time) that
// wait for the lock (busy timeout) and retry, failing with Error(timeout) only after kWriteLockWait.
//
// Schema: PRAGMA user_version holds the schema version; open() applies the missing migrations in
// order, each in its own transaction. A file written by a newer build is refused (Error(conflict)
// naming the file and both versions); a file that is not SQLite is refused with Error(format).
//
// Times are stored as integer milliseconds since the Unix epoch (`*_ms`). Ids are SQLite rowids; a
// struct whose id is 0 has not been stored yet, and an optional link (run_id, prompt_id) is nullopt
// when absent.

#include "catalog/sqlite.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>

namespace mugv {

namespace fs = std::filesystem;

// Milliseconds since the Unix epoch, the unit of every *_ms time column.
[[nodiscard]] int64_t now_ms();

class Catalog {
 public:
  static constexpr int kBusyTimeoutMs = 5000;
  // Total time a writer waits for the write lock before giving up with Error(timeout).
  static constexpr std::chrono::milliseconds kWriteLockWait{30000};

  // Opens (creating the file and its parent directory when absent) and migrates to the newest schema.
  [[nodiscard]] static Catalog open(const fs::path& path);
  // Migrates only up to `up_to_version` (>= 0); a file already above that is left as it is.
  // For tests and tools that need an older schema, e.g. to exercise the migration path.
  [[nodiscard]] static Catalog open(const fs::path& path, int up_to_version);

  // The newest schema version this build knows.
  [[nodiscard]] static int current_schema_version();

  Catalog(Catalog&&) noexcept;
  Catalog& operator=(Catalog&&) noexcept;
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;
  ~Catalog();

  [[nodiscard]] const fs::path& path() const { return connection_->path(); }
  // The schema version of the open file (PRAGMA user_version).
  [[nodiscard]] int schema_version();
  // The SQLite journal mode in effect ("wal" normally).
  [[nodiscard]] std::string journal_mode();

  // Low-level access for the query modules; callers outside backend/catalog use the typed API.
  [[nodiscard]] sqlite::Connection& connection() { return *connection_; }
  [[nodiscard]] sqlite::Statement prepare(std::string_view sql) {
    return sqlite::Statement(*connection_, sql);
  }

 private:
  friend class Transaction;
  explicit Catalog(std::unique_ptr<sqlite::Connection> connection);

  // The Connection lives on the heap so that Statements keep a valid pointer when a Catalog moves.
  std::unique_ptr<sqlite::Connection> connection_;
  int transaction_depth_ = 0;
  bool outer_is_write_ = false;
};

enum class TransactionMode {
  invalid = 0,
  read,   // BEGIN DEFERRED: a consistent snapshot for several reads; never takes the write lock
  write,  // BEGIN IMMEDIATE: takes the write lock up front, so statements inside never hit SQLITE_BUSY
};

const char* to_string(TransactionMode mode);
std::optional<TransactionMode> transaction_mode_from_string(std::string_view name);

// RAII transaction: rolled back on destruction unless commit() was called. Transactions nest: an
// inner one is a SAVEPOINT, so rolling it back keeps the outer one's earlier work. A write
// transaction inside a read transaction is refused (Error(internal)): it could not take the lock
// without risking a stale snapshot.
class Transaction {
 public:
  Transaction(Catalog& catalog, TransactionMode mode);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  void commit();

 private:
  Catalog& catalog_;
  int depth_ = 0;
  bool open_ = false;
};

}  // namespace mugv
