#include "support/test_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>

namespace mugv::test {

TempDir::TempDir(const std::string& prefix) {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fs::path candidate = fs::temp_directory_path() / (prefix + "-" + std::to_string(rd()));
    if (fs::create_directory(candidate)) {
      path_ = candidate;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::optional<fs::path> real_data_dir() {
  if (const char* env = std::getenv("MUGV_REAL_DATA"); env && *env && fs::is_directory(env))
    return fs::path(env);
  fs::path dir = MUGV_REAL_DATA_DIR;
  if (fs::is_directory(dir)) return fs::weakly_canonical(dir);
  return std::nullopt;
}

std::optional<fs::path> real_data_file(const std::string& name) {
  auto dir = real_data_dir();
  if (!dir || !fs::exists(*dir / name)) {
    WARN("skipped: real test video " << name
                                     << " not found (expected in ../shared/data/real or $MUGV_REAL_DATA)");
    return std::nullopt;
  }
  return *dir / name;
}

std::optional<fs::path> golden_data_file(const std::string& name) {
  fs::path dir = MUGV_GOLDEN_DATA_DIR;
  if (const char* env = std::getenv("MUGV_GOLDEN_DATA"); env && *env) dir = env;
  if (!fs::exists(dir / name)) {
    WARN("skipped: golden file " << name
                                 << " not found (expected in ../shared/data/golden or $MUGV_GOLDEN_DATA)");
    return std::nullopt;
  }
  return fs::weakly_canonical(dir / name);
}

fs::path binary_dir() {
  return MUGV_BINARY_DIR;
}

std::string shell_quote_arg(const std::string& text) {
  std::string q = "'";
  for (char c : text) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::optional<CliResult> run_mugv_cli(const std::string& args, const fs::path& scratch,
                                      const std::optional<fs::path>& home) {
  const fs::path exe = binary_dir() / "bin" / "mugv";
  if (!fs::exists(exe)) {
    WARN("skipped: " << exe << " is not built");
    return std::nullopt;
  }
  static int calls = 0;
  const fs::path err = scratch / ("stderr-" + std::to_string(calls++) + ".txt");
  const std::string env = home ? "MUGV_HOME=" + shell_quote_arg(home->string()) + " " : std::string();
  FILE* pipe = popen(
      (env + shell_quote_arg(exe.string()) + " " + args + " 2>" + shell_quote_arg(err.string())).c_str(),
      "r");
  REQUIRE(pipe);
  CliResult r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err);
  r.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return r;
}

fs::path source_dir() {
  return fs::path(MUGV_SOURCE_DIR);
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

namespace {

bool port_free(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

int free_tcp_port_pair() {
  std::random_device rd;
  for (int attempt = 0; attempt < 200; ++attempt) {
    int port = 20000 + static_cast<int>(rd() % 30000);
    if (port_free(port) && port_free(port + 1)) return port;
  }
  FAIL("no free port pair on 127.0.0.1");
  return 0;
}

nlohmann::json make_dataset_params(const fs::path& out, int count) {
  return {{"command", {"make-dataset"}},
          {"positional", {"shapes"}},
          {"values",
           {{"dataset.out", out.string()},
            {"dataset.count", count},
            {"dataset.size", 32},
            {"dataset.frames", 9}}}};
}

}  // namespace mugv::test
