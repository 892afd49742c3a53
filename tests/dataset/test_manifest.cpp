#include "dataset/manifest.h"

#include "core/error.h"
#include "core/paths.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

using namespace mugv;
using mugv::test::TempDir;

TEST_CASE("manifests round-trip as JSONL and CSV with relative paths and extra fields", "[unit][dataset]") {
  TempDir dir;
  std::vector<ManifestEntry> entries(2);
  entries[0].path = dir.path() / "clips" / "a.mp4";
  entries[0].caption = "a \"quoted\", comma caption";
  entries[0].start_s = 1.5;
  entries[0].end_s = 3.0;
  entries[0].fps = 24;
  entries[0].extra = {{"sharpness", 512.5}, {"split", "train"}};
  entries[1].path = "/elsewhere/b.mp4";
  entries[1].caption = "plain";
  for (const char* name : {"m.jsonl", "m.json", "m.csv"}) {
    write_manifest(dir / name, entries);
    auto read = read_manifest(dir / name);
    INFO(name);
    REQUIRE(read.problems.empty());
    REQUIRE(read.entries.size() == 2);
    CHECK(read.entries[0].path == entries[0].path);
    CHECK(read.entries[0].caption == entries[0].caption);
    CHECK(*read.entries[0].start_s == 1.5);
    CHECK(*read.entries[0].end_s == 3.0);
    CHECK(read.entries[0].extra["sharpness"].get<double>() == 512.5);
    CHECK(read.entries[0].extra["split"] == "train");
    CHECK(read.entries[1].path == fs::path("/elsewhere/b.mp4"));
    CHECK_FALSE(read.entries[1].start_s.has_value());
  }
  CHECK(mugv::read_text_file(dir / "m.jsonl").find("\"clips/a.mp4\"") != std::string::npos);
  // A .json manifest is one JSON array that other tools read as it is.
  const auto array = nlohmann::json::parse(mugv::read_text_file(dir / "m.json"));
  REQUIRE(array.is_array());
  CHECK(array.size() == 2);
  CHECK(array[0]["path"] == "clips/a.mp4");
  write_manifest(dir / "empty.json", {});
  CHECK(nlohmann::json::parse(mugv::read_text_file(dir / "empty.json")) == nlohmann::json::array());
  CHECK(read_manifest(dir / "empty.json").entries.empty());
  CHECK(read_manifest(dir / "empty.json").problems.empty());
}

TEST_CASE("a JSON array manifest is read element by element and a bad one costs that element",
          "[unit][dataset]") {
  TempDir dir;
  // Pretty-printed, as other tools write it: the bad elements are problems of the lines they start on.
  mugv::test::write_bytes(dir / "m.json",
                          "\n"
                          "[\n"
                          "  {\n"
                          "    \"path\": \"a.mp4\",\n"
                          "    \"caption\": \"a comma, a ] and a \\\"quote\\\" in a string\",\n"
                          "    \"tags\": [\"x\", {\"y\": [1, 2]}]\n"
                          "  },\n"
                          "  {\"caption\": \"no path\"},\n"
                          "  {\"path\": \"b.mp4\", \"start\": 5, \"end\": 2},\n"
                          "  {\"path\": \"c.mp4\" \"caption\": \"missing comma\"},\n"
                          "  ,\n"
                          "  {\"path\": \"d.mp4\", \"fps\": 24}\n"
                          "]\n");
  auto read = read_manifest(dir / "m.json");
  REQUIRE(read.entries.size() == 2);
  CHECK(read.entries[0].path == dir.path() / "a.mp4");
  CHECK(read.entries[0].caption == "a comma, a ] and a \"quote\" in a string");
  CHECK(read.entries[0].extra["tags"][1]["y"][1] == 2);
  CHECK(read.entries[1].path == dir.path() / "d.mp4");
  CHECK(*read.entries[1].fps == 24);
  REQUIRE(read.problems.size() == 4);
  CHECK(read.problems[0].line == 8);
  CHECK(read.problems[0].reason.find("path") != std::string::npos);
  CHECK(read.problems[1].line == 9);
  CHECK(read.problems[2].line == 10);
  CHECK(read.problems[2].reason.find("not valid JSON") != std::string::npos);
  CHECK(read.problems[3].line == 11);
  CHECK(read.problems[3].reason.find("empty element") != std::string::npos);

  // A file cut short keeps what it has whole; the missing ']' and the cut element are problems.
  mugv::test::write_bytes(dir / "cut.json",
                          "[{\"path\": \"a.mp4\"},\n{\"path\": \"b.mp4\"},\n{\"path\": \"c.m");
  read = read_manifest(dir / "cut.json");
  REQUIRE(read.entries.size() == 2);
  REQUIRE(read.problems.size() == 2);
  CHECK(read.problems[0].line == 3);
  CHECK(read.problems[0].reason.find("not valid JSON") != std::string::npos);
  CHECK(read.problems[1].reason.find("not closed") != std::string::npos);
  // Text after the array is a problem; the array is read.
  mugv::test::write_bytes(dir / "tail.json", "[{\"path\": \"a.mp4\"}]\n[{\"path\": \"b.mp4\"}]\n");
  read = read_manifest(dir / "tail.json");
  CHECK(read.entries.size() == 1);
  REQUIRE(read.problems.size() == 1);
  CHECK(read.problems[0].line == 2);
  // A .json file of JSON lines (as earlier exports wrote them) is read as lines.
  mugv::test::write_bytes(dir / "lines.json", "{\"path\": \"a.mp4\"}\n{\"path\": \"b.mp4\"}\n");
  read = read_manifest(dir / "lines.json");
  CHECK(read.entries.size() == 2);
  CHECK(read.problems.empty());
}

TEST_CASE("a UTF-8 byte order mark before a manifest or a sidecar caption is skipped", "[unit][dataset]") {
  TempDir dir;
  const std::string bom = "\xEF\xBB\xBF";
  mugv::test::write_bytes(dir / "m.csv", bom + "path,caption\na.mp4,caf\xC3\xA9\n");
  mugv::test::write_bytes(dir / "m.jsonl", bom + "{\"path\": \"a.mp4\"}\n");
  mugv::test::write_bytes(dir / "m.json", bom + "[{\"path\": \"a.mp4\"}]");
  for (const char* name : {"m.csv", "m.jsonl", "m.json"}) {
    INFO(name);
    const auto read = read_manifest(dir / name);
    CHECK(read.problems.empty());
    REQUIRE(read.entries.size() == 1);
    CHECK(read.entries[0].path == dir.path() / "a.mp4");
  }
  CHECK(read_manifest(dir / "m.csv").entries[0].caption == "caf\xC3\xA9");
  mugv::test::write_bytes(dir / "a.txt", bom + "a red circle\n");
  CHECK(read_sidecar_caption(dir / "a.mp4") == std::optional<std::string>("a red circle"));
}

TEST_CASE("bad manifest lines are reported with their line number and the rest is read", "[unit][dataset]") {
  TempDir dir;
  mugv::test::write_bytes(
      dir / "m.jsonl",
      "{\"path\": \"a.mp4\", \"caption\": \"ok\"}\n"
      "not json\n"
      "{\"caption\": \"no path\"}\n"
      "{\"path\": \"b.mp4\", \"start\": 5, \"end\": 2}\n"
      "{\"path\": \"d.mp4\", \"start\": 1e999}\n"  // nlohmann: out_of_range, not parse_error
      "\n"
      "{\"path\": \"c.mp4\"}\n");
  auto read = read_manifest(dir / "m.jsonl");
  REQUIRE(read.entries.size() == 2);
  REQUIRE(read.problems.size() == 4);
  CHECK(read.problems[0].line == 2);
  CHECK(read.problems[1].line == 3);
  CHECK(read.problems[1].reason.find("path") != std::string::npos);
  CHECK(read.problems[2].line == 4);
  CHECK(read.problems[3].line == 5);
  CHECK(read.problems[3].reason.find("not valid JSON") != std::string::npos);
}

TEST_CASE("manifest files that cannot be used at all are refused with the file named", "[unit][dataset]") {
  TempDir dir;
  mugv::test::write_bytes(dir / "m.csv", "caption,start\nx,1\n");
  try {
    read_manifest(dir / "m.csv");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::format);
    CHECK(std::string(e.what()).find("m.csv") != std::string::npos);
  }
  CHECK_THROWS_AS(read_manifest(dir / "missing.jsonl"), Error);
  CHECK_THROWS_AS(read_manifest(dir / "m.txt"), Error);
}

TEST_CASE("CSV records follow RFC 4180 quoting", "[unit][dataset]") {
  auto f = parse_csv_record("a,\"b,c\",\"say \"\"hi\"\"\",");
  REQUIRE(f.size() == 4);
  CHECK(f[1] == "b,c");
  CHECK(f[2] == "say \"hi\"");
  CHECK(f[3].empty());
  CHECK_THROWS_AS(parse_csv_record("\"open"), Error);
  CHECK(csv_escape("x,y") == "\"x,y\"");
}

TEST_CASE("CSV captions with line breaks round-trip and a stray quote costs one line", "[unit][dataset]") {
  TempDir dir;
  std::vector<ManifestEntry> entries(2);
  entries[0].path = dir.path() / "a.mp4";
  entries[0].caption = "first paragraph,\nsecond \"quoted\" one\r\nthird";
  entries[0].extra = {{"a,b", "x\ny"}, {"n", 3}};
  entries[1].path = dir.path() / "b.mp4";
  entries[1].caption = "plain";
  write_manifest(dir / "m.csv", entries);
  auto read = read_manifest(dir / "m.csv");
  REQUIRE(read.problems.empty());
  REQUIRE(read.entries.size() == 2);
  CHECK(read.entries[0].caption == entries[0].caption);
  CHECK(read.entries[0].extra == entries[0].extra);
  CHECK(read.entries[1].caption == "plain");

  // A quote left open to the end of the file: that line is the problem, the lines after it are read. (A
  // stray quote followed by another quote later pairs with it, as RFC 4180 reads it.)
  mugv::test::write_bytes(dir / "bad.csv",
                          "path,caption\r\n"
                          "a.mp4,\"two\r\nlines\"\r\n"
                          "b.mp4,\"never closed\r\n"
                          "c.mp4,fine\r\n"
                          "d.mp4,also fine\n");
  read = read_manifest(dir / "bad.csv");
  REQUIRE(read.entries.size() == 3);
  CHECK(read.entries[0].caption == "two\r\nlines");
  CHECK(read.entries[1].path == dir.path() / "c.mp4");
  CHECK(read.entries[2].caption == "also fine");
  REQUIRE(read.problems.size() == 1);
  CHECK(read.problems[0].line == 4);
  CHECK_THAT(read.problems[0].reason, Catch::Contains("unterminated"));
}

TEST_CASE("manifest times and frame rates must be finite and in range", "[unit][dataset]") {
  TempDir dir;
  mugv::test::write_bytes(dir / "m.csv",
                          "path,start,end,fps,score\n"
                          "a.mp4,nan,,,\n"
                          "b.mp4,,inf,,\n"
                          "c.mp4,-1,2,,\n"
                          "d.mp4,,,0,\n"
                          "e.mp4,,0,,\n"
                          "f.mp4,0.5,2,24,nan\n");
  auto read = read_manifest(dir / "m.csv");
  REQUIRE(read.entries.size() == 1);
  CHECK(read.entries[0].extra["score"] == "nan");  // an extra column keeps text that is not a finite number
  REQUIRE(read.problems.size() == 5);
  CHECK_THAT(read.problems[0].reason, Catch::Contains("start") && Catch::Contains("expected a number"));
  CHECK_THAT(read.problems[1].reason, Catch::Contains("end"));
  CHECK_THAT(read.problems[2].reason, Catch::Contains("negative"));
  CHECK_THAT(read.problems[3].reason, Catch::Contains("fps"));
  CHECK_THAT(read.problems[4].reason, Catch::Contains("not after start"));
  mugv::test::write_bytes(dir / "m.jsonl",
                          "{\"path\": \"a.mp4\", \"fps\": -24}\n{\"path\": \"b.mp4\", \"fps\": 24}\n");
  read = read_manifest(dir / "m.jsonl");
  CHECK(read.entries.size() == 1);
  REQUIRE(read.problems.size() == 1);
  CHECK(read.problems[0].line == 1);
}

TEST_CASE("CSV cells that are not UTF-8 are problems of their line", "[unit][dataset]") {
  TempDir dir;
  mugv::test::write_bytes(dir / "m.csv", "path,caption\na.mp4,caf\xE9\nb.mp4,caf\xC3\xA9\n");
  const auto read = read_manifest(dir / "m.csv");
  REQUIRE(read.entries.size() == 1);
  CHECK(read.entries[0].caption == "caf\xC3\xA9");
  REQUIRE(read.problems.size() == 1);
  CHECK(read.problems[0].line == 2);
  CHECK_THAT(read.problems[0].reason, Catch::Contains("caption") && Catch::Contains("UTF-8"));
  // A catalog caption from before the check is written as U+FFFD rather than refused.
  std::vector<ManifestEntry> entries(1);
  entries[0].path = dir.path() / "a.mp4";
  entries[0].caption = "caf\xE9";
  CHECK(manifest_text(entries, ManifestFormat::jsonl, dir.path()).find("caf\xEF\xBF\xBD") !=
        std::string::npos);
}
