#include "caption/command_captioner.h"
#include "caption/openai_captioner.h"
#include "caption/template_captioner.h"
#include "core/error.h"
#include "http_stub.h"

#include <catch2/catch.hpp>

using namespace mugv;
using namespace std::chrono_literals;

namespace {

CaptionInput sample_input() {
  CaptionInput in;
  in.clip_id = 7;
  in.source = "/videos/beach.mp4";
  in.start_s = 1.5;
  in.end_s = 4.0;
  RgbFrame f;
  f.width = f.height = 8;
  f.rgb.assign(8 * 8 * 3, 128);
  in.keyframes = {f, f, f};
  in.metadata = {{"source_name", "beach.mp4"}, {"motion", 3.5}, {"scene", {{"kind", "outdoor"}}}};
  return in;
}

std::string chat_reply(const std::string& content) {
  return nlohmann::json{{"choices", {{{"message", {{"role", "assistant"}, {"content", content}}}}}}}.dump();
}

}  // namespace

TEST_CASE("the template captioner fills metadata and refuses missing keys", "[unit][caption]") {
  TemplateCaptioner t("a clip from {source_name}, {scene.kind}, motion {motion}");
  auto r = t.caption(sample_input());
  REQUIRE(r.text);
  CHECK(*r.text == "a clip from beach.mp4, outdoor, motion 3.5");
  auto missing = TemplateCaptioner("{nope} here").caption(sample_input());
  CHECK_FALSE(missing.text);
  CHECK(missing.error.find("{nope}") != std::string::npos);
  CHECK_THROWS_AS(TemplateCaptioner("  "), Error);
}

TEST_CASE("the command captioner runs a program without a shell, with timeouts and exit codes", "[caption]") {
  CommandCaptioner ok({"sh", "-c", "echo \"clip $1 of $0 has $# frames\"", "{video}", "{clip}", "{frames}"},
                      5000ms);
  auto r = ok.caption(sample_input());
  REQUIRE(r.text);
  CHECK(*r.text == "clip 7 of /videos/beach.mp4 has 4 frames");

  auto slow = CommandCaptioner({"sleep", "5"}, 200ms).caption(sample_input());
  CHECK_FALSE(slow.text);
  CHECK(slow.retryable);
  CHECK(slow.error.find("timeout") != std::string::npos);

  auto failing =
      CommandCaptioner({"sh", "-c", "echo broken model >&2; exit 3"}, 5000ms).caption(sample_input());
  CHECK_FALSE(failing.text);
  CHECK(failing.error.find("exit code 3") != std::string::npos);
  CHECK(failing.error.find("broken model") != std::string::npos);

  auto latin1 = CommandCaptioner({"printf", "caf\xE9"}, 5000ms).caption(sample_input());
  CHECK_FALSE(latin1.text);
  CHECK(latin1.error.find("not UTF-8") != std::string::npos);

  auto missing = CommandCaptioner({"/no/such/captioner"}, 1000ms).caption(sample_input());
  CHECK_FALSE(missing.text);
  CHECK(missing.error.find("/no/such/captioner") != std::string::npos);
}

TEST_CASE("the OpenAI-compatible captioner against a local server: success, timeout, malformed, errors",
          "[caption]") {
  SECTION("success sends the keyframes as data URLs") {
    test::HttpStub server([](const std::string&) {
      return test::StubReply{200, chat_reply("  a sunny beach  ")};
    });
    OpenAICaptioner c({server.base_url(), "local-vlm", "secret", "describe", 5000ms, 100});
    auto r = c.caption(sample_input());
    REQUIRE(r.text);
    CHECK(*r.text == "a sunny beach");
    auto sent = nlohmann::json::parse(server.last_body());
    CHECK(sent["model"] == "local-vlm");
    const auto& content = sent["messages"][0]["content"];
    REQUIRE(content.size() == 4);
    CHECK(content[1]["image_url"]["url"].get<std::string>().rfind("data:image/png;base64,iVBOR", 0) == 0);
  }
  SECTION("timeout is retryable") {
    test::HttpStub server([](const std::string&) { return test::StubReply{200, chat_reply("late"), 1500}; });
    OpenAICaptioner c({server.base_url(), "m", "", "describe", 300ms, 100});
    auto r = c.caption(sample_input());
    CHECK_FALSE(r.text);
    CHECK(r.retryable);
    CHECK(r.error.find("timeout") != std::string::npos);
  }
  SECTION("malformed replies are not retried") {
    test::HttpStub server([](const std::string&) { return test::StubReply{200, "<html>oops</html>"}; });
    auto r = OpenAICaptioner({server.base_url(), "m", "", "d", 5000ms, 100}).caption(sample_input());
    CHECK_FALSE(r.text);
    CHECK_FALSE(r.retryable);
    CHECK(r.error.find("malformed") != std::string::npos);
    CHECK(parse_chat_reply("{\"choices\": []}").error.find("choices[0]") != std::string::npos);
  }
  SECTION("server errors are retryable, client errors are not") {
    test::HttpStub server([](const std::string&) {
      return test::StubReply{503, "{\"error\": \"loading\"}"};
    });
    auto r = OpenAICaptioner({server.base_url(), "m", "", "d", 5000ms, 100}).caption(sample_input());
    CHECK(r.retryable);
    CHECK(r.error.find("HTTP 503") != std::string::npos);
  }
  SECTION("unreachable server") {
    auto r = OpenAICaptioner({"http://127.0.0.1:1/v1", "m", "", "d", 2000ms, 100}).caption(sample_input());
    CHECK_FALSE(r.text);
    CHECK(r.retryable);
  }
  CHECK_THROWS_AS(OpenAICaptioner({"ftp://x", "m", "", "d", 1000ms, 10}), Error);
}
