// The monitor's state folding, fed with events in the server's shapes that went through the real wire
// format (protocol::encode, then protocol::decode with its schema checks), and with reply payloads in the
// shapes of list_jobs / get_job / job_logs.
#include "monitor_state.h"

#include <catch2/catch.hpp>

#include <string_view>

using namespace mugv;
using namespace mugv::monitor;
using protocol::Message;
using protocol::MessageType;

namespace {

// An event as the server publishes it (server.cpp publish_event), after a trip through the codec.
Message wire_event(int64_t job, const std::string& subtopic, nlohmann::json payload,
                   std::vector<std::string> blobs = {}) {
  Message m;
  m.type = MessageType::event;
  payload["topic"] =
      subtopic.empty() ? "job/" + std::to_string(job) : "job/" + std::to_string(job) + "/" + subtopic;
  payload["job"] = job;
  m.header = std::move(payload);
  m.blobs = std::move(blobs);
  auto frames = protocol::encode(m);
  std::vector<std::string_view> views(frames.begin(), frames.end());
  auto decoded = protocol::decode(views);
  REQUIRE(std::holds_alternative<Message>(decoded));
  return std::get<Message>(std::move(decoded));
}

nlohmann::json job_json(int64_t id, const std::string& kind, const std::string& state) {
  return {{"id", id},
          {"kind", kind},
          {"state", state},
          {"priority", 0},
          {"position", id},
          {"params", nlohmann::json::object()},
          {"created_at_ms", 1000 * id},
          {"started_at_ms", nullptr},
          {"finished_at_ms", nullptr},
          {"exit_code", nullptr},
          {"error_code", nullptr},
          {"error_message", ""},
          {"worker_pid", nullptr},
          {"host", "h"},
          {"attempts", 0}};
}

Message progress(int64_t job, int64_t done, int64_t total, double eta) {
  return wire_event(job, "",
                    {{"type", "progress"},
                     {"stage", "train"},
                     {"done", done},
                     {"total", total},
                     {"rate", 2.0},
                     {"eta_s", eta},
                     {"unit", "steps"},
                     {"detail", ""}});
}

Message metrics(int64_t job, int64_t step, double loss) {
  return wire_event(job, "metrics",
                    {{"type", "metrics"},
                     {"step", step},
                     {"values",
                      {{"step", step},
                       {"loss", loss},
                       {"lr", 1e-4},
                       {"tokens_per_s", 5000.0},
                       {"mfu", 0.31},
                       {"run", "not a number"}}}});
}

}  // namespace

TEST_CASE("the job list becomes the table, newest first, and vanished jobs leave", "[monitor][unit]") {
  MonitorState s;
  s.apply_job_list(
      nlohmann::json::array({job_json(1, "make_dataset", "succeeded"), job_json(2, "train", "running"),
                             job_json(3, "generate", "queued")}));
  auto rows = s.jobs();
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].id == 3);
  CHECK(rows[2].id == 1);
  CHECK(rows[1].kind == "train");
  CHECK(s.job(1)->fraction() == Approx(1.0));
  CHECK_FALSE(s.job(3)->fraction().has_value());

  s.apply_job_list(nlohmann::json::array({job_json(2, "train", "running")}));
  CHECK(s.jobs().size() == 1);
  CHECK(s.job(1) == nullptr);
  // Not an array (a broken reply): nothing changes.
  s.apply_job_list(nlohmann::json::object());
  CHECK(s.jobs().size() == 1);
}

TEST_CASE("progress, state, metric and log events fold into the job's row and detail", "[monitor][unit]") {
  MonitorState s;
  s.apply_job_list(nlohmann::json::array({job_json(7, "train", "running")}));
  REQUIRE(s.apply_event(progress(7, 25, 100, 12.5)));
  const JobRow* r = s.job(7);
  REQUIRE(r);
  CHECK(r->fraction() == Approx(0.25));
  CHECK(r->eta_s == Approx(12.5));
  CHECK(r->stage == "train");

  REQUIRE(s.apply_event(metrics(7, 1, 2.0)));
  REQUIRE(s.apply_event(metrics(7, 2, 1.5)));
  const JobDetail* d = s.detail(7);
  REQUIRE(d);
  for (const char* name : {"loss", "lr", "tokens_per_s", "mfu"}) CHECK(d->metrics.count(name) == 1);
  CHECK(d->metrics.count("step") == 0);  // the step is the x axis, not a metric
  CHECK(d->metrics.count("run") == 0);   // only numbers are plotted
  CHECK(d->metrics.at("loss").values == std::vector<float>{2.0f, 1.5f});

  REQUIRE(s.apply_event(
      wire_event(7, "log", {{"type", "log"}, {"level", "info"}, {"text", "step 2\nsaved checkpoint"}})));
  REQUIRE(d->logs.size() == 2);
  CHECK(d->logs.back() == "[info] saved checkpoint");

  nlohmann::json info = job_json(7, "train", "failed");
  info["error_message"] = "out of memory";
  REQUIRE(s.apply_event(wire_event(7, "", {{"type", "state"}, {"state", "failed"}, {"job_info", info}})));
  CHECK(s.job(7)->state == "failed");
  CHECK(s.job(7)->error == "out of memory");
  CHECK(s.events_seen() == 5);

  // An event of a job the list has not shown yet still gets a row (the next list fills in its kind).
  REQUIRE(s.apply_event(progress(9, 1, 4, 3)));
  CHECK(s.job(9) != nullptr);
}

TEST_CASE("a backfill from get_job does not plot a step twice", "[monitor][unit]") {
  MonitorState s;
  REQUIRE(s.apply_event(metrics(4, 1, 3.0)));
  REQUIRE(s.apply_event(metrics(4, 2, 2.5)));
  nlohmann::json reply = {{"job", job_json(4, "train", "running")}, {"events", nlohmann::json::array()}};
  for (int step = 1; step <= 3; ++step)
    reply["events"].push_back(
        {{"id", step},
         {"job", 4},
         {"time_ms", step},
         {"type", "metrics"},
         {"payload", {{"job", 4}, {"step", step}, {"values", {{"loss", 4.0 - step * 0.5}}}}}});
  reply["events"].push_back({{"id", 9},
                             {"job", 4},
                             {"time_ms", 9},
                             {"type", "progress"},
                             {"payload", {{"job", 4}, {"stage", "train"}, {"done", 3}, {"total", 6}}}});
  s.apply_job_detail(reply);
  const auto& loss = s.detail(4)->metrics.at("loss");
  CHECK(loss.steps == std::vector<float>{1, 2, 3});
  CHECK(loss.values.back() == Approx(2.5));
  CHECK(s.job(4)->fraction() == Approx(0.5));
  CHECK(s.job(4)->kind == "train");

  // A finished job's sampled progress may stop short of its total; the row says it is done.
  reply["job"]["state"] = "succeeded";
  s.apply_job_detail(reply);
  CHECK(s.job(4)->done == 6);

  // The log backfill replaces the live lines (the server's log holds them all).
  REQUIRE(s.apply_event(wire_event(4, "log", {{"type", "log"}, {"level", "info"}, {"text", "live"}})));
  s.apply_logs(4, "one\ntwo\nthree\n");
  CHECK(s.detail(4)->logs == std::deque<std::string>{"one", "two", "three"});
}

TEST_CASE("series and logs are capped, the oldest going first", "[monitor][unit]") {
  MonitorState s(Limits{5, 3});
  for (int step = 1; step <= 8; ++step) REQUIRE(s.apply_event(metrics(1, step, step)));
  const auto& loss = s.detail(1)->metrics.at("loss");
  CHECK(loss.steps == std::vector<float>{4, 5, 6, 7, 8});
  s.apply_logs(1, "a\nb\nc\nd\ne");
  CHECK(s.detail(1)->logs == std::deque<std::string>{"c", "d", "e"});
}

TEST_CASE("preview events keep their RGB frames and drop frames of the wrong size", "[monitor][unit]") {
  MonitorState s;
  const int w = 4, h = 2;
  std::string red(size_t(w * h * 3), '\0'), green(size_t(w * h * 3), '\0');
  for (size_t i = 0; i < red.size(); i += 3) {
    red[i] = char(255);
    green[i + 1] = char(255);
  }
  nlohmann::json header = {
      {"type", "preview"}, {"step", 3}, {"width", w}, {"height", h}, {"format", "rgb24"}};
  REQUIRE(s.apply_event(wire_event(5, "preview", header, {red, std::string(5, 'x'), green})));
  auto p = s.detail(5)->preview;
  REQUIRE(p);
  CHECK(p->frames.size() == 2);
  CHECK(p->frames[1] == green);
  CHECK(p->step == 3);
  const uint64_t first = p->serial;
  REQUIRE(s.apply_event(wire_event(5, "preview", header, {green})));
  CHECK(s.detail(5)->preview->serial != first);
  CHECK(s.detail(5)->preview_events == 2);

  // Nothing usable: no frame of the announced size, or a format this monitor cannot show.
  CHECK_FALSE(s.apply_event(wire_event(5, "preview", header, {std::string(7, 'x')})));
  header["format"] = "yuv420";
  CHECK_FALSE(s.apply_event(wire_event(5, "preview", header, {red})));
  CHECK(s.detail(5)->preview->frames.size() == 1);
}

TEST_CASE("a stored sample is the preview until a live one comes, and never replaces a live one",
          "[monitor][unit]") {
  MonitorState s;
  const int w = 2, h = 2;
  const std::string stored_frame(size_t(w * h * 3), char(10)), live_frame(size_t(w * h * 3), char(200));
  Message reply;
  reply.type = protocol::MessageType::ok;
  reply.header = {{"run", "demo"}, {"step", 400}, {"file", "sample-0.mp4"},
                  {"width", w},    {"height", h}, {"format", "rgb24"}};
  reply.blobs = {stored_frame, stored_frame};
  REQUIRE(s.apply_stored_sample(7, reply));
  auto p = s.detail(7)->preview;
  REQUIRE(p);
  CHECK(p->run == "demo");
  CHECK(p->step == 400);
  CHECK(p->frames.size() == 2);
  CHECK(s.detail(7)->preview_events == 0);

  const nlohmann::json live = {{"type", "preview"}, {"step", 410}, {"width", w}, {"height", h}};
  REQUIRE(s.apply_event(wire_event(7, "preview", live, {live_frame})));
  CHECK(s.detail(7)->preview->run.empty());
  CHECK_FALSE(s.apply_stored_sample(7, reply));  // older than the live preview
  CHECK(s.detail(7)->preview->frames[0] == live_frame);
  reply.blobs = {"not a frame"};
  CHECK_FALSE(s.apply_stored_sample(8, reply));
  CHECK_FALSE(s.detail(8)->preview);
}

TEST_CASE("snapshots carry every row but only the selected job's detail, and the dump lists jobs",
          "[monitor][unit]") {
  MonitorState s;
  s.set_endpoint("ipc:///tmp/x.sock");
  s.set_connected("0.1.0");
  s.apply_job_list(nlohmann::json::array({job_json(1, "train", "running"), job_json(2, "train", "running")}));
  REQUIRE(s.apply_event(metrics(1, 1, 1.0)));
  REQUIRE(s.apply_event(metrics(2, 1, 1.0)));
  MonitorState snap = s.snapshot(2);
  CHECK(snap.jobs().size() == 2);
  CHECK(snap.detail(1) == nullptr);
  CHECK(snap.detail(2) != nullptr);

  auto j = s.to_json();
  CHECK(j["connection"] == "connected");
  CHECK(j["server_version"] == "0.1.0");
  REQUIRE(j["jobs"].size() == 2);
  CHECK(j["jobs"][0]["id"] == 2);
  CHECK(j["jobs"][1]["metrics"]["loss"] == 1);

  s.set_lost("no MUG-V server answered within 3000 ms");
  CHECK(s.connection() == Connection::lost);
  CHECK(s.to_json()["message"] == "no MUG-V server answered within 3000 ms");
  // Not an event, or an event without a job: ignored.
  Message ok = protocol::make_ok({{"job", 1}});
  CHECK_FALSE(s.apply_event(ok));
}

TEST_CASE("the server's machine check keeps its findings and counts warnings and failures",
          "[monitor][unit]") {
  MonitorState s;
  CHECK_FALSE(s.machine_checked());
  CHECK(s.to_json()["machine"]["checked"] == false);
  // A check_machine reply as the server sends it (protocol.h).
  s.apply_machine_check({{"checks",
                          {{{"check", "catalog"}, {"status", "ok"}, {"detail", "catalog.sqlite, schema 14"}},
                           {{"check", "blas"},
                            {"status", "warn"},
                            {"detail", "the reference BLAS"},
                            {"fix", "install libopenblas0-openmp"}},
                           {{"check", "gpu"}, {"status", "note"}, {"detail", "CPUs only"}}}},
                         {"warnings", 1},
                         {"failures", 0}});
  REQUIRE(s.machine_checked());
  REQUIRE(s.machine_findings().size() == 3);
  CHECK(s.machine_findings()[1].fix == "install libopenblas0-openmp");
  CHECK(s.machine_count("warn") == 1);
  CHECK(s.machine_count("fail") == 0);
  // Snapshots carry it to the render thread, and the dump names each check's status.
  const MonitorState snap = s.snapshot(0);
  CHECK(snap.machine_count("warn") == 1);
  const auto machine = s.to_json()["machine"];
  CHECK(machine["warnings"] == 1);
  CHECK(machine["checks"]["blas"] == "warn");
  // A check that could not be made says why and forgets the old findings.
  s.set_machine_check_error("no reply within 20000 ms");
  CHECK(s.machine_checked());
  CHECK(s.machine_findings().empty());
  CHECK(s.to_json()["machine"]["error"] == "no reply within 20000 ms");
  // A new check replaces the error.
  s.apply_machine_check({{"checks", nlohmann::json::array()}, {"warnings", 0}, {"failures", 0}});
  CHECK(s.machine_check_error().empty());
}
