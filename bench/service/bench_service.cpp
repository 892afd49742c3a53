// How the service holds up under load, on the real server (in this process, on an ipc socket in a
// scratch $MUGV_HOME) with real worker processes: the server starts this program again as its worker
// (`bench_service --server EP --job ID`), so a preview travels worker -> WorkerLink -> server -> PUB
// exactly as a generation's does.
//
//   submit, list  max_local_jobs = 0 keeps every submitted job queued (`mugv serve --max-jobs` refuses 0,
//                 the in-process ServerOptions does not). N clients subscribed to every job event drain
//                 them on their own threads while one client submits 1000 jobs, each timed, then lists all
//                 1000 jobs 200 times.
//   preview       a job whose worker does a fixed amount of CPU work per tick (standing in for a
//                 denoising step) and sends an 8-frame 64x64 RGB preview through its WorkerLink, at 10
//                 ticks/s for 10 s. Runs without and with N subscribers (in a process of their own)
//                 alternate (--pairs); the worker's step time (work + preview call) of the two kinds gives
//                 the slowdown, and every subscriber counts the previews it received.
//
// One JSON line per measurement on stdout. Targets (issue): submit and list p99 < 50 ms with 1000 queued
// jobs and 20 subscribers; previews at 10/s to 20 subscribers slow the worker by < 5 %, and each
// subscriber gets them all.
// Usage: bench_service [--jobs N] [--lists N] [--subscribers N] [--fps F] [--seconds S] [--frames N]
//                      [--size PX] [--work-ms MS] [--pairs N] [--verbose]

#include "catalog/catalog.h"
#include "catalog/jobs.h"
#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/process.h"
#include "core/strings.h"
#include "service/client.h"
#include "service/server.h"
#include "service/worker_link.h"

#include <nlohmann/json.hpp>

#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mugv::protocol::MessageType;

namespace {

struct Options {
  int jobs = 1000;
  int lists = 200;
  int subscribers = 20;
  double fps = 10;
  double seconds = 10;
  int frames = 8;
  int size = 64;
  double work_ms = 50;  // half of a tick at 10/s: the worker is busy, not idle, when previews go out
  int pairs = 2;  // preview runs without and with subscribers, interleaved so that drift hits both alike
  bool verbose = false;
};

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// User + system CPU seconds of this whole process (all its threads).
double process_cpu_s() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// The machine's 1-minute load average: results on a machine shared with other work are marked as such.
double load_average() {
  std::ifstream in("/proc/loadavg");
  double load = -1;
  in >> load;
  return load;
}

// p50 / p95 / p99 (nearest rank), max and mean of a set of durations in ms.
nlohmann::json summary(std::vector<double> v) {
  if (v.empty()) return {{"n", 0}};
  std::sort(v.begin(), v.end());
  auto rank = [&](double q) {
    size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::min(v.size() - 1, i == 0 ? 0 : i - 1)];
  };
  double sum = 0;
  for (double x : v) sum += x;
  return {{"n", v.size()},     {"p50", rank(0.50)}, {"p95", rank(0.95)},
          {"p99", rank(0.99)}, {"max", v.back()},   {"mean", sum / static_cast<double>(v.size())}};
}

// A fixed amount of serial arithmetic (each iteration depends on the last, so it cannot be vectorised or
// skipped): the worker's stand-in for a denoising step. The count is calibrated once, in the parent, so that
// both preview runs do exactly the same work.
volatile double g_sink = 0;
void spin(int64_t iterations) {
  double x = 1.0;
  for (int64_t i = 0; i < iterations; ++i) x = x * 1.0000001 + 1e-9;
  g_sink = x;
}

// Counted in this thread's CPU time, not wall time, so that a busy machine does not shrink the work.
int64_t calibrate_iterations(double work_ms) {
  const int64_t probe = 5'000'000;
  double best = 1e300;
  for (int i = 0; i < 3; ++i) {
    const double start = thread_cpu_ms();
    spin(probe);
    best = std::min(best, thread_cpu_ms() - start);
  }
  return std::max<int64_t>(1, static_cast<int64_t>(work_ms / best * static_cast<double>(probe)));
}

// The preview's send time, written into its first frame's first 8 bytes by the worker: steady_clock is
// CLOCK_MONOTONIC on Linux, one clock for every process on the machine, so a subscriber can subtract.
void stamp(mugv::RgbFrame& frame) {
  const int64_t ns = Clock::now().time_since_epoch().count();
  std::memcpy(frame.rgb.data(), &ns, sizeof ns);
}
double stamp_age_ms(const std::string& blob) {
  int64_t ns = 0;
  if (blob.size() < sizeof ns) return -1;
  std::memcpy(&ns, blob.data(), sizeof ns);
  return static_cast<double>(Clock::now().time_since_epoch().count() - ns) / 1e6;
}

// ---- worker mode
// -------------------------------------------------------------------------------------------

// `bench_service --server EP --job ID`, started by the server: streams previews as the job's params say and
// reports its timings as the job's result.
int run_worker(const std::string& endpoint, int64_t job_id) {
  using namespace mugv;
  std::unique_ptr<WorkerLink> link;
  try {
    link = std::make_unique<WorkerLink>(endpoint, job_id);
  } catch (const Error& e) {
    std::cerr << "bench_service worker: job " << job_id << ": " << e.what() << "\n";
    return 1;
  }
  try {
    Catalog catalog = Catalog::open(catalog_path());
    auto job = get_job(catalog, job_id);
    if (!job) throw Error(ErrorCode::not_found, cat("job ", job_id), "not in the catalog");
    if (!job->params.contains("bench_preview"))
      throw Error(ErrorCode::invalid_argument, cat("job ", job_id),
                  "not a bench_service preview job (no params.bench_preview)");
    const nlohmann::json& p = job->params["bench_preview"];
    const double fps = p.at("fps").get<double>();
    const int ticks = static_cast<int>(std::lround(fps * p.at("seconds").get<double>()));
    const int size = p.at("size").get<int>();
    const int64_t iterations = p.at("work_iterations").get<int64_t>();
    std::vector<RgbFrame> frames(static_cast<size_t>(p.at("frames").get<int>()), RgbFrame(size, size));
    for (size_t f = 0; f < frames.size(); ++f)
      for (size_t i = 0; i < frames[f].rgb.size(); ++i)
        frames[f].rgb[i] = static_cast<uint8_t>(i * 7 + f * 31);

    const auto period = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / fps));
    // work_cpu_ms is the CPU the work got; work_ms above it is time the worker waited for a core.
    std::vector<double> work_ms, work_cpu_ms, send_ms, step_ms;
    int late = 0;
    const double cpu_start = process_cpu_s();
    const auto start = Clock::now();
    for (int k = 0; k < ticks && !link->cancel_token().cancel_requested(); ++k) {
      const auto t0 = Clock::now();
      const double c0 = thread_cpu_ms();
      spin(iterations);
      work_cpu_ms.push_back(thread_cpu_ms() - c0);
      const auto t1 = Clock::now();
      stamp(frames[0]);
      link->preview(k, frames);
      const auto t2 = Clock::now();
      work_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      send_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
      step_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
      const auto next = start + period * (k + 1);
      if (Clock::now() > next) ++late;
      std::this_thread::sleep_until(next);
    }
    const double wall_s = ms_since(start) / 1000;
    nlohmann::json result{{"ticks", step_ms.size()},
                          {"late_ticks", late},
                          {"wall_s", wall_s},
                          {"cpu_s", process_cpu_s() - cpu_start},
                          {"work_ms", summary(work_ms)},
                          {"work_cpu_ms", summary(work_cpu_ms)},
                          {"send_ms", summary(send_ms)},
                          {"step_ms", summary(step_ms)}};
    link->finish(JobState::succeeded, "", "", result);
    return 0;
  } catch (const Error& e) {
    std::cerr << "bench_service worker: " << e.what() << "\n";
    link->finish(JobState::failed, to_string(e.code()), e.what());
    return exit_code_for(e.code());
  } catch (const std::exception& e) {
    std::cerr << "bench_service worker: " << e.what() << "\n";
    link->finish(JobState::failed, "internal", e.what());
    return 1;
  }
}

// ---- the server side
// ---------------------------------------------------------------------------------------

// A fresh $MUGV_HOME under the temp dir, removed on destruction.
class ScratchHome {
 public:
  ScratchHome() {
    std::string pattern = (fs::temp_directory_path() / "mugv-bench-service-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      throw mugv::Error(mugv::ErrorCode::io, pattern, "cannot create a scratch home");
    path_ = pattern;
    ::setenv("MUGV_HOME", path_.c_str(), 1);  // the server's workers and this process's catalog lookups
  }
  ~ScratchHome() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchHome(const ScratchHome&) = delete;
  ScratchHome& operator=(const ScratchHome&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The real server on its own thread, its workers being this program; stopped and joined on destruction.
class InProcessServer {
 public:
  InProcessServer(const fs::path& home, int max_jobs) {
    endpoint_ = "ipc://" + (home / "sock" / "mugv.sock").string();
    mugv::ServerOptions o;
    o.home = home;
    o.listen = {endpoint_};
    o.worker_executable = mugv::executable_path();
    o.max_local_jobs = max_jobs;
    server_ = std::make_unique<mugv::Server>(o);
    thread_ = std::thread([this] {
      try {
        server_->run(stop_);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mutex_);
        error_ = e.what();
      }
    });
    std::this_thread::sleep_for(200ms);
    std::string error;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      error = error_;
    }
    if (!error.empty()) {
      thread_.join();
      throw mugv::Error(mugv::ErrorCode::io, endpoint_, "the server did not start: " + error);
    }
  }
  ~InProcessServer() {
    stop_.request_cancel();
    if (thread_.joinable()) thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  // CPU seconds the server's thread has used so far (its poll loop does all the server's work).
  double cpu_seconds() {
    clockid_t id;
    timespec ts{};
    if (pthread_getcpuclockid(thread_.native_handle(), &id) != 0 || clock_gettime(id, &ts) != 0) return -1;
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  }

 private:
  std::string endpoint_;
  mugv::CancelToken stop_;
  std::unique_ptr<mugv::Server> server_;
  std::thread thread_;
  std::mutex mutex_;
  std::string error_;
};

// `n` clients, each an EventSubscriber to every job event on its own thread, counting what arrives. A preview
// is checked (frame count and bytes) and its age taken from the worker's stamp.
class SubscriberPool {
 public:
  struct Tally {
    int64_t events = 0;
    int64_t previews = 0;
    int64_t malformed_previews = 0;
    std::vector<double> preview_age_ms;
  };

  SubscriberPool(const std::string& events_endpoint, int n, size_t preview_frames, size_t frame_bytes)
      : tallies_(static_cast<size_t>(n)) {
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([this, i, events_endpoint, preview_frames, frame_bytes] {
        std::optional<mugv::EventSubscriber> subscriber;
        try {
          subscriber.emplace(events_endpoint, std::vector<std::string>{"job/"});
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(mutex_);
          error_ = e.what();
        }
        ++connected_;
        if (!subscriber) return;
        Tally& t = tallies_[static_cast<size_t>(i)];
        while (!stop_) {
          auto m = subscriber->next(50ms);
          if (!m) continue;
          std::lock_guard<std::mutex> lock(mutex_);
          ++t.events;
          const std::string type = m->header.value("type", "");
          if (type == "state") {
            auto state = mugv::job_state_from_string(m->header.value("state", ""));
            if (state && mugv::is_terminal(*state)) job_ended_ = true;
          }
          if (type != "preview") continue;
          bool ok = m->blobs.size() == preview_frames;
          for (const auto& b : m->blobs) ok = ok && b.size() == frame_bytes;
          if (!ok) {
            ++t.malformed_previews;
            continue;
          }
          ++t.previews;
          t.preview_age_ms.push_back(stamp_age_ms(m->blobs[0]));
        }
      });
    }
    // Connected sockets, then a moment for the subscriptions to reach the server's PUB (a SUB that joins late
    // misses what was published before).
    while (connected_ < n) std::this_thread::sleep_for(10ms);
    std::this_thread::sleep_for(500ms);
    std::string error;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      error = error_;
    }
    if (!error.empty()) {
      stop();
      throw mugv::Error(mugv::ErrorCode::io, events_endpoint, "a subscriber could not connect: " + error);
    }
  }
  ~SubscriberPool() { stop(); }

  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  // Waits until every subscriber has seen at least `events` events, or `timeout` passes.
  void wait_for_events(int64_t events, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (std::all_of(tallies_.begin(), tallies_.end(), [&](const Tally& t) { return t.events >= events; }))
          return;
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  std::vector<Tally> tallies() {
    std::lock_guard<std::mutex> lock(mutex_);
    return tallies_;
  }
  // True once a subscriber has seen a job reach a final state.
  bool job_ended() const { return job_ended_; }

 private:
  std::vector<Tally> tallies_;
  std::vector<std::thread> threads_;
  std::atomic<int> connected_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> job_ended_{false};
  std::mutex mutex_;
  std::string error_;
};

// `bench_service --subscriber-process EVENTS_EP N FRAMES FRAME_BYTES READY_FILE`: the preview runs'
// subscribers, in a process of their own as the studio's would be, so that the bench process's CPU is the
// server's alone. Creates READY_FILE once connected, stops when the job has ended (or after `limit`), prints
// its tallies.
int run_subscriber_process(char** argv) {
  const std::string endpoint = argv[2];
  const int n = std::stoi(argv[3]);
  const fs::path ready = argv[6];
  const double cpu_start = process_cpu_s();
  SubscriberPool pool(endpoint, n, std::stoul(argv[4]), std::stoul(argv[5]));
  std::ofstream(ready) << "ready\n";
  const auto limit = Clock::now() + 10min;
  while (!pool.job_ended() && Clock::now() < limit) std::this_thread::sleep_for(20ms);
  std::this_thread::sleep_for(300ms);  // the last previews in flight
  pool.stop();
  nlohmann::json previews = nlohmann::json::array(), malformed = nlohmann::json::array(),
                 age_ms = nlohmann::json::array();
  for (const auto& t : pool.tallies()) {
    previews.push_back(t.previews);
    malformed.push_back(t.malformed_previews);
    for (double a : t.preview_age_ms) age_ms.push_back(a);
  }
  std::cout << nlohmann::json{{"previews", previews},
                              {"malformed", malformed},
                              {"age_ms", age_ms},
                              {"cpu_s", process_cpu_s() - cpu_start}}
                   .dump()
            << std::endl;
  return 0;
}

// Runs the subscriber process on its own thread; collect() waits for it and returns what it printed.
class SubscriberProcess {
 public:
  SubscriberProcess(const std::string& events_endpoint, int n, int frames, size_t frame_bytes,
                    const fs::path& ready, std::chrono::milliseconds timeout) {
    std::vector<std::string> argv{
        mugv::executable_path().string(), "--subscriber-process",      events_endpoint, std::to_string(n),
        std::to_string(frames),           std::to_string(frame_bytes), ready.string()};
    thread_ = std::thread([this, argv, timeout] {
      try {
        result_ = mugv::run_process(argv, timeout);
      } catch (const std::exception& e) {
        error_ = e.what();
      }
    });
    const auto deadline = Clock::now() + 30s;
    while (!fs::exists(ready) && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
    if (!fs::exists(ready)) {
      thread_.join();
      throw mugv::Error(mugv::ErrorCode::timeout, "subscriber process",
                        mugv::cat("not ready within 30 s: ", error_, result_.err));
    }
  }
  ~SubscriberProcess() {
    if (thread_.joinable()) thread_.join();
  }
  nlohmann::json collect() {
    thread_.join();
    if (!error_.empty() || result_.exit_code != 0)
      throw mugv::Error(mugv::ErrorCode::internal, "subscriber process",
                        mugv::cat("failed (exit ", result_.exit_code, "): ", error_, result_.err));
    return nlohmann::json::parse(result_.out);
  }

 private:
  std::thread thread_;
  mugv::ProcessResult result_;
  std::string error_;
};

// What `mugv submit make-dataset shapes --out DIR --count N` sends: a realistic job that never runs here.
nlohmann::json queued_job(const fs::path& home, int i) {
  return {{"kind", "make_dataset"},
          {"params",
           {{"command", {"make-dataset"}},
            {"positional", {"shapes"}},
            {"values",
             {{"dataset.out", (home / "datasets" / mugv::cat("shapes-", i)).string()},
              {"dataset.count", 64},
              {"dataset.size", 64},
              {"dataset.frames", 17}}}}}};
}

void print(const nlohmann::json& line) {
  std::cout << line.dump() << std::endl;
}

void measure_queue(const Options& o) {
  const double load = load_average();
  ScratchHome home;
  InProcessServer server(home.path(), /*max_jobs=*/0);
  mugv::Client client(server.endpoint());
  SubscriberPool subscribers(client.events_endpoints().at(0), o.subscribers, 0, 0);

  std::vector<double> submit_ms;
  for (int i = 0; i < o.jobs; ++i) {
    auto start = Clock::now();
    client.request(MessageType::submit_job, queued_job(home.path(), i));
    submit_ms.push_back(ms_since(start));
  }
  // Each submit publishes one state event (queued) to every subscriber.
  subscribers.wait_for_events(o.jobs, 10s);
  auto after_submit = subscribers.tallies();

  std::vector<double> list_ms;
  size_t listed = 0, queued = 0, reply_bytes = 0;
  for (int i = 0; i < o.lists; ++i) {
    auto start = Clock::now();
    nlohmann::json reply = client.request(MessageType::list_jobs, {{"limit", std::max(1, o.jobs)}});
    list_ms.push_back(ms_since(start));
    if (i == 0) {
      listed = reply["jobs"].size();
      for (const auto& j : reply["jobs"]) queued += j.value("state", "") == "queued";
      reply_bytes = reply.dump().size();
    }
  }
  subscribers.stop();

  int64_t min_events = INT64_MAX, max_events = 0;
  for (const auto& t : after_submit) {
    min_events = std::min(min_events, t.events);
    max_events = std::max(max_events, t.events);
  }
  const nlohmann::json submit = summary(submit_ms), list = summary(list_ms);
  print({{"bench", "service"},
         {"measure", "submit"},
         {"jobs", o.jobs},
         {"subscribers", o.subscribers},
         {"latency_ms", submit},
         {"target_p99_ms", 50},
         {"pass", submit.value("p99", 1e9) < 50},
         {"events_per_subscriber_min", o.subscribers ? min_events : 0},
         {"events_per_subscriber_max", max_events},
         {"loadavg_1m", load}});
  print({{"bench", "service"},
         {"measure", "list"},
         {"jobs_listed", listed},
         {"jobs_queued", queued},
         {"subscribers", o.subscribers},
         {"requests", o.lists},
         {"reply_bytes", reply_bytes},
         {"latency_ms", list},
         {"target_p99_ms", 50},
         {"pass", list.value("p99", 1e9) < 50},
         {"loadavg_1m", load}});
}

// One preview job on a fresh server, with `n_subscribers` watching; prints its line and returns the worker's
// result.
nlohmann::json measure_preview(const Options& o, int round, int n_subscribers, int64_t work_iterations) {
  ScratchHome home;
  InProcessServer server(home.path(), /*max_jobs=*/1);
  mugv::Client client(server.endpoint());
  const size_t frame_bytes = static_cast<size_t>(o.size) * o.size * 3;
  std::optional<SubscriberProcess> subscribers;
  if (n_subscribers > 0)
    subscribers.emplace(client.events_endpoints().at(0), n_subscribers, o.frames, frame_bytes,
                        home.path() / "subscribers.ready",
                        std::chrono::milliseconds(static_cast<int64_t>((o.seconds + 120) * 1000)));

  const double load = load_average();
  const double cpu_before = server.cpu_seconds(),
               process_cpu_before = process_cpu_s();  // the subscribers are ready
  nlohmann::json params{{"bench_preview",
                         {{"fps", o.fps},
                          {"seconds", o.seconds},
                          {"frames", o.frames},
                          {"size", o.size},
                          {"work_iterations", work_iterations}}}};
  const int64_t id =
      client.request(MessageType::submit_job, {{"kind", "generate"}, {"params", params}})["job"]["id"]
          .get<int64_t>();
  nlohmann::json job;
  const auto deadline = Clock::now() + std::chrono::duration<double>(o.seconds + 60);
  while (Clock::now() < deadline) {
    job = client.request(MessageType::get_job, {{"job", id}});
    auto state = mugv::job_state_from_string(job["job"]["state"].get<std::string>());
    if (state && mugv::is_terminal(*state)) break;
    std::this_thread::sleep_for(100ms);
  }
  const double server_cpu_s = server.cpu_seconds() - cpu_before;
  const double process_cpu = process_cpu_s() - process_cpu_before;
  nlohmann::json tallies;
  if (subscribers) tallies = subscribers->collect();

  const std::string state = job["job"].value("state", "");
  if (state != "succeeded") {
    std::string log =
        client.request(MessageType::job_logs, {{"job", id}, {"tail_lines", 20}}).value("text", "");
    throw mugv::Error(
        mugv::ErrorCode::internal, mugv::cat("preview job ", id),
        mugv::cat("ended ", state.empty() ? std::string("unfinished") : state, "; its log:\n", log));
  }
  nlohmann::json result;
  for (const auto& e : job["events"])
    if (e.value("type", "") == "result") result = e["payload"];
  if (!result.is_object())
    throw mugv::Error(mugv::ErrorCode::internal, mugv::cat("preview job ", id), "no result event");

  int64_t min_previews = 0, max_previews = 0, malformed = 0;
  std::vector<double> age_ms;
  double subscribers_cpu_s = 0;
  if (tallies.is_object()) {
    min_previews = INT64_MAX;
    for (const auto& n : tallies["previews"]) {
      min_previews = std::min(min_previews, n.get<int64_t>());
      max_previews = std::max(max_previews, n.get<int64_t>());
    }
    for (const auto& n : tallies["malformed"]) malformed += n.get<int64_t>();
    age_ms = tallies["age_ms"].get<std::vector<double>>();
    subscribers_cpu_s = tallies["cpu_s"].get<double>();
  }
  // server_cpu_s: the server's poll thread; bench_cpu_s: this whole process (the server with its ZeroMQ I/O
  // thread, and the client polling the job); subscribers_cpu_s: the subscriber process; worker_cpu_s: the
  // worker process (work, preview copies, its link's I/O thread).
  print({{"bench", "service"},
         {"measure", "preview"},
         {"round", round},
         {"subscribers", n_subscribers},
         {"fps", o.fps},
         {"seconds", o.seconds},
         {"frames", o.frames},
         {"size", o.size},
         {"preview_bytes", frame_bytes * static_cast<size_t>(o.frames)},
         {"sent", result["ticks"]},
         {"late_ticks", result["late_ticks"]},
         {"worker_wall_s", result["wall_s"]},
         {"work_ms", result["work_ms"]},
         {"work_cpu_ms", result["work_cpu_ms"]},
         {"send_ms", result["send_ms"]},
         {"step_ms", result["step_ms"]},
         {"worker_cpu_s", result["cpu_s"]},
         {"server_cpu_s", server_cpu_s},
         {"bench_cpu_s", process_cpu},
         {"subscribers_cpu_s", subscribers_cpu_s},
         {"received_per_subscriber_min", min_previews},
         {"received_per_subscriber_max", max_previews},
         {"malformed", malformed},
         {"delivery_ms", summary(age_ms)},
         {"loadavg_1m", load}});
  result["least_received"] = min_previews;
  result["bench_cpu_s"] = process_cpu;
  result["subscribers_cpu_s"] = subscribers_cpu_s;
  return result;
}

// The slowdown compares the worker's step time (work + preview call) between runs without and with
// subscribers, averaged over the interleaved pairs. The median step is the headline: on a machine shared with
// other work, a compile that takes a core for a few seconds moves the mean of whichever run it lands in; each
// pair's own figure shows how far such noise reaches. What the fan-out costs whatever the load, in cores:
// server_fanout_cpu_cores, the server process's extra CPU with subscribers, and subscribers_cpu_cores,
// theirs.
void measure_previews(const Options& o) {
  const int64_t iterations = calibrate_iterations(o.work_ms);
  double p50[2] = {0, 0}, mean[2] = {0, 0}, send_p99[2] = {0, 0}, bench_cpu_s[2] = {0, 0},
         subscribers_cpu_s = 0;
  int64_t least_received = INT64_MAX, sent = 0;
  nlohmann::json per_pair = nlohmann::json::array();
  for (int pair = 0; pair < o.pairs; ++pair) {
    double pair_p50[2] = {0, 0};
    // Alone, watched, then watched, alone: a load that drifts steadily weighs on both kinds alike.
    for (int order = 0; order < 2; ++order) {
      const int watched = pair % 2 == 0 ? order : 1 - order;
      const nlohmann::json r = measure_preview(o, 2 * pair + order, watched ? o.subscribers : 0, iterations);
      pair_p50[watched] = r["step_ms"].value("p50", 0.0);
      bench_cpu_s[watched] += r.value("bench_cpu_s", 0.0) / o.pairs;
      subscribers_cpu_s += r.value("subscribers_cpu_s", 0.0) / o.pairs;
      p50[watched] += r["step_ms"].value("p50", 0.0) / o.pairs;
      mean[watched] += r["step_ms"].value("mean", 0.0) / o.pairs;
      send_p99[watched] = std::max(send_p99[watched], r["send_ms"].value("p99", 0.0));
      if (watched) sent = std::max<int64_t>(sent, r.value("ticks", 0));
      if (watched) least_received = std::min(least_received, r.value("least_received", INT64_MAX));
    }
    per_pair.push_back(pair_p50[0] > 0 ? pair_p50[1] / pair_p50[0] - 1 : 0);
  }
  const double slowdown = p50[0] > 0 ? p50[1] / p50[0] - 1 : 0;
  const double slowdown_mean = mean[0] > 0 ? mean[1] / mean[0] - 1 : 0;
  const bool all_received = o.subscribers == 0 || least_received >= sent;
  print({{"bench", "service"},
         {"measure", "preview_slowdown"},
         {"subscribers", o.subscribers},
         {"pairs", o.pairs},
         {"work_ms_target", o.work_ms},
         {"step_ms_p50_alone", p50[0]},
         {"step_ms_p50_watched", p50[1]},
         {"step_ms_mean_alone", mean[0]},
         {"step_ms_mean_watched", mean[1]},
         {"send_ms_p99_alone", send_p99[0]},
         {"send_ms_p99_watched", send_p99[1]},
         {"slowdown", slowdown},
         {"slowdown_mean", slowdown_mean},
         {"slowdown_per_pair", per_pair},
         {"server_fanout_cpu_cores", (bench_cpu_s[1] - bench_cpu_s[0]) / o.seconds},
         {"subscribers_cpu_cores", subscribers_cpu_s / o.seconds},
         {"target", 0.05},
         {"every_subscriber_got_every_preview", all_received},
         {"pass", slowdown < 0.05 && all_received}});
}

int usage() {
  std::cerr
      << "usage: bench_service [--jobs N] [--lists N] [--subscribers N] [--fps F] [--seconds S] [--frames N]"
         " [--size PX] [--work-ms MS] [--pairs N] [--verbose]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Started by the server as a worker.
  if (argc == 5 && std::string(argv[1]) == "--server" && std::string(argv[3]) == "--job")
    return run_worker(argv[2], std::atoll(argv[4]));
  if (argc == 7 && std::string(argv[1]) == "--subscriber-process") {
    try {
      return run_subscriber_process(argv);
    } catch (const std::exception& e) {
      std::cerr << "bench_service subscribers: " << e.what() << "\n";
      return 1;
    }
  }
  try {
    Options o;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      const bool has_value = i + 1 < argc;
      if (arg == "--jobs" && has_value)
        o.jobs = std::stoi(argv[++i]);
      else if (arg == "--lists" && has_value)
        o.lists = std::stoi(argv[++i]);
      else if (arg == "--subscribers" && has_value)
        o.subscribers = std::stoi(argv[++i]);
      else if (arg == "--fps" && has_value)
        o.fps = std::stod(argv[++i]);
      else if (arg == "--seconds" && has_value)
        o.seconds = std::stod(argv[++i]);
      else if (arg == "--frames" && has_value)
        o.frames = std::stoi(argv[++i]);
      else if (arg == "--size" && has_value)
        o.size = std::stoi(argv[++i]);
      else if (arg == "--work-ms" && has_value)
        o.work_ms = std::stod(argv[++i]);
      else if (arg == "--pairs" && has_value)
        o.pairs = std::stoi(argv[++i]);
      else if (arg == "--verbose")
        o.verbose = true;
      else
        return usage();
    }
    if (o.jobs < 1 || o.lists < 1 || o.subscribers < 0 || o.fps <= 0 || o.seconds <= 0 || o.frames < 1 ||
        o.size < 2 || o.work_ms < 0 || o.pairs < 1)
      return usage();
    // The server's own lines (serving on ..., worker pid ...) would interleave with the results.
    if (!o.verbose) mugv::set_log_level(mugv::LogLevel::warning);
    measure_queue(o);
    measure_previews(o);
    return 0;
  } catch (const mugv::Error& e) {
    std::cerr << "bench_service: " << e.what() << "\n";
    return mugv::exit_code_for(e.code());
  } catch (const std::exception& e) {
    std::cerr << "bench_service: " << e.what() << "\n";
    return 1;
  }
}
