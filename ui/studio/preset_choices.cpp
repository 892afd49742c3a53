#include "preset_choices.h"

#include "backend_link.h"
#include "core/error.h"
#include "core/presets.h"

namespace mugv::studio {

std::vector<PresetChoice> local_preset_choices(const std::string& kind) {
  std::vector<PresetChoice> out;
  for (const PresetListing& p : describe_presets(kind))
    if (p.problem.empty()) out.push_back({p.ref.name, p.description, p.values});
  return out;
}

std::vector<PresetChoice> preset_choices_from_reply(const nlohmann::json& reply) {
  std::vector<PresetChoice> out;
  const nlohmann::json presets = reply.value("presets", nlohmann::json::array());
  if (!presets.is_array()) return out;
  for (const auto& p : presets) {
    if (!p.is_object() || !p.contains("values") || !p["values"].is_object()) continue;
    const auto name = p.find("name");
    if (name == p.end() || !name->is_string() || name->get<std::string>().empty()) continue;
    const auto description = p.find("description");
    out.push_back({name->get<std::string>(),
                   description != p.end() && description->is_string() ? description->get<std::string>() : "",
                   p["values"]});
  }
  return out;
}

std::vector<PresetChoice> presets_for_trainer(const std::vector<PresetChoice>& presets,
                                              const std::string& trainer, bool with_shared) {
  std::vector<PresetChoice> out;
  for (const PresetChoice& p : presets) {
    try {
      const std::string for_trainer = preset_trainer(p.values, p.name);
      if (for_trainer == trainer || (with_shared && for_trainer.empty())) out.push_back(p);
    } catch (const Error&) {
    }
  }
  return out;
}

const PresetChoice* find_preset_choice(const std::vector<PresetChoice>& presets, const std::string& name) {
  for (const PresetChoice& p : presets)
    if (p.name == name) return &p;
  return nullptr;
}

void fetch_preset_choices(BackendLink& link, const std::string& kind,
                          std::function<void(const std::vector<PresetChoice>&)> on_presets) {
  link.call(protocol::MessageType::list_presets, {{"kind", kind}},
            [on_presets = std::move(on_presets)](const nlohmann::json& reply) {
              on_presets(preset_choices_from_reply(reply));
            });
}

void fill_preset_combo(QComboBox& combo, const std::vector<PresetChoice>& presets, bool allow_none) {
  const QString current = combo.currentText();
  const QVariant current_data = combo.currentData();
  for (int i = combo.count() - 1; i >= 0; --i)
    if (!combo.itemData(i).isValid()) combo.removeItem(i);
  int at = 0;
  if (allow_none) combo.insertItem(at++, QString());
  for (const PresetChoice& p : presets) {
    combo.insertItem(at, QString::fromStdString(p.name));
    if (!p.description.empty()) combo.setItemData(at, QString::fromStdString(p.description), Qt::ToolTipRole);
    ++at;
  }
  int keep = current_data.isValid() ? combo.findData(current_data) : combo.findText(current);
  if (keep < 0 && !combo.isEditable()) keep = combo.count() > 0 ? 0 : -1;
  if (keep >= 0)
    combo.setCurrentIndex(keep);
  else
    combo.setEditText(current);  // typed (a file, or a name this server lacks): the user's to change
}

}  // namespace mugv::studio
