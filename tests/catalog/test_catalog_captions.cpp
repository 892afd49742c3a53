#include "catalog/captions.h"

#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

using namespace mugv;
using mugv::test::TempDir;

namespace {

int64_t make_clip(Catalog& catalog) {
  const Dataset d = create_dataset(catalog, {0, "d", DatasetKind::video, "/d", "", 0});
  Source s;
  s.path = "/d/a.mp4";
  s.content_hash = "h:a";
  s = add_source(catalog, s);
  Clip c;
  c.dataset_id = d.id;
  c.source_id = s.id;
  c.end_s = 1;
  c.end_frame = 24;
  c.fps = 24;
  return add_clips(catalog, {c}).at(0);
}

}  // namespace

TEST_CASE("a model caption never replaces a current human caption, and every version is kept",
          "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const int64_t clip = make_clip(catalog);
  CHECK_FALSE(current_caption(catalog, clip));

  const Caption first = add_caption(catalog, clip, "a dog", CaptionOrigin::model, "qwen2-vl-7b");
  CHECK(first.version == 1);
  CHECK(first.current);

  const Caption human = add_caption(catalog, clip, "a brown dog runs on a beach", CaptionOrigin::human, "");
  CHECK(human.version == 2);
  CHECK(human.current);

  const Caption model = add_caption(catalog, clip, "a dog on sand", CaptionOrigin::model, "qwen2-vl-7b");
  CHECK(model.version == 3);
  CHECK_FALSE(model.current);
  const Caption templated =
      add_caption(catalog, clip, "a dog moving left", CaptionOrigin::template_, "make-dataset");
  CHECK_FALSE(templated.current);
  const Caption imported = add_caption(catalog, clip, "imported text", CaptionOrigin::import, "sidecar");
  CHECK_FALSE(imported.current);

  auto current = current_caption(catalog, clip);
  REQUIRE(current);
  CHECK(current->id == human.id);
  CHECK(current->text == "a brown dog runs on a beach");
  CHECK(current->origin == CaptionOrigin::human);

  auto history = caption_history(catalog, clip);
  REQUIRE(history.size() == 5);
  CHECK(history[0].version == 5);  // newest first
  CHECK(history[2].text == "a dog on sand");
  CHECK(history[2].producer == "qwen2-vl-7b");
  CHECK(history[4].id == first.id);
  int current_count = 0;
  for (const auto& c : history) current_count += c.current ? 1 : 0;
  CHECK(current_count == 1);

  // A person may promote a model version explicitly; then a new model caption may replace it.
  set_current_caption(catalog, model.id);
  CHECK(current_caption(catalog, clip)->id == model.id);
  const Caption newer = add_caption(catalog, clip, "a dog, refined", CaptionOrigin::model, "qwen2-vl-72b");
  CHECK(newer.current);
  CHECK(current_caption(catalog, clip)->id == newer.id);

  // A human edit always wins.
  const Caption edit = add_caption(catalog, clip, "my edit", CaptionOrigin::human, "");
  CHECK(edit.current);
  CHECK(current_caption(catalog, clip)->text == "my edit");
}

TEST_CASE("captions of a missing clip or without an origin are refused", "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const int64_t clip = make_clip(catalog);
  try {
    (void)add_caption(catalog, 999, "x", CaptionOrigin::human, "");
    FAIL("a caption of a missing clip must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::not_found);
    CHECK_THAT(e.message(), Catch::Contains("clip 999"));
  }
  CHECK_THROWS_AS(add_caption(catalog, clip, "x", CaptionOrigin::unknown, ""), Error);
  CHECK_THROWS_AS(set_current_caption(catalog, 12345), Error);
  CHECK(caption_history(catalog, clip).empty());
}
