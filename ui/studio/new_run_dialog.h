#pragma once
// The Runs page's "New training run" dialog: run, dataset, VAE run, model, steps, batch and samples; where it
// trains (this machine, or a GPU cluster through `train --slurm`) with the cluster's GPUs, GPUs per node,
// memory and peak; and the planner's best parallel layouts for that place (layout_plan.h) in a table, best
// first. The chosen row becomes the job's --tp / --cp / --zero / --recompute and its pipeline's --pp /
// --pp-schedule / --pp-virtual / --micro-batches. A field whose value cannot work
// (a size the model cannot patch, a batch no layout splits, a model that fits nowhere) is outlined with the
// reason as its tooltip and in the dialog, and Start stays disabled until it is fixed.
// The stage: training with flow matching on the dataset, SFT on the dataset's clips matching a catalog
// filter, or DPO / KTO on labelled generations (the Label page) against the frozen run it starts from. "Grow
// ×2 first" widens the run to start from (`mugv grow`) and trains from the grown run once that is done.

#include "backend_link.h"
#include "job_params.h"
#include "layout_plan.h"

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

  // The form as it stands, with the selected layout (what Start submits).
  TrainForm form() const;
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
  // Fine-tuning: the run to start from ("" = a new model) and LoRA settings (empty: full fine-tune).
  QComboBox* from() const { return from_; }
  QLineEdit* lora() const { return lora_; }
  // Grow the start-from run twice as wide first (enabled when a run to start from is chosen).
  QCheckBox* grow_first() const { return grow_first_; }
  // The stage (item data flow | sft | dpo | kto), SFT's clip filter, and DPO / KTO's labels and beta.
  QComboBox* stage() const { return stage_; }
  QLineEdit* clip_filter() const { return clip_filter_; }
  QComboBox* preference_labels() const { return labels_; }
  QDoubleSpinBox* preference_beta() const { return beta_; }
  QLineEdit* sample_prompts() const { return sample_prompts_; }
  QComboBox* model() const { return model_; }
  QComboBox* optimizer() const { return optimizer_; }
  QComboBox* parametrization() const { return parametrization_; }
  QSpinBox* batch() const { return batch_; }
  QComboBox* where() const { return where_; }
  QSpinBox* gpus() const { return gpus_; }
  QSpinBox* gpus_per_node() const { return gpus_per_node_; }
  QDoubleSpinBox* memory() const { return memory_; }
  QSpinBox* frames() const { return frames_; }
  QLineEdit* size() const { return size_; }
  QTableWidget* layouts() const { return layouts_; }
  QPushButton* start_button() const { return start_; }

 private:
  void on_where_changed();
  void mark(QWidget* field, const QString& why);

  void on_from_changed();
  void on_stage_changed();

  QLineEdit *name_, *size_, *lora_, *sample_prompts_, *clip_filter_;
  QComboBox *dataset_, *vae_, *model_, *where_, *from_, *optimizer_, *parametrization_, *stage_, *labels_;
  QCheckBox* grow_first_;
  std::map<QString, std::pair<QString, QString>> run_model_vae_;  // DiT run -> (model preset, VAE run)
  std::set<QString> model_weights_only_;  // runs made by grow, merge or ema: no EMA weights to start from
  QSpinBox *steps_, *batch_, *sample_every_, *gpus_, *gpus_per_node_, *frames_;
  QDoubleSpinBox *memory_, *peak_, *beta_;
  QTableWidget* layouts_;
  QLabel *summary_, *problem_;
  QPushButton* start_;
  QWidget* problem_field_ = nullptr;
  std::vector<PlanRow> rows_;
  bool updating_ = false;
};

}  // namespace mugv::studio
