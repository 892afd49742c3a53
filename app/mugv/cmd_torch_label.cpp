// `mugv label`: preference labels of generations (catalog/preferences.h) from the terminal, and the automatic
// labeller of the shapes starter set (sample/eval.h): for each pending pair of a shapes prompt, the video
// whose colour, shape and direction match more of the prompt wins (or, with --criterion, the one that matches
// on that attribute alone: labels about one thing, as a person labelling for it would give); equal scores
// are skipped.
#include "command.h"

#include "catalog/catalog.h"
#include "catalog/generations.h"
#include "catalog/preferences.h"
#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "media/decoder.h"
#include "sample/eval.h"

#include <nlohmann/json.hpp>

#include <iostream>

namespace mugv::cli {
namespace {

void define_label(ParamRegistry& r) {
  auto automatic = param(
      "label.auto", "--auto", ParamType::choice, nullptr,
      "label every pending pair with an automatic labeller: shapes (the starter set's evaluator)", "label");
  automatic.choices = {"shapes"};
  r.add(automatic);
  auto criterion = param("label.criterion", "--criterion", ParamType::choice, "all",
                         "what the automatic labeller compares: all (how many of colour, shape and direction "
                         "match the prompt), or colour, shape or direction alone",
                         "label");
  criterion.choices = {"all", "colour", "shape", "direction"};
  r.add(criterion);
  r.add(param("label.list", "--list", ParamType::boolean, false, "list the pending pairs and the counts",
              "label"));
  r.add(param("label.pair", "--pair", ParamType::integer, nullptr, "the pair to label (with --choice)",
              "label"));
  r.add(param("label.generation", "--generation", ParamType::integer, nullptr,
              "a generation to label on its own (with --choice good|bad)", "label"));
  auto choice = param("label.choice", "--choice", ParamType::choice, nullptr,
                      "a pair: a, b or skip; a single generation: good or bad", "label");
  choice.choices = {"a", "b", "skip", "good", "bad"};
  r.add(choice);
  r.add(param("label.undo", "--undo", ParamType::boolean, false, "clear the most recent label of a person",
              "label"));
}

// How well a video matches its prompt on `criterion` (label.criterion's choices).
int64_t shapes_score(const ShapesVerdict& v, const std::string& criterion) {
  if (criterion == "colour") return v.color_ok;
  if (criterion == "shape") return v.shape_ok;
  if (criterion == "direction") return v.direction_ok;
  return int64_t(v.color_ok) + v.shape_ok + v.direction_ok;
}

// The labeller's name stored with its labels: "auto:shapes", or "auto:shapes:direction" for one criterion.
std::string labeller_name(const std::string& criterion) {
  return criterion == "all" ? "auto:shapes" : "auto:shapes:" + criterion;
}

// Judges the two videos of a pending pair; nullopt when it is not a pair of the starter set's grammar.
std::optional<std::pair<PreferenceChoice, std::string>> judge_pair(Catalog& catalog, const Preference& pair,
                                                                   const std::string& criterion) {
  const auto a = get_generation(catalog, pair.generation_a);
  const auto b = get_generation(catalog, *pair.generation_b);
  if (!a || !b) return std::nullopt;
  try {
    const auto va = judge_shapes_clip(a->prompt_text, decode_range(a->output_path, 0, 0));
    const auto vb = judge_shapes_clip(b->prompt_text, decode_range(b->output_path, 0, 0));
    const int64_t sa = shapes_score(va, criterion), sb = shapes_score(vb, criterion);
    const auto choice = sa > sb   ? PreferenceChoice::a
                        : sb > sa ? PreferenceChoice::b
                                  : PreferenceChoice::skip;
    return std::make_pair(choice, cat(sa, " vs ", sb, " on ", criterion));
  } catch (const Error& e) {
    log_warning(cat("pair ", pair.id, ": left pending: ", e.what()));
    return std::nullopt;
  }
}

nlohmann::json counts_json(const PreferenceCounts& c) {
  return {{"pending", c.pending},
          {"preferred", c.preferred},
          {"skipped", c.skipped},
          {"good", c.good},
          {"bad", c.bad}};
}

int run_label(const Invocation& inv) {
  const auto& v = inv.values;
  Catalog catalog = Catalog::open(catalog_path());
  nlohmann::json out = nlohmann::json::object();
  if (v.has("label.auto")) {
    const std::string criterion = v.get_text("label.criterion");
    PreferenceFilter pending;
    pending.pending = true;
    pending.pairs = true;
    const auto pairs = list_preferences(catalog, pending);
    ProgressMeter meter(inv.progress, "label", "pairs", int64_t(pairs.size()));
    int64_t labelled = 0, left = 0, done = 0;
    for (const auto& pair : pairs) {
      inv.cancel.throw_if_cancelled("label");
      if (const auto verdict = judge_pair(catalog, pair, criterion)) {
        label_preference(catalog, pair.id, verdict->first, labeller_name(criterion));
        ++labelled;
      } else {
        ++left;
      }
      meter.update(++done);
    }
    meter.flush();
    finish_progress_line();
    out["labelled"] = labelled;
    out["left_pending"] = left;
    if (!inv.json) std::cout << "labelled " << labelled << " pairs, " << left << " left pending\n";
  } else if (v.get_bool("label.undo")) {
    PreferenceFilter human;
    human.labeller = "human";
    const auto last = last_labelled(catalog, human);
    if (!last) throw Error(ErrorCode::not_found, catalog_path().string(), "no label of a person to undo");
    label_preference(catalog, last->id, PreferenceChoice::pending, "");
    out["undone"] = last->id;
    if (!inv.json)
      std::cout << "label of " << (last->is_pair() ? "pair " : "preference ") << last->id << " cleared\n";
  } else if (v.has("label.pair") || v.has("label.generation")) {
    if (!v.has("label.choice")) throw Error(ErrorCode::usage, "--choice", "say a, b, skip, good or bad");
    const auto choice = *preference_choice_from_string(v.get_text("label.choice"));
    if (v.has("label.pair")) {
      label_preference(catalog, v.get_int("label.pair"), choice, "human");
      out["pair"] = v.get_int("label.pair");
    } else {
      out["preference"] = set_single_label(catalog, v.get_int("label.generation"), choice, "human").id;
    }
    if (!inv.json) std::cout << "labelled " << to_string(choice) << "\n";
  } else if (!v.get_bool("label.list")) {
    throw Error(ErrorCode::usage, "mugv label", "give --list, --auto shapes, --pair ID --choice, or --undo");
  }
  if (v.get_bool("label.list")) {
    PreferenceFilter pending;
    pending.pending = true;
    nlohmann::json list = nlohmann::json::array();
    for (const auto& p : list_preferences(catalog, pending)) {
      const auto a = get_generation(catalog, p.generation_a);
      list.push_back({{"pair", p.id},
                      {"a", p.generation_a},
                      {"b", p.generation_b.value_or(0)},
                      {"prompt", a ? a->prompt_text : ""}});
      if (!inv.json)
        std::cout << "pair " << p.id << ": " << (a ? a->prompt_text : "?") << "  (generations "
                  << p.generation_a << ", " << p.generation_b.value_or(0) << ")\n";
    }
    out["pending"] = list;
  }
  const auto counts = count_preferences(catalog);
  out["counts"] = counts_json(counts);
  if (inv.json)
    std::cout << out.dump() << "\n";
  else
    std::cout << counts.pending << " pending, " << counts.preferred << " preferred, " << counts.skipped
              << " skipped, " << counts.good << " good, " << counts.bad << " bad\n";
  return 0;
}

}  // namespace

Command label_command() {
  Command c;
  c.words = {"label"};
  c.summary = "label pairs of generations for post-training (dpo / kto), by hand or automatically";
  c.usage =
      "--list | --auto shapes [--criterion all|colour|shape|direction] | --pair ID --choice a|b|skip | "
      "--generation ID --choice good|bad | --undo";
  c.define = define_label;
  c.run = run_label;
  c.job_kind = "model";
  return c;
}

}  // namespace mugv::cli
