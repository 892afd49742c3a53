// Runs the real `mugv` binary as a user would and checks exit codes, stdout and stderr.
#include "core/paths.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <sys/wait.h>

using namespace mugv;
using mugv::test::TempDir;

namespace {

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs mugv with `args` (already shell-quoted where needed) and MUGV_HOME set to `home`.
RunResult run_mugv(const std::string& args, const fs::path& home) {
  static int counter = 0;
  fs::path err_file = home / ("stderr-" + std::to_string(counter++) + ".txt");
  std::string cmd = "MUGV_HOME=" + quote(home.string()) + " " + quote((test::binary_dir() / "bin/mugv").string()) +
                    " " + args + " 2>" + quote(err_file.string());
  RunResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_text_file(err_file);
  return r;
}

}  // namespace

TEST_CASE("mugv exit codes: 0 ok, 2 usage, 1 failure with a one-line reason", "[cli]") {
  TempDir home;
  CHECK(run_mugv("--version", home.path()).exit_code == 0);
  CHECK(run_mugv("--help", home.path()).exit_code == 0);

  auto unknown = run_mugv("frobnicate", home.path());
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.find("frobnicate") != std::string::npos);

  auto bad_flag = run_mugv("probe --no-such-flag x.mp4", home.path());
  CHECK(bad_flag.exit_code == 2);
  CHECK(bad_flag.err.find("--no-such-flag") != std::string::npos);

  auto missing = run_mugv("probe " + quote((home.path() / "missing.mp4").string()), home.path());
  CHECK(missing.exit_code == 1);
  CHECK(missing.err.find("missing.mp4") != std::string::npos);
  CHECK(std::count(missing.err.begin(), missing.err.end(), '\n') == 1);

  test::write_bytes(home.path() / "notes.mp4", "this is a text file, not a video\n");
  auto text = run_mugv("probe " + quote((home.path() / "notes.mp4").string()), home.path());
  CHECK(text.exit_code == 1);
  CHECK(text.err.find("notes.mp4") != std::string::npos);

  auto bad_value = run_mugv("make-dataset shapes --out " + quote((home.path() / "d").string()) + " --count abc",
                            home.path());
  CHECK(bad_value.exit_code == 2);
  CHECK(bad_value.err.find("--count") != std::string::npos);
}

TEST_CASE("every command answers --help", "[cli]") {
  TempDir home;
  for (const char* cmd : {"probe", "make-dataset", "dataset import", "dataset list", "dataset show", "export", "caption"}) {
    auto r = run_mugv(std::string(cmd) + " --help", home.path());
    INFO(cmd);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("Usage") != std::string::npos);
  }
}

TEST_CASE("make-dataset, import, list, show and probe work together", "[cli]") {
  TempDir home;
  fs::path data = home.path() / "shapes";
  auto made = run_mugv("make-dataset shapes --out " + quote(data.string()) + " --count 5 --size 32 --frames 9",
                       home.path());
  REQUIRE(made.exit_code == 0);
  // One bad file among the good ones: the import records it and goes on.
  test::write_bytes(data / "train" / "broken.mp4", std::string(1000, '\x07'));
  test::write_bytes(data / "train" / "broken.txt", "a broken clip");
  auto imported = run_mugv("dataset import " + quote((data / "train").string()) + " --name shapes --json", home.path());
  REQUIRE(imported.exit_code == 0);
  auto report = nlohmann::json::parse(imported.out);
  CHECK(report["clips_added"] == 5);
  CHECK(report["failed"] == 1);
  CHECK(report["failures"][0]["path"].get<std::string>().find("broken.mp4") != std::string::npos);

  auto again = run_mugv("dataset import " + quote((data / "train").string()) + " --name shapes --json", home.path());
  REQUIRE(again.exit_code == 0);
  CHECK(nlohmann::json::parse(again.out)["clips_added"] == 0);

  auto list = run_mugv("dataset list --json", home.path());
  REQUIRE(list.exit_code == 0);
  auto datasets = nlohmann::json::parse(list.out);
  REQUIRE(datasets.size() == 1);
  CHECK(datasets[0]["name"] == "shapes");
  CHECK(datasets[0]["clips"] == 5);

  auto show = run_mugv("dataset show shapes --json", home.path());
  REQUIRE(show.exit_code == 0);
  auto shown = nlohmann::json::parse(show.out);
  CHECK(shown["clips"].size() == 5);
  CHECK(shown["clips"][0]["caption"].get<std::string>().rfind("a ", 0) == 0);

  auto unknown = run_mugv("dataset show nope", home.path());
  CHECK(unknown.exit_code == 1);
  CHECK(unknown.err.find("nope") != std::string::npos);

  fs::path clip = data / "train" / "shape_00000.mp4";
  auto probed = run_mugv("probe --json " + quote(clip.string()), home.path());
  REQUIRE(probed.exit_code == 0);
  auto info = nlohmann::json::parse(probed.out);
  CHECK(info["width"] == 32);
  CHECK(info["frame_count"] == 9);
}

TEST_CASE("export writes clips and contact sheets, and refuses unwritable outputs", "[cli]") {
  TempDir home;
  fs::path data = home.path() / "shapes";
  REQUIRE(run_mugv("make-dataset shapes --out " + quote(data.string()) + " --count 1 --size 32 --frames 9",
                   home.path()).exit_code == 0);
  fs::path clip = data / "train" / "shape_00000.mp4";
  for (const char* out : {"x.gif", "x.webm", "x.mp4"}) {
    auto r = run_mugv("export " + quote(clip.string()) + " --out " + quote((home.path() / out).string()) +
                          " --title hello --comment 'seed 7'",
                      home.path());
    INFO(out << " " << r.err);
    CHECK(r.exit_code == 0);
    CHECK(fs::file_size(home.path() / out) > 0);
  }
  auto probed = run_mugv("probe --json " + quote((home.path() / "x.mp4").string()), home.path());
  CHECK(nlohmann::json::parse(probed.out)["metadata"]["title"] == "hello");

  auto sheet = run_mugv("export " + quote(clip.string()) + " --contact-sheet " +
                            quote((home.path() / "sheet.png").string()) + " --tiles 4",
                        home.path());
  CHECK(sheet.exit_code == 0);
  CHECK(fs::exists(home.path() / "sheet.png"));

  auto frames = run_mugv("export " + quote(clip.string()) + " --out " + quote((home.path() / "frames").string()),
                         home.path());
  CHECK(frames.exit_code == 0);
  CHECK(fs::exists(home.path() / "frames" / "frame_00001.png"));

  auto bad = run_mugv("export " + quote(clip.string()) + " --out /proc/nope/x.mp4", home.path());
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.find("/proc/nope") != std::string::npos);
}

TEST_CASE("caption writes template captions and refuses missing options", "[cli]") {
  TempDir home;
  fs::path data = home.path() / "shapes";
  REQUIRE(run_mugv("make-dataset shapes --out " + quote(data.string()) + " --count 2 --size 32 --frames 9",
                   home.path()).exit_code == 0);
  REQUIRE(run_mugv("dataset import " + quote(data.string()) + " --name s", home.path()).exit_code == 0);
  auto no_template = run_mugv("caption --dataset s --captioner template", home.path());
  CHECK(no_template.exit_code == 2);
  CHECK(no_template.err.find("--template") != std::string::npos);
  auto r = run_mugv("caption --dataset s --captioner template --template 'clip {clip_id}' --scope all --json", home.path());
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["captioned"] == 2);
  auto shown = nlohmann::json::parse(run_mugv("dataset show s --json", home.path()).out);
  CHECK(shown["clips"][0]["caption"].get<std::string>().rfind("clip ", 0) == 0);
  CHECK(shown["clips"][0]["caption_origin"] == "template");
}
