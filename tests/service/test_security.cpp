// The security of the real server on real sockets: CURVE on tcp://127.0.0.1 (accept, reject, reload of
// authorized_keys), ipc folders of mode 0700, and the real `mugv serve` refusing job files outside its
// allowed roots; `mugv keys` and `mugv --server tcp://... --server-key` from the command line.
#include "catalog/catalog.h"
#include "catalog/jobs.h"
#include "core/error.h"
#include "core/paths.h"
#include "core/shell_quote.h"
#include "core/strings.h"
#include "service/client.h"
#include "service/curve_keys.h"
#include "service/server.h"
#include "support/serve_process.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <fstream>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <random>
#include <thread>

using namespace mugv;
using namespace std::chrono_literals;
using mugv::test::expect_error;
using mugv::test::TempDir;
using protocol::MessageType;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

ServerOptions options_for(const fs::path& home, std::vector<std::string> listen) {
  ServerOptions o;
  o.home = home;
  o.listen = std::move(listen);
  o.worker_executable = test::binary_dir() / "bin" / "mugv-worker";
  o.heartbeat_interval = 200ms;
  o.cancel_grace = 2000ms;
  return o;
}

// A Server on its own thread; stopped, joined and its leftover workers killed on destruction.
class RunningServer {
 public:
  explicit RunningServer(ServerOptions o) : home_(o.home), server_(std::move(o)) {
    thread_ = std::thread([this] {
      try {
        server_.run(stop_);
      } catch (const std::exception& e) {
        failure_ = e.what();
      }
    });
    std::this_thread::sleep_for(300ms);
    REQUIRE(failure_.empty());
  }
  ~RunningServer() {
    stop_.request_cancel();
    thread_.join();
    Catalog catalog = Catalog::open(home_ / "catalog.sqlite");
    for (const Job& job : list_jobs(catalog))
      if (job.worker_pid && *job.worker_pid > 0 && !is_terminal(job.state))
        ::kill(static_cast<pid_t>(*job.worker_pid), SIGKILL);
  }
  const Server& server() const { return server_; }

 private:
  fs::path home_;
  Server server_;
  CancelToken stop_;
  std::string failure_;
  std::thread thread_;
};

nlohmann::json make_dataset_job(const fs::path& out, int count) {
  return {{"kind", "make_dataset"}, {"params", test::make_dataset_params(out, count)}};
}

std::string wait_for_state(Client& c, int64_t id, const std::string& state,
                           std::chrono::milliseconds timeout = 30000ms) {
  auto deadline = Clock::now() + timeout;
  std::string s;
  while (Clock::now() < deadline) {
    s = c.request(MessageType::get_job, {{"job", id}})["job"]["state"].get<std::string>();
    if (s == state) return s;
    std::this_thread::sleep_for(50ms);
  }
  return s;
}

// The error a client construction ends with, and how long it took.
struct Refusal {
  Error error{ErrorCode::unknown, ""};
  double seconds = 0;
};
Refusal refusal(const std::string& endpoint, std::optional<CurveClientKeys> keys,
                std::chrono::milliseconds timeout = 5000ms) {
  auto start = Clock::now();
  Error e = expect_error([&] { Client c(endpoint, timeout, keys); });
  return {e, std::chrono::duration<double>(Clock::now() - start).count()};
}

CurveClientKeys client_keys(const fs::path& server_home, const CurveKeyPair& client) {
  return {read_keypair(server_home / "keys" / "server.key").public_key, client};
}

int mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return static_cast<int>(st.st_mode & 0777);
}

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs the real `mugv` with MUGV_HOME=home; `args` are quoted here.
RunResult run_mugv(const fs::path& home, const std::vector<std::string>& args) {
  static int counter = 0;
  const fs::path err_file = home.parent_path() / cat("stderr-", ::getpid(), "-", counter++, ".txt");
  const std::string cmd = "MUGV_HOME=" + shell_quote(home.string()) +
                          " MUGV_SERVER_KEY= " + shell_quote((test::binary_dir() / "bin" / "mugv").string()) +
                          " " + shell_join(args) + " 2>" + shell_quote(err_file.string());
  RunResult r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_text_file(err_file);
  fs::remove(err_file);
  return r;
}

}  // namespace

TEST_CASE("an authorised client key talks to a tcp server over CURVE, events included", "[service][tcp]") {
  TempDir home;
  const CurveKeyPair me = generate_curve_keypair();
  add_authorized_key(authorized_keys_path(home.path()), me.public_key, "tester");
  const std::string ep = cat("tcp://127.0.0.1:", test::free_tcp_port_pair());
  RunningServer server(options_for(home.path(), {ep}));
  // The server made its key pair on first use, privately.
  CHECK(mode_of(home / "keys" / "server.key") == 0600);
  CHECK(starts_with(server.server().worker_endpoint(), "ipc://"));

  Client client(ep, 5000ms, client_keys(home.path(), me));
  CHECK(client.request(MessageType::list_jobs)["jobs"].empty());
  REQUIRE_FALSE(client.events_endpoints().empty());
  CHECK(starts_with(client.events_endpoints().front(), "tcp://127.0.0.1:"));
  EventSubscriber events(client.events_endpoints().front(), {"job/"}, client.curve());
  std::this_thread::sleep_for(300ms);

  // The job's worker reaches the server over its private ipc socket, without keys.
  const int64_t id =
      client.request(MessageType::submit_job, make_dataset_job(home / "shapes", 2))["job"]["id"];
  CHECK(wait_for_state(client, id, "succeeded") == "succeeded");
  int states = 0;
  while (auto e = events.next(300ms)) states += e->header.value("type", "") == "state";
  CHECK(states >= 3);
}

TEST_CASE("tcp refuses unauthorised keys, plain clients and a wrong server key, quickly and clearly",
          "[service][tcp]") {
  TempDir home;
  const std::string ep = cat("tcp://127.0.0.1:", test::free_tcp_port_pair());
  RunningServer server(options_for(home.path(), {ep}));

  SECTION("a key not in authorized_keys") {
    Refusal r = refusal(ep, client_keys(home.path(), generate_curve_keypair()));
    CHECK(r.error.code() == ErrorCode::forbidden);
    CHECK(
        contains(r.error.what(), "server at " + ep + " did not accept this client's key (not authorised?)"));
    CHECK(r.seconds < 3);
  }
  SECTION("a client without CURVE") {
    Refusal r = refusal(ep, std::nullopt);
    INFO(r.error.what());
    CHECK(r.error.code() == ErrorCode::protocol);
    CHECK(contains(r.error.what(), ep));
    CHECK(contains(r.error.what(), "CURVE"));
    CHECK(r.seconds < 6);
  }
  SECTION("a wrong server key") {
    const CurveKeyPair me = generate_curve_keypair();
    add_authorized_key(authorized_keys_path(home.path()), me.public_key, "");
    Refusal r = refusal(ep, CurveClientKeys{generate_curve_keypair().public_key, me}, 2000ms);
    INFO(r.error.what());
    CHECK(r.error.code() == ErrorCode::protocol);
    CHECK(contains(r.error.what(), ep));
    CHECK(contains(r.error.what(), "is --server-key the server's public key?"));
    CHECK(r.seconds < 4);
  }
}

TEST_CASE("authorising and revoking a key take effect for the next connection, without a restart",
          "[service][tcp]") {
  TempDir home;
  const std::string ep = cat("tcp://127.0.0.1:", test::free_tcp_port_pair());
  RunningServer server(options_for(home.path(), {ep}));
  const CurveKeyPair me = generate_curve_keypair();
  const CurveClientKeys keys = client_keys(home.path(), me);
  CHECK(refusal(ep, keys).error.code() == ErrorCode::forbidden);

  add_authorized_key(authorized_keys_path(home.path()), me.public_key, "late");
  {
    Client client(ep, 5000ms, keys);
    CHECK(client.request(MessageType::list_jobs)["total"] == 0);
  }
  revoke_authorized_key(authorized_keys_path(home.path()), "late");
  CHECK(refusal(ep, keys).error.code() == ErrorCode::forbidden);
}

TEST_CASE("one server on ipc and tcp: ipc stays plain in its 0700 folder, tcp requires CURVE",
          "[service][tcp][ipc]") {
  TempDir home;
  fs::create_directories(home / "sock");
  fs::permissions(home / "sock", fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                     fs::perms::others_read | fs::perms::others_exec);
  const std::string ipc = "ipc://" + (home / "sock" / "mugv.sock").string();
  const std::string tcp = cat("tcp://127.0.0.1:", test::free_tcp_port_pair());
  RunningServer server(options_for(home.path(), {ipc, tcp}));
  CHECK(mode_of(home / "sock") == 0700);  // fixed from 0755
  CHECK(server.server().worker_endpoint() == ipc);

  Client local(ipc, 3000ms);
  CHECK(local.request(MessageType::list_jobs)["jobs"].empty());
  CHECK(starts_with(local.events_endpoints().front(), "ipc://"));
  CHECK(refusal(tcp, std::nullopt).error.code() == ErrorCode::protocol);
}

TEST_CASE("an ipc folder owned by another user is refused", "[service][ipc]") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root to give a folder to another user");
    return;
  }
  TempDir home;
  fs::create_directories(home / "theirs");
  REQUIRE(::chown((home / "theirs").c_str(), 65534, 65534) == 0);
  ServerOptions o = options_for(home.path(), {"ipc://" + (home / "theirs" / "mugv.sock").string()});
  Server server(o);
  CancelToken stop;
  Error e = expect_error([&] { server.run(stop); });
  CHECK(e.code() == ErrorCode::io);
  CHECK(contains(e.what(), (home / "theirs").string()));
  CHECK(contains(e.what(), "another user"));
}

TEST_CASE("the real mugv serve refuses jobs whose files are outside its allowed roots", "[service][ipc]") {
  TempDir base;
  const fs::path home = base / "home", extra = base / "extra", outside = base / "outside";
  fs::create_directories(home);
  fs::create_directories(extra);
  fs::create_directories(outside);
  fs::create_directory_symlink(outside, home / "link");
  const std::string ep = "ipc://" + (home / "ipc" / "s.sock").string();
  test::ServeProcess serve(home, {"--listen", ep, "--allow-root", extra.string()}, base / "serve.log");
  Client client(ep, 5000ms);
  auto refused = [&](const nlohmann::json& job) {
    return expect_error([&] { client.request(MessageType::submit_job, job); });
  };
  auto import_of = [](const std::string& path) {
    return nlohmann::json{
        {"kind", "import"},
        {"params",
         {{"command", {"dataset", "import"}}, {"values", {{"dataset.name", "x"}}}, {"positional", {path}}}}};
  };

  Error etc = refused(import_of("/etc"));
  CHECK(etc.code() == ErrorCode::forbidden);
  CHECK(contains(etc.what(), "argument 1 /etc"));
  CHECK(contains(etc.what(), fs::weakly_canonical(home).string()));
  CHECK(contains(etc.what(), fs::weakly_canonical(extra).string()));
  CHECK(refused(import_of((home / ".." / "outside").string())).code() == ErrorCode::forbidden);
  CHECK(refused(import_of((home / "link").string())).code() == ErrorCode::forbidden);
  CHECK(refused(make_dataset_job(home / "keys" / "x", 1)).code() == ErrorCode::forbidden);
  // A command that is not a job of the kind it is queued as never reaches the queue.
  nlohmann::json sneaky = import_of((home / "data").string());
  sneaky["params"]["command"] = {"keys", "authorize"};
  CHECK(refused(sneaky).code() == ErrorCode::forbidden);
  sneaky["kind"] = "make_dataset";
  sneaky["params"]["command"] = {"serve"};
  CHECK(refused(sneaky).code() == ErrorCode::forbidden);
  nlohmann::json unknown_value = make_dataset_job(home / "d", 1);
  unknown_value["params"]["values"]["serve.listen"] = {"tcp://0.0.0.0:1"};
  CHECK(refused(unknown_value).code() == ErrorCode::invalid_argument);
  CHECK(client.request(MessageType::list_jobs)["total"] == 0);

  // Inside an allowed root the job runs; "shapes" is the generator's name, not a path.
  const int64_t id =
      client.request(MessageType::submit_job, make_dataset_job(extra / "shapes", 2))["job"]["id"];
  CHECK(wait_for_state(client, id, "succeeded") == "succeeded");
  CHECK(fs::exists(extra / "shapes" / "manifest.jsonl"));

  // Files an import finds on its own are checked too: a symlink to a file outside, a symlinked folder and
  // manifest lines naming outside files are skipped with the reason; the inside clip is imported.
  const fs::path clip = extra / "shapes" / "train" / "shape_00000.mp4";
  fs::create_directories(home / "data");
  fs::copy_file(clip, home / "data" / "inside.mp4");
  fs::copy_file(extra / "shapes" / "train" / "shape_00001.mp4", outside / "secret.mp4");
  fs::create_symlink(outside / "secret.mp4", home / "data" / "escaped.mp4");
  fs::create_directory_symlink(outside, home / "data" / "sub");
  std::ofstream(home / "m.jsonl")
      << nlohmann::json{{"path", (outside / "secret.mp4").string()}, {"caption", "x"}} << "\n"
      << nlohmann::json{{"path", (home / "data" / "inside.mp4").string()}, {"caption", "y"}} << "\n";
  auto clips_of = [&](const std::string& name) {
    const auto reply = client.request(MessageType::list_datasets);
    for (const auto& d : reply["datasets"])
      if (d["name"] == name) return d["clips"].get<int64_t>();
    return int64_t(-1);
  };
  for (const auto& [input, name] : {std::pair{home / "data", std::string("walked")},
                                    std::pair{home / "m.jsonl", std::string("listed")}}) {
    auto job = import_of(input.string());
    job["params"]["values"]["dataset.name"] = name;
    const int64_t imported = client.request(MessageType::submit_job, job)["job"]["id"];
    CHECK(wait_for_state(client, imported, "succeeded") == "succeeded");
    CHECK(clips_of(name) == 1);
    const std::string log =
        client.request(MessageType::job_logs, {{"job", imported}, {"tail_lines", 100}})["text"];
    INFO(log);
    CHECK(contains(log, "secret.mp4"));
    CHECK(contains(log, "outside the folders this server may use"));
  }

  // A released model named by --model is the server's own $MUGV_HOME/models/NAME; a folder outside is
  // refused.
  auto generate_with = [&](const std::string& model) {
    return nlohmann::json{{"kind", "generate"},
                          {"params",
                           {{"command", {"generate"}},
                            {"values",
                             {{"generate.model", model},
                              {"generate.prompt", "a red circle"},
                              {"generate.out", (home / "g.mp4").string()}}}}}};
  };
  const Error outside_model = refused(generate_with("/etc"));
  if (outside_model.code() == ErrorCode::not_found) {
    WARN("this server has no generate command (built without LibTorch): --model confinement not exercised");
  } else {
    CHECK(outside_model.code() == ErrorCode::forbidden);
    CHECK(contains(outside_model.what(), "--model"));
    const int64_t named = client.request(MessageType::submit_job, generate_with("MUG-V-10B"))["job"]["id"];
    CHECK(wait_for_state(client, named, "failed") == "failed");  // queued, then no such model folder
  }
}

TEST_CASE("mugv keys and mugv --server tcp:// --server-key from the command line", "[service][tcp]") {
  TempDir base;
  const fs::path server_home = base / "server", client_home = base / "client";
  fs::create_directories(server_home);
  fs::create_directories(client_home);

  auto made = run_mugv(server_home, {"keys", "generate"});
  REQUIRE(made.exit_code == 0);
  const std::string server_pub = trim(read_text_file(server_home / "keys" / "server.pub"));
  CHECK(contains(made.out, server_pub));
  CHECK(mode_of(server_home / "keys" / "server.key") == 0600);
  auto again = run_mugv(server_home, {"keys", "generate"});
  CHECK(again.exit_code == 1);
  CHECK(contains(again.err, "already exists"));
  CHECK(trim(read_text_file(server_home / "keys" / "server.pub")) == server_pub);
  CHECK(
      run_mugv(server_home, {"keys", "generate", "--client", "--out", (base / "spare").string()}).exit_code ==
      0);
  CHECK(fs::exists(base / "spare" / "client.key"));

  auto bad = run_mugv(server_home, {"keys", "authorize", "hello"});
  CHECK(bad.exit_code == 1);
  CHECK(contains(bad.err, "'hello' is not a CURVE public key"));
  CHECK(contains(bad.err, "40 Z85 characters"));

  const std::string ep = cat("tcp://127.0.0.1:", test::free_tcp_port_pair());
  test::ServeProcess serve(server_home, {"--listen", ep}, server_home.parent_path() / "serve.log");
  CHECK(contains(serve.log(), server_pub));  // the log says which key clients need

  auto no_key = run_mugv(client_home, {"--server", ep, "jobs"});
  CHECK(no_key.exit_code == 2);
  CHECK(contains(no_key.err, "--server-key"));

  const std::vector<std::string> jobs = {"--server", ep, "--server-key",
                                         (server_home / "keys" / "server.pub").string(), "jobs"};
  auto refused = run_mugv(client_home, jobs);  // makes the client key pair on first use
  CHECK(refused.exit_code == 1);
  CHECK(contains(refused.err, "did not accept this client's key (not authorised?)"));
  REQUIRE(fs::exists(client_home / "keys" / "client.pub"));
  CHECK(contains(serve.log(), "rejected client key"));

  CHECK(run_mugv(server_home,
                 {"keys", "authorize", (client_home / "keys" / "client.pub").string(), "--name", "laptop"})
            .exit_code == 0);
  auto listed = nlohmann::json::parse(run_mugv(server_home, {"keys", "list", "--json"}).out);
  CHECK(listed["server_public_key"] == server_pub);
  REQUIRE(listed["authorized"].size() == 1);
  CHECK(listed["authorized"][0]["name"] == "laptop");
  auto accepted = run_mugv(client_home, jobs);
  CHECK(accepted.exit_code == 0);
  CHECK(accepted.err.empty());

  CHECK(run_mugv(server_home, {"keys", "revoke", "laptop"}).exit_code == 0);
  CHECK(run_mugv(client_home, jobs).exit_code == 1);
  auto gone = run_mugv(server_home, {"keys", "revoke", "laptop"});
  CHECK(gone.exit_code == 1);
  CHECK(contains(gone.err, "laptop"));
}

TEST_CASE(
    "a flood of keyless tcp connections up to the open-files limit neither kills the server nor locks "
    "out ipc and authorised clients",
    "[service][tcp]") {
  TempDir home;
  const CurveKeyPair me = generate_curve_keypair();
  add_authorized_key(authorized_keys_path(home.path()), me.public_key, "tester");
  const int port = test::free_tcp_port_pair();
  const std::string tcp = cat("tcp://127.0.0.1:", port), ipc = "ipc://" + (home / "sock" / "s.sock").string();
  test::ServeProcess serve(home.path(), {"--listen", ipc, "--listen", tcp}, {}, /*open_files=*/256);

  // 400 plain connections that never speak (more than the server's 256 descriptors).
  std::vector<int> flood;
  for (int i = 0; i < 400; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    flood.push_back(fd);
    if (i % 10 == 9) std::this_thread::sleep_for(20ms);  // 500 a second, as fast as the server accepts
  }
  std::this_thread::sleep_for(500ms);
  // The server is alive and its ipc endpoint answers while the flood is still connected.
  CHECK(test::wait_until([&] { return test::server_answers(ipc); }, 10000ms));
  // An authorised client gets in once the keyless ones have been dropped (handshake timeout or the
  // descriptor guard), though the flood's sockets are still open on this side.
  bool served = test::wait_until(
      [&] {
        try {
          Client client(tcp, 1000ms, client_keys(home.path(), me));
          return client.request(MessageType::list_jobs)["jobs"].empty();
        } catch (const Error&) {
          return false;
        }
      },
      30000ms);
  for (int fd : flood) ::close(fd);
  INFO(serve.log());
  CHECK(served);
  CHECK(contains(serve.log(), "up to 256 open files"));
  CHECK_FALSE(contains(serve.log(), "Too many open files"));
}
