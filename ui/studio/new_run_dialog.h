#pragma once
// The Runs page's "New training run" dialog: run, dataset, VAE run, model, steps, batch and samples; where it
// trains (this machine, or a GPU cluster: one of the server's cluster profiles, list_clusters, whose Slurm
// executor follows the run and whose GPUs per node it takes) with the cluster's GPUs, GPUs per node,
// memory and peak; and the planner's best parallel layouts for that place (layout_plan.h) in a table, best
// first. The chosen row becomes the job's --tp / --cp / --zero / --recompute and its pipeline's --pp /
// --pp-schedule / --pp-virtual / --micro-batches. A field whose value cannot work
// (a size the model cannot patch, a batch no layout splits, a model that fits nowhere) is outlined with the
// reason as its tooltip and in the dialog, and Start stays disabled until it is fixed.
// The stage: training with flow matching on the dataset, SFT on the dataset's clips matching a catalog
// filter, or DPO / KTO on labelled generations (the Label page) against the frozen run it starts from. "Grow
// ×2 first" widens the run to start from (`mugv grow`) and trains from the grown run once that is done.
// Latents: a new model learns a dataset's latents encoded by a VAE run. The dialog defaults to the starter
// dataset when the server has it, and learns from the server (list_datasets, list_runs) which VAE runs exist
// and which datasets they encoded. When there is no VAE run it offers "Train a VAE" (a new run of the
// tiny-vae preset on the dataset, its name and steps); when the dataset has no latents of the chosen VAE,
// "Encode latents". Start submits what is needed as one chain (jobs()): train_vae → encode → train, each
// waiting on the server for the one before it.
// Fine-tuning starts from a DiT run or from a released model installed on the server (list_models): the run
// learns its base's latent space, so the dialog offers "Encode latents" when the dataset lacks the base's
// latents (a released model's VAE encodes them at the dialog's clip size and frames), plans with the base's
// model (a released model's preset from the server) and trains a released model with the mugv-finetune
// training preset.

#include "backend_link.h"
#include "command_specs.h"
#include "job_params.h"
#include "layout_plan.h"
#include "preset_choices.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDialog>
#include <QDoubleSpinBox>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QTableWidget>

#include <map>
#include <set>

namespace mugv::studio {

class NewRunDialog : public QDialog {
  Q_OBJECT
 public:
  NewRunDialog(BackendLink& link, QWidget* parent = nullptr);

  // The form as it stands, with the selected layout (the training job Start submits).
  TrainForm form() const;
  // The steps the run still needs before it trains (the Latents choices).
  LatentSteps latent_steps() const;
  // What Start submits, in order, as a chain: [train_vae] [encode] train, or grow then train.
  std::vector<JobRequest> jobs() const;
  PlanForm plan_form() const;
  // Re-plans and re-validates (fields call it on every change; tests may call it after setting values).
  void update();
  bool can_start() const;
  QString problem() const { return problem_->text(); }
  // The widget the current problem belongs to (nullptr when none or it belongs to no field).
  QWidget* problem_field() const { return problem_field_; }

  QLineEdit* name() const { return name_; }
  QComboBox* dataset() const { return dataset_; }
  QComboBox* vae() const { return vae_; }
  // Latents: train a new VAE first (its name and steps; 0 steps: the preset's), encode the dataset first,
  // and what the dataset has ("shapes has no latents of vae0 yet").
  QCheckBox* train_vae() const { return train_vae_; }
  QLineEdit* vae_name() const { return vae_name_; }
  QSpinBox* vae_steps() const { return vae_steps_; }
  QComboBox* vae_preset() const { return vae_preset_; }
  QCheckBox* encode() const { return encode_; }
  QString latents_text() const { return latents_->text(); }
  // Fine-tuning: the run or released model folder to start from ("" = a new model) and LoRA settings (empty:
  // full fine-tune).
  QComboBox* from() const { return from_; }
  QLineEdit* lora() const { return lora_; }
  // Grow the start-from run twice as wide first (enabled when a run to start from is chosen).
  QCheckBox* grow_first() const { return grow_first_; }
  // The stage (item data flow | sft | dpo | kto), SFT's clip filter, and DPO / KTO's labels and beta.
  QComboBox* stage() const { return stage_; }
  QLineEdit* clip_filter() const { return clip_filter_; }
  QComboBox* preference_labels() const { return labels_; }
  QDoubleSpinBox* preference_beta() const { return beta_; }
  QDoubleSpinBox* preference_anchor() const { return anchor_; }
  QLineEdit* sample_prompts() const { return sample_prompts_; }
  QComboBox* model() const { return model_; }
  QComboBox* optimizer() const { return optimizer_; }
  QComboBox* parametrization() const { return parametrization_; }
  // The curriculum: empty (none), a preset of presets/curricula, or a TOML file on the server.
  QComboBox* curriculum() const { return curriculum_; }
  QComboBox* training_preset() const { return settings_; }
  // Fills the form's fields (optimizer, parametrization, model, batch, steps) from the chosen training
  // preset.
  void apply_training_preset();
  QSpinBox* steps() const { return steps_; }
  QSpinBox* batch() const { return batch_; }
  QComboBox* where() const { return where_; }
  // On a GPU cluster: one of the server's cluster profiles (list_clusters; the built-in "default" first: the
  // Slurm of the server's machine), whose Slurm executor follows the run (state, logs, metrics; with a live
  // link previews, pause and sample / save now). Empty until the server has answered.
  QComboBox* cluster() const { return cluster_; }
  QSpinBox* gpus() const { return gpus_; }
  QSpinBox* gpus_per_node() const { return gpus_per_node_; }
  QDoubleSpinBox* memory() const { return memory_; }
  QSpinBox* frames() const { return frames_; }
  QLineEdit* size() const { return size_; }
  QTableWidget* layouts() const { return layouts_; }
  QPushButton* start_button() const { return start_; }

 private:
  void on_where_changed();
  void apply_command_specs(const CommandSpecs& specs);
  // The Model field offers these presets (this installation's, then the server's) and plans with their
  // values.
  void apply_model_presets(const std::vector<PresetChoice>& presets);
  void mark(QWidget* field, const QString& why);

  void on_from_changed();
  void on_stage_changed();
  // Offers the steps the chosen dataset and VAE still need (on a change of either, and once the server's
  // lists arrived); `first`: the lists just arrived, so a new VAE is offered when there is none.
  void offer_latent_steps(bool first = false);
  void on_train_vae_toggled();
  // The VAE's "0 steps" text: the chosen VAE preset's steps, as the server's presets say.
  void show_vae_preset_steps();
  // Whether the dataset has latents of `vae` (a VAE run or a latent cache name; false while the server's
  // lists are not known).
  bool has_latents(const QString& dataset, const QString& vae) const;

  // A released model on the server (list_models): its name, the latent cache its VAE writes, its preset.
  struct ReleasedModel {
    QString name, latent_cache;
    ModelPreset preset;
  };
  // The released model the run starts from, if it starts from one.
  const ReleasedModel* released_base() const;
  // The latent space the run starts from has learnt: its base's VAE run or the released model's latent cache
  // ("" for a new model, or while the base is not known).
  QString base_latent_space() const;
  // Whether an encode step can be offered: the server's lists are known, the stage learns from a dataset, and
  // the latent space is known (a new model's VAE run is chosen in the form; a fine-tune's is its base's).
  bool encode_offerable() const;

  QLineEdit *name_, *size_, *lora_, *sample_prompts_, *clip_filter_;
  QComboBox *dataset_, *vae_, *model_, *settings_, *where_, *cluster_, *from_, *optimizer_, *parametrization_,
      *curriculum_, *stage_, *labels_;
  QCheckBox *grow_first_, *train_vae_, *encode_;
  QLineEdit* vae_name_;
  QSpinBox* vae_steps_;
  QComboBox* vae_preset_;  // the server's presets marked trainer = "vae"
  QLabel* latents_;
  std::map<QString, std::map<QString, int64_t>> caches_;  // dataset -> encoder -> cached clips
  std::set<QString> vae_runs_, run_names_;
  bool datasets_known_ = false, runs_known_ = false, vae_name_edited_ = false;
  std::map<QString, std::pair<QString, QString>> run_model_vae_;  // DiT run -> (model preset, VAE run)
  std::set<QString> model_weights_only_;  // runs made by grow, merge or ema: no EMA weights to start from
  std::map<QString, ReleasedModel> released_;  // by folder path on the server
  // The presets the Model and Training preset fields offer, with their values.
  std::vector<PresetChoice> model_presets_, training_presets_;
  QSpinBox *steps_, *batch_, *sample_every_, *gpus_, *gpus_per_node_, *frames_;
  QDoubleSpinBox *memory_, *peak_, *beta_, *anchor_;
  QTableWidget* layouts_;
  QLabel *summary_, *problem_;
  QPushButton* start_;
  QWidget* problem_field_ = nullptr;
  std::vector<PlanRow> rows_;
  bool updating_ = false;
};

}  // namespace mugv::studio
