// mugv clips list | clips show | dataset export: inspecting curated clips and exporting a dataset.
#include "command.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "curation/export.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace mugv::cli {
namespace {

void define_catalog(ParamRegistry& r) {
  r.add(param("clips.catalog", "--catalog", ParamType::path, nullptr,
              "catalog file to use instead of $MUGV_HOME/catalog.sqlite", "catalog"));
}

Catalog open_catalog(const ParamValues& v) {
  return Catalog::open(v.has("clips.catalog") ? fs::path(v.get_text("clips.catalog")) : catalog_path());
}

Dataset dataset_or_throw(Catalog& catalog, const ParamValues& v) {
  if (!v.has("clips.dataset")) throw Error(ErrorCode::usage, "--dataset", "a dataset name is required");
  const std::string name = v.get_text("clips.dataset");
  auto d = find_dataset(catalog, name);
  if (!d) throw Error(ErrorCode::not_found, name, "no such dataset");
  return *d;
}

nlohmann::json optional_number(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

nlohmann::json clip_json(const Clip& c, const std::optional<Source>& source,
                         const std::optional<Caption>& caption) {
  return {{"id", c.id},
          {"source", source ? source->path.string() : ""},
          {"start_s", c.start_s},
          {"end_s", c.end_s},
          {"fps", c.fps},
          {"width", c.width},
          {"height", c.height},
          {"sharpness", optional_number(c.scores.sharpness)},
          {"motion", optional_number(c.scores.motion)},
          {"aesthetic", optional_number(c.scores.aesthetic)},
          {"decision", to_string(c.decision)},
          {"reason", c.reason},
          {"tags", c.tags},
          {"caption", caption ? caption->text : ""}};
}

std::string number_text(const std::optional<double>& value, int decimals) {
  if (!value) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.*f", decimals, *value);
  return text;
}

int run_list(const Invocation& inv) {
  const auto& v = inv.values;
  Catalog catalog = open_catalog(v);
  const Dataset dataset = dataset_or_throw(catalog, v);
  ClipFilter filter;
  filter.dataset_id = dataset.id;
  if (v.get_bool("clips.rejected")) filter.decision = ClipDecision::reject;
  if (v.get_bool("clips.kept")) filter.decision = ClipDecision::keep;
  if (v.has("clips.reason")) filter.reason = v.get_text("clips.reason");
  if (v.has("clips.tag")) filter.tag = v.get_text("clips.tag");
  filter.limit = v.get_int("clips.limit");
  const std::vector<Clip> clips = list_clips(catalog, filter);
  if (inv.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const Clip& c : clips)
      out.push_back(clip_json(c, get_source(catalog, c.source_id), current_caption(catalog, c.id)));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (clips.empty()) std::printf("no clips match\n");
  for (const Clip& c : clips) {
    auto source = get_source(catalog, c.source_id);
    std::printf("#%-6lld %-24s %7.2f-%7.2fs  sharp %8s  motion %6s  aes %5s  %-6s %s\n",
                static_cast<long long>(c.id), source ? source->path.filename().c_str() : "?", c.start_s,
                c.end_s, number_text(c.scores.sharpness, 0).c_str(), number_text(c.scores.motion, 2).c_str(),
                number_text(c.scores.aesthetic, 2).c_str(), to_string(c.decision), c.reason.c_str());
  }
  return 0;
}

int run_show(const Invocation& inv) {
  const auto& v = inv.values;
  Catalog catalog = open_catalog(v);
  int64_t id = 0;
  try {
    size_t used = 0;
    id = std::stoll(inv.positional[0], &used);
    if (used != inv.positional[0].size()) throw std::invalid_argument("id");
  } catch (const std::exception&) {
    throw Error(ErrorCode::usage, inv.positional[0], "expected a clip id (a number)");
  }
  auto clip = get_clip(catalog, id);
  if (!clip) throw Error(ErrorCode::not_found, cat("clip ", id), "no such clip");
  auto source = get_source(catalog, clip->source_id);
  auto dataset = get_dataset(catalog, clip->dataset_id);
  nlohmann::json history = nlohmann::json::array();
  for (const Caption& c : caption_history(catalog, id))
    history.push_back({{"version", c.version},
                       {"text", c.text},
                       {"origin", to_string(c.origin)},
                       {"producer", c.producer},
                       {"current", c.current},
                       {"created_at_ms", c.created_at_ms}});
  nlohmann::json out = clip_json(*clip, source, current_caption(catalog, id));
  out["dataset"] = dataset ? dataset->name : "";
  out["frames"] = clip->end_frame - clip->start_frame;
  out["artifact_flags"] = clip->scores.artifact_flags;
  out["scores_extra"] = clip->scores.extra;
  out["captions"] = history;
  if (inv.json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("clip %lld of dataset %s\n  source    %s  %.3f-%.3f s  %lld frames  %.3f fps  %dx%d\n",
              static_cast<long long>(id), out["dataset"].get<std::string>().c_str(),
              out["source"].get<std::string>().c_str(), clip->start_s, clip->end_s,
              static_cast<long long>(clip->end_frame - clip->start_frame), clip->fps, clip->width,
              clip->height);
  std::printf("  decision  %s%s%s\n", to_string(clip->decision), clip->reason.empty() ? "" : ": ",
              clip->reason.c_str());
  std::printf("  scores    sharpness %s  motion %s  aesthetic %s\n",
              number_text(clip->scores.sharpness, 1).c_str(), number_text(clip->scores.motion, 3).c_str(),
              number_text(clip->scores.aesthetic, 2).c_str());
  for (auto it = clip->scores.extra.begin(); it != clip->scores.extra.end(); ++it)
    std::printf("            %s = %s\n", it.key().c_str(), it.value().dump().c_str());
  std::string tags;
  for (const auto& t : clip->tags) tags += (tags.empty() ? "" : ", ") + t;
  std::printf("  tags      %s\n", tags.empty() ? "-" : tags.c_str());
  if (history.empty()) std::printf("  captions  none\n");
  for (const auto& h : history)
    std::printf("  caption v%d%s [%s %s] %s\n", h["version"].get<int>(), h["current"].get<bool>() ? "*" : " ",
                h["origin"].get<std::string>().c_str(), h["producer"].get<std::string>().c_str(),
                h["text"].get<std::string>().c_str());
  return 0;
}

int run_export(const Invocation& inv) {
  const auto& v = inv.values;
  if (!v.has("clips.out"))
    throw Error(ErrorCode::usage, "--out", "give --out DIR, FILE.jsonl, FILE.json or FILE.csv");
  Catalog catalog = open_catalog(v);
  const Dataset dataset = dataset_or_throw(catalog, v);
  ExportOptions o;
  o.selection = *export_selection_from_string(v.get_text("clips.select"));
  o.crf = static_cast<int>(v.get_int("clips.crf"));
  const fs::path out = v.get_text("clips.out");
  ExportReport r = export_dataset(catalog, dataset.name, out, o, inv.cancel, inv.progress);
  finish_progress_line();
  nlohmann::json failures = nlohmann::json::array();
  for (const auto& f : r.failures) failures.push_back({{"clip", f.clip_id}, {"reason", f.reason}});
  if (inv.json) {
    std::cout << nlohmann::json{{"dataset", dataset.name},
                                {"format", to_string(r.format)},
                                {"manifest", r.manifest.string()},
                                {"clips", r.clips},
                                {"frames", r.frames_encoded},
                                {"clips_copied", r.clips_copied},
                                {"failures", failures}}
                     .dump(2)
              << "\n";
  } else {
    std::printf("exported %lld clip(s) of '%s' as %s: %s\n", static_cast<long long>(r.clips),
                dataset.name.c_str(), to_string(r.format), r.manifest.c_str());
    for (const auto& f : r.failures)
      std::printf("  failed: clip %lld: %s\n", static_cast<long long>(f.clip_id), f.reason.c_str());
  }
  return r.failures.empty() ? 0 : 1;
}

void define_dataset(ParamRegistry& r) {
  r.add(param("clips.dataset", "--dataset", ParamType::text, nullptr, "dataset name", "clips"));
}

}  // namespace

Command clips_list_command() {
  Command c;
  c.words = {"clips", "list"};
  c.summary = "list a dataset's clips with scores and decisions, filtered by decision, reason or tag";
  c.usage = "--dataset NAME [--rejected|--kept] [--reason R] [--tag T] [--limit N] [--json]";
  c.define = [](ParamRegistry& r) {
    define_dataset(r);
    r.add(param("clips.rejected", "--rejected", ParamType::boolean, false, "only rejected clips", "clips"));
    r.add(param("clips.kept", "--kept", ParamType::boolean, false, "only kept clips", "clips"));
    r.add(param("clips.reason", "--reason", ParamType::text, nullptr,
                "only clips whose reason contains this text (any case)", "clips"));
    r.add(param("clips.tag", "--tag", ParamType::text, nullptr, "only clips with this tag, e.g. subject:dog",
                "clips"));
    auto limit = param("clips.limit", "--limit", ParamType::integer, 0, "at most N clips (0: all)", "clips");
    limit.min_value = 0;
    r.add(limit);
    define_catalog(r);
  };
  c.run = run_list;
  return c;
}

Command clips_show_command() {
  Command c;
  c.words = {"clips", "show"};
  c.summary = "show one clip: scores, decision and reason, tags and caption history";
  c.usage = "ID [--json]";
  c.min_positional = c.max_positional = 1;
  c.define = define_catalog;
  c.run = run_show;
  return c;
}

Command dataset_export_command() {
  Command c;
  c.words = {"dataset", "export"};
  c.summary =
      "export a dataset's kept clips as a JSONL, JSON or CSV manifest or a folder of clips with sidecar "
      "captions";
  c.usage = "--dataset NAME --out DIR|FILE.jsonl|FILE.json|FILE.csv [--select kept|all]";
  c.define = [](ParamRegistry& r) {
    define_dataset(r);
    r.add(param("clips.out", "--out", ParamType::path, nullptr,
                "FILE.jsonl / FILE.json / FILE.csv: a manifest over the sources; DIR: re-encoded mp4 clips + "
                ".txt captions",
                "export"));
    auto select =
        param("clips.select", "--select", ParamType::choice, "kept", "which clips to export", "export");
    select.choices = {"kept", "all"};
    r.add(select);
    auto crf = param("clips.crf", "--crf", ParamType::integer, 17,
                     "H.264 quality of clip files (lower is better)", "export");
    crf.min_value = 0;
    crf.max_value = 51;
    r.add(crf);
    define_catalog(r);
  };
  c.run = run_export;
  return c;
}

}  // namespace mugv::cli
