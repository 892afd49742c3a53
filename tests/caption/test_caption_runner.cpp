#include "caption/caption_runner.h"

#include "caption/openai_captioner.h"
#include "caption/template_captioner.h"
#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "core/utf8.h"
#include "dataset/importer.h"
#include "dataset/starter.h"
#include "http_stub.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <atomic>

using namespace mugv;
using namespace std::chrono_literals;
using mugv::test::TempDir;

namespace {

std::vector<Clip> import_shapes(Catalog& catalog, const TempDir& dir, int count) {
  ShapesDatasetOptions o;
  o.out_dir = dir / "shapes";
  o.count = count;
  o.size = 32;
  o.frames = 9;
  (void)make_shapes_dataset(o, CancelToken(), nullptr);
  ImportOptions io;
  io.dataset_name = "shapes";
  io.input = dir / "shapes";
  auto report = import_dataset(catalog, io, CancelToken(), nullptr);
  ClipFilter f;
  f.dataset_id = report.dataset_id;
  return list_clips(catalog, f);
}

}  // namespace

TEST_CASE("captioning a dataset never replaces a human caption and keeps the history", "[caption]") {
  TempDir dir;
  Catalog catalog = Catalog::open(dir / "catalog.sqlite");
  auto clips = import_shapes(catalog, dir, 3);
  REQUIRE(clips.size() == 3);
  (void)add_caption(catalog, clips[0].id, "a person wrote this", CaptionOrigin::human, "editor");

  TemplateCaptioner t("clip {clip_id} from {source_name}");
  CaptionRunOptions o;
  o.dataset = "shapes";
  o.scope = CaptionScope::all;
  auto report = caption_dataset(catalog, t, o, CancelToken(), nullptr);
  CHECK(report.clips == 3);
  CHECK(report.captioned == 2);
  CHECK(report.kept_human == 1);
  CHECK(current_caption(catalog, clips[0].id)->text == "a person wrote this");
  CHECK(current_caption(catalog, clips[1].id)->origin == CaptionOrigin::template_);
  CHECK(caption_history(catalog, clips[0].id).size() == 3);  // import, human, template (not current)

  // not_human leaves the human-captioned clip alone entirely.
  o.scope = CaptionScope::not_human;
  auto again = caption_dataset(catalog, t, o, CancelToken(), nullptr);
  CHECK(again.clips == 2);
}

TEST_CASE("a failing captioner marks clips uncaptioned, never blocks, and a later run retries them",
          "[caption]") {
  TempDir dir;
  Catalog catalog = Catalog::open(dir / "catalog.sqlite");
  auto clips = import_shapes(catalog, dir, 4);
  std::atomic<bool> healthy{false};
  test::HttpStub server([&](const std::string&) {
    if (!healthy) return test::StubReply{200, "garbage"};
    return test::StubReply{
        200, nlohmann::json{{"choices", {{{"message", {{"content", "a dense caption"}}}}}}}.dump()};
  });
  OpenAICaptioner captioner({server.base_url(), "vlm", "", "describe", 5000ms, 50});
  CaptionRunOptions o;
  o.dataset = "shapes";
  o.scope = CaptionScope::not_human;
  o.concurrency = 3;
  o.retry_backoff = 10ms;
  auto failed = caption_dataset(catalog, captioner, o, CancelToken(), nullptr);
  CHECK(failed.captioned == 0);
  REQUIRE(failed.failures.size() == 4);
  CHECK(failed.failures[0].error.find("malformed") != std::string::npos);
  ClipFilter uncaptioned;
  uncaptioned.tag = kUncaptionedTag;
  CHECK(count_clips(catalog, uncaptioned) == 4);
  CHECK(get_clip(catalog, clips[0].id)->scores.extra["caption_error"].get<std::string>().find("malformed") !=
        std::string::npos);

  healthy = true;
  o.scope = CaptionScope::missing;  // exactly the clips that failed
  auto retried = caption_dataset(catalog, captioner, o, CancelToken(), nullptr);
  CHECK(retried.clips == 4);
  CHECK(retried.captioned == 4);
  CHECK(count_clips(catalog, uncaptioned) == 0);
  CHECK(current_caption(catalog, clips[2].id)->text == "a dense caption");
  CHECK(current_caption(catalog, clips[2].id)->origin == CaptionOrigin::model);
}

TEST_CASE("an unreachable captioning server is retried with backoff and reported", "[caption]") {
  TempDir dir;
  Catalog catalog = Catalog::open(dir / "catalog.sqlite");
  import_shapes(catalog, dir, 2);
  OpenAICaptioner captioner({"http://127.0.0.1:1/v1", "vlm", "", "describe", 1000ms, 50});
  CaptionRunOptions o;
  o.dataset = "shapes";
  o.scope = CaptionScope::all;
  o.retries = 1;
  o.retry_backoff = 10ms;
  auto report = caption_dataset(catalog, captioner, o, CancelToken(), nullptr);
  CHECK(report.failures.size() == 2);
  CHECK_THROWS_AS(caption_dataset(catalog, captioner, CaptionRunOptions{"nope"}, CancelToken(), nullptr),
                  Error);
}

TEST_CASE("an error quoting a server's body cut inside a character is stored as valid UTF-8", "[caption]") {
  TempDir dir;
  Catalog catalog = Catalog::open(dir / "catalog.sqlite");
  auto clips = import_shapes(catalog, dir, 1);
  // The captioner quotes the first 200 bytes of an error body: here that cuts the two-byte 'é' in half.
  test::HttpStub server([](const std::string&) {
    return test::StubReply{400, std::string(199, 'x') + "\xC3\xA9"};
  });
  OpenAICaptioner captioner({server.base_url(), "vlm", "", "describe", 5000ms, 50});
  CaptionRunOptions o;
  o.dataset = "shapes";
  o.scope = CaptionScope::all;
  o.retry_backoff = 10ms;
  auto report = caption_dataset(catalog, captioner, o, CancelToken(), nullptr);
  REQUIRE(report.failures.size() == 1);
  CHECK(is_utf8(report.failures[0].error));
  const std::string stored = get_clip(catalog, clips[0].id)->scores.extra["caption_error"].get<std::string>();
  CHECK_THAT(stored, Catch::Contains("HTTP 400") && Catch::EndsWith("x\xEF\xBF\xBD"));
}
