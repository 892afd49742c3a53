// mugv dataset import | list | show: datasets in the catalog.
#include "command.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/paths.h"
#include "dataset/importer.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace mugv::cli {
namespace {

Catalog open_catalog() {
  return Catalog::open(catalog_path());
}

Dataset dataset_or_throw(Catalog& catalog, const std::string& name) {
  auto d = find_dataset(catalog, name);
  if (!d) {
    std::string known;
    for (const auto& other : list_datasets(catalog)) known += (known.empty() ? "" : ", ") + other.name;
    throw Error(
        ErrorCode::not_found, name,
        "no such dataset" + (known.empty() ? std::string(" (the catalog has none)") : "; known: " + known));
  }
  return *d;
}

int run_import(const Invocation& inv) {
  Catalog catalog = open_catalog();
  if (!inv.values.has("dataset.name")) throw Error(ErrorCode::usage, "--name", "a dataset name is required");
  ImportOptions o;
  o.input = inv.positional[0];
  o.dataset_name = inv.values.get_text("dataset.name");
  o.description = inv.values.has("dataset.description") ? inv.values.get_text("dataset.description") : "";
  ImportReport r = import_dataset(catalog, o, inv.cancel, inv.progress);
  finish_progress_line();
  if (inv.json) {
    nlohmann::json failures = nlohmann::json::array();
    for (const auto& f : r.failures) failures.push_back({{"path", f.path.string()}, {"reason", f.reason}});
    std::cout << nlohmann::json{{"dataset", o.dataset_name},
                                {"dataset_id", r.dataset_id},
                                {"created", r.dataset_created},
                                {"files", r.files_seen},
                                {"sources_added", r.sources_added},
                                {"sources_known", r.sources_known},
                                {"clips_added", r.clips_added},
                                {"clips_known", r.clips_known},
                                {"captions_added", r.captions_added},
                                {"failed", r.failures.size()},
                                {"failures", failures}}
                     .dump(2)
              << "\n";
  } else {
    std::printf(
        "%s dataset '%s': %d file(s), %d clip(s) added, %d already present, %d caption(s), %zu failed\n",
        r.dataset_created ? "created" : "updated", o.dataset_name.c_str(), r.files_seen, r.clips_added,
        r.clips_known, r.captions_added, r.failures.size());
    for (const auto& f : r.failures) std::printf("  failed: %s: %s\n", f.path.c_str(), f.reason.c_str());
  }
  return 0;
}

int run_list(const Invocation& inv) {
  Catalog catalog = open_catalog();
  nlohmann::json out = nlohmann::json::array();
  for (const auto& d : list_datasets(catalog)) {
    ClipFilter all;
    all.dataset_id = d.id;
    ClipFilter kept = all;
    kept.decision = ClipDecision::keep;
    out.push_back({{"id", d.id},
                   {"name", d.name},
                   {"kind", to_string(d.kind)},
                   {"root", d.root_dir.string()},
                   {"clips", count_clips(catalog, all)},
                   {"kept", count_clips(catalog, kept)},
                   {"description", d.description}});
  }
  if (inv.json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (out.empty())
    std::printf("no datasets in %s; import one with `mugv dataset import DIR --name NAME`\n",
                catalog_path().c_str());
  for (const auto& d : out)
    std::printf("%-20s %6lld clips  %s\n", d["name"].get<std::string>().c_str(),
                static_cast<long long>(d["clips"].get<int64_t>()), d["root"].get<std::string>().c_str());
  return 0;
}

int run_show(const Invocation& inv) {
  Catalog catalog = open_catalog();
  Dataset d = dataset_or_throw(catalog, inv.positional[0]);
  ClipFilter filter;
  filter.dataset_id = d.id;
  filter.limit = inv.values.get_int("dataset.limit");
  nlohmann::json clips = nlohmann::json::array();
  for (const auto& c : list_clips(catalog, filter)) {
    auto caption = current_caption(catalog, c.id);
    auto source = get_source(catalog, c.source_id);
    clips.push_back({{"id", c.id},
                     {"source", source ? source->path.string() : ""},
                     {"start_s", c.start_s},
                     {"end_s", c.end_s},
                     {"frames", c.end_frame - c.start_frame},
                     {"fps", c.fps},
                     {"width", c.width},
                     {"height", c.height},
                     {"decision", to_string(c.decision)},
                     {"reason", c.reason},
                     {"caption", caption ? caption->text : ""},
                     {"caption_origin", caption ? to_string(caption->origin) : ""}});
  }
  nlohmann::json by_decision = nlohmann::json::array();
  for (const auto& n : count_clips_by_decision(catalog, d.id))
    by_decision.push_back({{"decision", to_string(n.decision)}, {"reason", n.reason}, {"clips", n.clips}});
  if (inv.json) {
    std::cout << nlohmann::json{{"id", d.id},
                                {"name", d.name},
                                {"kind", to_string(d.kind)},
                                {"root", d.root_dir.string()},
                                {"description", d.description},
                                {"decisions", by_decision},
                                {"clips", clips}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::printf("dataset %s (%s) at %s\n", d.name.c_str(), to_string(d.kind), d.root_dir.c_str());
  for (const auto& n : by_decision)
    std::printf("  %-8s %-24s %lld\n", n["decision"].get<std::string>().c_str(),
                n["reason"].get<std::string>().c_str(), static_cast<long long>(n["clips"].get<int64_t>()));
  for (const auto& c : clips)
    std::printf("  #%-6lld %6.2f-%6.2fs %4dx%-4d %-7s %s\n", static_cast<long long>(c["id"].get<int64_t>()),
                c["start_s"].get<double>(), c["end_s"].get<double>(), c["width"].get<int>(),
                c["height"].get<int>(), c["decision"].get<std::string>().c_str(),
                c["caption"].get<std::string>().c_str());
  return 0;
}

}  // namespace

Command dataset_import_command() {
  Command c;
  c.words = {"dataset", "import"};
  c.summary = "import videos with sidecar captions, or a JSONL, JSON or CSV manifest, as a dataset";
  c.usage = "DIR|MANIFEST --name NAME";
  c.min_positional = c.max_positional = 1;
  c.define = [](ParamRegistry& r) {
    r.add(param("dataset.name", "--name", ParamType::text, nullptr, "dataset name (created when new)",
                "dataset"));
    r.add(param("dataset.description", "--description", ParamType::text, nullptr, "free-text description",
                "dataset"));
  };
  c.run = run_import;
  c.job_kind = "import";
  return c;
}

Command dataset_list_command() {
  Command c;
  c.words = {"dataset", "list"};
  c.summary = "list the datasets in the catalog with their clip counts";
  c.usage = "[--json]";
  c.run = run_list;
  return c;
}

Command dataset_show_command() {
  Command c;
  c.words = {"dataset", "show"};
  c.summary = "show a dataset: decisions by reason and its clips with captions";
  c.usage = "NAME [--limit N] [--json]";
  c.min_positional = c.max_positional = 1;
  c.define = [](ParamRegistry& r) {
    auto limit =
        param("dataset.limit", "--limit", ParamType::integer, 0, "show at most N clips (0: all)", "dataset");
    limit.min_value = 0;
    r.add(limit);
  };
  c.run = run_show;
  return c;
}

}  // namespace mugv::cli
