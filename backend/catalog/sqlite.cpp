#include "catalog/sqlite.h"

#include "core/strings.h"

#include <sqlite3.h>

#include <utility>

namespace mugv::sqlite {

std::string library_version() {
  return sqlite3_libversion();
}

ErrorCode error_code_for(int sqlite_result) {
  switch (sqlite_result & 0xff) {
    case SQLITE_NOTADB:
      return ErrorCode::format;
    case SQLITE_CORRUPT:
      return ErrorCode::corrupt;
    case SQLITE_CONSTRAINT:
      return ErrorCode::conflict;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return ErrorCode::timeout;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return ErrorCode::io;
    case SQLITE_NOMEM:
      return ErrorCode::out_of_memory;
    case SQLITE_INTERRUPT:
      return ErrorCode::cancelled;
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
      return ErrorCode::invalid_argument;
    default:
      return ErrorCode::internal;
  }
}

Connection::Connection(const fs::path& path) : path_(path) {
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  const int result = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (result != SQLITE_OK) {
    std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(result);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error(error_code_for(result), path.string(), "cannot open database: " + message);
  }
  sqlite3_extended_result_codes(db_, 1);
}

Connection::~Connection() {
  if (db_) sqlite3_close_v2(db_);
}

Connection::Connection(Connection&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), path_(std::move(other.path_)) {}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    if (db_) sqlite3_close_v2(db_);
    db_ = std::exchange(other.db_, nullptr);
    path_ = std::move(other.path_);
  }
  return *this;
}

void Connection::exec(std::string_view sql) {
  const int result = try_exec(sql);
  if (result != SQLITE_OK) fail(result);
}

int Connection::try_exec(std::string_view sql) {
  const std::string text(sql);
  return sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr);
}

int64_t Connection::last_insert_id() const {
  return sqlite3_last_insert_rowid(db_);
}

int Connection::changes() const {
  return sqlite3_changes(db_);
}

void Connection::set_busy_timeout_ms(int timeout_ms) {
  const int result = sqlite3_busy_timeout(db_, timeout_ms);
  if (result != SQLITE_OK) fail(result, "setting the busy timeout");
}

void Connection::fail(int sqlite_result, std::string_view context) const {
  std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(sqlite_result);
  // errmsg reflects the most recent call, which may not be the one that failed with this code.
  if (db_ && (sqlite3_extended_errcode(db_) & 0xff) != (sqlite_result & 0xff))
    message = sqlite3_errstr(sqlite_result);
  if (!context.empty()) message = cat(context, ": ", message);
  throw Error(error_code_for(sqlite_result), path_.string(), message);
}

Statement::Statement(Connection& connection, std::string_view sql) : connection_(&connection) {
  const int result =
      sqlite3_prepare_v2(connection.handle(), sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  if (result != SQLITE_OK) {
    sqlite3_finalize(stmt_);
    stmt_ = nullptr;
    connection.fail(result);
  }
}

Statement::~Statement() {
  if (stmt_) sqlite3_finalize(stmt_);
}

Statement::Statement(Statement&& other) noexcept
    : connection_(other.connection_), stmt_(std::exchange(other.stmt_, nullptr)) {}

void Statement::check_bind(int result, int index) {
  if (result != SQLITE_OK) connection_->fail(result, cat("binding parameter ", index));
}

Statement& Statement::bind_null(int index) {
  check_bind(sqlite3_bind_null(stmt_, index), index);
  return *this;
}

Statement& Statement::bind_int64(int index, int64_t value) {
  check_bind(sqlite3_bind_int64(stmt_, index, value), index);
  return *this;
}

Statement& Statement::bind_double(int index, double value) {
  check_bind(sqlite3_bind_double(stmt_, index, value), index);
  return *this;
}

Statement& Statement::bind_text(int index, std::string_view value) {
  check_bind(sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
             index);
  return *this;
}

bool Statement::step() {
  const int result = sqlite3_step(stmt_);
  if (result == SQLITE_ROW) return true;
  if (result == SQLITE_DONE) return false;
  sqlite3_reset(stmt_);
  connection_->fail(result);
}

void Statement::run() {
  while (step()) {
  }
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Statement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

int64_t Statement::int64(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

double Statement::real(int column) const {
  return sqlite3_column_double(stmt_, column);
}

std::string Statement::text(int column) const {
  const auto* bytes = sqlite3_column_text(stmt_, column);
  if (!bytes) return {};
  return std::string(reinterpret_cast<const char*>(bytes),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::optional<int64_t> Statement::optional_int64(int column) const {
  if (is_null(column)) return std::nullopt;
  return int64(column);
}

std::optional<double> Statement::optional_real(int column) const {
  if (is_null(column)) return std::nullopt;
  return real(column);
}

}  // namespace mugv::sqlite
