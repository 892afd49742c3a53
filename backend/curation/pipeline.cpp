#include "curation/pipeline.h"

#include "catalog/captions.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/presets.h"
#include "core/strings.h"
#include "curation/aesthetic_model.h"
#include "dataset/importer.h"
#include "dataset/manifest.h"
#include "dataset/source_ingest.h"
#include "media/probe.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

namespace mugv {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

std::optional<uint64_t> parse_hex64(const nlohmann::json& value) {
  if (!value.is_string()) return std::nullopt;
  const std::string text = value.get<std::string>();
  if (text.empty() || text.size() > 16) return std::nullopt;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 16);
  if (!end || *end != '\0') return std::nullopt;
  return static_cast<uint64_t>(v);
}

uint32_t catalog_artifact_bits(ArtifactFlags flags) {
  uint32_t bits = 0;
  if (has_any(flags, ArtifactFlags::letterbox | ArtifactFlags::pillarbox)) bits |= artifact_flag::border;
  if (has_any(flags, ArtifactFlags::text_overlay)) bits |= artifact_flag::overlay;
  if (has_any(flags, ArtifactFlags::frozen_frames)) bits |= artifact_flag::effect;
  if (has_any(flags, ArtifactFlags::speed_change)) bits |= artifact_flag::speed_change;
  if (has_any(flags, ArtifactFlags::camera_shake)) bits |= artifact_flag::shake;
  return bits;
}

// For clips scored elsewhere (only the catalog's coarse bits): the nearest curation flags.
ArtifactFlags flags_from_catalog_bits(uint32_t bits) {
  ArtifactFlags flags = ArtifactFlags::none;
  if (bits & artifact_flag::border) flags |= ArtifactFlags::letterbox;
  if (bits & artifact_flag::overlay) flags |= ArtifactFlags::text_overlay;
  if (bits & artifact_flag::effect) flags |= ArtifactFlags::frozen_frames;
  if (bits & artifact_flag::speed_change) flags |= ArtifactFlags::speed_change;
  if (bits & artifact_flag::shake) flags |= ArtifactFlags::camera_shake;
  return flags;
}

Dataset dataset_or_throw(Catalog& catalog, std::string_view name) {
  auto d = find_dataset(catalog, name);
  if (!d) throw Error(ErrorCode::not_found, std::string(name), "no such dataset");
  return *d;
}

bool is_manifest(const fs::path& path) {
  return manifest_format_of(path) != ManifestFormat::unknown;
}

bool is_video_file(const fs::path& path) {
  const std::string ext = to_lower(path.extension().string());
  const auto& exts = video_extensions();
  return std::find(exts.begin(), exts.end(), ext) != exts.end();
}

// The files named by the inputs, absolute and each once; manifest problems become failures.
std::vector<fs::path> expand_inputs(const std::vector<fs::path>& inputs,
                                    std::vector<CurateFailure>& failures) {
  std::vector<fs::path> files;
  for (const fs::path& input : inputs) {
    std::error_code ec;
    if (!fs::exists(input, ec)) throw Error(ErrorCode::not_found, input.string(), "no such file or folder");
    if (fs::is_directory(input, ec)) {
      std::vector<fs::path> found;
      for (auto it =
               fs::recursive_directory_iterator(input, fs::directory_options::skip_permission_denied, ec);
           it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) break;
        if (it->is_regular_file(ec) && is_video_file(it->path())) found.push_back(it->path());
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (is_manifest(input)) {
      ManifestReadResult read = read_manifest(input);
      for (const auto& p : read.problems) failures.push_back({input, cat("line ", p.line, ": ", p.reason)});
      for (const auto& e : read.entries) files.push_back(e.path);
    } else {
      files.push_back(input);
    }
  }
  std::vector<fs::path> unique;
  std::set<fs::path> seen;
  for (const fs::path& f : files) {
    fs::path absolute = fs::absolute(f).lexically_normal();
    if (seen.insert(absolute).second) unique.push_back(absolute);
  }
  return unique;
}

std::string failure_reason(const Error& e, const fs::path& path) {
  return e.subject() == path.string() || e.subject().empty() ? e.message() : e.what();
}

const nlohmann::json* curated_marker(const Source& source, const Dataset& dataset) {
  auto curated = source.info.find("curated");
  if (curated == source.info.end() || !curated->is_object()) return nullptr;
  auto it = curated->find(std::to_string(dataset.id));
  if (it == curated->end() || !it->is_object()) return nullptr;
  // A dataset deleted and recreated may get the same id back; its marker must not count.
  if (it->value("dataset_created_ms", int64_t{-1}) != dataset.created_at_ms) return nullptr;
  return &*it;
}

bool already_curated(Catalog& catalog, const Source& source, const Dataset& dataset) {
  const nlohmann::json* marker = curated_marker(source, dataset);
  if (!marker) return false;
  ClipFilter filter;
  filter.dataset_id = dataset.id;
  filter.source_id = source.id;
  return count_clips(catalog, filter) >= marker->value("clips", int64_t{0});
}

void set_curated_marker(Source& source, const Dataset& dataset, int64_t clips, const std::string& preset) {
  if (!source.info.is_object()) source.info = nlohmann::json::object();
  if (!source.info.contains("curated") || !source.info["curated"].is_object())
    source.info["curated"] = nlohmann::json::object();
  source.info["curated"][std::to_string(dataset.id)] = {{"clips", clips},
                                                        {"dataset_created_ms", dataset.created_at_ms},
                                                        {"preset", preset},
                                                        {"at_ms", now_ms()}};
}

bool same_range(const Clip& a, double start_s, double end_s) {
  return std::fabs(a.start_s - start_s) < 1e-6 && std::fabs(a.end_s - end_s) < 1e-6;
}

CutKind shot_cut_kind(const SceneDetection& scenes, double start_s) {
  CutKind kind = CutKind::unknown;
  for (const SceneCut& cut : scenes.cuts) {
    if (cut.time_s > start_s + 1e-6) break;
    kind = cut.kind;
  }
  return kind;
}

Dataset find_or_create_dataset(Catalog& catalog, const std::string& name, const fs::path& root,
                               bool* created) {
  if (auto d = find_dataset(catalog, name)) return *d;
  Dataset d;
  d.name = name;
  d.kind = DatasetKind::video;
  d.root_dir = root;
  if (created) *created = true;
  return create_dataset(catalog, d);
}

struct Pending {
  fs::path path;
  Source source;
  int64_t frames = 0;
};

std::optional<std::string> threshold_alias(const std::string& key) {
  static const std::map<std::string, std::string> aliases = {
      {"min_len_s", "clip.min_len_s"},      {"max_len_s", "clip.max_len_s"},
      {"sharpness_min", "sharpness.min"},   {"sharpness_max", "sharpness.max"},
      {"motion_min", "motion.min"},         {"motion_max", "motion.max"},
      {"aesthetic_min", "aesthetic.min"},   {"reject", "artifacts.reject"},
      {"reject_flags", "artifacts.reject"},
  };
  auto it = aliases.find(key);
  if (it == aliases.end()) return std::nullopt;
  return it->second;
}

void flatten(const nlohmann::json& node, const std::string& prefix,
             std::vector<std::pair<std::string, nlohmann::json>>& out) {
  if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it)
      flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  } else {
    out.emplace_back(prefix, node);
  }
}

nlohmann::json nested_overrides(const nlohmann::json& overrides) {
  if (!overrides.is_object())
    throw Error(ErrorCode::invalid_argument, "overrides", "must be an object of key = value");
  static const std::set<std::string> sections = {"clip",      "sharpness", "motion",
                                                 "aesthetic", "artifacts", "scene"};
  std::vector<std::pair<std::string, nlohmann::json>> flat;
  flatten(overrides, "", flat);
  nlohmann::json nested = nlohmann::json::object();
  for (auto& [raw_key, raw_value] : flat) {
    std::string key = starts_with(raw_key, "thresholds.") ? raw_key.substr(11) : raw_key;
    if (auto alias = threshold_alias(key)) key = *alias;
    const auto parts = split(key, '.');
    if (parts.size() != 2 || !sections.count(parts[0]))
      throw Error(
          ErrorCode::invalid_argument, raw_key,
          "unknown curation setting (use thresholds.sharpness_min, thresholds.motion_max, thresholds.reject, "
          "scene.adaptive_ratio, ...)");
    nlohmann::json value = raw_value;
    if (key == "artifacts.reject" && value.is_string()) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& name : split(value.get<std::string>(),
                                    value.get<std::string>().find('|') != std::string::npos ? '|' : ','))
        if (!trim(name).empty() && trim(name) != "none") list.push_back(trim(name));
      value = list;
    }
    nested[parts[0]][parts[1]] = value;
  }
  return nested;
}

}  // namespace

std::optional<ShardSpec> shard_spec_from_string(std::string_view text) {
  const auto parts = split(text, '/');
  if (parts.size() != 2) return std::nullopt;
  try {
    size_t used_a = 0, used_b = 0;
    const int index = std::stoi(parts[0], &used_a);
    const int count = std::stoi(parts[1], &used_b);
    if (used_a != parts[0].size() || used_b != parts[1].size() || count < 1 || index < 0 || index >= count)
      return std::nullopt;
    return ShardSpec{index, count};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string to_string(const ShardSpec& shard) {
  return cat(shard.index, "/", shard.count);
}

CurationPreset resolve_curation_preset(std::string_view name_or_path, const nlohmann::json& overrides) {
  const std::string name(name_or_path.empty() ? "mugv" : name_or_path);
  nlohmann::json values = merge_presets(load_preset_or_file("curation", name), nested_overrides(overrides));
  return curation_preset_from_json(values, names_preset_file(name) ? fs::path(name).stem().string() : name);
}

nlohmann::json overrides_from_assignments(const std::vector<std::string>& assignments) {
  nlohmann::json out = nlohmann::json::object();
  for (const std::string& item : assignments) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error(ErrorCode::usage, item, "expected KEY=VALUE, e.g. thresholds.sharpness_min=100");
    const std::string key = trim(item.substr(0, eq));
    const std::string text = trim(item.substr(eq + 1));
    char* end = nullptr;
    const double number = std::strtod(text.c_str(), &end);
    if (!text.empty() && end && *end == '\0')
      out[key] = number;
    else
      out[key] = text;
  }
  return out;
}

ClipScores clip_scores_from_analysis(const ClipAnalysis& a, CutKind shot_cut) {
  ClipScores s;
  s.sharpness = a.sharpness;
  s.motion = a.motion;
  s.aesthetic = a.aesthetic;
  s.artifact_flags = catalog_artifact_bits(a.flags);
  s.phash = a.phash[1];
  s.extra = {
      {"frames", a.frames},
      {"shake_px", a.shake_px},
      {"motion_pairs", {a.motion_pairs[0], a.motion_pairs[1], a.motion_pairs[2]}},
      {"aesthetic_source", a.aesthetic_source},
      {"aesthetic_parts",
       {{"exposure", a.aesthetic_parts.exposure},
        {"contrast", a.aesthetic_parts.contrast},
        {"colourfulness", a.aesthetic_parts.colourfulness},
        {"composition", a.aesthetic_parts.composition}}},
      {"letterbox_fraction", a.letterbox_fraction},
      {"pillarbox_fraction", a.pillarbox_fraction},
      {"overlay_fraction", a.overlay_fraction},
      {"frozen_ratio", a.frozen_ratio},
      {"speed_change_ratio", a.speed_change_ratio},
      {"phash", {hex64(a.phash[0]), hex64(a.phash[1]), hex64(a.phash[2])}},
      {"artifacts", to_string(a.flags)},
      {"cut_kind", shot_cut == CutKind::unknown ? "none" : to_string(shot_cut)},
  };
  return s;
}

std::optional<ClipAnalysis> clip_analysis_from_scores(const Clip& clip) {
  const ClipScores& s = clip.scores;
  if (!s.sharpness || !s.motion || !s.aesthetic) return std::nullopt;
  ClipAnalysis a;
  a.start_s = clip.start_s;
  a.end_s = clip.end_s;
  a.frames = clip.end_frame - clip.start_frame;
  a.sharpness = *s.sharpness;
  a.motion = *s.motion;
  a.aesthetic = *s.aesthetic;
  const nlohmann::json& x = s.extra;
  a.flags = flags_from_catalog_bits(s.artifact_flags);
  if (auto it = x.find("artifacts"); it != x.end() && it->is_string()) {
    if (auto flags = artifact_flags_from_string(it->get<std::string>())) a.flags = *flags;
  }
  a.shake_px = x.value("shake_px", 0.0);
  a.aesthetic_source = x.value("aesthetic_source", std::string("heuristic"));
  a.letterbox_fraction = x.value("letterbox_fraction", 0.0);
  a.pillarbox_fraction = x.value("pillarbox_fraction", 0.0);
  a.overlay_fraction = x.value("overlay_fraction", 0.0);
  a.frozen_ratio = x.value("frozen_ratio", 0.0);
  a.speed_change_ratio = x.value("speed_change_ratio", 1.0);
  if (auto it = x.find("phash"); it != x.end() && it->is_array() && it->size() == 3) {
    for (size_t k = 0; k < 3; ++k) a.phash[k] = parse_hex64((*it)[k]).value_or(0);
  } else if (s.phash) {
    a.phash = {*s.phash, *s.phash, *s.phash};
  }
  return a;
}

CurateReport curate(Catalog& catalog, const CurateOptions& options, const CancelToken& cancel,
                    const ProgressFn& progress) {
  const auto started = Clock::now();
  if (trim(options.dataset_name).empty())
    throw Error(ErrorCode::invalid_argument, "--dataset", "a dataset name is required");
  if (options.shard.count < 1 || options.shard.index < 0 || options.shard.index >= options.shard.count)
    throw Error(ErrorCode::invalid_argument, "--shard",
                cat("shard ", to_string(options.shard), " is not i/n with 0 <= i < n"));
  if (options.inputs.empty()) throw Error(ErrorCode::usage, "curate", "no input files or folders given");
  const CurationPreset preset = resolve_curation_preset(options.preset, options.overrides);

  CurateReport report;
  const std::vector<fs::path> files = expand_inputs(options.inputs, report.failures);
  report.files_seen = static_cast<int>(files.size());

  // Identity first: shards are slices of the content-hash order, independent of paths and input order.
  std::vector<std::pair<std::string, fs::path>> hashed;
  for (const fs::path& file : files) {
    cancel.throw_if_cancelled("curate");
    try {
      hashed.emplace_back(content_hash_of_file(file), file);
    } catch (const Error& e) {
      report.failures.push_back({file, failure_reason(e, file)});
      log_warning(cat(file.string(), ": skipped: ", failure_reason(e, file)));
    }
  }
  std::sort(hashed.begin(), hashed.end());
  hashed.erase(std::unique(hashed.begin(), hashed.end(),
                           [](const auto& a, const auto& b) { return a.first == b.first; }),
               hashed.end());

  const fs::path root = options.inputs.size() == 1 && fs::is_directory(options.inputs[0])
                            ? fs::absolute(options.inputs[0])
                            : fs::absolute(options.inputs[0]).parent_path();
  const Dataset dataset =
      find_or_create_dataset(catalog, options.dataset_name, root, &report.dataset_created);
  report.dataset_id = dataset.id;

  // Ingest: each new source is probed once and recorded; bad files become failed sources.
  std::vector<Pending> pending;
  for (size_t i = 0; i < hashed.size(); ++i) {
    if (static_cast<int>(i % static_cast<size_t>(options.shard.count)) != options.shard.index) continue;
    ++report.files_in_shard;
    cancel.throw_if_cancelled("curate");
    const auto& [hash, path] = hashed[i];
    try {
      auto source = find_source_by_hash(catalog, hash);
      if (source && source->status == SourceStatus::failed) {
        report.failures.push_back({path, source->error_message});
        continue;
      }
      if (!source || source->status != SourceStatus::ok) {
        Source probed = source_from_probe(path, hash, probe(path));
        if (source) {
          probed.id = source->id;
          set_source_probed(catalog, probed);
          source = get_source(catalog, source->id);
        } else {
          source = add_source(catalog, probed);
        }
      }
      if (already_curated(catalog, *source, dataset)) {
        ++report.sources_skipped;
        continue;
      }
      const int64_t frames = source->info.value("frame_count", int64_t{0});
      pending.push_back({path, *source, frames});
    } catch (const Error& e) {
      if (e.code() == ErrorCode::cancelled) throw;
      const std::string reason = failure_reason(e, path);
      report.failures.push_back({path, reason});
      record_failed_source(catalog, path, hash, reason);
      log_warning(cat(path.string(), ": skipped: ", reason));
    }
  }

  int64_t total_frames = 0;
  for (const Pending& p : pending) total_frames += p.frames;
  ProgressMeter meter(progress, "curate", "frames", total_frames);
  AnalyzeOptions analyze_options;
  analyze_options.scene = preset.scene;
  analyze_options.scores = preset.scores;
  analyze_options.clip_min_len_s = preset.thresholds.min_len_s;
  analyze_options.clip_max_len_s = preset.thresholds.max_len_s;
  analyze_options.decode_threads = std::max(1, options.decode_threads);
  if (!preset.aesthetic_model.empty()) {
    analyze_options.scores.aesthetic_model = load_aesthetic_model(preset.aesthetic_model);
    log_info(cat("aesthetic scores from ", preset.aesthetic_model));
  }

  int64_t frames_before = 0;
  for (size_t i = 0; i < pending.size(); ++i) {
    cancel.throw_if_cancelled("curate");
    Pending& p = pending[i];
    auto detail = [&]() {
      const Progress& now = meter.current();
      std::string text =
          cat("file ", i + 1, "/", pending.size(), " ", p.path.filename().string(), ", ", report.clips_added,
              " clips, ", static_cast<int>(std::lround(now.rate_per_s)), " fps");
      if (now.eta_s >= 0) text += ", ETA " + human_duration(now.eta_s);
      return text;
    };
    // Every new file is reported at once, so a watcher (and a cancel) sees which file is running.
    meter.update(frames_before, detail());
    meter.flush();
    ProgressFn inner = [&](const Progress& file_progress) {
      meter.update(frames_before + file_progress.done, detail());
    };
    try {
      const VideoAnalysis analysis = analyze_video(p.path, analyze_options, &cancel, inner);
      report.frames_decoded += analysis.frames;
      frames_before += std::max(analysis.frames, p.frames);

      ClipFilter existing_filter;
      existing_filter.dataset_id = dataset.id;
      existing_filter.source_id = p.source.id;
      Transaction tx(catalog, TransactionMode::write);
      const std::vector<Clip> existing = list_clips(catalog, existing_filter);
      std::vector<Clip> clips;
      for (const ClipAnalysis& a : analysis.clips) {
        if (std::any_of(existing.begin(), existing.end(),
                        [&](const Clip& c) { return same_range(c, a.start_s, a.end_s); }))
          continue;
        Clip c;
        c.dataset_id = dataset.id;
        c.source_id = p.source.id;
        c.start_s = a.start_s;
        c.end_s = a.end_s;
        c.fps = p.source.fps;
        c.start_frame = static_cast<int64_t>(std::llround(a.start_s * c.fps));
        c.end_frame = std::max(c.start_frame, static_cast<int64_t>(std::llround(a.end_s * c.fps)));
        c.width = p.source.width;
        c.height = p.source.height;
        c.scores = clip_scores_from_analysis(a, shot_cut_kind(analysis.scenes, a.start_s));
        const Decision d = decide(a, preset.thresholds);
        c.decision = d.verdict == Verdict::keep ? ClipDecision::keep : ClipDecision::reject;
        c.reason = d.reason;
        (d.verdict == Verdict::keep ? report.clips_kept : report.clips_rejected) += 1;
        clips.push_back(std::move(c));
      }
      if (!clips.empty()) (void)add_clips(catalog, clips);
      set_curated_marker(p.source, dataset, static_cast<int64_t>(existing.size() + clips.size()),
                         preset.name);
      set_source_probed(catalog, p.source);
      tx.commit();
      report.clips_added += static_cast<int>(clips.size());
      ++report.sources_analyzed;
    } catch (const Error& e) {
      if (e.code() == ErrorCode::cancelled) throw;
      const std::string reason = failure_reason(e, p.path);
      report.failures.push_back({p.path, reason});
      mark_source_failed(catalog, p.source.id, reason);
      log_warning(cat(p.path.string(), ": skipped: ", reason));
      frames_before += p.frames;
    }
    meter.update(frames_before, detail());
  }
  meter.flush();
  report.elapsed_s = seconds_since(started);
  return report;
}

RedecideReport redecide(Catalog& catalog, std::string_view dataset_name,
                        const CurationThresholds& thresholds) {
  const auto started = Clock::now();
  const Dataset dataset = dataset_or_throw(catalog, dataset_name);
  RedecideReport report;
  ClipFilter filter;
  filter.dataset_id = dataset.id;
  Transaction tx(catalog, TransactionMode::write);
  for (const Clip& clip : list_clips(catalog, filter)) {
    ++report.clips;
    const auto analysis = clip_analysis_from_scores(clip);
    if (!analysis) {
      ++report.unscored;
      continue;
    }
    const Decision d = decide(*analysis, thresholds);
    const ClipDecision decision = d.verdict == Verdict::keep ? ClipDecision::keep : ClipDecision::reject;
    (decision == ClipDecision::keep ? report.kept : report.rejected) += 1;
    if (decision == clip.decision && d.reason == clip.reason) continue;
    set_clip_decision(catalog, clip.id, decision, d.reason);
    ++report.changed;
  }
  tx.commit();
  report.elapsed_s = seconds_since(started);
  return report;
}

MergeReport merge_catalog(Catalog& into, const fs::path& from_path, std::string_view dataset_name) {
  std::error_code ec;
  if (!fs::is_regular_file(from_path, ec))
    throw Error(ErrorCode::not_found, from_path.string(), "no such catalog file");
  if (fs::equivalent(from_path, into.path(), ec))
    throw Error(ErrorCode::invalid_argument, from_path.string(), "cannot merge a catalog into itself");
  Catalog from = Catalog::open(from_path);
  auto from_dataset = find_dataset(from, dataset_name);
  if (!from_dataset)
    throw Error(ErrorCode::not_found, from_path.string(), cat("has no dataset '", dataset_name, "'"));

  MergeReport report;
  Transaction tx(into, TransactionMode::write);
  Dataset dataset;
  if (auto d = find_dataset(into, dataset_name)) {
    dataset = *d;
  } else {
    Dataset d2 = *from_dataset;
    d2.id = 0;
    dataset = create_dataset(into, d2);
  }

  ClipFilter from_filter;
  from_filter.dataset_id = from_dataset->id;
  const std::vector<Clip> from_clips = list_clips(from, from_filter);
  std::set<int64_t> wanted;
  for (const Clip& c : from_clips) wanted.insert(c.source_id);
  std::map<int64_t, int64_t> source_ids;  // from id -> into id
  for (const Source& s : list_sources(from)) {
    const nlohmann::json* marker = curated_marker(s, *from_dataset);
    if (!wanted.count(s.id) && !marker && s.status != SourceStatus::failed) continue;
    auto known = find_source_by_hash(into, s.content_hash);
    if (known) {
      ++report.sources_known;
      if (marker && known->status == SourceStatus::ok && !curated_marker(*known, dataset)) {
        set_curated_marker(*known, dataset, marker->value("clips", int64_t{0}), marker->value("preset", ""));
        set_source_probed(into, *known);
      }
      source_ids[s.id] = known->id;
      continue;
    }
    Source copy = s;
    copy.id = 0;
    copy.info.erase("curated");
    if (marker)
      set_curated_marker(copy, dataset, marker->value("clips", int64_t{0}), marker->value("preset", ""));
    const Source added = add_source(into, copy);
    if (s.status == SourceStatus::failed) mark_source_failed(into, added.id, s.error_message);
    source_ids[s.id] = added.id;
    ++report.sources_added;
  }

  std::map<int64_t, std::vector<Clip>> existing;  // into source id -> its clips in the dataset
  for (const Clip& c : from_clips) {
    const int64_t source_id = source_ids.at(c.source_id);
    auto it = existing.find(source_id);
    if (it == existing.end()) {
      ClipFilter f;
      f.dataset_id = dataset.id;
      f.source_id = source_id;
      it = existing.emplace(source_id, list_clips(into, f)).first;
    }
    if (std::any_of(it->second.begin(), it->second.end(),
                    [&](const Clip& k) { return same_range(k, c.start_s, c.end_s); })) {
      ++report.clips_known;
      continue;
    }
    Clip copy = c;
    copy.id = 0;
    copy.dataset_id = dataset.id;
    copy.source_id = source_id;
    copy.id = add_clips(into, {copy}).front();
    it->second.push_back(copy);
    ++report.clips_added;
    auto history = caption_history(from, c.id);
    std::reverse(history.begin(), history.end());
    std::optional<int64_t> current_id;
    std::optional<int64_t> last_current_id;
    for (const Caption& caption : history) {
      const Caption added = add_caption(into, copy.id, caption.text, caption.origin, caption.producer);
      ++report.captions_added;
      if (caption.current) current_id = added.id;
      if (added.current) last_current_id = added.id;
    }
    if (current_id && current_id != last_current_id) set_current_caption(into, *current_id);
  }
  tx.commit();
  return report;
}

}  // namespace mugv
