#pragma once
// A thin RAII layer over the SQLite C API for the catalog; only sqlite.cpp includes sqlite3.h.
//   Connection  one sqlite3 handle plus the file path that every error names. Move-only; not thread-safe
//               (SQLite is opened without its own mutex: one Connection per thread).
//   Statement   one prepared statement, bound by 1-based index, read by 0-based column. It must not
//               outlive its Connection. Values are never concatenated into SQL text.
// Every SQLite failure becomes mugv::Error with the database path as subject and sqlite3_errmsg() as
// message; the code maps SQLite's result (NOTADB -> format, CORRUPT -> corrupt, CONSTRAINT -> conflict,
// BUSY/LOCKED -> timeout, IOERR/CANTOPEN/FULL/READONLY -> io, NOMEM -> out_of_memory, others -> internal).

#include "core/error.h"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

struct sqlite3;
struct sqlite3_stmt;

namespace mugv::sqlite {

namespace fs = std::filesystem;

// Maps an (extended) SQLite result code to the project's error codes.
ErrorCode error_code_for(int sqlite_result);
// The version of the SQLite library this process runs with ("3.40.1").
std::string library_version();

class Connection {
 public:
  // Opens the database file read-write, creating it when absent. Nothing is read yet, so a file that
  // is not a database is only detected by the first statement.
  explicit Connection(const fs::path& path);
  ~Connection();
  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const fs::path& path() const { return path_; }
  sqlite3* handle() const { return db_; }

  // Runs one or more statements without parameters (schema, pragmas, BEGIN/COMMIT).
  void exec(std::string_view sql);
  // Like exec, but returns the raw SQLite result instead of throwing on BUSY (for retry loops).
  [[nodiscard]] int try_exec(std::string_view sql);
  [[nodiscard]] int64_t last_insert_id() const;
  [[nodiscard]] int changes() const;
  void set_busy_timeout_ms(int timeout_ms);

  // Throws the Error for `sqlite_result`, naming this database; `context` (may be empty) is prefixed
  // to SQLite's message to say what was being done.
  [[noreturn]] void fail(int sqlite_result, std::string_view context = {}) const;

 private:
  sqlite3* db_ = nullptr;
  fs::path path_;
};

class Statement {
 public:
  Statement(Connection& connection, std::string_view sql);
  ~Statement();
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind_null(int index);
  Statement& bind_int64(int index, int64_t value);
  Statement& bind_double(int index, double value);
  Statement& bind_text(int index, std::string_view value);

  // Binds by type: integers (uint64_t is stored bit for bit as int64), bool as 0/1, floating point,
  // enums through their to_string(), strings, std::optional (nullopt -> NULL), std::nullopt.
  template <typename T>
  Statement& bind(int index, const T& value);
  // Binds the arguments to parameters 1..N.
  template <typename... Args>
  Statement& bind_all(const Args&... args) {
    int index = 0;
    (bind(++index, args), ...);
    return *this;
  }

  // Advances to the next row: true when a row is available, false when the statement is done.
  [[nodiscard]] bool step();
  // Steps to completion; for statements that return no rows (INSERT, UPDATE, DELETE).
  void run();
  // Makes the statement runnable again with the same or new bindings.
  void reset();

  [[nodiscard]] bool is_null(int column) const;
  [[nodiscard]] int64_t int64(int column) const;
  [[nodiscard]] int int32(int column) const { return static_cast<int>(int64(column)); }
  [[nodiscard]] double real(int column) const;
  [[nodiscard]] std::string text(int column) const;
  [[nodiscard]] std::optional<int64_t> optional_int64(int column) const;
  [[nodiscard]] std::optional<double> optional_real(int column) const;

 private:
  void check_bind(int result, int index);

  Connection* connection_;
  sqlite3_stmt* stmt_ = nullptr;
};

namespace detail {
template <typename T>
struct IsOptional : std::false_type {};
template <typename T>
struct IsOptional<std::optional<T>> : std::true_type {};
}  // namespace detail

template <typename T>
Statement& Statement::bind(int index, const T& value) {
  if constexpr (std::is_same_v<T, std::nullopt_t>) {
    return bind_null(index);
  } else if constexpr (detail::IsOptional<T>::value) {
    return value ? bind(index, *value) : bind_null(index);
  } else if constexpr (std::is_same_v<T, bool>) {
    return bind_int64(index, value ? 1 : 0);
  } else if constexpr (std::is_integral_v<T>) {
    return bind_int64(index, static_cast<int64_t>(value));
  } else if constexpr (std::is_floating_point_v<T>) {
    return bind_double(index, static_cast<double>(value));
  } else if constexpr (std::is_enum_v<T>) {
    return bind_text(index, to_string(value));
  } else {
    return bind_text(index, std::string_view(value));
  }
}

}  // namespace mugv::sqlite
