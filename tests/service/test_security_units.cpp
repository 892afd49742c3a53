// The security building blocks on real files and a real shell: CURVE key files and authorized_keys, path
// confinement with `..` and symlinks, and POSIX shell quoting of hostile arguments.
#include "core/error.h"
#include "core/path_confinement.h"
#include "core/paths.h"
#include "core/shell_quote.h"
#include "core/strings.h"
#include "service/curve_keys.h"
#include "service/zmq_io.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <cstdio>

using namespace mugv;
using mugv::test::expect_error;
using mugv::test::TempDir;
namespace fs = std::filesystem;

namespace {

int mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return static_cast<int>(st.st_mode & 0777);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// What bash prints for `printf '%s\n' WORDS` where WORDS is `quoted` pasted into the command line.
std::string bash_printf(const std::string& quoted) {
  const std::string script = "printf '%s\\n' " + quoted;
  const std::string command = "bash -c " + shell_quote(script);
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  REQUIRE(::pclose(pipe) == 0);
  return out;
}

}  // namespace

TEST_CASE("shell_quote makes any argument one word that bash passes through unchanged", "[unit][service]") {
  TempDir dir;
  const fs::path marker = dir / "pwned";
  const std::vector<std::string> hostile = {
      "$(touch " + marker.string() + ")",
      "`touch " + marker.string() + "`",
      "; touch " + marker.string(),
      "$(rm -rf " + (dir / "nothing").string() + ")",
      "it's",
      "''",
      "'",
      "a\"b\"c",
      "line one\nline two\n",
      "tab\there",
      "*",
      "$HOME ${HOME} $((1+1))",
      "\\n\\\\",
      "-n",
      "--out=/etc/passwd",
      "'$(touch " + marker.string() + ")'",
      "",
      "ünïcödé ✓",
  };
  for (const auto& arg : hostile) {
    INFO("argument: " << arg);
    CHECK(bash_printf(shell_quote(arg)) == arg + "\n");
  }
  CHECK_FALSE(fs::exists(marker));
  CHECK(shell_quote("") == "''");
  CHECK(shell_quote("it's") == "'it'\\''s'");

  // A whole command line: every argument stays one word, in order.
  const std::vector<std::string> args = {"train", "--run", "a b", "$(id)", "it's", ""};
  CHECK(bash_printf(shell_join(args)) == "train\n--run\na b\n$(id)\nit's\n\n");
}

TEST_CASE("CURVE key files: Z85 checks, modes, round trip, no silent overwrite", "[unit][service]") {
  TempDir home;
  const CurveKeyPair keys = generate_curve_keypair();
  CHECK(is_z85_key(keys.public_key));
  CHECK(is_z85_key(keys.secret_key));
  CHECK(curve_public_key(keys.secret_key) == keys.public_key);

  CHECK_FALSE(is_z85_key(keys.public_key.substr(1)));   // 39 characters
  CHECK_FALSE(is_z85_key(keys.public_key + "a"));       // 41
  CHECK_FALSE(is_z85_key(std::string(39, 'a') + "~"));  // '~' is not in the Z85 alphabet
  CHECK_FALSE(is_z85_key(std::string(40, '#')));        // each group overflows 32 bits
  CHECK_FALSE(is_z85_key(""));
  Error bad = expect_error([] { check_z85_key("not-a-key", "public key"); });
  CHECK(bad.code() == ErrorCode::invalid_argument);
  CHECK(contains(bad.what(), "not-a-key"));
  CHECK(contains(bad.what(), "40 Z85 characters"));

  const fs::path dir = keys_dir(home.path());
  write_keypair(dir, KeyRole::server, keys, false);
  CHECK(mode_of(dir) == 0700);
  CHECK(mode_of(dir / "server.key") == 0600);
  CHECK(mode_of(dir / "server.pub") == 0644);
  CHECK(trim(read_text_file(dir / "server.pub")) == keys.public_key);
  const CurveKeyPair back = read_keypair(dir / "server.key");
  CHECK(back.public_key == keys.public_key);
  CHECK(back.secret_key == keys.secret_key);
  CHECK(public_key_from_text_or_file((dir / "server.pub").string(), "key") == keys.public_key);

  // Replacing a key would lock every client out: only on request.
  CHECK(expect_error([&] { write_keypair(dir, KeyRole::server, generate_curve_keypair(), false); }).code() ==
        ErrorCode::conflict);
  CHECK(read_keypair(dir / "server.key").public_key == keys.public_key);
  bool created = true;
  CHECK(load_or_create_keypair(dir, KeyRole::server, &created).public_key == keys.public_key);
  CHECK_FALSE(created);
  CHECK(load_or_create_keypair(dir, KeyRole::client, &created).public_key != keys.public_key);
  CHECK(created);

  // A secret key that others can read is refused.
  ::chmod((dir / "server.key").c_str(), 0644);
  Error leaked = expect_error([&] { (void)read_keypair(dir / "server.key"); });
  CHECK(leaked.code() == ErrorCode::forbidden);
  CHECK(contains(leaked.what(), "server.key"));
  CHECK(expect_error([&] { (void)read_keypair(dir / "absent.key"); }).code() == ErrorCode::not_found);
}

TEST_CASE("authorized_keys: add, list, revoke by name or key, clear errors", "[unit][service]") {
  TempDir home;
  const fs::path file = authorized_keys_path(home.path());
  CHECK(read_authorized_keys(file).empty());
  const std::string alice = generate_curve_keypair().public_key, bob = generate_curve_keypair().public_key;
  add_authorized_key(file, alice, "alice");
  add_authorized_key(file, bob, "");
  auto keys = read_authorized_keys(file);
  REQUIRE(keys.size() == 2);
  CHECK(keys[0].public_key == alice);
  CHECK(keys[0].name == "alice");
  CHECK(keys[1].public_key == bob);
  CHECK(keys[1].name.empty());
  CHECK(mode_of(file) == 0600);

  CHECK(expect_error([&] { add_authorized_key(file, alice, "again"); }).code() == ErrorCode::conflict);
  CHECK(expect_error([&] {
          add_authorized_key(file, generate_curve_keypair().public_key, "alice");
        }).code() == ErrorCode::conflict);
  CHECK(expect_error([&] { add_authorized_key(file, "short", "x"); }).code() == ErrorCode::invalid_argument);
  CHECK(expect_error([&] {
          add_authorized_key(file, generate_curve_keypair().public_key, "two words");
        }).code() == ErrorCode::invalid_argument);

  CHECK(revoke_authorized_key(file, "alice").size() == 1);
  CHECK(revoke_authorized_key(file, bob).size() == 1);
  CHECK(read_authorized_keys(file).empty());
  CHECK(expect_error([&] { revoke_authorized_key(file, "alice"); }).code() == ErrorCode::not_found);

  // A damaged file is an error naming the line, never a shorter list.
  write_text_atomic(file, "# comment\n" + alice + " alice\nthis-is-not-a-key bob\n");
  Error damaged = expect_error([&] { (void)read_authorized_keys(file); });
  CHECK(damaged.code() == ErrorCode::format);
  CHECK(contains(damaged.what(), "authorized_keys:3"));
}

TEST_CASE("path confinement: inside is allowed, `..` and symlinks cannot escape", "[unit][service]") {
  TempDir base;
  const fs::path root = base / "home", outside = base / "outside", extra = base / "extra";
  fs::create_directories(root / "data");
  fs::create_directories(outside);
  fs::create_directories(extra);
  test::write_bytes(outside / "secret.txt", "x");
  fs::create_directory_symlink(outside, root / "escape");       // a link out of the root
  fs::create_directory_symlink(root / "data", root / "alias");  // a link that stays inside
  fs::create_directory_symlink(root, base / "home-link");       // a root reached through a link
  PathConfinement c({base / "home-link", extra}, {root / "keys"});

  SECTION("inside") {
    CHECK(c.resolve_inside(root / "data"));
    CHECK(c.resolve_inside(root / "data" / "new" / "file.mp4"));  // need not exist yet
    CHECK(c.resolve_inside(root / "alias" / "x.mp4") == fs::weakly_canonical(root) / "data" / "x.mp4");
    CHECK(c.resolve_inside(root / "data" / ".." / "data"));
    CHECK(c.resolve_inside(extra / "out.mp4"));
    CHECK(c.resolve_inside(root));
    CHECK_NOTHROW(c.check("--out", (root / "data" / "a.mp4").string()));
  }
  SECTION("`..` escapes") {
    CHECK_FALSE(c.resolve_inside(root / ".." / "outside" / "secret.txt"));
    CHECK_FALSE(c.resolve_inside(root / "data" / "no-such-dir" / ".." / ".." / ".." / "outside"));
    CHECK_FALSE(c.resolve_inside(fs::path("/etc/passwd")));
    CHECK_FALSE(c.resolve_inside(base / "home-other"));  // a sibling sharing the root's name as a prefix
    Error e = expect_error([&] { c.check("--out", (root / ".." / "outside" / "x.mp4").string()); });
    CHECK(e.code() == ErrorCode::forbidden);
    CHECK(contains(e.what(), "--out"));
    CHECK(contains(e.what(), (outside / "x.mp4").string()));  // what it resolves to
    CHECK(contains(e.what(), root.string()));                 // the allowed roots
    CHECK(contains(e.what(), extra.string()));
  }
  SECTION("symlink escapes") {
    CHECK_FALSE(c.resolve_inside(root / "escape" / "secret.txt"));
    CHECK_FALSE(c.resolve_inside(root / "escape"));
    Error e = expect_error([&] { c.check("argument 1", (root / "escape").string()); });
    CHECK(e.code() == ErrorCode::forbidden);
    CHECK(contains(e.what(), (root / "escape").string()));
  }
  SECTION("the keys folder is never a job's") {
    CHECK_FALSE(c.resolve_inside(root / "keys" / "authorized_keys"));
    CHECK(expect_error([&] { c.check("--out", (root / "keys" / "server.key").string()); }).code() ==
          ErrorCode::forbidden);
  }
  SECTION("an empty path is refused") {
    CHECK(expect_error([&] { c.check("--out", ""); }).code() == ErrorCode::forbidden);
  }
}

TEST_CASE("every MUG-V socket has a receive size limit", "[unit][service]") {
  zmq::context_t context;
  for (auto type :
       {zmq::socket_type::router, zmq::socket_type::dealer, zmq::socket_type::pub, zmq::socket_type::sub}) {
    zmq::socket_t s(context, type);
    protocol::apply_common_options(s);
    CHECK(s.get(zmq::sockopt::maxmsgsize) == static_cast<int64_t>(protocol::kMaxMessageBytes));
  }
}
