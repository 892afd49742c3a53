#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/progress.h"
#include "core/strings.h"
#include "core/utf8.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <thread>
#include <vector>

using namespace mugv;

TEST_CASE("error codes round-trip through their names and map to exit codes", "[unit][core]") {
  for (int i = 0; i <= static_cast<int>(ErrorCode::internal); ++i) {
    auto code = static_cast<ErrorCode>(i);
    auto back = error_code_from_string(to_string(code));
    REQUIRE(back);
    CHECK(*back == code);
  }
  CHECK_FALSE(error_code_from_string("no_such_code"));
  CHECK(exit_code_for(ErrorCode::usage) == 2);
  CHECK(exit_code_for(ErrorCode::not_found) == 1);
  CHECK(exit_code_for(ErrorCode::internal) == 1);

  Error e(ErrorCode::format, "x.mp4", "no video stream");
  CHECK(std::string(e.what()) == "x.mp4: no video stream");
  CHECK(e.subject() == "x.mp4");
  CHECK(e.message() == "no video stream");
  CHECK(std::string(Error(ErrorCode::io, "disk full").what()) == "disk full");
}

TEST_CASE("log sink can be swapped and the level filters messages", "[unit][core]") {
  std::vector<std::pair<LogLevel, std::string>> lines;
  LogSink previous = set_log_sink([&](LogLevel level, std::string_view m) { lines.emplace_back(level, m); });
  LogLevel previous_level = log_level();

  set_log_level(LogLevel::warning);
  log_info("hidden");
  log_warning("shown");
  log_error("also shown");
  set_log_level(LogLevel::debug);
  log_debug("now visible");

  set_log_level(previous_level);
  set_log_sink(previous);
  log_info("after restore goes to the old sink");

  REQUIRE(lines.size() == 3);
  CHECK(lines[0] == std::make_pair(LogLevel::warning, std::string("shown")));
  CHECK(lines[1].first == LogLevel::error);
  CHECK(lines[2] == std::make_pair(LogLevel::debug, std::string("now visible")));
  CHECK(log_level_from_string("warning") == LogLevel::warning);
  CHECK_FALSE(log_level_from_string("loud"));
}

TEST_CASE("progress meter reports a plausible rate and ETA", "[unit][core]") {
  std::vector<Progress> reports;
  ProgressMeter meter([&](const Progress& p) { reports.push_back(p); }, "decode", "frames", 100,
                      std::chrono::milliseconds(0));
  for (int i = 1; i <= 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    meter.advance(1);
  }
  const Progress& p = meter.current();
  CHECK(p.done == 5);
  // 5 frames in ~100 ms: about 50 frames/s; generous bounds for a loaded machine.
  CHECK(p.rate_per_s > 5);
  CHECK(p.rate_per_s < 100);
  CHECK(p.eta_s > 0);
  CHECK(p.eta_s == Approx(95 / p.rate_per_s));
  REQUIRE_FALSE(reports.empty());
  meter.update(100);
  CHECK(reports.back().done == 100);  // the final update is always reported
  CHECK(reports.back().eta_s == Approx(0).margin(1e-9));

  std::string line = render_progress_line(meter.current(), 10);
  CHECK(line.find("[##########]") != std::string::npos);
  CHECK(line.find("100/100 frames") != std::string::npos);
}

TEST_CASE("cancel token is shared by copies", "[unit][core]") {
  CancelToken token;
  CancelToken copy = token;
  CHECK_NOTHROW(copy.throw_if_cancelled());
  token.request_cancel();
  CHECK(copy.cancel_requested());
  try {
    copy.throw_if_cancelled("training");
    FAIL("expected a cancellation");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::cancelled);
    CHECK(e.subject() == "training");
  }
}

TEST_CASE("atomic writes replace whole files and fail cleanly", "[unit][core]") {
  test::TempDir dir;
  fs::path target = dir / "config.json";
  write_text_atomic(target, "old");
  write_text_atomic(target, "new contents");
  CHECK(read_text_file(target) == "new contents");

  SECTION("an uncommitted streaming writer leaves the old file and no temporary") {
    {
      AtomicFileWriter writer(target);
      writer.write("partial", 7);
      CHECK(writer.bytes_written() == 7);
    }
    CHECK(read_text_file(target) == "new contents");
    CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);
  }

  SECTION("a path whose parent is a file fails with Error(io) naming the path") {
    fs::path bad = dir / "config.json" / "child.txt";
    try {
      write_text_atomic(bad, "x");
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::io);
      CHECK(e.subject() == bad.string());
    }
    CHECK(read_text_file(target) == "new contents");
  }

  SECTION("reading a missing file is not_found") {
    try {
      (void)read_text_file(dir / "missing.txt");
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::not_found);
    }
  }
}

TEST_CASE("is_utf8 accepts well-formed UTF-8 only as JSON writing does and valid_utf8 repairs the rest",
          "[unit][core]") {
  CHECK(is_utf8(""));
  CHECK(is_utf8("plain ASCII, tabs\t and newlines\n"));
  CHECK(is_utf8(
      "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x8E\xA5 \xEF\xBF\xBF \xF4\x8F\xBF\xBF"));  // é € 🎥 U+FFFF U+10FFFF
  CHECK_FALSE(is_utf8("caf\xE9"));                                                  // Latin-1
  CHECK_FALSE(is_utf8("\xC3"));                                                     // cut short
  CHECK_FALSE(is_utf8("\xC0\xAF"));                                                 // overlong '/'
  CHECK_FALSE(is_utf8("\xE0\x80\xAF"));                                             // overlong, three bytes
  CHECK_FALSE(is_utf8("\xED\xA0\x80"));                                             // a surrogate
  CHECK_FALSE(is_utf8("\xF4\x90\x80\x80"));                                         // past U+10FFFF
  CHECK_FALSE(is_utf8("\xE2\x82"));                                                 // cut short
  CHECK_FALSE(is_utf8("\xE2\x28\xA1"));                                             // a bad continuation byte
  CHECK_FALSE(is_utf8("\x80"));  // a lone continuation byte
  CHECK(decode_utf8("a", 0) == std::pair<uint32_t, size_t>{'a', 1});
  CHECK(decode_utf8("x\xC3\xA9", 1) == std::pair<uint32_t, size_t>{0xE9, 2});
  CHECK(decode_utf8("\xF0\x9F\x8E\xA5", 0) == std::pair<uint32_t, size_t>{0x1F3A5, 4});
  CHECK(decode_utf8("\xED\xA0\x80", 0).second == 0);
  CHECK(valid_utf8("caf\xE9 \xC3\xA9") == "caf\xEF\xBF\xBD \xC3\xA9");
  CHECK(valid_utf8("\xE2\x82") == "\xEF\xBF\xBD\xEF\xBF\xBD");  // a sequence cut short, byte by byte
  CHECK(valid_utf8("plain") == "plain");
  // The same verdict as nlohmann::json's writer on every two-byte string, and valid_utf8 always valid.
  for (int a = 0; a < 256; ++a)
    for (int b = 0; b < 256; ++b) {
      const std::string text{char(a), char(b)};
      bool writes = true;
      try {
        (void)nlohmann::json(text).dump();
      } catch (const nlohmann::json::exception&) {
        writes = false;
      }
      if (is_utf8(text) != writes) FAIL_CHECK("bytes " << a << " " << b);
      if (!is_utf8(valid_utf8(text))) FAIL_CHECK("valid_utf8 of bytes " << a << " " << b);
    }
}

TEST_CASE("string helpers", "[unit][core]") {
  CHECK(split("a,,b", ',') == std::vector<std::string>{"a", "", "b"});
  CHECK(trim("  x y \n") == "x y");
  CHECK(human_bytes(1536) == "1.5 KiB");
  CHECK(human_duration(125) == "2m05s");
  CHECK(cat("clip ", 12, " of ", "x.mp4") == "clip 12 of x.mp4");
  CHECK(shape_string({2, 16, 64}) == "[2, 16, 64]");
  CHECK(shape_string({}) == "[]");
  // Natural order: digit runs by value, the rest by bytes, a prefix first; never equal for distinct names.
  CHECK(natural_less("mugv-1b", "mugv-4b"));
  CHECK(natural_less("mugv-4b", "mugv-10b"));
  CHECK_FALSE(natural_less("mugv-10b", "mugv-4b"));
  CHECK(natural_less("mugv-18b", "small"));
  CHECK(natural_less("a", "a1"));
  CHECK_FALSE(natural_less("a1", "a"));
  CHECK(natural_less("x7", "x007") != natural_less("x007", "x7"));
  CHECK_FALSE(natural_less("tiny", "tiny"));
  CHECK(natural_less("v99999999999999999999999", "v100000000000000000000000"));  // longer than int64
}
