// mugv make-dataset shapes --out DIR: the procedural starter dataset.
#include "command.h"

#include "core/error.h"
#include "dataset/starter.h"

#include <nlohmann/json.hpp>

#include <iostream>

namespace mugv::cli {
namespace {

void define(ParamRegistry& r) {
  r.add(
      param("dataset.out", "--out", ParamType::path, nullptr, "folder to write the dataset into", "dataset"));
  auto count =
      param("dataset.count", "--count", ParamType::integer, 256, "number of training clips", "dataset");
  count.min_value = 1;
  r.add(count);
  auto size = param("dataset.size", "--size", ParamType::integer, 64, "frame side in pixels (multiple of 8)",
                    "dataset");
  size.min_value = 16;
  size.max_value = 1024;
  r.add(size);
  auto frames = param("dataset.frames", "--frames", ParamType::integer, 17, "frames per clip", "dataset");
  frames.min_value = 1;
  r.add(frames);
  auto fps = param("dataset.fps", "--fps", ParamType::real, 8.0, "frames per second", "dataset");
  fps.min_value = 0.1;
  r.add(fps);
  r.add(param("dataset.seed", "--seed", ParamType::integer, 1,
              "random seed (the same seed writes the same set)", "dataset"));
  auto held = param("dataset.held_out", "--held-out", ParamType::real, 0.1,
                    "fraction of color/shape/direction combinations held out of training", "dataset");
  held.min_value = 0.0;
  held.max_value = 0.5;
  r.add(held);
  auto placement =
      param("dataset.placement", "--placement", ParamType::choice, "edge",
            "where a clip's path lies: edge (starts at the edge it leaves, travels half the frame) "
            "or anywhere (a third of the frame, anywhere in view)",
            "dataset");
  placement.choices = {"edge", "anywhere"};
  r.add(placement);
}

int run(const Invocation& inv) {
  if (inv.positional[0] != "shapes")
    throw Error(ErrorCode::usage, inv.positional[0], "unknown generator; available: shapes");
  if (!inv.values.has("dataset.out")) throw Error(ErrorCode::usage, "--out", "an output folder is required");
  ShapesDatasetOptions o;
  o.out_dir = inv.values.get_text("dataset.out");
  o.count = static_cast<int>(inv.values.get_int("dataset.count"));
  o.size = static_cast<int>(inv.values.get_int("dataset.size"));
  o.frames = static_cast<int>(inv.values.get_int("dataset.frames"));
  o.fps = inv.values.get_real("dataset.fps");
  o.seed = static_cast<uint64_t>(inv.values.get_int("dataset.seed"));
  o.held_out_fraction = inv.values.get_real("dataset.held_out");
  o.placement = shapes::placement_from_string(inv.values.get_text("dataset.placement"));
  auto result = make_shapes_dataset(o, inv.cancel, inv.progress);
  finish_progress_line();
  if (inv.json) {
    std::cout << nlohmann::json{{"train_clips", result.train_clips},
                                {"held_out_clips", result.held_out_clips},
                                {"held_out_combos", result.held_out_combos},
                                {"manifest", result.manifest.string()},
                                {"held_out_manifest", result.held_out_manifest.string()},
                                {"held_out_list", result.held_out_list.string()}}
                     .dump(2)
              << "\n";
  } else {
    std::cout << "wrote " << result.train_clips << " training clips and " << result.held_out_clips
              << " held-out clips (" << result.held_out_combos << " combinations never in training) to "
              << o.out_dir.string() << "\n  manifest  " << result.manifest.string() << "\n  held out  "
              << result.held_out_list.string() << "\n";
  }
  return 0;
}

}  // namespace

Command make_dataset_command() {
  Command c;
  c.words = {"make-dataset"};
  c.summary = "write the procedural shapes starter dataset (mp4 clips, captions, manifest, held-out list)";
  c.usage = "shapes --out DIR [--count N --size 64 --frames 17 --fps 8 --seed S]";
  c.min_positional = c.max_positional = 1;
  c.define = define;
  c.run = run;
  c.job_kind = "make_dataset";
  c.positional_type = ParamType::text;  // the generator's name
  return c;
}

}  // namespace mugv::cli
