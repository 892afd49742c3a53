#include "new_run_dialog.h"

#include "core/error.h"
#include "model/release_files.h"

#include <QDialogButtonBox>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QPointer>
#include <QRegularExpression>
#include <QSettings>

#include <algorithm>

namespace mugv::studio {

using protocol::MessageType;

namespace {

constexpr const char* kProblemStyle = "border: 1px solid #d33;";
// The item data of the Model field's entry for a released base (presets' entries have none).
const QString kReleasedModelItem = "released";

QSpinBox* spin(QWidget* parent, int low, int high, int value, const QString& tip) {
  auto* s = new QSpinBox(parent);
  s->setRange(low, high);
  s->setValue(value);
  s->setToolTip(tip);
  return s;
}

// "-" without a pipeline; "1f1b, 16 micro-batches" or "interleaved x2, 16 micro-batches".
QString schedule_cell(const PlanRow& r) {
  if (r.pp == 1) return "-";
  const QString schedule =
      r.virtual_stages > 1 ? QString("%1 x%2").arg(QString::fromStdString(r.schedule)).arg(r.virtual_stages)
                           : QString::fromStdString(r.schedule);
  return QString("%1, %2 micro-batches").arg(schedule).arg(r.micro_batches);
}

// "preset's (2000)": what 0 steps of a new VAE means, from the training preset `name` among `presets` (this
// installation's until the server's arrive).
// The new VAE's preset choices: the presets marked trainer = "vae", or the default VAE preset by name where
// there are none (a server older than the mark has tiny-vae unmarked).
std::vector<PresetChoice> vae_preset_choices(const std::vector<PresetChoice>& presets) {
  std::vector<PresetChoice> marked = presets_for_trainer(presets, "vae", false);
  if (marked.empty()) marked.push_back({VaeForm().preset, {}, nlohmann::json::object()});
  return marked;
}

QString preset_steps_text(const std::vector<PresetChoice>& presets, const std::string& name) {
  if (const PresetChoice* preset = find_preset_choice(presets, name)) {
    const auto train = preset->values.value("train", nlohmann::json::object());
    const auto steps = train.is_object() ? train.value("steps", nlohmann::json()) : nlohmann::json();
    if (steps.is_number_integer() && steps.get<int64_t>() > 0)
      return QString("preset's (%1)").arg(steps.get<int64_t>());
  }
  return "preset's";
}

}  // namespace

NewRunDialog::NewRunDialog(BackendLink& link, QWidget* parent) : QDialog(parent) {
  setWindowTitle("New training run");
  setMinimumWidth(640);
  name_ = new QLineEdit("run-1", this);
  name_->setToolTip("Name of the run folder ($MUGV_HOME/runs/NAME)");
  dataset_ = new QComboBox(this);
  dataset_->setEditable(true);
  dataset_->setToolTip("Dataset whose cached latents the DiT learns");
  vae_ = new QComboBox(this);
  vae_->setEditable(true);
  vae_->setToolTip("VAE run whose latent space the DiT learns");
  const VaeForm vae_defaults;
  train_vae_ = new QCheckBox("Train a VAE first", this);
  train_vae_->setToolTip(
      "A new VAE run trained on the dataset (mugv train-vae); the run learns its latents once they are "
      "encoded");
  vae_name_ = new QLineEdit(this);
  vae_name_->setToolTip("Name of the new VAE run ($MUGV_HOME/runs/NAME)");
  vae_steps_ = spin(this, 0, 10000000, vae_defaults.steps, "Optimizer steps of the VAE (0: the preset's)");
  training_presets_ = local_preset_choices("train");  // the Training preset field's items too (below)
  vae_preset_ = new QComboBox(this);
  vae_preset_->setToolTip(
      "Training preset of the new VAE (mugv train-vae --preset): the presets marked "
      "trainer = \"vae\", a user's own on the server included");
  fill_preset_combo(*vae_preset_, vae_preset_choices(training_presets_), false);
  vae_preset_->setCurrentText(QString::fromStdString(vae_defaults.preset));
  show_vae_preset_steps();
  encode_ = new QCheckBox("Encode latents first", this);
  encode_->setToolTip(
      "Encode the dataset's clips with the VAE run into its latent cache (mugv encode), what the DiT trains "
      "on");
  latents_ = new QLabel(this);
  latents_->setWordWrap(true);
  for (QWidget* w : std::initializer_list<QWidget*>{train_vae_, vae_name_, vae_preset_, vae_steps_, encode_})
    w->setEnabled(false);  // until the server says what the dataset lacks
  from_ = new QComboBox(this);
  from_->addItem("(a new model)", QString());
  from_->setToolTip(
      "Fine-tune: start from a DiT run's latest checkpoint (its model preset, tokenizer and VAE run are "
      "used) or from a released model installed on the server (its DiT, T5 and VAE; trained with the "
      "mugv-finetune preset)");
  lora_ = new QLineEdit(this);
  lora_->setPlaceholderText("empty: every weight trains; rank=16,targets=attn,cross,mlp: LoRA adapters only");
  lora_->setEnabled(false);  // adapters need a base
  lora_->setToolTip(
      "LoRA settings: rank, alpha, dropout and the linears to adapt (attn, cross, mlp, adaln, text, final, "
      "all, or "
      "patterns such as blocks.*.attn.qkv); the base stays frozen");
  grow_first_ = new QCheckBox("Grow ×2 first", this);
  grow_first_->setEnabled(false);  // growth needs a run to grow
  grow_first_->setToolTip(
      "Make a twice-as-wide copy of the run to start from (mugv grow: the same function, HyperCloning) and "
      "train from it once it is made (the planner sizes the narrow run)");
  stage_ = new QComboBox(this);
  stage_->addItem("train (flow)", "flow");
  stage_->addItem("SFT on a clip subset", "sft");
  stage_->addItem("DPO on labelled pairs", "dpo");
  stage_->addItem("KTO on labelled generations", "kto");
  stage_->setToolTip(
      "Flow matching on the dataset; the same on the dataset's clips matching a filter (SFT); or "
      "post-training on the Label page's labels against the frozen run it starts from: DPO on preferred "
      "pairs, KTO on good / bad generations");
  clip_filter_ = new QLineEdit(this);
  clip_filter_->setPlaceholderText("decision=keep,aesthetic>=5,tag=hq");
  clip_filter_->setToolTip(
      "SFT: train on the dataset's clips matching this catalog filter only (fixed when the run starts)");
  labels_ = new QComboBox(this);
  labels_->addItems({"all", "human", "auto"});
  labels_->setToolTip(
      "DPO / KTO: whose labels to learn from: everyone's, a person's (the Label page) or an automatic "
      "labeller's");
  beta_ = new QDoubleSpinBox(this);
  beta_->setRange(0.01, 1e7);
  beta_->setDecimals(2);
  beta_->setValue(1000.0);
  beta_->setToolTip("DPO / KTO: how far the model may move from the frozen reference per unit of flow error");
  anchor_ = new QDoubleSpinBox(this);
  anchor_->setRange(0.0, 1e7);
  anchor_->setDecimals(2);
  anchor_->setValue(0.0);
  anchor_->setToolTip(
      "DPO / KTO: weight of the preferred generations' flow loss added to the preference loss, which keeps "
      "the model near what was preferred (0: none)");
  model_ = new QComboBox(this);
  updating_ = true;  // the form is not complete yet: nothing to plan
  apply_model_presets(local_preset_choices("models"));
  updating_ = false;
  model_->setCurrentText("tiny");
  model_->setToolTip("Model size preset (docs/MUGV.md); tiny trains on a CPU in minutes");
  settings_ = new QComboBox(this);
  fill_preset_combo(*settings_, presets_for_trainer(training_presets_, "dit", true), true);
  settings_->setToolTip(
      "Training preset: the settings the run starts from (learning rate, schedule, batch, optimizer), e.g. "
      "one mugv sweep wrote; choosing one fills the fields below from it. Empty: the model's own preset, or "
      "MUG-V's fine-tune settings for a released model");
  optimizer_ = new QComboBox(this);
  optimizer_->addItems({"adamw", "muon"});
  optimizer_->setToolTip(
      "AdamW, or Muon: orthogonalised momentum (Newton-Schulz) on the hidden matrices, AdamW on embeddings, "
      "norms, biases, adaLN tables and the output layer; the same learning rate (docs/BENCHMARKS.md)");
  parametrization_ = new QComboBox(this);
  parametrization_->addItems({"standard", "mup"});
  parametrization_->setToolTip(
      "mup: initialisation and per-layer learning rates scaled with the width (base width 64), so a learning "
      "rate tuned on a narrow model (mugv sweep) carries over");
  curriculum_ = new QComboBox(this);
  curriculum_->setEditable(true);
  fill_preset_combo(*curriculum_, local_preset_choices("curricula"), true);
  curriculum_->setToolTip(
      "Stages by step that change each batch: images mixed in and annealed away, the clip length raised, "
      "first-frame conditioning introduced (presets/curricula; or a TOML file on the server). Empty: none");
  steps_ = spin(this, 1, 10000000, 200, "Optimizer steps in total");
  batch_ = spin(this, 1, 4096, 4, "Clips per step, split over the data-parallel ranks");
  sample_every_ = spin(this, 0, 1000000, 100, "Render sample videos every N steps (0: never)");
  frames_ = spin(this, 1, 10000, 17,
                 "Frames of the training clips (the planner's activation memory depends on it)");
  // "Use as sample prompt" on the Prompts page collects prompts here (QSettings sample_prompts).
  sample_prompts_ = new QLineEdit(QSettings().value("sample_prompts").toStringList().join(" | "), this);
  sample_prompts_->setPlaceholderText("empty: two captions of the dataset");
  sample_prompts_->setToolTip("Prompts of the samples rendered during training, separated by '|'");
  size_ = new QLineEdit("64x64", this);
  size_->setToolTip("Size WxH of the training clips");

  where_ = new QComboBox(this);
  where_->addItem("This machine (CPU)", static_cast<int>(TrainWhere::this_machine));
  where_->addItem("GPU cluster (Slurm)", static_cast<int>(TrainWhere::cluster));
  where_->setToolTip(
      "Where the run trains: in the server's worker on its CPU, or on a GPU cluster through Slurm");
  cluster_ = new QComboBox(this);
  cluster_->setToolTip(
      "The server's cluster profile the run is submitted with (\"default\": the Slurm of the server's "
      "machine); the server's Slurm executor follows the run: its state, logs and metrics, with a live link "
      "also previews, pause and sample / save now");
  gpus_ = spin(this, 1, 65536, 8, "GPUs in the run");
  gpus_per_node_ = spin(this, 1, 64, 8, "GPUs per node (tensor parallel stays inside a node)");
  memory_ = new QDoubleSpinBox(this);
  memory_->setRange(0.1, 100000);
  memory_->setDecimals(1);
  memory_->setSuffix(" GB");
  memory_->setToolTip("Memory per device: each GPU's, or this machine's RAM");
  peak_ = new QDoubleSpinBox(this);
  peak_->setRange(0.01, 100000);
  peak_->setDecimals(2);
  peak_->setToolTip(
      "Dense peak TFLOP/s per device in the training dtype (H100 SXM bf16: 989); sets the predicted step "
      "time");

  // Pipeline columns follow the original five, so a column keeps its index whatever the pipeline.
  layouts_ = new QTableWidget(0, 10, this);
  layouts_->setHorizontalHeaderLabels(
      {"tp", "cp", "dp", "ZeRO", "recompute", "pp", "schedule", "memory / device", "step s", "MFU"});
  layouts_->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  layouts_->setSelectionBehavior(QAbstractItemView::SelectRows);
  layouts_->setSelectionMode(QAbstractItemView::SingleSelection);
  layouts_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  layouts_->setMinimumHeight(180);
  layouts_->verticalHeader()->hide();
  layouts_->setToolTip(
      "Parallel layouts that fit, fastest predicted step first; the selected one is the run's. pp: pipeline "
      "stages; schedule: 1f1b or interleaved (chunks per stage) and the micro-batches each replica runs per "
      "step");
  summary_ = new QLabel(this);
  summary_->setWordWrap(true);
  problem_ = new QLabel(this);
  problem_->setWordWrap(true);
  problem_->setStyleSheet("color: #d33;");

  auto* box = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, this);
  start_ = box->button(QDialogButtonBox::Ok);
  start_->setText("Start");
  auto* form = new QFormLayout(this);
  form->addRow("Run name", name_);
  form->addRow("Dataset", dataset_);
  form->addRow("VAE run", vae_);
  auto* latents_box = new QGroupBox("Latents", this);
  auto* latents_form = new QFormLayout(latents_box);
  latents_form->addRow(latents_);
  latents_form->addRow(train_vae_);
  auto* new_vae_row = new QHBoxLayout;
  new_vae_row->addWidget(vae_name_, 2);
  new_vae_row->addWidget(new QLabel("preset", this));
  new_vae_row->addWidget(vae_preset_, 1);
  new_vae_row->addWidget(new QLabel("steps", this));
  new_vae_row->addWidget(vae_steps_, 1);
  latents_form->addRow("New VAE", new_vae_row);
  latents_form->addRow(encode_);
  form->addRow(latents_box);
  form->addRow("Start from", from_);
  form->addRow("", grow_first_);
  form->addRow("LoRA", lora_);
  form->addRow("Stage", stage_);
  form->addRow("Clip filter", clip_filter_);
  auto* preference_row = new QHBoxLayout;
  preference_row->addWidget(labels_, 1);
  preference_row->addWidget(new QLabel("beta", this));
  preference_row->addWidget(beta_, 1);
  preference_row->addWidget(new QLabel("anchor", this));
  preference_row->addWidget(anchor_, 1);
  form->addRow("Labels", preference_row);
  form->addRow("Model", model_);
  form->addRow("Training preset", settings_);
  form->addRow("Optimizer", optimizer_);
  form->addRow("Parametrization", parametrization_);
  form->addRow("Curriculum", curriculum_);
  form->addRow("Steps", steps_);
  form->addRow("Batch", batch_);
  form->addRow("Samples every", sample_every_);
  form->addRow("Sample prompts", sample_prompts_);
  form->addRow("Clip frames", frames_);
  form->addRow("Clip size", size_);
  form->addRow("Where", where_);
  form->addRow("Slurm", cluster_);
  form->addRow("GPUs", gpus_);
  form->addRow("GPUs per node", gpus_per_node_);
  form->addRow("Memory per device", memory_);
  form->addRow("Peak TFLOP/s", peak_);
  form->addRow(layouts_);
  form->addRow(summary_);
  form->addRow(problem_);
  form->addRow(box);

  on_where_changed();
  on_stage_changed();
  auto again = [this] { update(); };
  connect(name_, &QLineEdit::textChanged, this, again);
  connect(clip_filter_, &QLineEdit::textChanged, this, again);
  connect(stage_, &QComboBox::currentIndexChanged, this, [this] { on_stage_changed(); });
  connect(labels_, &QComboBox::currentIndexChanged, this, again);
  connect(beta_, &QDoubleSpinBox::valueChanged, this, again);
  connect(size_, &QLineEdit::textChanged, this, again);
  connect(lora_, &QLineEdit::textChanged, this, again);
  connect(from_, &QComboBox::currentIndexChanged, this, [this] { on_from_changed(); });
  connect(model_, &QComboBox::currentTextChanged, this, again);
  connect(settings_, &QComboBox::textActivated, this, [this] { apply_training_preset(); });
  for (auto* c : {dataset_, vae_})
    connect(c, &QComboBox::currentTextChanged, this, [this] { offer_latent_steps(); });
  connect(train_vae_, &QCheckBox::toggled, this, [this] { on_train_vae_toggled(); });
  connect(encode_, &QCheckBox::toggled, this, again);
  connect(vae_name_, &QLineEdit::textEdited, this, [this] { vae_name_edited_ = true; });
  connect(vae_name_, &QLineEdit::textChanged, this, again);
  connect(vae_steps_, &QSpinBox::valueChanged, this, again);
  connect(vae_preset_, &QComboBox::currentTextChanged, this, [this, again] {
    show_vae_preset_steps();
    again();
  });
  for (auto* s : {steps_, batch_, gpus_, gpus_per_node_, frames_})
    connect(s, &QSpinBox::valueChanged, this, again);
  for (auto* s : {memory_, peak_}) connect(s, &QDoubleSpinBox::valueChanged, this, again);
  connect(where_, &QComboBox::currentIndexChanged, this, [this] { on_where_changed(); });
  connect(cluster_, &QComboBox::currentIndexChanged, this, [this] {
    // A profile that says its nodes' GPUs plans with them.
    if (const int per_node = cluster_->currentData(Qt::UserRole + 1).toInt(); per_node > 0)
      gpus_per_node_->setValue(per_node);
    update();
  });
  connect(layouts_, &QTableWidget::itemSelectionChanged, this, [this] {
    if (!updating_) update();
  });
  connect(box, &QDialogButtonBox::accepted, this, &QDialog::accept);
  connect(box, &QDialogButtonBox::rejected, this, &QDialog::reject);

  QPointer<NewRunDialog> self(this);
  fetch_command_specs(link, [self](const CommandSpecs& specs) {
    if (self) self->apply_command_specs(specs);
  });
  fetch_preset_choices(link, "models", [self](const std::vector<PresetChoice>& presets) {
    if (self) self->apply_model_presets(presets);
  });
  fetch_preset_choices(link, "curricula", [self](const std::vector<PresetChoice>& presets) {
    if (self) fill_preset_combo(*self->curriculum_, presets, true);
  });
  fetch_preset_choices(link, "train", [self](const std::vector<PresetChoice>& presets) {
    if (!self) return;
    self->training_presets_ = presets;
    fill_preset_combo(*self->settings_, presets_for_trainer(presets, "dit", true), true);
    fill_preset_combo(*self->vae_preset_, vae_preset_choices(presets), false);
    self->show_vae_preset_steps();
  });
  link.call(MessageType::list_datasets, {}, [self](const nlohmann::json& r) {
    if (!self) return;
    self->updating_ = true;  // one offer once everything is in
    for (const auto& d : r["datasets"]) {
      const QString name = QString::fromStdString(d["name"].get<std::string>());
      self->dataset_->addItem(name);
      auto& caches = self->caches_[name];
      // A named copy: items() of the temporary value() returns would iterate a destroyed object.
      const nlohmann::json listed = d.value("latent_caches", nlohmann::json::object());
      for (const auto& [encoder, entries] : listed.items())
        if (entries.is_number_integer()) caches[QString::fromStdString(encoder)] = entries.get<int64_t>();
    }
    if (self->dataset_->findText(kStarterDataset) >= 0) self->dataset_->setCurrentText(kStarterDataset);
    self->updating_ = false;
    self->datasets_known_ = true;
    self->offer_latent_steps(true);
  });
  link.call(MessageType::list_runs, {}, [self](const nlohmann::json& r) {
    if (!self) return;
    self->updating_ = true;
    for (const auto& run : r["runs"]) {
      const QString name = QString::fromStdString(run["name"].get<std::string>());
      self->run_names_.insert(name);
      if (run.value("kind", "") == "vae") {
        self->vae_->addItem(name);
        self->vae_runs_.insert(name);
      }
      // A LoRA run is no base of its own (merge it first); other DiT runs are.
      if (run.value("kind", "") == "dit" && !(run.contains("lora") && run["lora"].is_string())) {
        self->from_->addItem(name, name);
        auto text = [&](const char* key) {
          return run.contains(key) && run[key].is_string()
                     ? QString::fromStdString(run[key].get<std::string>())
                     : QString();
        };
        self->run_model_vae_[name] = {text("preset"), text("vae_run")};
        const auto lineage = run.value("lineage", nlohmann::json());
        if (lineage.is_object() && (lineage.contains("grown_from") || lineage.contains("merged_from") ||
                                    lineage.contains("ema_from")))
          self->model_weights_only_.insert(name);
      }
    }
    self->updating_ = false;
    self->runs_known_ = true;
    self->offer_latent_steps(true);
  });
  link.call(MessageType::list_clusters, {}, [self](const nlohmann::json& r) {
    if (!self) return;
    for (const auto& c : r.value("clusters", nlohmann::json::array())) {
      const QString name = QString::fromStdString(c.value("name", std::string()));
      if (name.isEmpty()) continue;
      QString label = c.value("builtin", false) ? QString("this server's Slurm (profile %1)").arg(name)
                                                : QString("profile %1").arg(name);
      if (const std::string partition = c.value("partition", std::string()); !partition.empty())
        label += QString(", partition %1").arg(QString::fromStdString(partition));
      if (const int per_node = c.value("gpus_per_node", 0); per_node > 0)
        label += QString(", %1 GPUs per node").arg(per_node);
      if (c.value("report", std::string("files")) == "tcp") label += ", live link";
      self->cluster_->addItem(label, name);
      self->cluster_->setItemData(self->cluster_->count() - 1, c.value("gpus_per_node", 0), Qt::UserRole + 1);
    }
  });
  link.call(MessageType::list_models, {}, [self](const nlohmann::json& r) {
    if (!self) return;
    for (const auto& m : r.value("models", nlohmann::json::array())) {
      if (!m.value("complete", false) || !m.contains("preset")) continue;  // nothing to train from
      const QString path = QString::fromStdString(m["path"].get<std::string>());
      try {
        ReleasedModel model{QString::fromStdString(m["name"].get<std::string>()),
                            QString::fromStdString(m.value("latent_cache", std::string())),
                            release_preset_from_json(m["preset"], m["path"].get<std::string>())};
        self->released_[path] = std::move(model);
      } catch (const Error&) {
        continue;  // a server that describes the model otherwise: not offered
      }
      self->from_->addItem(QString::fromStdString(released_model_label(m)), path);
    }
  });
  update();
}

bool NewRunDialog::encode_offerable() const {
  const QString stage = stage_->currentData().toString();
  if (!datasets_known_ || !runs_known_ || stage == "dpo" || stage == "kto") return false;
  return from_->currentData().toString().isEmpty() || !base_latent_space().isEmpty();
}

const NewRunDialog::ReleasedModel* NewRunDialog::released_base() const {
  const auto it = released_.find(from_->currentData().toString());
  return it == released_.end() ? nullptr : &it->second;
}

QString NewRunDialog::base_latent_space() const {
  if (const ReleasedModel* model = released_base()) return model->latent_cache;
  const auto run = run_model_vae_.find(from_->currentData().toString());
  return run == run_model_vae_.end() ? QString() : run->second.second;
}

bool NewRunDialog::has_latents(const QString& dataset, const QString& vae) const {
  const auto caches = caches_.find(dataset);
  if (caches == caches_.end()) return false;
  const auto cache = caches->second.find(vae);
  return cache != caches->second.end() && cache->second > 0;
}

void NewRunDialog::offer_latent_steps(bool first) {
  if (updating_) return;
  const QString dataset = dataset_->currentText().trimmed();
  const QString stage = stage_->currentData().toString();
  // Post-training learns from labelled generations; a fine-tune learns its base's latents of the dataset; a
  // new model needs a VAE and its latents.
  const bool labels = stage == "dpo" || stage == "kto";
  const bool fine_tune = !from_->currentData().toString().isEmpty();
  const bool known = datasets_known_ && runs_known_;
  updating_ = true;
  if (!known || labels || fine_tune) {
    train_vae_->setChecked(false);
    train_vae_->setEnabled(false);
    const QString space = known && !labels ? base_latent_space() : QString();
    encode_->setChecked(encode_offerable() && !has_latents(dataset, space));
    const ReleasedModel* released = released_base();
    const QString encoder = released ? released->name + "'s VAE" : space;
    if (!known)
      latents_->clear();
    else if (labels)
      latents_->setText("DPO and KTO learn from labelled generations in their base's latent space");
    else if (space.isEmpty())
      latents_->setText("the run learns the latents of the run it starts from");
    else if (has_latents(dataset, space))
      latents_->setText(QString("%1 has latents of %2 (%3 clips), what the run learns")
                            .arg(dataset, encoder)
                            .arg(caches_.at(dataset).at(space)));
    else
      latents_->setText(
          QString("%1 has no latents of %2 yet: encode them first%3")
              .arg(dataset, encoder, released ? " (at the clip size and frames below)" : QString()));
    updating_ = false;
    on_train_vae_toggled();
    return;
  }
  train_vae_->setEnabled(true);
  if (first && vae_runs_.empty()) train_vae_->setChecked(true);
  if (!vae_name_edited_) vae_name_->setText(dataset.isEmpty() ? "vae-1" : dataset + "-vae");
  const QString vae = vae_->currentText().trimmed();
  if (!train_vae_->isChecked()) encode_->setChecked(!vae.isEmpty() && !has_latents(dataset, vae));
  if (vae_runs_.empty())
    latents_->setText(dataset.isEmpty()
                          ? QString("No VAE run yet: choose the dataset, then train one on it")
                          : QString("No VAE run yet: train one on %1, then encode it").arg(dataset));
  else if (vae.isEmpty())
    latents_->setText("Choose a VAE run, or train a new one");
  else if (has_latents(dataset, vae))
    latents_->setText(
        QString("%1 has latents of %2 (%3 clips)").arg(dataset, vae).arg(caches_.at(dataset).at(vae)));
  else
    latents_->setText(QString("%1 has no latents of %2 yet: encode them first").arg(dataset, vae));
  updating_ = false;
  on_train_vae_toggled();
}

void NewRunDialog::show_vae_preset_steps() {
  vae_steps_->setSpecialValueText(
      preset_steps_text(training_presets_, vae_preset_->currentText().toStdString()));
}

void NewRunDialog::on_train_vae_toggled() {
  const bool fine_tune = !from_->currentData().toString().isEmpty();
  const bool train = train_vae_->isChecked();
  vae_->setEnabled(!fine_tune && !train);
  vae_name_->setEnabled(train);
  vae_preset_->setEnabled(train);
  vae_steps_->setEnabled(train);
  if (train) {
    encode_->setChecked(true);  // a new VAE has no latents yet
    encode_->setEnabled(false);
  } else {
    encode_->setEnabled(encode_offerable());
  }
  update();
}

void NewRunDialog::on_from_changed() {
  const QString base = from_->currentData().toString();
  const bool fine_tune = !base.isEmpty();
  const ReleasedModel* released = released_base();
  updating_ = true;
  model_->setEnabled(!fine_tune);
  lora_->setEnabled(fine_tune);
  grow_first_->setEnabled(fine_tune && !released);  // growth widens runs of a model preset
  if (!grow_first_->isEnabled()) grow_first_->setChecked(false);
  // The Model field shows a released base by name (an item of its own, removed when another base is chosen).
  if (const int item = model_->findData(kReleasedModelItem); item >= 0) model_->removeItem(item);
  if (released) {
    model_->addItem(released->name, kReleasedModelItem);
    model_->setCurrentIndex(model_->count() - 1);
  } else if (fine_tune) {
    const auto& [model, vae] = run_model_vae_[base];
    if (!model.isEmpty()) model_->setCurrentText(model);  // the planner sizes the base's model
    if (!vae.isEmpty()) vae_->setCurrentText(vae);
  } else if (model_->currentIndex() < 0) {
    model_->setCurrentIndex(0);
  }
  updating_ = false;
  offer_latent_steps();  // the VAE field follows too
}

void NewRunDialog::on_stage_changed() {
  const QString stage = stage_->currentData().toString();
  const bool labels = stage == "dpo" || stage == "kto";
  clip_filter_->setEnabled(stage == "sft");
  labels_->setEnabled(labels);
  beta_->setEnabled(labels);
  anchor_->setEnabled(labels);
  curriculum_->setEnabled(!labels);  // a curriculum shapes flow training on a dataset
  dataset_->setEnabled(!labels);     // DPO and KTO learn from labelled generations, not from a dataset
  offer_latent_steps();
}

void NewRunDialog::on_where_changed() {
  const auto where = static_cast<TrainWhere>(where_->currentData().toInt());
  const PlanForm d = defaults_for(where);
  const bool cluster = where == TrainWhere::cluster;
  updating_ = true;  // one plan for the whole change, not one per field
  gpus_->setEnabled(cluster);
  gpus_per_node_->setEnabled(cluster);
  cluster_->setEnabled(cluster);
  gpus_->setValue(d.gpus);
  const int profile_per_node = cluster_->currentData(Qt::UserRole + 1).toInt();
  gpus_per_node_->setValue(cluster && profile_per_node > 0 ? profile_per_node : d.gpus_per_node);
  memory_->setValue(d.memory_gb);
  peak_->setValue(d.peak_tflops);
  updating_ = false;
  update();
}

PlanForm NewRunDialog::plan_form() const {
  PlanForm f;
  f.where = static_cast<TrainWhere>(where_->currentData().toInt());
  f.model = model_->currentText().toStdString();
  if (const ReleasedModel* released = released_base())
    f.preset = released->preset;
  else if (const PresetChoice* preset = find_preset_choice(model_presets_, f.model))
    f.model_values = preset->values;  // the server's definition: its workers will build this model
  f.batch = batch_->value();
  f.frames = frames_->value();
  const auto m = QRegularExpression("^\\s*(\\d+)\\s*[xX]\\s*(\\d+)\\s*$").match(size_->text());
  f.width = m.hasMatch() ? m.captured(1).toInt() : 0;
  f.height = m.hasMatch() ? m.captured(2).toInt() : 0;
  f.gpus = gpus_->value();
  f.gpus_per_node = gpus_per_node_->value();
  f.memory_gb = memory_->value();
  f.peak_tflops = peak_->value();
  if (!from_->currentData().toString().isEmpty()) f.lora = lora_->text().trimmed().toStdString();
  return f;
}

LatentSteps NewRunDialog::latent_steps() const {
  LatentSteps steps;
  steps.train_vae = train_vae_->isEnabled() && train_vae_->isChecked();
  steps.vae_run = vae_name_->text().trimmed().toStdString();
  steps.vae_preset = vae_preset_->currentText().toStdString();
  steps.vae_steps = vae_steps_->value();
  steps.encode = encode_->isChecked() && (encode_->isEnabled() || steps.train_vae);
  if (!from_->currentData().toString().isEmpty()) {
    if (released_base()) {
      const PlanForm geometry = plan_form();  // the clip size and frames, as the planner reads them
      steps.encode_with.model = from_->currentData().toString().toStdString();
      steps.encode_with.width = geometry.width;
      steps.encode_with.height = geometry.height;
      steps.encode_with.frames = geometry.frames;
    } else {
      steps.encode_with.vae_run = base_latent_space().toStdString();
    }
  }
  return steps;
}

std::vector<JobRequest> NewRunDialog::jobs() const {
  if (grow_first_->isEnabled() && grow_first_->isChecked()) return grow_then_train_jobs(form(), 2);
  return training_jobs(form(), latent_steps());
}

void NewRunDialog::apply_model_presets(const std::vector<PresetChoice>& presets) {
  model_presets_ = presets;
  const bool was_updating = updating_;
  updating_ = true;  // one plan once the list is in, not one per item
  fill_preset_combo(*model_, presets, false);
  // A fine-tune sizes its base's model, which may be a preset listed only now (a grown run's, say).
  if (const auto base = run_model_vae_.find(from_->currentData().toString());
      base != run_model_vae_.end() && !released_base() && !base->second.first.isEmpty())
    model_->setCurrentText(base->second.first);
  updating_ = was_updating;
  if (!updating_) update();
}

void NewRunDialog::apply_training_preset() {
  const PresetChoice* chosen = find_preset_choice(training_presets_, settings_->currentText().toStdString());
  if (!chosen) return;
  const nlohmann::json train = chosen->values.value("train", nlohmann::json::object());
  if (!train.is_object()) return;
  // What the form shows is what the job sends (the command line beats the preset), so the preset's values of
  // the form's fields become the fields' values; the rest (learning rate, schedule, ...) come from the
  // preset.
  auto text = [&](const char* key, QComboBox* field) {
    if (const auto v = train.find(key); v != train.end() && v->is_string())
      if (const int i = field->findText(QString::fromStdString(v->get<std::string>())); i >= 0)
        field->setCurrentIndex(i);
  };
  auto number = [&](const char* key, QSpinBox* field) {
    if (const auto v = train.find(key); v != train.end() && v->is_number_integer())
      field->setValue(v->get<int>());
  };
  updating_ = true;  // one plan for the whole change
  text("optimizer", optimizer_);
  text("parametrization", parametrization_);
  if (model_->isEnabled()) text("model", model_);  // a fine-tune keeps its base's model
  number("batch", batch_);
  number("steps", steps_);
  updating_ = false;
  update();
}

void NewRunDialog::apply_command_specs(const CommandSpecs& specs) {
  // Bounds, choices and help from the server's `train` command. The starting values stay the dialog's own: a
  // run started here is a short one that renders samples for the Runs page's gallery (200 steps, samples
  // every 100), where `mugv train` defaults to 1000 steps and no samples.
  const std::vector<std::string> train = {"train"};
  auto apply = [&](auto& field, const char* flag) {
    if (const ParamSpec* spec = specs.find(train, flag)) {
      ParamSpec bounds = *spec;
      bounds.default_value = nullptr;
      apply_spec(field, bounds);
    }
  };
  apply(*steps_, "--steps");
  apply(*batch_, "--batch");
  apply(*sample_every_, "--sample-every");
  apply(*frames_, "--frames");
  apply(*beta_, "--preference-beta");
  apply(*anchor_, "--preference-sft-weight");
  apply(*optimizer_, "--optimizer");
  apply(*parametrization_, "--parametrization");
  apply(*labels_, "--preference-labels");
  update();
}

TrainForm NewRunDialog::form() const {
  TrainForm f;
  f.run = name_->text().trimmed().toStdString();
  f.dataset = dataset_->currentText().toStdString();
  f.vae_run = latent_steps().train_vae ? latent_steps().vae_run : vae_->currentText().toStdString();
  f.model = f.train_preset = model_->currentText().toStdString();
  f.from = from_->currentData().toString().toStdString();
  if (released_base()) {
    // A released model brings its own model; MUG-V's fine-tune settings train it.
    f.model.clear();
    f.train_preset = "mugv-finetune";
  }
  if (const std::string chosen = settings_->currentText().toStdString(); !chosen.empty())
    f.train_preset = chosen;
  if (!f.from.empty()) {
    f.vae_run.clear();  // the base's
    f.lora = lora_->text().trimmed().toStdString();
    if (model_weights_only_.count(from_->currentData().toString())) f.from_weights = "model";
  }
  f.objective = stage_->currentData().toString().toStdString();
  if (f.objective == "sft") f.clip_filter = clip_filter_->text().trimmed().toStdString();
  if (f.learns_from_labels()) {
    f.dataset.clear();
    f.preference_labels = labels_->currentText().toStdString();
    f.preference_beta = beta_->value();
    f.preference_sft_weight = anchor_->value();
  }
  f.steps = steps_->value();
  f.batch = batch_->value();
  f.optimizer = optimizer_->currentText().toStdString();
  f.parametrization = parametrization_->currentText().toStdString();
  if (curriculum_->isEnabled()) f.curriculum = curriculum_->currentText().trimmed().toStdString();
  f.sample_every = sample_every_->value();
  f.sample_prompts = sample_prompts_->text().trimmed().toStdString();
  const auto rows = layouts_->selectionModel()->selectedRows();
  if (!rows.isEmpty() && rows.first().row() < static_cast<int>(rows_.size())) {
    const PlanRow& r = rows_[size_t(rows.first().row())];
    f.tp = r.tp;
    f.cp = r.cp;
    f.zero = r.zero;
    f.recompute = r.recompute;
    f.recompute_blocks = r.recompute_blocks;
    f.offload = r.block_swap ? "blocks" : "none";
    f.pp = r.pp;
    f.pp_schedule = r.schedule;
    if (r.virtual_stages > 1) f.pp_virtual = r.virtual_stages;  // 1F1B keeps the command's default
    f.micro_batches = r.micro_batches;
  }
  if (static_cast<TrainWhere>(where_->currentData().toInt()) == TrainWhere::cluster) {
    const int gpus = gpus_->value(), per_node = gpus_per_node_->value();
    f.tasks_per_node = std::min(gpus, per_node);
    f.slurm_nodes = (gpus + f.tasks_per_node - 1) / f.tasks_per_node;
    f.cluster = cluster_->currentData().toString().toStdString();
  }
  return f;
}

bool NewRunDialog::can_start() const {
  return start_->isEnabled();
}

void NewRunDialog::mark(QWidget* field, const QString& why) {
  problem_field_ = field;
  problem_->setText(why);
  if (field) {
    if (!field->property("plain_tip").isValid()) field->setProperty("plain_tip", field->toolTip());
    field->setStyleSheet(kProblemStyle);
    field->setToolTip(why);
  }
}

void NewRunDialog::update() {
  if (updating_) return;
  updating_ = true;
  // Clear the previous problem's outline and tooltip.
  if (problem_field_) {
    problem_field_->setStyleSheet({});
    problem_field_->setToolTip(problem_field_->property("plain_tip").toString());
  }
  problem_field_ = nullptr;
  problem_->clear();

  const PlanForm pf = plan_form();
  QString keep;
  if (const auto sel = layouts_->selectionModel()->selectedRows();
      !sel.isEmpty() && sel.first().row() < int(rows_.size()))
    keep = QString::fromStdString(rows_[size_t(sel.first().row())].text());
  PlanOutcome plan;
  if (pf.width == 0 || pf.height == 0) {
    plan.problem = "size: write it as WxH, e.g. 64x64";
    plan.field = PlanField::size;
  } else {
    plan = plan_training(pf);
  }
  rows_ = plan.rows;
  layouts_->setRowCount(0);
  int select = rows_.empty() ? -1 : 0;
  for (size_t i = 0; i < rows_.size(); ++i) {
    const PlanRow& r = rows_[i];
    const int row = layouts_->rowCount();
    layouts_->insertRow(row);
    const QStringList cells = {QString::number(r.tp),
                               QString::number(r.cp),
                               QString::number(r.dp),
                               QString::number(r.zero),
                               QString::fromStdString(r.recompute_cell()),
                               QString::number(r.pp),
                               schedule_cell(r),
                               r.memory_gb >= 1 ? QString("%1 GB").arg(r.memory_gb, 0, 'f', 1)
                                                : QString("%1 MB").arg(r.memory_gb * 1000, 0, 'f', 0),
                               QString::number(r.step_s, 'g', 3),
                               QString("%1 %").arg(100 * r.mfu, 0, 'f', 1)};
    for (int c = 0; c < cells.size(); ++c) layouts_->setItem(row, c, new QTableWidgetItem(cells[c]));
    if (QString::fromStdString(r.text()) == keep) select = row;
  }
  if (select >= 0) layouts_->selectRow(select);
  updating_ = false;

  if (!plan.problem.empty()) {
    QWidget* field = nullptr;
    switch (plan.field) {
      case PlanField::model:
        field = model_;
        break;
      case PlanField::batch:
        field = batch_;
        break;
      case PlanField::frames:
        field = frames_;
        break;
      case PlanField::size:
        field = size_;
        break;
      case PlanField::gpus:
        field = gpus_;
        break;
      case PlanField::gpus_per_node:
        field = gpus_per_node_;
        break;
      case PlanField::memory:
        field = memory_;
        break;
      case PlanField::peak:
        field = peak_;
        break;
      case PlanField::lora:
        field = lora_;
        break;
      case PlanField::none:
        break;
    }
    summary_->clear();
    mark(field, QString::fromStdString(plan.problem));
    start_->setEnabled(false);
    return;
  }
  const TrainForm f = form();
  summary_->setText(
      QString("%1 of %2 fitting layouts shown (%3 video tokens per clip); the run uses the selected one%4")
          .arg(rows_.size())
          .arg(plan.fitting)
          .arg(plan.video_tokens)
          .arg(f.slurm_nodes > 0 ? QString(", submitted to Slurm on %1 node(s) × %2 GPU(s)")
                                       .arg(f.slurm_nodes)
                                       .arg(f.tasks_per_node)
                                 : QString(", in the server's worker")));
  std::string why = validate(f);
  if (why.empty()) why = validate(latent_steps(), f);
  if (why.empty() && latent_steps().train_vae && run_names_.count(vae_name_->text().trimmed()))
    why = "new VAE: a run named " + vae_name_->text().trimmed().toStdString() +
          " exists; choose it as the VAE run or name the new one otherwise";
  if (why.empty() && grow_first_->isEnabled() && grow_first_->isChecked())
    why = validate_grow(f.from, f.run + "-grown", 2);
  if (!why.empty()) {
    QWidget* field = nullptr;
    const QString text = QString::fromStdString(why);
    if (text.startsWith("new VAE"))
      field = vae_name_;
    else if (text.startsWith("encode"))
      field = encode_;
    else if (text.startsWith("new run name"))
      field = grow_first_;
    else if (text.startsWith("run name"))
      field = name_;
    else if (text.startsWith("dataset"))
      field = dataset_;
    else if (text.startsWith("VAE"))
      field = vae_;
    else if (text.startsWith("LoRA"))
      field = lora_;
    else if (text.startsWith("start from"))
      field = from_;
    else if (text.startsWith("SFT"))
      field = clip_filter_;
    else if (text.startsWith("DPO") || text.startsWith("KTO"))
      field = text.contains("clip") ? static_cast<QWidget*>(clip_filter_) : from_;
    else if (text.startsWith("labels"))
      field = labels_;
    else if (text.startsWith("beta"))
      field = beta_;
    else if (text.startsWith("anchor"))
      field = anchor_;
    else if (text.startsWith("layout"))
      field = layouts_;
    else if (text.startsWith("Slurm"))
      field = cluster_;
    else if (text.startsWith("curriculum"))
      field = curriculum_;
    mark(field, text);
  }
  start_->setEnabled(why.empty());
}

}  // namespace mugv::studio
