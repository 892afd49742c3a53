// A run's training samples through the real `mugv serve` on its ipc socket: the listing (newest step first,
// with each video's prompt and size) and the frames of one video, for clients that cannot read the server's
// files; and the requests of a hostile client that names other files, which get nothing.
#include "core/error.h"
#include "service/client.h"
#include "support/sample_runs.h"
#include "support/serve_process.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>

using namespace mugv;
using mugv::test::TempDir;
using protocol::MessageType;
namespace fs = std::filesystem;

namespace {

const std::vector<test::SampleVideo> kVideos = {
    {100, "a red circle moving left on a black background", {220, 30, 30}},
    {100, "a blue square moving up on a white background", {30, 30, 220}},
    {200, "a red circle moving left on a black background", {30, 200, 30}},
};

// The error a request gets (its code and the server's words), failing the test when it succeeds.
Error refusal(Client& client, MessageType type, const nlohmann::json& header) {
  return test::expect_error([&] { (void)client.request(type, header); });
}

}  // namespace

TEST_CASE("a run's training samples are listed newest first and their frames served", "[service][ipc]") {
  TempDir home("mugv-run-samples");
  ::setenv("MUGV_HOME", home.path().c_str(), 1);
  const RunPaths run = test::write_sample_run(home.path(), "demo", kVideos);
  test::write_sample_run(home.path(), "empty", {});
  test::ServeProcess serve(home.path());
  Client client = serve.connect();

  const auto listed = client.request(MessageType::list_run_samples, {{"run", "demo"}});
  CHECK(listed["run"] == "demo");
  const auto& samples = listed["samples"];
  REQUIRE(samples.size() == 3);
  CHECK(samples[0]["step"] == 200);
  CHECK(samples[0]["file"] == "sample-0.mp4");
  CHECK(samples[0]["prompt"] == kVideos[2].prompt);
  CHECK(samples[1]["step"] == 100);
  CHECK(samples[1]["file"] == "sample-0.mp4");
  CHECK(samples[2]["file"] == "sample-1.mp4");
  CHECK(samples[2]["prompt"] == kVideos[1].prompt);
  CHECK(samples[2]["seed"] == "1");
  CHECK(samples[2]["size"] == fs::file_size(sample_step_dir(run, 100) / "sample-1.mp4"));
  CHECK(samples[2]["width"] == test::kSampleSide);
  CHECK(samples[2]["frames"] == test::kSampleFrames);
  // The newest step only.
  CHECK(client.request(MessageType::list_run_samples, {{"run", "demo"}, {"limit", 1}})["samples"].size() ==
        1);
  CHECK(client.request(MessageType::list_run_samples, {{"run", "empty"}})["samples"].empty());

  // Every frame of the blue video, at its own size: blue.
  std::vector<std::string> blobs;
  const auto frames = client.request(
      MessageType::run_sample_frames,
      {{"run", "demo"}, {"step", 100}, {"file", "sample-1.mp4"}, {"count", 64}, {"max_side", 256}}, &blobs);
  CHECK(frames["run"] == "demo");
  CHECK(frames["step"] == 100);
  CHECK(frames["file"] == "sample-1.mp4");
  CHECK(frames["width"] == test::kSampleSide);
  CHECK(frames["fps"].get<double>() == Approx(test::kSampleFps));
  REQUIRE(blobs.size() == size_t(test::kSampleFrames));
  REQUIRE(blobs[4].size() == size_t(test::kSampleSide * test::kSampleSide * 3));
  const auto* centre = reinterpret_cast<const uint8_t*>(blobs[4].data()) + (16 * test::kSampleSide + 16) * 3;
  CHECK(int(centre[2]) > 150);
  CHECK(int(centre[0]) < 90);

  // Unknown runs, steps and files are named in the error.
  Error missing = refusal(client, MessageType::list_run_samples, {{"run", "nope"}});
  CHECK(missing.code() == ErrorCode::not_found);
  CHECK_THAT(missing.what(), Catch::Contains("nope") && Catch::Contains("no such run"));
  Error no_file = refusal(client, MessageType::run_sample_frames,
                          {{"run", "demo"}, {"step", 300}, {"file", "sample-0.mp4"}});
  CHECK(no_file.code() == ErrorCode::not_found);
  CHECK_THAT(no_file.what(), Catch::Contains("run demo, step 300, sample-0.mp4"));
}

TEST_CASE("sample requests never reach files outside the run's folder", "[service][ipc][security]") {
  TempDir home("mugv-run-samples-hostile");
  ::setenv("MUGV_HOME", home.path().c_str(), 1);
  const RunPaths run = test::write_sample_run(home.path(), "demo", {kVideos[0]});
  // Another run's video and a file of the home beside the runs, reachable through symlinks planted inside
  // the run; a video outside the home too.
  const RunPaths other = test::write_sample_run(home.path(), "other", {{7, "private", {1, 2, 3}}});
  TempDir outside("mugv-run-samples-outside");
  test::write_sample_run(outside.path(), "elsewhere", {{1, "outside", {9, 9, 9}}});
  const fs::path outside_video =
      sample_step_dir(RunPaths{outside / "runs" / "elsewhere"}, 1) / "sample-0.mp4";
  fs::create_symlink(outside_video, sample_step_dir(run, 100) / "escape.mp4");
  fs::create_symlink(sample_step_dir(other, 7) / "sample-0.mp4", sample_step_dir(run, 100) / "neighbour.mp4");
  fs::create_directory_symlink(sample_step_dir(RunPaths{outside / "runs" / "elsewhere"}, 1),
                               run.samples() / "step-5");
  test::ServeProcess serve(home.path());
  Client client = serve.connect();

  // The listing leaves out what leads outside the run.
  const auto listed = client.request(MessageType::list_run_samples, {{"run", "demo"}});
  REQUIRE(listed["samples"].size() == 1);
  CHECK(listed["samples"][0]["file"] == "sample-0.mp4");

  // Run names that are paths.
  for (const std::string name : {"..", "../demo", "/etc", "demo/../other", "."}) {
    INFO("run " << name);
    for (const Error& e : {refusal(client, MessageType::list_run_samples, {{"run", name}}),
                           refusal(client, MessageType::run_sample_frames,
                                   {{"run", name}, {"step", 100}, {"file", "sample-0.mp4"}})}) {
      CHECK(e.code() == ErrorCode::invalid_argument);
      CHECK_THAT(e.what(), Catch::Contains("run name"));
    }
  }
  // File names that are paths, hidden or not videos.
  for (const std::string file : {"../../../catalog.sqlite", "../step-100/sample-0.mp4", "/etc/passwd",
                                 ".hidden.mp4", "run.json", "sample-0.mp4/..", ""}) {
    INFO("file " << file);
    Error e =
        refusal(client, MessageType::run_sample_frames, {{"run", "demo"}, {"step", 100}, {"file", file}});
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK_THAT(e.what(), Catch::Contains("file name"));
  }
  // Symlinks out of the run: to another run's video, to a video outside the home, through a linked step.
  for (const auto& [step, file] :
       {std::pair<int, std::string>{100, "neighbour.mp4"}, {100, "escape.mp4"}, {5, "sample-0.mp4"}}) {
    INFO("step " << step << " file " << file);
    Error e =
        refusal(client, MessageType::run_sample_frames, {{"run", "demo"}, {"step", step}, {"file", file}});
    CHECK(e.code() == ErrorCode::forbidden);
    CHECK_THAT(e.what(), Catch::Contains("run demo, step " + std::to_string(step) + ", " + file));
  }
  // Malformed requests are refused before any handler.
  CHECK_THROWS_WITH(
      client.request(MessageType::run_sample_frames, {{"run", "demo"}, {"file", "sample-0.mp4"}}),
      Catch::Contains("step"));
  CHECK_THROWS_WITH(client.request(MessageType::run_sample_frames,
                                   {{"run", "demo"}, {"step", -1}, {"file", "sample-0.mp4"}}),
                    Catch::Contains("step"));
  // The server is still fine.
  CHECK(client.request(MessageType::list_run_samples, {{"run", "demo"}})["samples"].size() == 1);
}
