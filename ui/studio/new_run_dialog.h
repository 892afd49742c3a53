#pragma once
// The Runs page's "New training run" dialog: run, dataset, VAE run, model, steps, batch and samples; where it
// trains (this machine, or a GPU cluster through `train --slurm`) with the cluster's GPUs, GPUs per node,
// memory and peak; and the planner's best parallel layouts for that place (layout_plan.h) in a table, best
// first. The chosen row becomes the job's --tp / --cp / --zero / --recompute. A field whose value cannot work
// (a size the model cannot patch, a batch no layout splits, a model that fits nowhere) is outlined with the
// reason as its tooltip and in the dialog, and Start stays disabled until it is fixed.

#include "backend_link.h"
#include "job_params.h"
#include "layout_plan.h"

#include <QComboBox>
#include <QDialog>
#include <QDoubleSpinBox>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QTableWidget>

#include <map>

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

  QLineEdit *name_, *size_, *lora_, *sample_prompts_;
  QComboBox *dataset_, *vae_, *model_, *where_, *from_, *optimizer_, *parametrization_;
  std::map<QString, std::pair<QString, QString>> run_model_vae_;  // DiT run -> (model preset, VAE run)
  QSpinBox *steps_, *batch_, *sample_every_, *gpus_, *gpus_per_node_, *frames_;
  QDoubleSpinBox *memory_, *peak_;
  QTableWidget* layouts_;
  QLabel *summary_, *problem_;
  QPushButton* start_;
  QWidget* problem_field_ = nullptr;
  std::vector<PlanRow> rows_;
  bool updating_ = false;
};

}  // namespace mugv::studio
