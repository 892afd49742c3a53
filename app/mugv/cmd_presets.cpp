// mugv presets [KIND] [--json]: the presets this machine's commands would use, and `mugv --server EP presets`
// the server's (the same listing, core/presets.h describe_presets).
#include "command.h"

#include "core/paths.h"
#include "core/presets.h"

#include <cstdio>
#include <iostream>

namespace mugv::cli {

void print_presets(const nlohmann::json& presets) {
  std::string kind;
  for (const auto& p : presets) {
    if (p.value("kind", "") != kind) {
      kind = p.value("kind", "");
      std::printf("%s\n", kind.c_str());
    }
    const std::string location = p.value("location", "") == "user" ? "user" : "built in";
    std::string what =
        p.contains("problem") ? "unusable: " + p.value("problem", "") : p.value("description", "");
    // A training preset for one trainer only (core/presets.h preset_trainer) says which.
    const auto values = p.value("values", nlohmann::json::object());
    if (const auto trainer = values.is_object() ? values.find("trainer") : values.end();
        trainer != values.end() && trainer->is_string())
      what += std::string(what.empty() ? "" : " ") + "[mugv " + (*trainer == "vae" ? "train-vae" : "train") +
              " only]";
    std::printf("  %-16s %-9s %s\n", p.value("name", "").c_str(), location.c_str(), what.c_str());
  }
}

namespace {

int run(const Invocation& inv) {
  const std::string kind = inv.positional.empty() ? std::string() : inv.positional[0];
  nlohmann::json list = nlohmann::json::array();
  for (const PresetListing& p : describe_presets(kind)) list.push_back(to_json(p));
  if (inv.json)
    std::cout << list.dump(2) << "\n";
  else if (list.empty())
    std::printf("no %s presets (a user's go in %s)\n", kind.empty() ? "" : (kind + " ").c_str(),
                user_preset_dir().c_str());
  else
    print_presets(list);
  return 0;
}

}  // namespace

Command presets_command() {
  Command c;
  c.words = {"presets"};
  c.summary =
      "list the presets (models, train, curation, curricula, vocabularies) with where each comes from";
  c.usage = "[KIND] [--json]";
  c.max_positional = 1;
  c.positional_type = ParamType::text;
  c.run = run;
  return c;
}

}  // namespace mugv::cli
