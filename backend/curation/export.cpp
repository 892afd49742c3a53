#include "curation/export.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "dataset/manifest.h"
#include "media/decoder.h"
#include "media/encoder.h"
#include "media/remux.h"

#include <map>

namespace mugv {
namespace {

std::string join_tags(const std::vector<std::string>& tags) {
  std::string text;
  for (const auto& t : tags) text += (text.empty() ? "" : ",") + t;
  return text;
}

nlohmann::json scores_json(const Clip& clip, const Source& source) {
  nlohmann::json j = {{"clip_id", clip.id},
                      {"source_hash", source.content_hash},
                      {"decision", to_string(clip.decision)},
                      {"reason", clip.reason}};
  if (clip.scores.sharpness) j["sharpness"] = *clip.scores.sharpness;
  if (clip.scores.motion) j["motion"] = *clip.scores.motion;
  if (clip.scores.aesthetic) j["aesthetic"] = *clip.scores.aesthetic;
  if (!clip.tags.empty()) j["tags"] = join_tags(clip.tags);
  return j;
}

// Decodes [start, end) of the source at its own size and encodes it as H.264; returns frames written.
int64_t write_clip_file(const fs::path& source, const Clip& clip, const fs::path& out, int crf,
                        const CancelToken& cancel) {
  VideoDecoder decoder(source);
  if (!decoder.seek(clip.start_s))
    throw Error(ErrorCode::corrupt, source.string(), cat("no frame at ", clip.start_s, " s"));
  VideoEncoder encoder;
  EncodeOptions options;
  options.format = ContainerFormat::mp4;
  options.fps = clip.fps > 0 ? clip.fps : decoder.info().fps;
  options.crf = crf;
  options.speed_preset = "veryfast";
  options.metadata = {{"comment", cat("clip ", clip.id, " of ", source.filename().string(), " ", clip.start_s,
                                      "-", clip.end_s, " s")}};
  const double half_frame_s = options.fps > 0 ? 0.5 / options.fps : 0;
  while (auto frame = decoder.next()) {
    cancel.throw_if_cancelled("export");
    if (frame->pts_s >= clip.end_s - half_frame_s) break;
    if (!encoder.is_open()) encoder.open(out, frame->width, frame->height, options);
    encoder.write(*frame);
  }
  if (!encoder.is_open())
    throw Error(ErrorCode::corrupt, source.string(),
                cat("no frames in ", clip.start_s, "-", clip.end_s, " s"));
  const int64_t frames = encoder.frames_written();
  encoder.finish();
  return frames;
}

}  // namespace

const char* to_string(ExportFormat format) {
  switch (format) {
    case ExportFormat::jsonl:
      return "jsonl";
    case ExportFormat::json:
      return "json";
    case ExportFormat::csv:
      return "csv";
    case ExportFormat::clips:
      return "clips";
    case ExportFormat::unknown:
      break;
  }
  return "unknown";
}

std::optional<ExportFormat> export_format_from_string(std::string_view name) {
  for (ExportFormat f : {ExportFormat::unknown, ExportFormat::jsonl, ExportFormat::json, ExportFormat::csv,
                         ExportFormat::clips})
    if (name == to_string(f)) return f;
  return std::nullopt;
}

ExportFormat export_format_of(const fs::path& out) {
  const ManifestFormat m = manifest_format_of(out);
  if (m == ManifestFormat::jsonl) return ExportFormat::jsonl;
  if (m == ManifestFormat::json) return ExportFormat::json;
  if (m == ManifestFormat::csv) return ExportFormat::csv;
  return ExportFormat::clips;
}

const char* to_string(ExportSelection selection) {
  switch (selection) {
    case ExportSelection::kept:
      return "kept";
    case ExportSelection::all:
      return "all";
    case ExportSelection::unknown:
      break;
  }
  return "unknown";
}

std::optional<ExportSelection> export_selection_from_string(std::string_view name) {
  for (ExportSelection s : {ExportSelection::unknown, ExportSelection::kept, ExportSelection::all})
    if (name == to_string(s)) return s;
  return std::nullopt;
}

ExportReport export_dataset(Catalog& catalog, std::string_view dataset_name, const fs::path& out,
                            const ExportOptions& options, const CancelToken& cancel,
                            const ProgressFn& progress) {
  auto dataset = find_dataset(catalog, dataset_name);
  if (!dataset) throw Error(ErrorCode::not_found, std::string(dataset_name), "no such dataset");
  ExportReport report;
  report.format = options.format == ExportFormat::unknown ? export_format_of(out) : options.format;
  ClipFilter filter;
  filter.dataset_id = dataset->id;
  if (options.selection != ExportSelection::all) filter.decision = ClipDecision::keep;
  const std::vector<Clip> clips = list_clips(catalog, filter);
  std::map<int64_t, Source> sources;
  auto source_of = [&](int64_t id) -> const Source& {
    auto it = sources.find(id);
    if (it == sources.end()) {
      auto s = get_source(catalog, id);
      if (!s) throw Error(ErrorCode::internal, cat("source ", id), "missing from the catalog");
      it = sources.emplace(id, *s).first;
    }
    return it->second;
  };

  ProgressMeter meter(progress, "export", "clips", static_cast<int64_t>(clips.size()));
  std::vector<ManifestEntry> entries;
  if (report.format != ExportFormat::clips) {
    for (const Clip& clip : clips) {
      const Source& source = source_of(clip.source_id);
      ManifestEntry e;
      e.path = source.path;
      if (auto caption = current_caption(catalog, clip.id)) e.caption = caption->text;
      e.start_s = clip.start_s;
      e.end_s = clip.end_s;
      e.fps = clip.fps;
      e.extra = scores_json(clip, source);
      entries.push_back(std::move(e));
      report.clips += 1;
      meter.advance();
    }
    report.manifest = out;
    if (out.has_parent_path()) fs::create_directories(out.parent_path());
    write_manifest(out, entries);
    meter.flush();
    return report;
  }

  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw Error(ErrorCode::io, out.string(), "cannot create the folder: " + ec.message());
  for (const Clip& clip : clips) {
    cancel.throw_if_cancelled("export");
    const Source& source = source_of(clip.source_id);
    const fs::path file = out / cat("clip_", clip.id, ".mp4");
    try {
      // Stream copy when the clip starts (and ends) on keyframes — scene cuts usually do — else re-encode.
      if (auto copied = remux_range(source.path, clip.start_s, clip.end_s, file))
        ++report.clips_copied;
      else
        report.frames_encoded += write_clip_file(source.path, clip, file, options.crf, cancel);
      ManifestEntry e;
      e.path = file;
      if (auto caption = current_caption(catalog, clip.id)) e.caption = caption->text;
      if (!e.caption.empty()) write_sidecar_caption(file, e.caption);
      e.fps = clip.fps;
      e.extra = scores_json(clip, source);
      e.extra["source"] = source.path.string();
      e.extra["source_start"] = clip.start_s;
      e.extra["source_end"] = clip.end_s;
      entries.push_back(std::move(e));
      report.clips += 1;
    } catch (const Error& e) {
      if (e.code() == ErrorCode::cancelled) throw;
      report.failures.push_back({clip.id, e.what()});
      log_warning(cat("export of clip ", clip.id, " failed: ", e.what()));
    }
    meter.advance(1, file.filename().string());
  }
  report.manifest = out / "manifest.jsonl";
  write_manifest(report.manifest, entries);
  meter.flush();
  return report;
}

}  // namespace mugv
