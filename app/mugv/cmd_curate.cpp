// mugv curate INPUT... | curate redecide | curate dedup | curate balance | curate merge: the curation
// pipeline over the catalog (backend/curation/pipeline.h, dedup.h, balance.h).
#include "command.h"

#include "catalog/clips.h"
#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "curation/balance.h"
#include "curation/dedup.h"
#include "curation/pipeline.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace mugv::cli {
namespace {

void define_catalog(ParamRegistry& r) {
  r.add(param("curate.catalog", "--catalog", ParamType::path, nullptr,
              "catalog file to use instead of $MUGV_HOME/catalog.sqlite (e.g. one per shard)", "catalog"));
}

void define_dataset(ParamRegistry& r) {
  r.add(param("curate.dataset", "--dataset", ParamType::text, nullptr, "dataset name", "curate"));
}

void define_thresholds(ParamRegistry& r) {
  r.add(param("curate.preset", "--preset", ParamType::text, "mugv",
              "curation preset: mugv, lenient, or a .toml file", "curate"));
  auto set =
      param("curate.set", "--set", ParamType::list, nlohmann::json::array(),
            "preset overrides KEY=VALUE (repeat the flag or separate with commas), e.g. "
            "thresholds.sharpness_min=100, aesthetic.model=laion_head.safetensors (a learned aesthetic "
            "predictor instead of the heuristic)",
            "curate");
  set.item_type = ParamType::text;
  r.add(set);
}

Catalog open_catalog(const ParamValues& v) {
  return Catalog::open(v.has("curate.catalog") ? fs::path(v.get_text("curate.catalog")) : catalog_path());
}

std::string dataset_of(const ParamValues& v) {
  if (!v.has("curate.dataset")) throw Error(ErrorCode::usage, "--dataset", "a dataset name is required");
  return v.get_text("curate.dataset");
}

CurationPreset preset_of(const ParamValues& v) {
  return resolve_curation_preset(v.get_text("curate.preset"),
                                 overrides_from_assignments(v.get_text_list("curate.set")));
}

void print(const Invocation& inv, const nlohmann::json& result, const std::string& line) {
  if (inv.json)
    std::cout << result.dump(2) << "\n";
  else
    std::printf("%s\n", line.c_str());
}

int run_curate(const Invocation& inv) {
  const auto& v = inv.values;
  CurateOptions o;
  for (const auto& p : inv.positional) o.inputs.emplace_back(p);
  o.dataset_name = dataset_of(v);
  o.preset = v.get_text("curate.preset");
  o.overrides = overrides_from_assignments(v.get_text_list("curate.set"));
  if (v.has("curate.shard")) {
    auto shard = shard_spec_from_string(v.get_text("curate.shard"));
    if (!shard) throw Error(ErrorCode::usage, "--shard", "expected i/n with 0 <= i < n, e.g. 0/4");
    o.shard = *shard;
  }
  o.decode_threads = static_cast<int>(v.get_int("curate.decode_threads"));
  Catalog catalog = open_catalog(v);
  CurateReport r = curate(catalog, o, inv.cancel, inv.progress);
  finish_progress_line();
  nlohmann::json failures = nlohmann::json::array();
  for (const auto& f : r.failures) failures.push_back({{"path", f.path.string()}, {"reason", f.reason}});
  const nlohmann::json result = {{"dataset", o.dataset_name},
                                 {"dataset_id", r.dataset_id},
                                 {"created", r.dataset_created},
                                 {"catalog", catalog.path().string()},
                                 {"shard", to_string(o.shard)},
                                 {"files", r.files_seen},
                                 {"files_in_shard", r.files_in_shard},
                                 {"sources_analyzed", r.sources_analyzed},
                                 {"sources_skipped", r.sources_skipped},
                                 {"clips_added", r.clips_added},
                                 {"clips_kept", r.clips_kept},
                                 {"clips_rejected", r.clips_rejected},
                                 {"frames", r.frames_decoded},
                                 {"elapsed_s", r.elapsed_s},
                                 {"failed", r.failures.size()},
                                 {"failures", failures}};
  if (inv.json) {
    std::cout << result.dump(2) << "\n";
  } else {
    std::printf(
        "dataset '%s': %d file(s) (%d in shard %s), %d analysed, %d already done, %d clip(s) added: %d kept, "
        "%d rejected; %lld frames in %s, %zu failed\n",
        o.dataset_name.c_str(), r.files_seen, r.files_in_shard, to_string(o.shard).c_str(),
        r.sources_analyzed, r.sources_skipped, r.clips_added, r.clips_kept, r.clips_rejected,
        static_cast<long long>(r.frames_decoded), human_duration(r.elapsed_s).c_str(), r.failures.size());
    for (const auto& f : r.failures) std::printf("  failed: %s: %s\n", f.path.c_str(), f.reason.c_str());
  }
  return 0;
}

int run_redecide(const Invocation& inv) {
  const auto& v = inv.values;
  const std::string dataset = dataset_of(v);
  const CurationPreset preset = preset_of(v);
  Catalog catalog = open_catalog(v);
  RedecideReport r = redecide(catalog, dataset, preset.thresholds);
  print(inv,
        {{"dataset", dataset},
         {"preset", preset.name},
         {"clips", r.clips},
         {"unscored", r.unscored},
         {"changed", r.changed},
         {"kept", r.kept},
         {"rejected", r.rejected},
         {"elapsed_s", r.elapsed_s}},
        cat("dataset '", dataset, "': ", r.clips, " clip(s) re-decided with preset ", preset.name, ": ",
            r.kept, " kept, ", r.rejected, " rejected, ", r.changed, " changed, ", r.unscored,
            " without scores (", human_duration(r.elapsed_s), ")"));
  return 0;
}

int run_dedup(const Invocation& inv) {
  const auto& v = inv.values;
  const std::string dataset = dataset_of(v);
  DedupOptions o;
  o.max_distance = static_cast<int>(v.get_int("dedup.max_distance"));
  o.match = *hash_match_from_string(v.get_text("dedup.match"));
  Catalog catalog = open_catalog(v);
  DedupReport r = dedup_dataset(catalog, dataset, o);
  print(inv,
        {{"dataset", dataset},
         {"checked", r.clips_checked},
         {"duplicates", r.duplicates},
         {"restored", r.restored},
         {"max_distance", o.max_distance},
         {"match", to_string(o.match)}},
        cat("dataset '", dataset, "': ", r.clips_checked, " clip(s) checked, ", r.duplicates,
            " rejected as near duplicates, ", r.restored, " restored"));
  return 0;
}

int run_balance(const Invocation& inv) {
  const auto& v = inv.values;
  const std::string dataset = dataset_of(v);
  const TagVocabulary vocabulary = load_tag_vocabulary(v.get_text("balance.vocabulary"));
  BalanceOptions o;
  o.cap_per_tag = v.get_int("balance.cap");
  o.categories = v.get_text_list("balance.categories");
  o.seed = static_cast<uint64_t>(v.get_int("balance.seed"));
  Catalog catalog = open_catalog(v);
  TagReport tags = tag_dataset(catalog, dataset, vocabulary);
  BalanceReport r = balance_dataset(catalog, dataset, o);
  nlohmann::json counts = nlohmann::json::object();
  for (const auto& [tag, n] : r.tag_counts) counts[tag] = n;
  print(inv,
        {{"dataset", dataset},
         {"clips", tags.clips},
         {"captioned", tags.captioned},
         {"tagged", tags.tagged},
         {"candidates", r.candidates},
         {"kept", r.kept},
         {"rejected", r.rejected},
         {"cap", o.cap_per_tag},
         {"tag_counts", counts}},
        cat("dataset '", dataset, "': ", tags.tagged, " of ", tags.clips, " clip(s) tagged; ", r.kept,
            " kept, ", r.rejected, " rejected over a cap of ", o.cap_per_tag, " per tag"));
  return 0;
}

int run_merge(const Invocation& inv) {
  const auto& v = inv.values;
  const std::string dataset = dataset_of(v);
  std::vector<std::string> from = v.get_text_list("merge.from");
  from.insert(from.end(), inv.positional.begin(), inv.positional.end());
  if (from.empty())
    throw Error(ErrorCode::usage, "--from", "name the shard catalogs: --from A.sqlite,B.sqlite");
  Catalog catalog = open_catalog(v);
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : from) {
    MergeReport r = merge_catalog(catalog, f, dataset);
    files.push_back({{"from", f},
                     {"sources_added", r.sources_added},
                     {"sources_known", r.sources_known},
                     {"clips_added", r.clips_added},
                     {"clips_known", r.clips_known},
                     {"captions_added", r.captions_added}});
    if (!inv.json)
      std::printf("%s: %lld source(s) added, %lld clip(s) added, %lld already present\n", f.c_str(),
                  static_cast<long long>(r.sources_added), static_cast<long long>(r.clips_added),
                  static_cast<long long>(r.clips_known));
  }
  if (inv.json)
    std::cout << nlohmann::json{{"dataset", dataset}, {"catalog", catalog.path().string()}, {"merged", files}}
                     .dump(2)
              << "\n";
  return 0;
}

}  // namespace

Command curate_command() {
  Command c;
  c.words = {"curate"};
  c.summary =
      "split videos at scene cuts into scored clips with keep/reject decisions (resumable, shardable)";
  c.usage =
      "INPUT... --dataset NAME [--preset mugv|lenient|FILE] [--set KEY=VALUE,...] [--shard i/n] [--catalog "
      "FILE]";
  c.min_positional = 1;
  c.max_positional = 1 << 20;
  c.define = [](ParamRegistry& r) {
    define_dataset(r);
    define_thresholds(r);
    r.add(param("curate.shard", "--shard", ParamType::text, nullptr,
                "process slice i of n of the inputs (by content hash), e.g. 0/4", "curate"));
    auto threads = param("curate.decode_threads", "--decode-threads", ParamType::integer, 1,
                         "decoder threads", "curate");
    threads.min_value = 1;
    threads.max_value = 64;
    r.add(threads);
    define_catalog(r);
  };
  c.run = run_curate;
  c.job_kind = "curate";
  return c;
}

Command curate_redecide_command() {
  Command c;
  c.words = {"curate", "redecide"};
  c.job_kind = "curate";  // re-curation runs on a server too (the studio queues it)
  c.summary = "re-decide every clip from its stored scores with new thresholds (no decoding)";
  c.usage = "--dataset NAME [--preset mugv|lenient|FILE] [--set KEY=VALUE,...]";
  c.define = [](ParamRegistry& r) {
    define_dataset(r);
    define_thresholds(r);
    define_catalog(r);
  };
  c.run = run_redecide;
  return c;
}

Command curate_dedup_command() {
  Command c;
  c.words = {"curate", "dedup"};
  c.job_kind = "curate";  // re-curation runs on a server too (the studio queues it)
  c.summary = "reject near-duplicate kept clips by perceptual hash, keeping the best of each group";
  c.usage = "--dataset NAME [--max-distance BITS] [--match all|mean]";
  c.define = [](ParamRegistry& r) {
    define_dataset(r);
    auto distance = param("dedup.max_distance", "--max-distance", ParamType::integer, 10,
                          "largest pHash Hamming distance (of 64 bits) that counts as a duplicate", "dedup");
    distance.min_value = 0;
    distance.max_value = 20;
    r.add(distance);
    auto match = param("dedup.match", "--match", ParamType::choice, "all",
                       "all: every keyframe within the distance; mean: their mean distance", "dedup");
    match.choices = {"all", "mean"};
    r.add(match);
    define_catalog(r);
  };
  c.run = run_dedup;
  return c;
}

Command curate_balance_command() {
  Command c;
  c.words = {"curate", "balance"};
  c.job_kind = "curate";  // re-curation runs on a server too (the studio queues it)
  c.summary = "tag clips from their captions and cap the kept clips per tag";
  c.usage = "--dataset NAME --cap N [--categories subject,action] [--seed S] [--vocabulary tags|FILE]";
  c.define = [](ParamRegistry& r) {
    define_dataset(r);
    auto cap =
        param("balance.cap", "--cap", ParamType::integer, nullptr, "at most N kept clips per tag", "balance");
    cap.min_value = 1;
    r.add(cap);
    auto categories = param("balance.categories", "--categories", ParamType::list, nlohmann::json::array(),
                            "tag categories to cap (default: all)", "balance");
    categories.item_type = ParamType::text;
    r.add(categories);
    r.add(param("balance.seed", "--seed", ParamType::integer, 0, "seed for the order of equally scored clips",
                "balance"));
    r.add(param("balance.vocabulary", "--vocabulary", ParamType::text, "tags",
                "tag vocabulary: a preset of presets/vocabularies or a .toml file", "balance"));
    define_catalog(r);
  };
  c.run = [](const Invocation& inv) {
    if (!inv.values.has("balance.cap")) throw Error(ErrorCode::usage, "--cap", "a cap per tag is required");
    return run_balance(inv);
  };
  return c;
}

Command curate_merge_command() {
  Command c;
  c.words = {"curate", "merge"};
  c.job_kind = "curate";  // re-curation runs on a server too (the studio queues it)
  c.summary = "merge a dataset from shard catalogs into this catalog";
  c.usage = "--dataset NAME --from A.sqlite,B.sqlite [CATALOG...] [--catalog FILE]";
  c.max_positional = 1 << 20;
  c.define = [](ParamRegistry& r) {
    define_dataset(r);
    auto from = param("merge.from", "--from", ParamType::list, nlohmann::json::array(), "shard catalog files",
                      "merge");
    from.item_type = ParamType::path;
    r.add(from);
    define_catalog(r);
  };
  c.run = run_merge;
  return c;
}

}  // namespace mugv::cli
