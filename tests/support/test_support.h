#pragma once
// Helpers shared by the test suites: scratch directories and the location of real test media.

#include "core/error.h"

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>

namespace mugv::test {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed (recursively) on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "mugv-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// ../shared/data/real beside the project, or $MUGV_REAL_DATA; nullopt when absent.
std::optional<fs::path> real_data_dir();
// Path of a file in the real data dir; nullopt (after printing a skip message via Catch's WARN)
// when the data is absent. Use: auto f = real_data_file("counter.mp4"); if (!f) return;
std::optional<fs::path> real_data_file(const std::string& name);

// A file of the released model's reference outputs in ../shared/data/golden (or $MUGV_GOLDEN_DATA); nullopt
// (after a WARN naming it) when absent. Read in place, never copied into the repository.
std::optional<fs::path> golden_data_file(const std::string& name);

// What the built `mugv` printed and returned.
struct CliResult {
  int exit_code = -1;
  std::string out, err;
};
// Runs the built `mugv` with `args` (a shell-quoted string) in this process's environment (with MUGV_HOME set
// to `home` when given), stderr captured through a file in `scratch`; nullopt, after a skip note, when it is
// not built.
std::optional<CliResult> run_mugv_cli(const std::string& args, const fs::path& scratch,
                                      const std::optional<fs::path>& home = std::nullopt);
// `text` in single quotes for a shell command line.
std::string shell_quote_arg(const std::string& text);

// The build tree (for locating built executables such as mugv).
fs::path binary_dir();
// The source tree (for scripts the tests run, such as tests/parallel/slurm_cluster.sh).
fs::path source_dir();

// Runs `fn` expecting a mugv::Error and returns it for inspection; fails the test when nothing is thrown.
template <typename Fn>
mugv::Error expect_error(Fn&& fn) {
  try {
    fn();
  } catch (const mugv::Error& e) {
    return e;
  }
  FAIL("expected mugv::Error");
  return mugv::Error(mugv::ErrorCode::unknown, "");
}

// A TCP port P on 127.0.0.1 with P + 1 free too, a moment ago (a server's requests on P, events on P + 1).
// Fails the test when none is found.
int free_tcp_port_pair();

// The params of a server job that runs `mugv make-dataset shapes` into `out` (`count` clips of 32x32, 9
// frames): a quick job that needs no LibTorch, for tests of the job machinery.
nlohmann::json make_dataset_params(const fs::path& out, int count);

// Writes `bytes` to a new file at `path`.
void write_bytes(const fs::path& path, const std::string& bytes);

}  // namespace mugv::test
