#include "dataset/starter.h"

#include "core/error.h"
#include "core/paths.h"
#include "dataset/manifest.h"
#include "dataset/shapes.h"
#include "media/decoder.h"
#include "media/probe.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace mugv;
using mugv::test::TempDir;

TEST_CASE("the starter dataset writes real clips, sidecar captions, manifests and a held-out list",
          "[dataset]") {
  TempDir dir;
  ShapesDatasetOptions o;
  o.out_dir = dir.path();
  o.count = 6;
  o.size = 32;
  o.frames = 9;
  o.fps = 8;
  o.seed = 5;
  int reports = 0;
  auto result = make_shapes_dataset(o, CancelToken(), [&](const Progress&) { ++reports; });
  CHECK(reports > 0);
  CHECK(result.train_clips == 6);
  CHECK(result.held_out_combos == result.held_out_clips);
  CHECK(result.held_out_combos > 0);

  auto manifest = read_manifest(result.manifest);
  REQUIRE(manifest.problems.empty());
  REQUIRE(manifest.entries.size() == 6);
  auto held = nlohmann::json::parse(read_text_file(result.held_out_list));
  for (const auto& e : manifest.entries) {
    CHECK(read_sidecar_caption(e.path) == e.caption);
    shapes::Combo combo;
    REQUIRE(shapes::parse_caption(e.caption, &combo, nullptr));
    for (const auto& h : held["combos"])
      CHECK_FALSE(
          (h["color"] == combo.color && h["shape"] == combo.shape && h["direction"] == combo.direction));
  }
  auto info = probe(manifest.entries[0].path);
  CHECK(info.width == 32);
  CHECK(info.height == 32);
  CHECK(info.metadata["title"] == manifest.entries[0].caption);

  // The decoded first frame matches the rendered one closely (the codec is lossy, the shapes are simple).
  VideoDecoder decoder(manifest.entries[0].path, DecodeOptions{});
  auto frame = decoder.next();
  REQUIRE(frame.has_value());
  auto rendered = shapes::training_specs(6, 32, 9, 8, 5, shapes::held_out_combos(5, 0.1), o.placement)[0];
  CHECK(psnr(*frame, shapes::render_frame(rendered, 0)) > 28.0);
}

TEST_CASE("the starter dataset refuses impossible options with the option named", "[unit][dataset]") {
  TempDir dir;
  ShapesDatasetOptions o;
  o.out_dir = dir.path();
  o.size = 30;
  try {
    make_shapes_dataset(o, CancelToken(), nullptr);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(e.subject() == "--size");
  }
}
