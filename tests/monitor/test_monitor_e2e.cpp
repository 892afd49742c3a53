// The monitor against a real `mugv serve` from this build (its own process, ipc socket, temporary home)
// running a real make-dataset job in a worker: the network thread's view of it, and the mugv-monitor
// program itself under Xvfb (screenshot + --dump-state), plus its command-line and unreachable-server paths.
#include "catalog/catalog.h"
#include "catalog/jobs.h"
#include "core/error.h"
#include "media/image.h"
#include "network.h"
#include "service/client.h"
#include "service/curve_keys.h"
#include "support/sample_runs.h"
#include "support/serve_process.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <csignal>

#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

extern char** environ;

using namespace mugv;
using namespace std::chrono_literals;
using mugv::test::TempDir;
using protocol::MessageType;
namespace fs = std::filesystem;

namespace {

fs::path program(const std::string& name) {
  return test::binary_dir() / "bin" / name;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A child process with stdout / stderr in files; killed (SIGTERM, then SIGKILL) if still running at the end.
class Process {
 public:
  // `env`: NAME=VALUE entries that replace (or, with an empty VALUE, remove) the variable in this
  // environment.
  Process(const std::vector<std::string>& argv, const fs::path& out, const fs::path& err,
          const std::vector<std::string>& env = {}) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<std::string> vars;
    for (char** e = environ; *e; ++e) {
      std::string var = *e;
      bool replaced = false;
      for (const auto& v : env) replaced |= var.compare(0, v.find('=') + 1, v, 0, v.find('=') + 1) == 0;
      if (!replaced) vars.push_back(var);
    }
    for (const auto& v : env)
      if (v.back() != '=') vars.push_back(v);
    std::vector<char*> envp;
    for (auto& v : vars) envp.push_back(v.data());
    envp.push_back(nullptr);
    int rc = posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw Error(ErrorCode::io, argv[0], "cannot start");
  }
  ~Process() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    if (!wait(10s)) {
      ::kill(pid_, SIGKILL);
      (void)wait(5s);
    }
  }
  // The exit code (128 + signal when killed), or nullopt when still running after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(20ms);
    }
    return code_;
  }

 private:
  pid_t pid_ = -1;
  int code_ = -1;
};

struct Run {
  int code = -1;
  std::string out, err;
};

Run run(const std::vector<std::string>& argv, const fs::path& dir, std::chrono::milliseconds timeout = 60s,
        const std::vector<std::string>& env = {}) {
  Process p(argv, dir / "run.out", dir / "run.err", env);
  auto code = p.wait(timeout);
  Run r;
  r.code = code.value_or(-1);
  r.out = read_file(dir / "run.out");
  r.err = read_file(dir / "run.err");
  if (!code) WARN(argv[0] << " did not finish within " << timeout.count() << " ms");
  return r;
}

int64_t submit_make_dataset(Client& c, const fs::path& out, int count = 6) {
  nlohmann::json job = {{"kind", "make_dataset"}, {"params", test::make_dataset_params(out, count)}};
  return c.request(MessageType::submit_job, job)["job"]["id"].get<int64_t>();
}

std::string wait_for_end(Client& c, int64_t id, std::chrono::milliseconds timeout = 60s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string state;
  while (std::chrono::steady_clock::now() < deadline) {
    state = c.request(MessageType::get_job, {{"job", id}})["job"]["state"].get<std::string>();
    if (state == "succeeded" || state == "failed" || state == "cancelled") break;
    std::this_thread::sleep_for(100ms);
  }
  return state;
}

// How mugv-monitor gets a display here: the one we have, else a private Xvfb; nullopt when neither exists.
std::optional<std::vector<std::string>> display_prefix() {
  if (const char* d = std::getenv("DISPLAY"); d && *d) return std::vector<std::string>{};
  for (const char* dir : {"/usr/bin", "/bin", "/usr/local/bin"})
    if (fs::exists(fs::path(dir) / "xvfb-run"))
      return std::vector<std::string>{(fs::path(dir) / "xvfb-run").string(), "-a", "-s",
                                      "-screen 0 1280x800x24"};
  return std::nullopt;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

TEST_CASE(
    "mugv-monitor attaches to a tcp:// server with CURVE keys, and a refused key names the command that "
    "authorises it",
    "[monitor][cli][security]") {
  TempDir home("mugv-monitor-curve");
  const std::vector<std::string> env = {"MUGV_HOME=" + home.path().string(),
                                        "MUGV_SERVER_KEY=", "DISPLAY=:9731", "WAYLAND_DISPLAY="};
  const std::string mugv = program("mugv").string(), monitor = program("mugv-monitor").string();
  REQUIRE(run({mugv, "keys", "generate"}, home.path(), 30s, env).code == 0);
  REQUIRE(
      run({mugv, "keys", "generate", "--client", "--out", (home / "allowed").string()}, home.path(), 30s, env)
          .code == 0);
  REQUIRE(run({mugv, "keys", "generate", "--client", "--out", (home / "stranger").string()}, home.path(), 30s,
              env)
              .code == 0);
  REQUIRE(run({mugv, "keys", "authorize", (home / "allowed" / "client.pub").string()}, home.path(), 30s, env)
              .code == 0);
  const std::string server_pub = (home / "keys" / "server.pub").string();
  const std::string stranger = trimmed(read_file(home / "stranger" / "client.pub"));
  REQUIRE(stranger.size() == kCurveKeyZ85Chars);

  const int port = test::free_tcp_port_pair();
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(port);
  Process serve(
      {mugv, "serve", "--listen", endpoint, "--home", home.path().string(), "--heartbeat-ms", "200"},
      home / "serve.out", home / "serve.err", env);
  CurveClientKeys keys;
  keys.server_public_key = trimmed(read_file(server_pub));
  keys.client = read_keypair(home / "allowed" / "client.key");
  bool up = false;
  for (auto deadline = std::chrono::steady_clock::now() + 20s;
       !up && std::chrono::steady_clock::now() < deadline;) {
    try {
      Client probe(endpoint, 500ms, keys);
      up = true;
    } catch (const Error&) {
      std::this_thread::sleep_for(100ms);
    }
  }
  REQUIRE(up);

  // An unauthorised key: exit 1 before any window, with the command the server's owner would run.
  Run refused = run({monitor, "--server", endpoint, "--server-key", server_pub, "--client-key",
                     (home / "stranger" / "client.key").string(), "--exit-after-ms", "500"},
                    home.path(), 30s, env);
  INFO("stderr: " << refused.err);
  CHECK(refused.code == 1);
  CHECK(refused.err.find("mugv keys authorize " + stranger) != std::string::npos);

  // The authorised key attaches; the window is what fails here (DISPLAY names no server), so attaching
  // worked.
  Run allowed = run({monitor, "--server", endpoint, "--server-key", server_pub, "--client-key",
                     (home / "allowed" / "client.key").string(), "--exit-after-ms", "500"},
                    home.path(), 30s, env);
  INFO("stderr: " << allowed.err);
  CHECK(allowed.code == 1);
  CHECK(allowed.err.find("cannot open a window") != std::string::npos);
  CHECK(allowed.err.find("authorize") == std::string::npos);

  // tcp:// without a server key is a usage error; keys on an ipc:// endpoint too.
  Run no_key = run({monitor, "--server", endpoint}, home.path(), 30s, env);
  CHECK(no_key.code == 2);
  CHECK(no_key.err.find("--server-key") != std::string::npos);
  CHECK(run({monitor, "--server", "ipc:///tmp/x.sock", "--server-key", server_pub}, home.path(), 30s, env)
            .code == 2);
}

TEST_CASE("the network thread follows a real server: job list, live events, backfilled logs",
          "[monitor][ipc]") {
  TempDir home("mugv-monitor");
  test::ServeProcess serve(home.path());
  monitor::Network network(serve.endpoint());
  std::atomic<int> wakes{0};
  network.connect([&] { ++wakes; });
  Client client(serve.endpoint());
  const int64_t id = submit_make_dataset(client, home / "shapes");
  network.select(id);
  REQUIRE(wait_for_end(client, id) == "succeeded");

  // The job's end reaches the monitor as a state event or through the next job-list poll.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  monitor::MonitorState s;
  while (std::chrono::steady_clock::now() < deadline) {
    s = network.snapshot(id);
    if (s.job(id) && s.job(id)->state == "succeeded" && s.detail(id) && !s.detail(id)->logs.empty()) break;
    std::this_thread::sleep_for(50ms);
  }
  CHECK(s.connection() == monitor::Connection::connected);
  CHECK_FALSE(s.server_version().empty());
  REQUIRE(s.job(id));
  CHECK(s.job(id)->kind == "make_dataset");
  CHECK(s.job(id)->state == "succeeded");
  CHECK(s.job(id)->fraction() == Approx(1.0));
  REQUIRE(s.detail(id));
  CHECK_FALSE(s.detail(id)->logs.empty());
  CHECK(s.events_seen() > 0);  // state / progress events arrived live, not only through polling
  CHECK(wakes > 0);
  // The quick machine check of the connection came back with the server's findings (`mugv doctor --quick`).
  deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline && !network.snapshot(0).machine_checked())
    std::this_thread::sleep_for(50ms);
  s = network.snapshot(0);
  REQUIRE(s.machine_checked());
  CHECK(s.machine_check_error().empty());
  const auto& findings = s.machine_findings();
  const auto catalog = std::find_if(findings.begin(), findings.end(),
                                    [](const monitor::MachineFinding& f) { return f.check == "catalog"; });
  REQUIRE(catalog != findings.end());
  CHECK(catalog->status == "ok");
  network.stop();
}

TEST_CASE("a training job with no live preview shows the newest sample its run rendered; other jobs none",
          "[monitor][ipc]") {
  TempDir home("mugv-monitor-samples");
  test::write_sample_run(
      home.path(), "demo",
      {{100, "older", {220, 30, 30}}, {200, "newest", {30, 200, 30}}, {200, "second", {9, 9, 9}}});
  test::ServeProcess serve(home.path());
  Client client(serve.endpoint());
  // A training job of run demo that fails at once (no such dataset), so it renders nothing itself.
  const nlohmann::json train = {
      {"kind", "train"},
      {"params",
       {{"command", {"train"}}, {"values", {{"train.run", "demo"}, {"train.dataset", "no-such-dataset"}}}}}};
  int64_t trained = 0;
  try {
    trained = client.request(MessageType::submit_job, train)["job"]["id"].get<int64_t>();
  } catch (const Error& e) {
    WARN("skipped: this server runs no training jobs (" << e.what() << ")");
    return;
  }
  REQUIRE(wait_for_end(client, trained) == "failed");
  const int64_t made = submit_make_dataset(client, home / "shapes", 2);
  REQUIRE(wait_for_end(client, made) == "succeeded");

  monitor::Network network(serve.endpoint());
  network.connect();
  auto preview_of = [&](int64_t id) {
    network.select(id);
    std::shared_ptr<const monitor::PreviewFrames> preview;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      const monitor::MonitorState s = network.snapshot(id);
      const monitor::JobDetail* d = s.detail(id);
      if (d && d->preview) return d->preview;
      if (d && !d->logs.empty() && id == made) break;  // backfilled, and no sample came with it
      std::this_thread::sleep_for(50ms);
    }
    return preview;
  };
  const auto preview = preview_of(trained);
  REQUIRE(preview);
  CHECK(preview->run == "demo");
  CHECK(preview->step == 200);
  CHECK(preview->width == test::kSampleSide);
  REQUIRE_FALSE(preview->frames.empty());
  CHECK(preview->frames.size() <= size_t(test::kSampleFrames));
  // The first video of the newest step (green), not the older step's or the second video's.
  const std::string& frame = preview->frames[0];
  const size_t centre =
      (size_t(preview->height / 2) * size_t(preview->width) + size_t(preview->width / 2)) * 3;
  CHECK(uint8_t(frame[centre + 1]) > 150);
  CHECK(uint8_t(frame[centre]) < 90);
  CHECK_FALSE(preview_of(made));  // a job that writes no run has no preview
  network.stop();
}

TEST_CASE("the network thread reports a lost server and attaches again when it is back", "[monitor][ipc]") {
  TempDir home("mugv-monitor-restart");
  auto serve = std::make_unique<test::ServeProcess>(home.path());
  const std::string endpoint = serve->endpoint();
  monitor::Network network(endpoint, 1000ms);
  network.connect();
  auto wait_until = [&](auto done, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done(network.snapshot(0))) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  };
  {
    Client client(endpoint);
    const int64_t id = submit_make_dataset(client, home / "shapes");
    REQUIRE(wait_for_end(client, id) == "succeeded");
  }
  CHECK(wait_until([](const monitor::MonitorState& s) { return s.jobs().size() == 1; }, 5s));

  serve.reset();  // SIGTERM: the server stops
  CHECK(wait_until([](const monitor::MonitorState& s) { return s.connection() == monitor::Connection::lost; },
                   10s));
  auto lost = network.snapshot(0);
  CHECK(lost.connection_message().find("no MUG-V server answered") != std::string::npos);
  CHECK(lost.jobs().size() == 1);  // what was known stays on screen

  serve = std::make_unique<test::ServeProcess>(home.path());
  CHECK(wait_until(
      [](const monitor::MonitorState& s) { return s.connection() == monitor::Connection::connected; }, 15s));
  network.stop();
}

TEST_CASE("mugv-monitor: version, usage errors and an unreachable server", "[monitor][cli]") {
  TempDir dir("mugv-monitor-cli");
  Run v = run({program("mugv-monitor").string(), "--version"}, dir.path());
  CHECK(v.code == 0);
  CHECK(v.out.find("mugv-monitor ") == 0);

  CHECK(run({program("mugv-monitor").string()}, dir.path()).code == 2);
  Run bad = run({program("mugv-monitor").string(), "--server", "http://example"}, dir.path());
  CHECK(bad.code == 2);
  CHECK(bad.err.find("http://example") != std::string::npos);

  // Nobody listens here: exit 1 with the endpoint named, before any window is opened (no display needed).
  const std::string nowhere = "ipc://" + (dir / "nobody.sock").string();
  auto start = std::chrono::steady_clock::now();
  Run r = run({program("mugv-monitor").string(), "--server", nowhere}, dir.path());
  CHECK(r.code == 1);
  CHECK(r.err.find(nowhere) != std::string::npos);
  CHECK(r.err.find("no MUG-V server answered") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < 15s);
}

TEST_CASE("mugv-monitor without a usable display says so and exits 1", "[monitor][cli]") {
  TempDir home("mugv-monitor-nodisplay");
  test::ServeProcess serve(home.path());
  // An X display nobody serves: the server is reachable, the window is not.
  Run r = run({program("mugv-monitor").string(), "--server", serve.endpoint(), "--exit-after-ms", "500"},
              home.path(), 30s, {"DISPLAY=:9731", "WAYLAND_DISPLAY="});
  CHECK(r.code == 1);
  CHECK(r.err.find("cannot open a window with OpenGL 3.0 (DISPLAY=:9731)") != std::string::npos);
}

// What --dump-state says about the layout of the monitor's last frame, checked against the layout's promises:
// every plot at least 80 px tall and as wide as most of the detail pane, and a log pane with room for at
// least 5 lines, inside the window.
void check_layout(const nlohmann::json& layout, int width, int height, size_t plots) {
  INFO("layout: " << layout.dump());
  CHECK(layout["window"]["width"] == width);
  CHECK(layout["window"]["height"] == height);
  REQUIRE(layout["plot_heights"].size() == plots);
  REQUIRE(layout["plot_widths"].size() == plots);
  for (const auto& h : layout["plot_heights"]) CHECK(h.get<float>() >= 80.0f);
  for (const auto& w : layout["plot_widths"]) CHECK(w.get<float>() >= 0.4f * float(width));
  CHECK(layout["plots_area_height"].get<float>() >= 80.0f);
  CHECK(layout["log_visible_lines"].get<int>() >= 5);
  CHECK(layout["log_height"].get<float>() < float(height));
}

TEST_CASE("mugv-monitor renders a real server's jobs under X, writes a screenshot and dumps its state",
          "[monitor][gui][slow]") {
  auto prefix = display_prefix();
  if (!prefix) {
    WARN("skipped: no DISPLAY and no xvfb-run (install xvfb) - the monitor's window is not tested");
    return;
  }
  TempDir home("mugv-monitor-gl");
  test::ServeProcess serve(home.path());
  Client client(serve.endpoint());
  // One finished job, and one big enough to be still running while the monitor looks (it is cancelled after).
  const int64_t done = submit_make_dataset(client, home / "small");
  REQUIRE(wait_for_end(client, done) == "succeeded");
  const int64_t busy = submit_make_dataset(client, home / "big", 3000);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline &&
         client.request(MessageType::get_job, {{"job", busy}})["job"]["state"] != "running")
    std::this_thread::sleep_for(50ms);

  // Six metrics of a training job, as its worker would have reported them (the monitor backfills the
  // selected job's stored metrics): more plots than fit at the small size.
  const std::vector<std::string> metrics = {"loss", "lr", "tokens_per_s", "mfu", "grad_norm", "data_wait_ms"};
  {
    Catalog catalog = Catalog::open(home / "catalog.sqlite");
    for (int step = 1; step <= 40; ++step) {
      nlohmann::json values;
      for (size_t i = 0; i < metrics.size(); ++i) values[metrics[i]] = (i + 1) * (1.0 + 1.0 / step);
      (void)append_job_event(catalog, busy, "metrics", {{"job", busy}, {"step", step}, {"values", values}});
    }
  }

  // The default window, then a small one: the same layout rules hold at both sizes.
  auto show = [&](const fs::path& shot, const std::string& size) {
    std::vector<std::string> argv = *prefix;
    for (std::string a : {program("mugv-monitor").string(), std::string("--server"), serve.endpoint(),
                          std::string("--screenshot"), shot.string(), std::string("--exit-after-ms"),
                          std::string("3000"), std::string("--dump-state")})
      argv.push_back(a);
    if (!size.empty()) argv.insert(argv.end(), {"--window-size", size});
    return run(argv, home.path(), 90s);
  };
  const fs::path shot = home / "monitor.png", small_shot = home / "monitor-small.png";
  Run r = show(shot, "");
  Run small = show(small_shot, "720x460");
  try {
    (void)client.request(MessageType::cancel_job, {{"job", busy}, {"force", true}});
  } catch (const Error&) {
    // it finished on its own
  }
  CHECK(wait_for_end(client, busy) != "running");
  if (r.code != 0 && r.err.find("cannot open a window with OpenGL") != std::string::npos) {
    WARN("skipped: no OpenGL 3.0 context here (Xvfb / Mesa): " << r.err);
    return;
  }
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);

  // The screenshot shows something: many colours, not one flat fill.
  REQUIRE(fs::exists(shot));
  RgbFrame image = read_image(shot);
  CHECK(image.width >= 640);
  CHECK(image.height >= 400);
  std::set<uint32_t> colours;
  for (size_t i = 0; i + 2 < image.rgb.size(); i += 3)
    colours.insert(uint32_t(image.rgb[i]) << 16 | uint32_t(image.rgb[i + 1]) << 8 | image.rgb[i + 2]);
  CHECK(colours.size() > 20);
  // Kept beside the test binary for the documentation (docs/screenshots/monitor.png).
  std::error_code ec;
  fs::copy_file(shot, fs::current_path() / "monitor.png", fs::copy_options::overwrite_existing, ec);

  // The state it drew: connected, both jobs listed, the newest (running) one selected with its log
  // backfilled.
  auto json_start = r.out.find('{');
  REQUIRE(json_start != std::string::npos);
  auto state = nlohmann::json::parse(r.out.substr(json_start));
  CHECK(state["connection"] == "connected");
  CHECK(state["endpoint"] == serve.endpoint());
  CHECK(state["selected"] == busy);
  std::map<int64_t, nlohmann::json> jobs;
  for (const auto& j : state["jobs"]) jobs[j["id"].get<int64_t>()] = j;
  REQUIRE(jobs.count(done));
  REQUIRE(jobs.count(busy));
  CHECK(jobs[done]["kind"] == "make_dataset");
  CHECK(jobs[done]["state"] == "succeeded");
  CHECK(jobs[done]["progress"] == 1.0);
  CHECK(jobs[busy].value("log_lines", 0) > 0);
  if (jobs[busy]["state"] == "running") {
    CHECK(jobs[busy]["total"].get<int64_t>() > 0);  // progress events reached the table
    CHECK(jobs[busy]["done"].get<int64_t>() > 0);
  }

  // The plots and the log share the window at the default size and at a small one.
  check_layout(state["layout"], 1280, 800, metrics.size());
  INFO("stderr (small window): " << small.err);
  REQUIRE(small.code == 0);
  const auto small_state = nlohmann::json::parse(small.out.substr(small.out.find('{')));
  CHECK(small_state["selected"] == busy);
  check_layout(small_state["layout"], 720, 460, metrics.size());
  CHECK(read_image(small_shot).height == 460);
}
