#include "catalog/catalog.h"

#include "catalog/schema.h"
#include "core/log.h"
#include "core/strings.h"

#include <sqlite3.h>

#include <array>
#include <system_error>
#include <thread>
#include <utility>

namespace mugv {
namespace {

constexpr std::array<std::pair<TransactionMode, const char*>, 3> kModeNames{{
    {TransactionMode::invalid, "invalid"},
    {TransactionMode::read, "read"},
    {TransactionMode::write, "write"},
}};

std::string read_pragma_text(Catalog& catalog, const char* pragma) {
  auto statement = catalog.prepare(pragma);
  return statement.step() ? statement.text(0) : std::string();
}

void configure(Catalog& catalog) {
  auto& db = catalog.connection();
  // The busy timeout comes first: switching to WAL needs a lock another process may hold.
  db.set_busy_timeout_ms(Catalog::kBusyTimeoutMs);
  // The first read of the file: a non-database fails here with SQLITE_NOTADB.
  const std::string mode = read_pragma_text(catalog, "PRAGMA journal_mode = WAL");
  if (mode != "wal")
    log_warning(cat(catalog.path().string(), ": journal mode is '", mode,
                    "', not WAL; concurrent readers may block writers"));
  // NORMAL is durable across application crashes in WAL mode; only an OS crash may lose the last commits.
  db.exec("PRAGMA synchronous = NORMAL");
  db.exec("PRAGMA foreign_keys = ON");
}

}  // namespace

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

const char* to_string(TransactionMode mode) {
  for (const auto& [m, name] : kModeNames)
    if (m == mode) return name;
  return "invalid";
}

std::optional<TransactionMode> transaction_mode_from_string(std::string_view name) {
  for (const auto& [m, n] : kModeNames)
    if (name == n) return m;
  return std::nullopt;
}

Catalog::Catalog(std::unique_ptr<sqlite::Connection> connection) : connection_(std::move(connection)) {}
Catalog::Catalog(Catalog&&) noexcept = default;
Catalog& Catalog::operator=(Catalog&&) noexcept = default;
Catalog::~Catalog() = default;

int Catalog::current_schema_version() {
  return schema_migrations().back().version;
}

Catalog Catalog::open(const fs::path& path) {
  return open(path, current_schema_version());
}

Catalog Catalog::open(const fs::path& path, int up_to_version) {
  if (up_to_version < 0 || up_to_version > current_schema_version())
    throw Error(ErrorCode::invalid_argument, path.string(),
                cat("schema version ", up_to_version, " does not exist (this build knows 0..",
                    current_schema_version(), ")"));
  if (fs::is_directory(path)) throw Error(ErrorCode::io, path.string(), "is a directory, not a catalog file");
  if (path.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec)
      throw Error(ErrorCode::io, path.parent_path().string(), "cannot create directory: " + ec.message());
  }
  Catalog catalog(std::make_unique<sqlite::Connection>(path));
  try {
    configure(catalog);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::format)
      throw Error(ErrorCode::format, path.string(),
                  "not a MUG-V catalog: the file is not an SQLite database");
    throw;
  }
  const int version = catalog.schema_version();
  if (version > current_schema_version())
    throw Error(ErrorCode::conflict, path.string(),
                cat("catalog schema version ", version, " is newer than this build supports (version ",
                    current_schema_version(), "); use a newer MUG-V Studio to open it"));
  migrate(catalog, up_to_version);
  return catalog;
}

int Catalog::schema_version() {
  auto statement = prepare("PRAGMA user_version");
  return statement.step() ? statement.int32(0) : 0;
}

std::string Catalog::journal_mode() {
  return read_pragma_text(*this, "PRAGMA journal_mode");
}

Transaction::Transaction(Catalog& catalog, TransactionMode mode) : catalog_(catalog) {
  auto& db = catalog.connection();
  if (mode != TransactionMode::read && mode != TransactionMode::write)
    throw Error(ErrorCode::internal, db.path().string(), "transaction mode must be read or write");
  if (catalog.transaction_depth_ > 0) {
    if (mode == TransactionMode::write && !catalog.outer_is_write_)
      throw Error(ErrorCode::internal, db.path().string(),
                  "a write transaction cannot nest in a read transaction");
    depth_ = catalog.transaction_depth_ + 1;
    db.exec(cat("SAVEPOINT nested_", depth_));
  } else if (mode == TransactionMode::read) {
    db.exec("BEGIN DEFERRED");
    depth_ = 1;
    catalog.outer_is_write_ = false;
  } else {
    // busy_timeout already waits inside each attempt; the loop covers the cases where SQLite gives
    // up early (its busy handler is skipped when waiting could deadlock) until kWriteLockWait.
    const auto deadline = std::chrono::steady_clock::now() + Catalog::kWriteLockWait;
    for (;;) {
      const int result = db.try_exec("BEGIN IMMEDIATE");
      if (result == SQLITE_OK) break;
      if ((result & 0xff) != SQLITE_BUSY && (result & 0xff) != SQLITE_LOCKED)
        db.fail(result, "starting a write");
      if (std::chrono::steady_clock::now() >= deadline)
        throw Error(
            ErrorCode::timeout, db.path().string(),
            cat("the catalog stayed locked by another writer for ", Catalog::kWriteLockWait.count(), " ms"));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    depth_ = 1;
    catalog.outer_is_write_ = true;
  }
  catalog.transaction_depth_ = depth_;
  open_ = true;
}

void Transaction::commit() {
  auto& db = catalog_.connection();
  if (!open_) throw Error(ErrorCode::internal, db.path().string(), "transaction committed twice");
  if (depth_ > 1) {
    db.exec(cat("RELEASE nested_", depth_));
  } else {
    // In WAL mode COMMIT needs no further lock, but retry BUSY anyway: the transaction stays open.
    const auto deadline = std::chrono::steady_clock::now() + Catalog::kWriteLockWait;
    for (;;) {
      const int result = db.try_exec("COMMIT");
      if (result == SQLITE_OK) break;
      if ((result & 0xff) != SQLITE_BUSY || std::chrono::steady_clock::now() >= deadline)
        db.fail(result, "committing");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  open_ = false;
  catalog_.transaction_depth_ = depth_ - 1;
}

Transaction::~Transaction() {
  if (!open_) return;
  auto& db = catalog_.connection();
  // A failed rollback leaves nothing to recover here; SQLite rolls back on close at the latest.
  if (depth_ > 1) {
    (void)db.try_exec(cat("ROLLBACK TO nested_", depth_, "; RELEASE nested_", depth_));
  } else {
    (void)db.try_exec("ROLLBACK");
  }
  catalog_.transaction_depth_ = depth_ - 1;
}

}  // namespace mugv
