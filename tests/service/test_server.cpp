// The real server with real worker processes on an ipc socket: job lifecycle, control, faults.
#include "catalog/catalog.h"
#include "catalog/datasets.h"
#include "catalog/generations.h"
#include "catalog/jobs.h"
#include "catalog/preferences.h"
#include "core/error.h"
#include "core/json_io.h"
#include "core/strings.h"
#include "service/client.h"
#include "service/reply_pool.h"
#include "service/server.h"
#include "service/zmq_io.h"
#include "support/serve_process.h"
#include "support/test_support.h"
#include "train/run_layout.h"

#include <catch2/catch.hpp>

#include <zmq_addon.hpp>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace mugv;
using namespace std::chrono_literals;
using mugv::test::TempDir;
using protocol::MessageType;
namespace fs = std::filesystem;

namespace {

// A server on its own thread with its own MUGV_HOME, stopped and joined on destruction.
class TestServer {
 public:
  explicit TestServer(const fs::path& home, int max_attempts = 3, int max_jobs = 1) : home_(home) {
    ::setenv("MUGV_HOME", home.c_str(), 1);
    endpoint_ = "ipc://" + (home / "sock" / "mugv.sock").string();
    ServerOptions o;
    o.home = home;
    o.listen = {endpoint_};
    o.worker_executable = test::binary_dir() / "bin" / "mugv-worker";
    o.max_local_jobs = max_jobs;
    o.heartbeat_interval = 200ms;
    o.cancel_grace = 2000ms;
    o.max_attempts = max_attempts;
    server_ = std::make_unique<Server>(o);
    thread_ = std::thread([this] { server_->run(stop_); });
    REQUIRE(test::wait_until([&] { return test::server_answers(endpoint_); }, 20000ms));
  }
  // Workers outlive a stopped server by design; a test must not leave any behind, so kill what is left.
  ~TestServer() {
    stop();
    if (keep_workers_) return;
    Catalog catalog = Catalog::open(home_ / "catalog.sqlite");
    for (const Job& job : list_jobs(catalog))
      if (job.worker_pid && *job.worker_pid > 0 && !is_terminal(job.state))
        ::kill(static_cast<pid_t>(*job.worker_pid), SIGKILL);
  }
  void stop() {
    if (!thread_.joinable()) return;
    stop_.request_cancel();
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  // For the restart test: the next server is to adopt the running workers.
  void keep_workers_on_exit() { keep_workers_ = true; }

 private:
  fs::path home_;
  std::string endpoint_;
  CancelToken stop_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  bool keep_workers_ = false;
};

nlohmann::json make_dataset_job(const fs::path& out, int count) {
  return {{"kind", "make_dataset"},
          {"params",
           {{"command", {"make-dataset"}},
            {"positional", {"shapes"}},
            {"values",
             {{"dataset.out", out.string()},
              {"dataset.count", count},
              {"dataset.size", 32},
              {"dataset.frames", 9}}}}}};
}

std::string state_of(Client& c, int64_t id) {
  return c.request(MessageType::get_job, {{"job", id}})["job"]["state"].get<std::string>();
}

// Polls until the job reaches `state` or `timeout` passes; returns the last state seen.
std::string wait_for(Client& c, int64_t id, const std::string& state,
                     std::chrono::milliseconds timeout = 30000ms) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string s;
  while (std::chrono::steady_clock::now() < deadline) {
    s = state_of(c, id);
    if (s == state) return s;
    std::this_thread::sleep_for(50ms);
  }
  return s;
}

int64_t submit(Client& c, const nlohmann::json& job) {
  return c.request(MessageType::submit_job, job)["job"]["id"].get<int64_t>();
}

int64_t progress_done(Client& c, int64_t id) {
  int64_t done = -1;
  auto job = c.request(MessageType::get_job, {{"job", id}});
  for (const auto& e : job["events"])
    if (e["type"] == "progress") done = e["payload"]["done"];
  return done;
}

}  // namespace

TEST_CASE("a submitted job runs in a worker process; two clients watch its events", "[service][ipc]") {
  TempDir home;
  TestServer server(home.path());
  Client client(server.endpoint());
  REQUIRE_FALSE(client.events_endpoints().empty());
  EventSubscriber watcher_a(client.events_endpoints()[0], {"job/"});
  EventSubscriber watcher_b(client.events_endpoints()[0], {"job/1"});
  std::this_thread::sleep_for(200ms);

  int64_t id = submit(client, make_dataset_job(home / "shapes", 8));
  CHECK(wait_for(client, id, "succeeded") == "succeeded");
  CHECK(fs::exists(home / "shapes" / "manifest.jsonl"));

  auto count_types = [](EventSubscriber& s) {
    std::map<std::string, int> types;
    while (auto e = s.next(300ms)) types[e->header.value("type", "")]++;
    return types;
  };
  auto a = count_types(watcher_a);
  auto b = count_types(watcher_b);
  CHECK(a["state"] >= 3);  // queued, starting, running, succeeded
  CHECK(a["progress"] >= 1);
  CHECK(b["state"] == a["state"]);

  auto job = client.request(MessageType::get_job, {{"job", id}});
  CHECK(job["job"]["attempts"] == 1);
  CHECK(job["job"]["exit_code"] == 0);
  auto logs = client.request(MessageType::job_logs, {{"job", id}});
  CHECK(logs["text"].get<std::string>().find("make-dataset") != std::string::npos);
}

TEST_CASE("cancel, pause and resume reach the worker; queued jobs cancel at once", "[service][ipc]") {
  TempDir home;
  TestServer server(home.path());
  Client client(server.endpoint());
  int64_t long_job = submit(client, make_dataset_job(home / "big", 20000));
  int64_t queued = submit(client, make_dataset_job(home / "next", 2));
  REQUIRE(wait_for(client, long_job, "running") == "running");
  CHECK(state_of(client, queued) == "queued");
  client.request(MessageType::cancel_job, {{"job", queued}});
  CHECK(state_of(client, queued) == "cancelled");

  std::this_thread::sleep_for(1500ms);
  client.request(MessageType::pause_job, {{"job", long_job}});
  CHECK(state_of(client, long_job) == "paused");
  std::this_thread::sleep_for(1500ms);  // let in-flight progress land
  int64_t before = progress_done(client, long_job);
  std::this_thread::sleep_for(1500ms);
  CHECK(progress_done(client, long_job) == before);  // paused: no progress
  client.request(MessageType::resume_job, {{"job", long_job}});
  CHECK(state_of(client, long_job) == "running");

  client.request(MessageType::cancel_job, {{"job", long_job}});
  CHECK(wait_for(client, long_job, "cancelled", 10000ms) == "cancelled");
  CHECK_THROWS_AS(client.request(MessageType::cancel_job, {{"job", long_job}}), Error);
  // Retry puts it back in the queue.
  client.request(MessageType::retry_job, {{"job", queued}});
  CHECK(wait_for(client, queued, "succeeded") == "succeeded");
}

TEST_CASE("a worker killed with SIGKILL interrupts its job, which is requeued and runs again",
          "[service][ipc]") {
  TempDir home;
  TestServer server(home.path(), /*max_attempts=*/2);
  Client client(server.endpoint());
  int64_t id = submit(client, make_dataset_job(home / "big", 20000));
  REQUIRE(wait_for(client, id, "running") == "running");
  auto pid = client.request(MessageType::get_job, {{"job", id}})["job"]["worker_pid"].get<int64_t>();
  REQUIRE(pid > 0);
  ::kill(static_cast<pid_t>(pid), SIGKILL);
  // interrupted -> queued -> starting -> running with a second attempt
  auto deadline = std::chrono::steady_clock::now() + 20s;
  int attempts = 1;
  while (std::chrono::steady_clock::now() < deadline && attempts < 2) {
    attempts = client.request(MessageType::get_job, {{"job", id}})["job"]["attempts"];
    std::this_thread::sleep_for(100ms);
  }
  CHECK(attempts == 2);
  CHECK(wait_for(client, id, "running") == "running");
  bool saw_interrupted = false;
  auto events = client.request(MessageType::get_job, {{"job", id}})["events"];
  for (const auto& e : events)
    if (e["type"] == "state" && e["payload"].dump().find("interrupted") != std::string::npos)
      saw_interrupted = true;
  CHECK(saw_interrupted);
  client.request(MessageType::cancel_job, {{"job", id}, {"force", true}});
  CHECK(wait_for(client, id, "cancelled", 10000ms) == "cancelled");
}

TEST_CASE("bad requests get error replies and the server carries on", "[service][ipc]") {
  TempDir home;
  TestServer server(home.path());
  Client client(server.endpoint());
  try {
    client.request(MessageType::get_job, {{"job", 999}});
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::not_found);
  }
  CHECK_THROWS_AS(client.request(MessageType::submit_job, {{"kind", "train"}}), Error);

  // Raw garbage and a wrong version on a bare socket.
  zmq::context_t ctx;
  zmq::socket_t raw(ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect(server.endpoint());
  const std::string http = "GET / HTTP/1.1";
  std::vector<zmq::const_buffer> garbage = {zmq::buffer(http)};
  zmq::send_multipart(raw, garbage);
  auto reply = protocol::receive(raw, 0, 2000ms);
  REQUIRE(reply);
  REQUIRE(std::holds_alternative<protocol::Message>(reply->content));
  CHECK(std::get<protocol::Message>(reply->content).header["code"] == "bad_magic");
  std::vector<std::string> old = {"MUGV", "0", "hello", "{\"role\": \"client\", \"version\": 0}"};
  std::vector<zmq::const_buffer> old_frames;
  for (const auto& f : old) old_frames.emplace_back(f.data(), f.size());
  zmq::send_multipart(raw, old_frames);
  reply = protocol::receive(raw, 0, 2000ms);
  REQUIRE(reply);
  CHECK(std::get<protocol::Message>(reply->content).header["code"] == "version_mismatch");
  // A request before hello is refused.
  protocol::Message list;
  list.type = MessageType::list_jobs;
  protocol::send(raw, {}, list);
  reply = protocol::receive(raw, 0, 2000ms);
  REQUIRE(reply);
  CHECK(std::get<protocol::Message>(reply->content).type == MessageType::error);
  // A submit_job whose params nest 60,000 arrays (120 KB) is refused with a reason; the server carries on.
  const std::string deep =
      "{\"kind\": \"import\", \"params\": " + std::string(60000, '[') + std::string(60000, ']') + "}";
  std::vector<std::string> nested = {"MUGV", "1", "submit_job", deep};
  std::vector<zmq::const_buffer> nested_frames;
  for (const auto& f : nested) nested_frames.emplace_back(f.data(), f.size());
  zmq::send_multipart(raw, nested_frames);
  reply = protocol::receive(raw, 0, 2000ms);
  REQUIRE(reply);
  CHECK(std::get<protocol::Message>(reply->content).header["code"] == "too_large");

  CHECK(client.request(MessageType::list_jobs)["jobs"].empty());
}

TEST_CASE("list_runs lists run folders in one record shape and honours limit and offset", "[service][ipc]") {
  TempDir home;
  ::setenv("MUGV_HOME", home.path().c_str(), 1);
  for (const std::string name : {"a-vae", "b-dit", "c-dit"}) {
    const RunPaths paths = run_paths(name);
    fs::create_directories(paths.root);
    const bool vae = name == "a-vae";
    write_run_manifest(paths, {name, vae ? RunLayoutKind::vae : RunLayoutKind::dit, "tiny", "shapes",
                               vae ? "" : "a-vae", nlohmann::json::object()});
  }
  fs::create_directories(run_paths("damaged").root);
  test::write_bytes(run_paths("damaged").manifest(), "{ not json");
  TestServer server(home.path());
  Client client(server.endpoint());

  const auto all = client.request(MessageType::list_runs);
  CHECK(all["total"] == 3);  // the damaged folder is skipped
  REQUIRE(all["runs"].size() == 3);
  std::set<std::string> keys;
  for (const auto& [key, value] : all["runs"][0].items()) keys.insert(key);
  for (const auto& run : all["runs"]) {
    std::set<std::string> these;
    for (const auto& [key, value] : run.items()) these.insert(key);
    CHECK(these == keys);
  }
  CHECK(keys.count("vae_run") == 1);
  CHECK(keys.count("state") == 1);
  CHECK(all["runs"][1]["vae_run"] == "a-vae");
  CHECK(all["runs"][0]["vae_run"].is_null());

  const auto page = client.request(MessageType::list_runs, {{"limit", 1}, {"offset", 1}});
  CHECK(page["total"] == 3);
  REQUIRE(page["runs"].size() == 1);
  CHECK(page["runs"][0]["name"] == "b-dit");
}

TEST_CASE("list_presets answers with the presets the server's jobs use: its users' own and broken files too",
          "[service][ipc]") {
  TempDir home;
  ::setenv("MUGV_HOME", home.path().c_str(), 1);
  fs::create_directories(home / "presets" / "curricula");
  fs::create_directories(home / "presets" / "models");
  test::write_bytes(
      home / "presets" / "curricula" / "quick.toml",
      "description = \"two stages\"\n[[stage]]\nuntil = 10\nimage_share = 0.5\n[[stage]]\nuntil = 20\n");
  test::write_bytes(home / "presets" / "models" / "wide.toml", "inherits = \"tiny\"\n[dit]\nhidden = 96\n");
  test::write_bytes(home / "presets" / "models" / "broken.toml", "[dit\n");
  TestServer server(home.path());
  Client client(server.endpoint());

  const auto curricula = client.request(MessageType::list_presets, {{"kind", "curricula"}});
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& p : curricula["presets"]) by_name[p["name"].get<std::string>()] = p;
  REQUIRE(by_name.count("quick") == 1);
  CHECK(by_name.count("tiny") == 1);  // the installed ones beside the user's
  CHECK(by_name.count("mugv") == 1);
  CHECK(by_name["quick"]["location"] == "user");
  CHECK(by_name["quick"]["description"] == "two stages");
  CHECK(by_name["quick"]["values"]["stage"].size() == 2);
  CHECK(curricula["user_dir"] == (home / "presets").string());

  const auto models = client.request(MessageType::list_presets, {{"kind", "models"}});
  by_name.clear();
  for (const auto& p : models["presets"]) by_name[p["name"].get<std::string>()] = p;
  CHECK(by_name["wide"]["values"]["dit"]["hidden"] == 96);
  CHECK(by_name["wide"]["values"]["dit"]["depth"] == by_name["tiny"]["values"]["dit"]["depth"]);  // inherited
  CHECK_THAT(by_name["broken"].value("problem", ""), Catch::Contains("broken.toml"));
  CHECK_FALSE(by_name["broken"].contains("values"));

  // No kind: every kind the server has.
  std::set<std::string> kinds;
  const auto every = client.request(MessageType::list_presets);  // named: a temporary's member would dangle
  for (const auto& p : every["presets"]) kinds.insert(p["kind"]);
  for (const char* kind : {"curation", "curricula", "models", "train", "vocabularies"})
    CHECK(kinds.count(kind) == 1);
  try {
    client.request(MessageType::list_presets, {{"kind", "../keys"}});
    FAIL("a kind that is no name must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::invalid_argument);
  }

  // The CLI asks the same request: `mugv --server EP presets [KIND]`.
  const auto listed = test::run_mugv_cli("--server " + server.endpoint() + " presets curricula", home.path());
  const auto as_json =
      test::run_mugv_cli("--server " + server.endpoint() + " presets --json models", home.path());
  if (as_json) {
    REQUIRE(as_json->exit_code == 0);
    std::set<std::string> kinds_listed;
    for (const auto& p : nlohmann::json::parse(as_json->out)) kinds_listed.insert(p["kind"]);
    CHECK(kinds_listed == std::set<std::string>{"models"});
  }
  if (listed) {
    CHECK(listed->exit_code == 0);
    CHECK_THAT(listed->out, Catch::Contains("quick"));
    CHECK_THAT(listed->out, Catch::Contains("two stages"));
    CHECK_THAT(listed->out, Catch::Contains("user"));
  }
}

TEST_CASE("one server per home: a second one is refused, naming the first", "[service][ipc]") {
  TempDir home;
  TestServer first(home.path());
  ServerOptions o;
  o.home = home.path();
  o.listen = {"ipc://" + (home / "sock" / "second.sock").string()};
  o.worker_executable = test::binary_dir() / "bin" / "mugv-worker";
  Server second(o);
  try {
    second.run(CancelToken());
    FAIL("a second server on the same home must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK_THAT(e.message(), Catch::Contains("a server already runs for this home"));
    CHECK_THAT(e.message(), Catch::Contains(first.endpoint()));
  }
  Client client(first.endpoint());
  CHECK(client.request(MessageType::list_jobs)["jobs"].empty());
}

TEST_CASE("queued jobs survive a server restart and running workers are adopted by the next server",
          "[service][ipc]") {
  TempDir home;
  int64_t blocker = 0, id = 0;
  {
    TestServer first(home.path(), 3, /*max_jobs=*/1);
    Client client(first.endpoint());
    blocker = submit(client, make_dataset_job(home / "big", 20000));
    id = submit(client, make_dataset_job(home / "small", 2));
    REQUIRE(wait_for(client, blocker, "running") == "running");
    first.keep_workers_on_exit();
    first.stop();  // the blocker's worker keeps running without a server
  }
  TestServer second(home.path());
  Client client(second.endpoint());
  CHECK(state_of(client, id) == "queued");
  CHECK(state_of(client, blocker) == "running");
  CHECK(client.request(MessageType::get_job, {{"job", blocker}})["job"]["attempts"] ==
        1);                             // adopted, not restarted
  std::this_thread::sleep_for(1000ms);  // the worker reconnects and its heartbeats reach the new server
  client.request(MessageType::cancel_job, {{"job", blocker}});
  CHECK(wait_for(client, blocker, "cancelled", 15000ms) == "cancelled");
  CHECK(wait_for(client, id, "succeeded") == "succeeded");
}

TEST_CASE("an unreachable server is a clear timeout", "[service][ipc]") {
  TempDir home;
  try {
    Client client("ipc://" + (home / "nobody.sock").string(), 300ms);
    FAIL("expected a timeout");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::timeout);
    CHECK(std::string(e.what()).find("nobody.sock") != std::string::npos);
  }
}

namespace {

// A bare DEALER posing as a worker: says hello for `job` with `token` and returns the server's answer.
protocol::Message hello_as_worker(zmq::socket_t& raw, int64_t job, const std::string& token) {
  protocol::Message hello;
  hello.type = MessageType::hello;
  hello.header = {{"role", "worker"}, {"version", protocol::kVersion}, {"job", job}, {"token", token}};
  protocol::send(raw, {}, hello);
  auto reply = protocol::receive(raw, 0, 3000ms);
  REQUIRE(reply);
  REQUIRE(std::holds_alternative<protocol::Message>(reply->content));
  return std::get<protocol::Message>(reply->content);
}

std::string read_token(const fs::path& home, int64_t job) {
  std::ifstream in(home / "jobs" / std::to_string(job) / "worker.token");
  std::string token;
  in >> token;
  return token;
}

}  // namespace

TEST_CASE("a client posing as a job's worker is refused: it cannot take the job's cancel or finish it",
          "[service][ipc]") {
  TempDir home;
  TestServer server(home.path());
  Client client(server.endpoint());
  const int64_t id = submit(client, make_dataset_job(home / "big", 20000));
  REQUIRE(wait_for(client, id, "running") == "running");
  const std::string token = read_token(home.path(), id);
  CHECK(token.size() == 64);
  CHECK((fs::status(home / "jobs" / std::to_string(id) / "worker.token").permissions() &
         fs::perms::others_read) == fs::perms::none);

  zmq::context_t ctx;
  zmq::socket_t raw(ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect(server.endpoint());
  for (const std::string& wrong : {std::string(), std::string(64, '0'), token.substr(0, 63)}) {
    const auto reply = hello_as_worker(raw, id, wrong);
    CHECK(reply.type == MessageType::error);
    CHECK(reply.header["code"] == "superseded");
  }
  // Unbound, its heartbeat and its claim that the job succeeded are refused too.
  protocol::Message finished;
  finished.type = MessageType::job_finished;
  finished.header = {{"job", id}, {"state", "succeeded"}};
  protocol::send(raw, {}, finished);
  auto reply = protocol::receive(raw, 0, 3000ms);
  REQUIRE(reply);
  CHECK(std::get<protocol::Message>(reply->content).type == MessageType::error);

  // The real worker still holds the job: it gets the cancel and the job ends cancelled, not succeeded.
  client.request(MessageType::cancel_job, {{"job", id}});
  CHECK(wait_for(client, id, "cancelled", 15000ms) == "cancelled");
}

TEST_CASE("a worker of an earlier attempt is fenced off: its hello and its result file are refused",
          "[service][ipc]") {
  TempDir home;
  TestServer server(home.path(), /*max_attempts=*/2);
  Client client(server.endpoint());
  const int64_t id = submit(client, make_dataset_job(home / "big", 20000));
  REQUIRE(wait_for(client, id, "running") == "running");
  const std::string first_token = read_token(home.path(), id);
  auto pid = client.request(MessageType::get_job, {{"job", id}})["job"]["worker_pid"].get<int64_t>();
  ::kill(static_cast<pid_t>(pid), SIGKILL);
  REQUIRE(test::wait_until(
      [&] {
        return client.request(MessageType::get_job, {{"job", id}})["job"]["attempts"] == 2;
      },
      20000ms));
  REQUIRE(wait_for(client, id, "running") == "running");
  const std::string second_token = read_token(home.path(), id);
  CHECK(second_token != first_token);

  // The first attempt's worker, slow to start, finally says hello: it must stop, not run the job again.
  zmq::context_t ctx;
  zmq::socket_t raw(ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect(server.endpoint());
  const auto reply = hello_as_worker(raw, id, first_token);
  CHECK(reply.type == MessageType::error);
  CHECK(reply.header["code"] == "superseded");

  // Its result file, stamped with the old token, does not decide the job when the current worker dies.
  write_json_atomic(home / "jobs" / std::to_string(id) / "result.json",
                    {{"state", "succeeded"}, {"worker_token", first_token}});
  pid = client.request(MessageType::get_job, {{"job", id}})["job"]["worker_pid"].get<int64_t>();
  ::kill(static_cast<pid_t>(pid), SIGKILL);
  CHECK(wait_for(client, id, "interrupted", 15000ms) == "interrupted");  // no attempts left; not succeeded
}

TEST_CASE("a job log of megabytes on one line, or not UTF-8, still comes back: its tail, marked truncated",
          "[service][ipc]") {
  TempDir home;
  TestServer server(home.path());
  Client client(server.endpoint());
  const int64_t id = submit(client, make_dataset_job(home / "small", 2));
  REQUIRE(wait_for(client, id, "succeeded") == "succeeded");
  {
    std::ofstream log(home / "jobs" / std::to_string(id) / "log.txt", std::ios::app);
    for (int i = 0; i < 200000; ++i) log << "\r\x1b[2Kstep " << i << " \xff\xfe";  // a redrawn bar, ~3 MB
    log << "\nlast line\n";
  }
  const auto reply = client.request(MessageType::job_logs, {{"job", id}, {"tail_lines", 100}});
  CHECK(reply["truncated"] == true);
  const std::string text = reply["text"];
  CHECK(text.size() <= 3 * 128 * 1024);
  CHECK(text.find("last line") != std::string::npos);
  CHECK(text.find("step 199999") != std::string::npos);
  CHECK(client.request(MessageType::job_logs, {{"job", id}, {"tail_lines", 1}})["truncated"] == false);
}

TEST_CASE("a job with more events than one reply holds is read page by page", "[service][ipc]") {
  TempDir home;
  TestServer server(home.path());
  Client client(server.endpoint());
  const int64_t id = submit(client, make_dataset_job(home / "small", 2));
  REQUIRE(wait_for(client, id, "succeeded") == "succeeded");
  {
    // A long training run's worth of metrics: 6,000 events of ~400 bytes (2.4 MB, more than a header holds).
    Catalog catalog = Catalog::open(home / "catalog.sqlite");
    for (int step = 1; step <= 6000; ++step)
      (void)append_job_event(
          catalog, id, "metrics",
          {{"step", step}, {"values", {{"loss", 1.0 / step}, {"note", std::string(350, 'x')}}}});
  }
  const auto first = client.request(MessageType::get_job, {{"job", id}, {"types", {"metrics"}}});
  CHECK(first["more"] == true);
  CHECK(first["events"].size() < 6000);
  CHECK(first["events"][0]["payload"]["step"] == 1);
  const auto all = get_job_with_events(client, id, {"metrics"});
  REQUIRE(all["events"].size() == 6000);
  for (size_t i = 0; i < 6000; ++i) CHECK(all["events"][i]["payload"]["step"] == int64_t(i + 1));
  CHECK(all["job"]["id"] == id);
  const auto limited = client.request(MessageType::get_job, {{"job", id}, {"limit", 10}});
  CHECK(limited["events"].size() == 10);
  CHECK(limited["more"] == true);
  // Every stored event, of any type, also arrives whole.
  CHECK(get_job_with_events(client, id)["events"].size() > 6000);
}

TEST_CASE(
    "the reply pool runs closures off the caller's thread, refuses beyond its bound, turns throws into "
    "errors",
    "[unit][service]") {
  ReplyPool pool(1, 2);
  std::mutex gate;
  std::unique_lock<std::mutex> held(gate);
  CHECK(pool.submit({"a"}, [&] {
    std::lock_guard<std::mutex> wait(gate);
    return protocol::make_ok({{"n", 1}});
  }));
  CHECK(pool.submit({"b"}, []() -> protocol::Message { throw Error(ErrorCode::corrupt, "x.mp4", "bad"); }));
  CHECK_FALSE(pool.submit({"c"}, [] { return protocol::make_ok(); }));  // two already waiting or running
  held.unlock();
  std::map<std::string, protocol::Message> replies;
  REQUIRE(test::wait_until(
      [&] {
        pool.drain([&](const std::vector<std::string>& envelope, const protocol::Message& reply) {
          replies[envelope.at(0)] = reply;
        });
        return replies.size() == 2;
      },
      5000ms));
  CHECK(replies["a"].header["n"] == 1);
  CHECK(replies["b"].type == MessageType::error);
  CHECK(replies["b"].header["code"] == "corrupt");
  CHECK(pool.pending() == 0);
}

TEST_CASE("large clip_frames requests decode off the server's thread: other requests are answered meanwhile",
          "[service][ipc]") {
  TempDir home;
  TestServer server(home.path());
  Client client(server.endpoint());
  // Rendering and decoding run ~8x slower under the sanitizers: a quarter of the pixels there still keeps the
  // six decodes busy for seconds, which is all the test needs.
#if defined(__SANITIZE_ADDRESS__)
  constexpr int kSide = 256;
#else
  constexpr int kSide = 512;
#endif
  nlohmann::json big = make_dataset_job(home / "big", 1);
  big["params"]["values"]["dataset.size"] = kSide;
  big["params"]["values"]["dataset.frames"] = 65;
  REQUIRE(wait_for(client, submit(client, big), "succeeded", 240000ms) == "succeeded");
  const nlohmann::json import = {{"kind", "import"},
                                 {"params",
                                  {{"command", {"dataset", "import"}},
                                   {"values", {{"dataset.name", "big"}}},
                                   {"positional", {(home / "big" / "train").string()}}}}};
  REQUIRE(wait_for(client, submit(client, import), "succeeded") == "succeeded");

  // Six players ask for 64 frames each at once (seconds of decoding in all).
  zmq::context_t ctx;
  std::vector<zmq::socket_t> players;
  for (int i = 0; i < 6; ++i) {
    players.emplace_back(ctx, zmq::socket_type::dealer);
    players.back().set(zmq::sockopt::linger, 0);
    players.back().connect(server.endpoint());
    protocol::Message hello;
    hello.type = MessageType::hello;
    hello.header = {{"role", "client"}, {"version", protocol::kVersion}};
    protocol::send(players.back(), {}, hello);
    REQUIRE(protocol::receive(players.back(), 0, 3000ms));
  }
  const auto started = std::chrono::steady_clock::now();
  for (auto& p : players) {
    protocol::Message frames;
    frames.type = MessageType::clip_frames;
    frames.header = {{"clip", 1}, {"count", 64}, {"max_side", kSide}};
    protocol::send(p, {}, frames);
  }
  // Meanwhile the server answers at once, every time.
  std::chrono::milliseconds slowest{0};
  int answered = 0;
  std::vector<bool> got(players.size(), false);
  while (std::count(got.begin(), got.end(), true) < 6 && std::chrono::steady_clock::now() - started < 120s) {
    const auto asked = std::chrono::steady_clock::now();
    (void)client.request(MessageType::list_jobs);
    slowest = std::max(slowest, std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::steady_clock::now() - asked));
    ++answered;
    for (size_t i = 0; i < players.size(); ++i) {
      if (got[i]) continue;
      if (auto reply = protocol::receive(players[i], 0, 1ms)) {
        REQUIRE(std::holds_alternative<protocol::Message>(reply->content));
        const auto& m = std::get<protocol::Message>(reply->content);
        INFO(m.header.dump());
        CHECK(m.header["frames"] == 64);
        CHECK(m.blobs.size() == 64);
        got[i] = true;
      }
    }
  }
  const auto total =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  INFO("decoding took " << total.count() << " ms; " << answered << " requests answered meanwhile, slowest "
                        << slowest.count() << " ms");
  CHECK(std::count(got.begin(), got.end(), true) == 6);
  // Decoded on the server's thread, a request sent with the six would wait for all of them (slowest ≈
  // total); off it, a request waits for no decode, only for a share of the CPU.
  CHECK(slowest * 2 < total);
}

TEST_CASE(
    "the labelling queue: pending pairs listed, their videos' frames served, labelled and undone; "
    "post-trained runs name their stage",
    "[service][ipc]") {
  TempDir home;
  ::setenv("MUGV_HOME", home.path().c_str(), 1);
  {
    const RunPaths paths = run_paths("dpo-run");
    fs::create_directories(paths.root);
    write_run_manifest(paths, {"dpo-run",
                               RunLayoutKind::dit,
                               "tiny",
                               "",
                               "vae",
                               {{"base", {{"run", "demo"}, {"step", 400}, {"weights", "ema"}}},
                                {"train", {{"objective", "dpo"}, {"from", "demo"}}}}});
  }
  TestServer server(home.path());
  Client client(server.endpoint());
  REQUIRE(wait_for(client, submit(client, make_dataset_job(home / "clips", 2)), "succeeded") == "succeeded");
  int64_t pair_id = 0;
  int64_t first = 0;
  {
    Catalog catalog = Catalog::open(home / "catalog.sqlite");
    std::vector<int64_t> ids;
    for (int i = 0; i < 2; ++i) {
      Generation g;
      g.prompt_text = "a red circle moving left on a black background";
      g.seed = uint64_t(i);
      g.steps = 2;
      g.cfg_scale = 4;
      g.width = g.height = 32;
      g.frames = 9;
      g.output_path = home / "clips" / "train" / cat("shape_0000", i, ".mp4");
      g.settings = {{"fps", 8.0}};
      ids.push_back(add_generation(catalog, g).id);
    }
    first = ids[0];
    pair_id = add_preference_pair(catalog, ids[0], ids[1]).id;
  }
  const auto queue = client.request(MessageType::list_preferences);
  REQUIRE(queue["pairs"].size() == 1);
  CHECK(queue["pairs"][0]["id"] == pair_id);
  CHECK(queue["pairs"][0]["a"] == first);
  CHECK(queue["counts"]["pending"] == 1);

  std::vector<std::string> blobs;
  const auto frames = client.request(MessageType::generation_frames,
                                     {{"generation", first}, {"count", 4}, {"max_side", 32}}, &blobs);
  CHECK(frames["generation"] == first);
  CHECK(frames["width"] == 32);
  CHECK(blobs.size() == 4);
  CHECK(blobs[0].size() == 32 * 32 * 3);

  client.request(MessageType::label_preference, {{"id", pair_id}, {"choice", "b"}});
  CHECK(client.request(MessageType::list_preferences)["pairs"].empty());
  const auto undone = client.request(MessageType::label_preference, {{"undo", true}});
  CHECK(undone["id"] == pair_id);
  CHECK(undone["pair"]["a"] == first);
  CHECK(client.request(MessageType::list_preferences)["counts"]["pending"] == 1);
  CHECK_THROWS_WITH(client.request(MessageType::label_preference, {{"id", pair_id}, {"choice", "maybe"}}),
                    Catch::Contains("choice"));
  CHECK_THROWS_WITH(client.request(MessageType::generation_frames, {{"generation", 999}}),
                    Catch::Contains("generation 999"));

  const auto runs = client.request(MessageType::list_runs);
  REQUIRE(runs["runs"].size() == 1);
  const auto lineage = runs["runs"][0]["lineage"]["post_trained_from"];
  CHECK(lineage["run"] == "demo");
  CHECK(lineage["stage"] == "dpo");
}

TEST_CASE("the real mugv serve checks its machine: mugv doctor's findings for its own home",
          "[service][ipc]") {
  TempDir home;
  test::ServeProcess serve(home.path());
  Client client(serve.endpoint(), 60000ms);
  const nlohmann::json reply = client.request(MessageType::check_machine, nlohmann::json::object());
  REQUIRE(reply["checks"].is_array());
  std::map<std::string, nlohmann::json> checks;
  for (const auto& c : reply["checks"]) checks[c["check"].get<std::string>()] = c;
  REQUIRE(checks.count("home"));
  CHECK(checks["home"]["status"] != "fail");  // "warn" on a disk with under 10 GiB free
  CHECK_THAT(checks["home"]["detail"].get<std::string>(), Catch::Contains(home.path().string()));
  CHECK(checks.count("ffmpeg"));
  CHECK(reply["failures"] == 0);
  // The server goes on answering while the check runs on its reply pool, and after.
  CHECK(client.request(MessageType::list_jobs, {{"limit", 1}})["jobs"].is_array());
  // The same from the command line: `mugv --server EP doctor`.
  const auto remote = test::run_mugv_cli("--server " + serve.endpoint() + " doctor", home.path());
  REQUIRE(remote);
  CHECK(remote->exit_code == 0);
  CHECK_THAT(remote->out, Catch::Contains(" home ") && Catch::Contains(home.path().string()) &&
                              Catch::Contains("0 failures"));
}

TEST_CASE(
    "the real mugv serve describes the commands it runs as jobs, with the registry's bounds and defaults",
    "[service][ipc]") {
  TempDir home;
  test::ServeProcess serve(home.path());
  Client client(serve.endpoint(), 5000ms);
  const nlohmann::json reply = client.request(MessageType::list_commands, nlohmann::json::object());
  const nlohmann::json& commands = reply["commands"];
  REQUIRE(commands.is_array());
  auto find_command = [&](const std::vector<std::string>& words) -> const nlohmann::json* {
    for (const auto& c : commands)
      if (c["command"] == words) return &c;
    return nullptr;
  };
  auto find_param = [](const nlohmann::json& command, const std::string& flag) -> const nlohmann::json* {
    for (const auto& p : command["params"])
      if (p["flag"] == flag) return &p;
    return nullptr;
  };
  for (const auto& c : commands) CHECK(!c["job_kind"].get<std::string>().empty());  // jobs only
  CHECK(find_command({"serve"}) == nullptr);
  const nlohmann::json* make = find_command({"make-dataset"});
  REQUIRE(make != nullptr);
  CHECK((*make)["job_kind"] == "make_dataset");
  const nlohmann::json* frames = find_param(*make, "--frames");
  REQUIRE(frames != nullptr);
  CHECK((*frames)["type"] == "integer");
  CHECK((*frames)["default"] == 17);
  CHECK(!(*frames)["help"].get<std::string>().empty());
#ifdef MUGV_WITH_TORCH
  // The studio's Generate page once capped CFG at 30 while the command line took any scale: both now read
  // this.
  const nlohmann::json* generate = find_command({"generate"});
  REQUIRE(generate != nullptr);
  const nlohmann::json* cfg = find_param(*generate, "--cfg");
  REQUIRE(cfg != nullptr);
  CHECK((*cfg)["min"] == 0.0);
  CHECK((*cfg)["max"].is_null());
  const nlohmann::json* steps = find_param(*generate, "--steps");
  REQUIRE(steps != nullptr);
  CHECK((*steps)["max"] == 1000.0);
#endif
}

TEST_CASE("list_datasets reports each dataset's latent caches by encoder with their entry counts",
          "[service][ipc]") {
  TempDir home;
  {
    Catalog catalog = Catalog::open(home / "catalog.sqlite");
    (void)create_dataset(catalog, {0, "shapes", DatasetKind::video, home / "shapes", "", 0});
    (void)create_dataset(catalog, {0, "bare", DatasetKind::video, home / "bare", "", 0});
  }
  const fs::path caches = home / "datasets" / "shapes" / "cache";
  fs::create_directories(caches / "vae0");
  fs::create_directories(caches / "empty");
  for (const char* name : {"clip-1.safetensors", "clip-2.safetensors", "notes.txt", "clip-3.safetensors.tmp"})
    test::write_bytes(caches / "vae0" / name, "x");  // entries are counted by name, never read
  TestServer server(home.path());
  Client client(server.endpoint());
  std::map<std::string, nlohmann::json> by_name;
  const nlohmann::json reply = client.request(MessageType::list_datasets);
  for (const auto& d : reply["datasets"]) by_name[d["name"].get<std::string>()] = d;
  REQUIRE(by_name.size() == 2);
  CHECK(by_name["shapes"]["latent_caches"] == nlohmann::json{{"empty", 0}, {"vae0", 2}});
  CHECK(by_name["bare"]["latent_caches"] == nlohmann::json::object());
}
