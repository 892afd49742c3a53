#include "service/library_requests.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/generations.h"
#include "catalog/preferences.h"
#include "catalog/prompts.h"
#include "catalog/runs.h"
#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/presets.h"
#include "core/strings.h"
#include "model/release_files.h"
#include "service/cluster_profiles.h"
#include "service/job_json.h"
#include "train/checkpoint_store.h"
#include "train/run_layout.h"

#include <sys/stat.h>

#include <set>

namespace mugv {

using protocol::Message;

LibraryRequests::LibraryRequests(Catalog& catalog, fs::path home)
    : catalog_(catalog), home_(std::move(home)) {}

Message LibraryRequests::on_list_clusters(const Message&) const {
  const ClusterProfileListing listing = list_cluster_profiles(home_);
  nlohmann::json clusters = nlohmann::json::array(), problems = nlohmann::json::array();
  for (const auto& p : listing.profiles) clusters.push_back(p.to_json());
  for (const auto& [file, why] : listing.problems)
    problems.push_back({{"file", file.string()}, {"error", why}});
  return protocol::make_ok(
      {{"clusters", clusters}, {"problems", problems}, {"dir", cluster_profiles_dir(home_).string()}});
}

Message LibraryRequests::on_list_models(const Message&) const {
  // Released models installed on this server, for the studio's model picker.
  nlohmann::json list = nlohmann::json::array();
  for (const auto& model : list_installed_models(home_ / "models")) list.push_back(to_json(model));
  return protocol::make_ok({{"models", list}, {"dir", (home_ / "models").string()}});
}

Message LibraryRequests::on_list_presets(const Message& m) const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& preset : describe_presets(m.header.value("kind", ""))) list.push_back(to_json(preset));
  return protocol::make_ok({{"presets", list}, {"user_dir", user_preset_dir().string()}});
}

Message LibraryRequests::on_list_runs(const Message& m) const {
  const auto& h = m.header;
  // One record shape for every run, whichever place knows it: the catalog's runs table and the run folders
  // the trainers write ($MUGV_HOME/runs/NAME/run.json), merged by name; what a place does not know is null.
  std::vector<nlohmann::json> runs;
  std::set<std::string> named;
  for (const auto& r : list_runs(catalog_)) {
    named.insert(r.name);
    runs.push_back({{"id", r.id},
                    {"name", r.name},
                    {"kind", to_string(r.kind)},
                    {"preset", r.preset},
                    {"dataset", nullptr},
                    {"vae_run", nullptr},
                    {"state", to_string(r.state)},
                    {"dir", r.dir.string()},
                    {"created_at_ms", r.created_at_ms},
                    {"base", nullptr},
                    {"lora", nullptr},
                    {"lineage", nullptr},
                    {"checkpoints", nullptr}});
  }
  for (const auto& name : list_run_names()) {
    if (named.count(name)) continue;
    try {
      const RunPaths paths = run_paths(name);
      const RunManifest m = read_run_manifest(paths);
      struct stat manifest_stat {};
      const int64_t written_ms =
          ::stat(paths.manifest().c_str(), &manifest_stat) == 0
              ? int64_t(manifest_stat.st_mtim.tv_sec) * 1000 + manifest_stat.st_mtim.tv_nsec / 1000000
              : 0;
      // Fine-tunes name their base; LoRA runs their adapter settings; checkpoints are listed by step (a
      // LoRA run's checkpoints are its adapters).
      const nlohmann::json& config = m.config.is_object() ? m.config : nlohmann::json::object();
      const nlohmann::json base = config.contains("base") ? config["base"] : nlohmann::json();
      const nlohmann::json train = config.value("train", nlohmann::json::object());
      const std::string lora = train.is_object() ? train.value("lora", std::string()) : std::string();
      nlohmann::json steps = nlohmann::json::array();
      for (const auto& c : CheckpointStore(paths.checkpoints()).list()) steps.push_back(c.step);
      // Runs made from other runs' weights say how (mugv grow, mugv lora merge, mugv ema).
      nlohmann::json lineage = nlohmann::json::object();
      for (const char* key : {"grown_from", "merged_from", "ema_from"})
        if (config.contains(key)) lineage[key] = config[key];
      // Post-trained fine-tunes: which stage made them from their base (SFT on a clip subset, DPO, KTO).
      if (base.is_object() && train.is_object()) {
        const std::string objective = train.value("objective", std::string("flow"));
        const std::string filter = train.value("clip_filter", std::string());
        if (objective != "flow" || !filter.empty())
          lineage["post_trained_from"] = {{"run", base.value("run", base.value("model", std::string()))},
                                          {"step", base.value("step", int64_t(0))},
                                          {"stage", objective != "flow" ? objective : "sft"},
                                          {"clip_filter", filter}};
      }
      runs.push_back({{"id", nullptr},
                      {"name", name},
                      {"kind", to_string(m.kind)},
                      {"preset", m.preset},
                      {"dataset", m.dataset},
                      {"vae_run", m.vae_run.empty() ? nlohmann::json() : nlohmann::json(m.vae_run)},
                      {"state", nullptr},
                      {"dir", paths.root.string()},
                      {"created_at_ms", written_ms},
                      {"base", base.is_object() ? base : nlohmann::json()},
                      {"lora", lora.empty() ? nlohmann::json() : nlohmann::json(lora)},
                      {"lineage", lineage.empty() ? nlohmann::json() : lineage},
                      {"checkpoints", steps}});
    } catch (const Error& e) {
      log_warning(cat("run ", name, " not listed: ", e.what()));  // a damaged folder is skipped
    }
  }
  nlohmann::json list = nlohmann::json::array();
  const size_t offset = h.value("offset", 0), limit = h.value("limit", 1000);
  for (size_t i = offset; i < runs.size() && list.size() < limit; ++i) list.push_back(runs[i]);
  return protocol::make_ok({{"runs", list}, {"total", runs.size()}});
}

// Each dataset with its latent caches by encoder (a VAE run or a released model) and their entry counts, so
// a client knows what `mugv encode` still has to make before a DiT trains on it.
Message LibraryRequests::on_list_datasets(const Message&) const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& d : list_datasets(catalog_)) {
    ClipFilter f;
    f.dataset_id = d.id;
    nlohmann::json caches = nlohmann::json::object();
    for (const auto& [encoder, entries] : list_latent_caches(d.name)) caches[encoder] = entries;
    list.push_back({{"id", d.id},
                    {"name", d.name},
                    {"root", d.root_dir.string()},
                    {"clips", count_clips(catalog_, f)},
                    {"latent_caches", caches}});
  }
  return protocol::make_ok({{"datasets", list}});
}

Message LibraryRequests::on_list_clips(const Message& m) const {
  const auto& h = m.header;
  auto d = find_dataset(catalog_, h["dataset"].get<std::string>());
  if (!d) throw Error(ErrorCode::not_found, h["dataset"].get<std::string>(), "no such dataset");
  ClipFilter f;
  f.dataset_id = d->id;
  if (h.contains("decision")) f.decision = clip_decision_from_string(h["decision"].get<std::string>());
  if (h.contains("reason")) f.reason = h["reason"].get<std::string>();
  if (h.contains("tag")) f.tag = h["tag"].get<std::string>();
  f.limit = h.value("limit", 500);
  f.offset = h.value("offset", 0);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& c : list_clips(catalog_, f)) {
    auto caption = current_caption(catalog_, c.id);
    list.push_back(to_json(c, caption));
  }
  return protocol::make_ok({{"clips", list}, {"total", count_clips(catalog_, f)}});
}

Message LibraryRequests::on_edit_caption(const Message& m) const {
  const auto& h = m.header;
  Caption c = add_caption(catalog_, h["clip"], h["text"].get<std::string>(), CaptionOrigin::human, "studio");
  return protocol::make_ok({{"caption", {{"id", c.id}, {"version", c.version}, {"current", c.current}}}});
}

Message LibraryRequests::on_list_prompts(const Message& m) const {
  const auto& h = m.header;
  PromptQuery q;
  q.text_contains = h.value("query", "");
  q.tag = h.value("tag", "");
  q.limit = h.value("limit", 0);
  q.offset = h.value("offset", 0);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& p : list_prompts(catalog_, q))
    list.push_back({{"id", p.id},
                    {"text", p.text},
                    {"negative", p.negative},
                    {"tags", p.tags},
                    {"created_at_ms", p.created_at_ms}});
  return protocol::make_ok({{"prompts", list}});
}

Message LibraryRequests::on_save_prompt(const Message& m) const {
  const auto& h = m.header;
  Prompt p;
  p.text = h["text"].get<std::string>();
  p.negative = h.value("negative", "");
  if (h.contains("tags")) p.tags = h["tags"].get<std::vector<std::string>>();
  if (h.contains("id")) {
    p.id = h["id"];
    update_prompt(catalog_, p);
  } else {
    p = add_prompt(catalog_, p);
  }
  return protocol::make_ok({{"prompt", p.id}});
}

Message LibraryRequests::on_list_generations(const Message& m) const {
  const auto& h = m.header;
  nlohmann::json list = nlohmann::json::array();
  auto gens = h.contains("prompt") ? list_generations_for_prompt(catalog_, h["prompt"], h.value("limit", 0))
                                   : list_generations(catalog_, h.value("limit", 0), h.value("offset", 0));
  for (const auto& g : gens)
    list.push_back({{"id", g.id},
                    {"prompt", g.prompt_text},
                    {"negative", g.negative},
                    {"seed", g.seed},
                    {"steps", g.steps},
                    {"cfg", g.cfg_scale},
                    {"width", g.width},
                    {"height", g.height},
                    {"frames", g.frames},
                    {"output", g.output_path.string()},
                    {"settings", g.settings}});
  return protocol::make_ok({{"generations", list}});
}

// The labelling queue: pending pairs, oldest first, with their prompt and generations.
Message LibraryRequests::on_list_preferences(const Message& m) const {
  PreferenceFilter pending;
  pending.pending = true;
  pending.pairs = true;
  pending.limit = m.header.value("limit", 100);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& p : list_preferences(catalog_, pending)) list.push_back(pair_json(p));
  const auto c = count_preferences(catalog_);
  return protocol::make_ok({{"pairs", list},
                            {"counts",
                             {{"pending", c.pending},
                              {"preferred", c.preferred},
                              {"skipped", c.skipped},
                              {"good", c.good},
                              {"bad", c.bad}}}});
}

// A pair as the labelling view shows it.
nlohmann::json LibraryRequests::pair_json(const Preference& p) const {
  const auto a = get_generation(catalog_, p.generation_a);
  return {{"id", p.id},
          {"prompt", a ? a->prompt_text : std::string()},
          {"a", p.generation_a},
          {"b", p.generation_b.value_or(0)}};
}

// A person's label of a pair, or the undo of their most recent one (answered with the pair, so the view
// shows it again wherever it stands in the queue).
Message LibraryRequests::on_label_preference(const Message& m) const {
  const auto& h = m.header;
  if (h.value("undo", false)) {
    PreferenceFilter human;
    human.labeller = "human";
    const auto last = last_labelled(catalog_, human);
    if (!last) throw Error(ErrorCode::not_found, "undo", "no label of a person to undo");
    label_preference(catalog_, last->id, PreferenceChoice::pending, "");
    return protocol::make_ok({{"id", last->id}, {"choice", "pending"}, {"pair", pair_json(*last)}});
  }
  if (!h.contains("id") || !h.contains("choice"))
    throw Error(ErrorCode::invalid_argument, "label_preference", "give \"id\" and \"choice\", or \"undo\"");
  const int64_t id = h["id"];
  const auto choice = preference_choice_from_string(h["choice"].get<std::string>());
  label_preference(catalog_, id, *choice, "human");
  return protocol::make_ok({{"id", id}, {"choice", h["choice"]}});
}

}  // namespace mugv
