// Runs the real `mugv` binary as a user would and checks exit codes, stdout and stderr.
#include "core/dtype_convert.h"
#include "core/paths.h"
#include "core/safetensors.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>

using namespace mugv;
using mugv::test::TempDir;

namespace {

std::string quote(const std::string& s) {
  return test::shell_quote_arg(s);
}

// Runs mugv with `args` (already shell-quoted where needed) and MUGV_HOME set to `home`.
test::CliResult run_mugv(const std::string& args, const fs::path& home) {
  auto r = test::run_mugv_cli(args, home, home);
  REQUIRE(r);
  return *r;
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

  auto bad_value = run_mugv(
      "make-dataset shapes --out " + quote((home.path() / "d").string()) + " --count abc", home.path());
  CHECK(bad_value.exit_code == 2);
  CHECK(bad_value.err.find("--count") != std::string::npos);
}

TEST_CASE("output that cannot be written fails the command", "[cli]") {
  TempDir home;
  auto full = run_mugv("dataset list --json > /dev/full", home.path());
  CHECK(full.exit_code == 1);
  CHECK(full.err.find("standard output") != std::string::npos);
  CHECK(std::count(full.err.begin(), full.err.end(), '\n') == 1);
}

TEST_CASE("every command answers --help", "[cli]") {
  TempDir home;
  for (const char* cmd :
       {"probe", "make-dataset", "dataset import", "dataset list", "dataset show", "export", "caption"}) {
    auto r = run_mugv(std::string(cmd) + " --help", home.path());
    INFO(cmd);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("Usage") != std::string::npos);
  }
}

TEST_CASE("mugv presets lists the installed presets and the user's in name order with their descriptions",
          "[cli]") {
  TempDir home;
  fs::create_directories(home.path() / "presets" / "models");
  test::write_bytes(home.path() / "presets" / "models" / "wide.toml",
                    "description = \"a wider tiny\"\ninherits = \"tiny\"\n[dit]\nhidden = 96\n");
  test::write_bytes(home.path() / "presets" / "models" / "broken.toml", "[dit\n");

  const auto models = run_mugv("presets models --json", home.path());
  REQUIRE(models.exit_code == 0);
  std::vector<std::string> names;
  for (const auto& p : nlohmann::json::parse(models.out)) names.push_back(p["name"].get<std::string>());
  const auto at = [&](const std::string& name) {
    return std::find(names.begin(), names.end(), name) - names.begin();
  };
  CHECK(at("mugv-1b") < at("mugv-4b"));
  CHECK(at("mugv-4b") < at("mugv-10b"));
  CHECK(at("wide") < static_cast<long>(names.size()));

  const auto all = run_mugv("presets", home.path());
  CHECK(all.exit_code == 0);
  CHECK_THAT(all.out, Catch::Contains("vocabularies"));
  CHECK_THAT(all.out, Catch::Contains("a wider tiny"));
  CHECK_THAT(all.out, Catch::Contains("unusable:"));  // the broken file is named, the listing goes on
  CHECK_THAT(all.out, Catch::Contains("broken.toml"));
  const auto train = run_mugv("presets train", home.path());
  const auto line_of = [&](const std::string& name) {
    const size_t at = train.out.find("  " + name + " ");
    return at == std::string::npos ? std::string() : train.out.substr(at, train.out.find('\n', at) - at);
  };
  CHECK_THAT(line_of("tiny-vae"), Catch::EndsWith("[mugv train-vae only]"));  // trainer = "vae"
  CHECK_THAT(line_of("tiny"), !Catch::Contains("only]"));                     // either trainer

  const auto bad = run_mugv("presets ../keys", home.path());
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.err, Catch::Contains("../keys"));
}

TEST_CASE("mugv doctor reports this machine and fails on a data folder or catalog it cannot use", "[cli]") {
  TempDir home;
  auto checks_of = [](const test::CliResult& r) {
    INFO(r.err);
    std::map<std::string, nlohmann::json> by_name;
    const auto report = nlohmann::json::parse(r.out);
    for (const auto& c : report["checks"]) by_name[c["check"].get<std::string>()] = c;
    return by_name;
  };
  const auto healthy = run_mugv("doctor --json", home.path());
  REQUIRE(healthy.exit_code == 0);
  auto checks = checks_of(healthy);
  CHECK(checks["home"]["status"] != "fail");  // "warn" on a disk with under 10 GiB free
  CHECK_THAT(checks["home"]["detail"].get<std::string>(), Catch::Contains(home.path().string()));
  CHECK(checks["catalog"]["status"] == "ok");
  // The encoders every export format needs, and CURVE: what `make test` installs.
  CHECK(checks["ffmpeg"]["status"] == "ok");
  CHECK_THAT(checks["ffmpeg"]["detail"].get<std::string>(), Catch::Contains("mp4 (libx264)"));
  CHECK(checks["zeromq"]["status"] == "ok");
  if (checks.count("cpu")) {  // a build with LibTorch
    CHECK_THAT(checks["cpu"]["detail"].get<std::string>(), Catch::Contains("GFLOP/s"));
    CHECK(checks["fused"]["status"] == "ok");  // the CPU loops; the CUDA kernels where LibTorch has CUDA
    CHECK_THAT(checks["fused"]["detail"].get<std::string>(), Catch::Contains("RoPE"));
    // The BLAS it names is the one Debian's libblas.so.3 resolves to, and the reference one is a warning.
    std::error_code ec;
    const fs::path blas = fs::canonical("/usr/lib/x86_64-linux-gnu/libblas.so.3", ec);
    if (!ec) {
      CHECK_THAT(checks["blas"]["detail"].get<std::string>(), Catch::Contains(blas.string()));
      const bool openblas = blas.string().find("openblas") != std::string::npos;
      CHECK(checks["blas"]["status"] == (openblas ? "ok" : "warn"));
    }
  }

  // --quick reads the same without timing the GEMMs.
  const auto quick = run_mugv("doctor --quick --json", home.path());
  REQUIRE(quick.exit_code == 0);
  checks = checks_of(quick);
  if (checks.count("cpu"))
    CHECK_THAT(checks["cpu"]["detail"].get<std::string>(), Catch::Contains("not measured"));
  CHECK(checks["home"]["status"] != "fail");  // "warn" on a disk with under 10 GiB free

  // A data folder that is a file, and a catalog that is not SQLite: failures naming them, exit 1.
  mugv::test::write_bytes(home / "not-a-folder", "x");
  auto no_home = test::run_mugv_cli("doctor --json", home.path(), home / "not-a-folder");
  REQUIRE(no_home);
  CHECK(no_home->exit_code == 1);
  checks = checks_of(*no_home);
  CHECK(checks["home"]["status"] == "fail");
  CHECK_THAT(checks["home"]["detail"].get<std::string>(), Catch::Contains("not-a-folder"));
  CHECK(checks["home"].contains("fix"));
  mugv::test::write_bytes(home / "catalog.sqlite", std::string(4096, 'x'));
  const auto broken = run_mugv("doctor", home.path());
  CHECK(broken.exit_code == 1);
  CHECK_THAT(broken.out, Catch::Contains("fail  catalog") && Catch::Contains("catalog.sqlite") &&
                             Catch::Contains("fix: restore the catalog"));
}

TEST_CASE("make-dataset, import, list, show and probe work together", "[cli]") {
  TempDir home;
  fs::path data = home.path() / "shapes";
  auto made = run_mugv(
      "make-dataset shapes --out " + quote(data.string()) + " --count 5 --size 32 --frames 9", home.path());
  REQUIRE(made.exit_code == 0);
  // One bad file among the good ones: the import records it and goes on.
  test::write_bytes(data / "train" / "broken.mp4", std::string(1000, '\x07'));
  test::write_bytes(data / "train" / "broken.txt", "a broken clip");
  auto imported =
      run_mugv("dataset import " + quote((data / "train").string()) + " --name shapes --json", home.path());
  REQUIRE(imported.exit_code == 0);
  auto report = nlohmann::json::parse(imported.out);
  CHECK(report["clips_added"] == 5);
  CHECK(report["failed"] == 1);
  CHECK(report["failures"][0]["path"].get<std::string>().find("broken.mp4") != std::string::npos);

  auto again =
      run_mugv("dataset import " + quote((data / "train").string()) + " --name shapes --json", home.path());
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
                   home.path())
              .exit_code == 0);
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

  auto frames = run_mugv(
      "export " + quote(clip.string()) + " --out " + quote((home.path() / "frames").string()), home.path());
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
                   home.path())
              .exit_code == 0);
  REQUIRE(run_mugv("dataset import " + quote(data.string()) + " --name s", home.path()).exit_code == 0);
  auto no_template = run_mugv("caption --dataset s --captioner template", home.path());
  CHECK(no_template.exit_code == 2);
  CHECK(no_template.err.find("--template") != std::string::npos);
  auto r = run_mugv("caption --dataset s --captioner template --template 'clip {clip_id}' --scope all --json",
                    home.path());
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["captioned"] == 2);
  auto shown = nlohmann::json::parse(run_mugv("dataset show s --json", home.path()).out);
  CHECK(shown["clips"][0]["caption"].get<std::string>().rfind("clip ", 0) == 0);
  CHECK(shown["clips"][0]["caption_origin"] == "template");
}

TEST_CASE("mugv convert rewrites dit.pt as safetensors, optionally in bf16, and refuses what is not weights",
          "[cli]") {
  TempDir home;
  auto pt = test::golden_data_file("mugv_dit_tiny.pt");
  auto reference = test::golden_data_file("mugv_dit_tiny.safetensors");
  if (!pt || !reference) return;
  const fs::path out = home.path() / "dit.safetensors", half = home.path() / "dit-bf16.safetensors";
  auto r = run_mugv("convert " + quote(pt->string()) + " " + quote(out.string()) + " --json", home.path());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["format"] == "torch_zip");
  CHECK(j["tensors"] == 63);
  CHECK(j["converted_tensors"] == 0);
  // The same tensors, byte for byte, as the reference's own safetensors file.
  const SafetensorsFile written = SafetensorsFile::open(out), expected = SafetensorsFile::open(*reference);
  REQUIRE(written.names() == expected.names());
  for (const auto& name : expected.names()) {
    const TensorView &a = written.at(name), &b = expected.at(name);
    REQUIRE(a.shape == b.shape);
    REQUIRE(a.size_bytes == b.size_bytes);
    CHECK(std::memcmp(a.data, b.data, a.size_bytes) == 0);
  }
  CHECK(written.metadata().at("source_format") == "torch_zip");

  r = run_mugv("convert " + quote(pt->string()) + " " + quote(half.string()) + " --dtype bf16", home.path());
  REQUIRE(r.exit_code == 0);
  const SafetensorsFile narrowed = SafetensorsFile::open(half);
  const TensorView& w = narrowed.at("blocks.0.attn.qkv.weight");
  const TensorView& w32 = expected.at("blocks.0.attn.qkv.weight");
  CHECK(w.dtype == DType::bf16);
  CHECK(w.size_bytes * 2 == w32.size_bytes);
  float first = 0;
  std::memcpy(&first, w32.data, 4);
  uint16_t first_bf16 = 0;
  std::memcpy(&first_bf16, w.data, 2);
  CHECK(first_bf16 == float_to_bf16(first));

  test::write_bytes(home.path() / "notes.pt", "not weights at all");
  auto not_weights = run_mugv("convert " + quote((home.path() / "notes.pt").string()) + " " +
                                  quote((home.path() / "x.safetensors").string()),
                              home.path());
  CHECK(not_weights.exit_code == 1);
  CHECK(not_weights.err.find("neither a safetensors file nor a torch.save zip checkpoint") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(home.path() / "x.safetensors"));
  auto wrong_out =
      run_mugv("convert " + quote(pt->string()) + " " + quote((home.path() / "x.bin").string()), home.path());
  CHECK(wrong_out.exit_code == 2);
}

TEST_CASE("mugv megatron export writes the released DiT as a Megatron checkpoint that imports back unchanged",
          "[cli][interop]") {
  TempDir home;
  auto pt = test::golden_data_file("mugv_dit_tiny.pt");
  auto reference = test::golden_data_file("mugv_dit_tiny.safetensors");
  if (!pt || !reference) return;
  const fs::path root = home.path() / "megatron", back = home.path() / "back.safetensors";
  auto r = run_mugv("megatron export " + quote(pt->string()) + " " + quote(root.string()) + " --tp 2 --json",
                    home.path());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto report = nlohmann::json::parse(r.out);
  CHECK(report["layers"].get<int>() > 0);
  CHECK(fs::exists(root / "latest_checkpointed_iteration.txt"));
  CHECK(fs::exists(root / "release" / ".metadata"));
  CHECK(fs::exists(root / "release" / "common.pt"));

  r = run_mugv("megatron import " + quote(root.string()) + " " + quote(back.string()) + " --json",
               home.path());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const SafetensorsFile imported = SafetensorsFile::open(back), expected = SafetensorsFile::open(*reference);
  REQUIRE(imported.names() == expected.names());
  for (const auto& name : expected.names()) {
    INFO(name);
    const TensorView &a = imported.at(name), &b = expected.at(name);
    REQUIRE(a.shape == b.shape);
    REQUIRE(a.size_bytes == b.size_bytes);
    CHECK(std::memcmp(a.data, b.data, a.size_bytes) == 0);
  }
  // Exporting onto the written checkpoint is refused unless told to overwrite; a folder that is not a
  // checkpoint is named.
  CHECK(run_mugv("megatron export " + quote(pt->string()) + " " + quote(root.string()), home.path())
            .exit_code == 1);
  auto missing =
      run_mugv("megatron import " + quote(home.path().string()) + " " + quote(back.string()), home.path());
  CHECK(missing.exit_code == 1);
  CHECK(missing.err.find(home.path().string()) != std::string::npos);
}

TEST_CASE("an encoded video depends on its frames alone, not on what the memory held before",
          "[cli][media]") {
  // x264's macroblock tree reads memory it never wrote when frames are a few macroblocks on a side
  // (media/encoder.cpp). glibc fills each allocation with the byte in MALLOC_PERTURB_, so two runs that
  // differ only in it must write the same files (an allocator that ignores it, as under ASan, makes them
  // trivially so).
  TempDir home;
  auto make = [&](const char* perturb) {
    const fs::path out = home.path() / (std::string("perturb-") + perturb);
    ::setenv("MALLOC_PERTURB_", perturb, 1);
    const auto r = run_mugv(
        "make-dataset shapes --out " + quote(out.string()) + " --count 2 --size 32 --frames 17", home.path());
    ::unsetenv("MALLOC_PERTURB_");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return out;
  };
  const fs::path a = make("85"), b = make("170");
  auto bytes = [](const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  int videos = 0;
  for (const auto& entry : fs::recursive_directory_iterator(a)) {
    if (entry.path().extension() != ".mp4") continue;
    const fs::path other = b / fs::relative(entry.path(), a);
    INFO(entry.path());
    REQUIRE(fs::exists(other));
    CHECK(bytes(entry.path()) == bytes(other));
    ++videos;
  }
  CHECK(videos == 18);  // 2 training clips and 16 held-out ones
}
