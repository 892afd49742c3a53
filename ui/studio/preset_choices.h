#pragma once
// The studio's preset pickers (the new-run dialog's model size, training preset and curriculum, the Datasets
// page's curation preset). The names a job carries are resolved by the server's workers, so the server's
// presets are the ones that count — a user preset made there (`mugv sweep`, a file under its home) included.
// A picker starts with this installation's presets, so it works before a server answers and with a server too
// old to list its own, and takes the server's list (`list_presets`) when it comes.

#include <nlohmann/json.hpp>

#include <QComboBox>

#include <functional>
#include <string>
#include <vector>

namespace mugv::studio {

class BackendLink;

struct PresetChoice {
  std::string name;
  std::string description;  // the item's tooltip
  nlohmann::json values;    // the preset's resolved values, as the server's jobs would load them
};

// This installation's presets of `kind`; a preset that does not load is left out.
[[nodiscard]] std::vector<PresetChoice> local_preset_choices(const std::string& kind);
// The loadable presets of a list_presets reply (records without values, or of malformed shape, left out).
[[nodiscard]] std::vector<PresetChoice> preset_choices_from_reply(const nlohmann::json& reply);
// The training presets marked for `trainer` ("dit" or "vae": core/presets.h preset_trainer), and with
// `with_shared` those for either trainer too; one whose trainer is malformed is left out.
[[nodiscard]] std::vector<PresetChoice> presets_for_trainer(const std::vector<PresetChoice>& presets,
                                                            const std::string& trainer, bool with_shared);
// The preset called `name` among `presets`; nullptr when there is none.
[[nodiscard]] const PresetChoice* find_preset_choice(const std::vector<PresetChoice>& presets,
                                                     const std::string& name);
// Asks the server for its presets of `kind`; `on_presets` runs on the UI thread (not on failure, so an older
// server leaves the picker as it was).
void fetch_preset_choices(BackendLink& link, const std::string& kind,
                          std::function<void(const std::vector<PresetChoice>&)> on_presets);

// The combo's preset items become `presets` (a leading empty item first when `allow_none`: no preset), in
// order before any item that carries data of its own (the new-run dialog's released model), which stays. The
// current choice is kept when still offered; an editable combo keeps whatever text was typed. The combo emits
// its change signals as it goes: a caller that reacts to them guards against the intermediate states.
void fill_preset_combo(QComboBox& combo, const std::vector<PresetChoice>& presets, bool allow_none);

}  // namespace mugv::studio
