#include "dataset/starter.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "dataset/manifest.h"
#include "dataset/shapes.h"
#include "media/encoder.h"

#include <nlohmann/json.hpp>

#include <cstdio>

namespace mugv {
namespace {

void validate(const ShapesDatasetOptions& o) {
  if (o.out_dir.empty()) throw Error(ErrorCode::invalid_argument, "--out", "an output folder is required");
  if (o.count < 1 || o.count > 1000000)
    throw Error(ErrorCode::invalid_argument, "--count", cat("must be in 1..1000000, got ", o.count));
  if (o.size < 16 || o.size > 1024 || o.size % 8 != 0)
    throw Error(ErrorCode::invalid_argument, "--size",
                cat("must be a multiple of 8 in 16..1024, got ", o.size));
  if (o.frames < 1 || o.frames > 1000)
    throw Error(ErrorCode::invalid_argument, "--frames", cat("must be in 1..1000, got ", o.frames));
  if (!(o.fps > 0 && o.fps <= 240))
    throw Error(ErrorCode::invalid_argument, "--fps", cat("must be in (0, 240], got ", o.fps));
  if (o.held_out_fraction < 0 || o.held_out_fraction > 0.5)
    throw Error(ErrorCode::invalid_argument, "--held-out", "must be in [0, 0.5]");
}

ManifestEntry write_clip(const shapes::ClipSpec& spec, const fs::path& file, const ShapesDatasetOptions& o,
                         const std::string& split) {
  EncodeOptions enc;
  enc.format = ContainerFormat::mp4;
  enc.fps = spec.fps;
  enc.crf = o.crf;
  enc.metadata["title"] = shapes::caption_of(spec);
  enc.metadata["comment"] = "mugv starter dataset: shapes";
  encode_video(file, shapes::render_clip(spec), enc);
  write_sidecar_caption(file, shapes::caption_of(spec));
  ManifestEntry entry;
  entry.path = file;
  entry.caption = shapes::caption_of(spec);
  entry.fps = spec.fps;
  entry.extra = {{"color", spec.color},
                 {"shape", spec.shape},
                 {"direction", spec.direction},
                 {"background", spec.background},
                 {"split", split},
                 {"frames", spec.frames},
                 {"width", spec.size},
                 {"height", spec.size}};
  return entry;
}

}  // namespace

ShapesDatasetResult make_shapes_dataset(const ShapesDatasetOptions& o, const CancelToken& cancel,
                                        const ProgressFn& progress) {
  validate(o);
  std::error_code ec;
  fs::create_directories(o.out_dir / "train", ec);
  if (!ec) fs::create_directories(o.out_dir / "heldout", ec);
  if (ec) throw Error(ErrorCode::io, o.out_dir.string(), "cannot create the dataset folder: " + ec.message());

  auto held = shapes::held_out_combos(o.seed, o.held_out_fraction);
  auto train_specs = shapes::training_specs(o.count, o.size, o.frames, o.fps, o.seed, held, o.placement);
  auto held_specs = shapes::held_out_specs(o.size, o.frames, o.fps, o.seed, held, o.placement);

  ProgressMeter meter(progress, "make-dataset", "clips",
                      static_cast<int64_t>(train_specs.size() + held_specs.size()));
  std::vector<ManifestEntry> train_entries, held_entries;
  char name[64];
  for (size_t i = 0; i < train_specs.size(); ++i) {
    cancel.throw_if_cancelled("make-dataset");
    std::snprintf(name, sizeof name, "shape_%05zu.mp4", i);
    train_entries.push_back(write_clip(train_specs[i], o.out_dir / "train" / name, o, "train"));
    meter.advance(1, name);
  }
  for (size_t i = 0; i < held_specs.size(); ++i) {
    cancel.throw_if_cancelled("make-dataset");
    std::snprintf(name, sizeof name, "heldout_%03zu.mp4", i);
    held_entries.push_back(write_clip(held_specs[i], o.out_dir / "heldout" / name, o, "heldout"));
    meter.advance(1, name);
  }

  ShapesDatasetResult result;
  result.manifest = o.out_dir / "manifest.jsonl";
  result.held_out_manifest = o.out_dir / "heldout.jsonl";
  result.held_out_list = o.out_dir / "heldout.json";
  write_manifest(result.manifest, train_entries);
  write_manifest(result.held_out_manifest, held_entries);

  nlohmann::json held_json = {
      {"seed", o.seed}, {"combos", nlohmann::json::array()}, {"prompts", nlohmann::json::array()}};
  for (size_t i = 0; i < held.size(); ++i) {
    held_json["combos"].push_back(
        {{"color", held[i].color}, {"shape", held[i].shape}, {"direction", held[i].direction}});
    held_json["prompts"].push_back(shapes::caption_of(held_specs[i]));
  }
  write_text_atomic(result.held_out_list, held_json.dump(2) + "\n");
  nlohmann::json settings = {{"generator", "shapes"},
                             {"count", o.count},
                             {"size", o.size},
                             {"frames", o.frames},
                             {"fps", o.fps},
                             {"seed", o.seed},
                             {"held_out_fraction", o.held_out_fraction},
                             {"crf", o.crf},
                             {"placement", shapes::to_string(o.placement)}};
  write_text_atomic(o.out_dir / "dataset.json", settings.dump(2) + "\n");
  meter.flush();

  result.train_clips = static_cast<int>(train_entries.size());
  result.held_out_clips = static_cast<int>(held_entries.size());
  result.held_out_combos = static_cast<int>(held.size());
  return result;
}

}  // namespace mugv
