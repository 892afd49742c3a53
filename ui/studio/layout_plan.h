#pragma once
// The new-run dialog's planning: where a run would train (this machine's CPU, or a GPU cluster reached
// through `mugv train --slurm`), and which parallel layouts fit there, fastest first (backend/parallel
// planner.h, the model behind `mugv plan`). Pure functions, no Qt; the dialog (runs_page.cpp) shows the rows
// and puts a problem next to the field it names.
//
// Without pipeline stages `mugv train` gives each data-parallel rank its share of the batch in one
// forward/backward, so only those layouts whose micro-batch × dp equals the batch are offered, and their
// memory is what a rank really holds. A pipeline needs several micro-batches in flight, so pipeline layouts
// (pp > 1) are offered with any micro-batch that divides the replica's share, and their micro-batch count
// goes to `train --micro-batches`.

#include "model/config.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace mugv::studio {

enum class TrainWhere { this_machine, cluster };

struct PlanForm {
  TrainWhere where = TrainWhere::this_machine;
  std::string model = "tiny";         // model preset, or:
  std::optional<ModelPreset> preset;  // a released model's (model/release_files.h), used instead of `model`
  // The preset's values as the server defines `model` (list_presets); null: this installation's preset file.
  nlohmann::json model_values;
  int batch = 4;  // clips per optimizer step (the global batch)
  int frames = 17;
  int width = 64, height = 64;
  int gpus = 8, gpus_per_node = 8;  // cluster only; this machine is one CPU rank
  double memory_gb = 80;            // per device: GPU memory, or this machine's RAM
  double peak_tflops = 989;         // per device, in the training dtype
  std::string lora;  // LoRA settings (model/lora_spec.h): adapters on a frozen base; empty: all
};

struct PlanRow {
  int tp = 1, cp = 1, dp = 1, zero = 0;
  std::string recompute = "none";
  int recompute_blocks = 0;  // partial recompute: the first N blocks of each stage (0: all)
  bool block_swap = false;   // LoRA: the frozen base's blocks swapped in from host memory
  int micro_batch = 1;
  // Pipeline stages, their schedule ("1f1b" or "interleaved") with its chunks per stage (1 for 1F1B), and
  // the micro-batches per step on each data-parallel replica (1 without a pipeline).
  int pp = 1;
  std::string schedule = "1f1b";
  int virtual_stages = 1;
  int micro_batches = 1;
  double memory_gb = 0, step_s = 0, mfu = 0;
  // "tp2.cp1.dp4, ZeRO-1, selective recompute" ("full recompute of the first 12 blocks", "full recompute,
  // block swap"), and with pipeline stages ", 1f1b, 16 micro-batches" or ", interleaved x2, 16
  // micro-batches": one text per row.
  std::string text() const;
  // The recompute column: "none", "selective", "full", "full:12" (partial), "full+swap".
  std::string recompute_cell() const;
};

// Which form field a problem belongs to.
enum class PlanField { none, model, batch, frames, size, gpus, gpus_per_node, memory, peak, lora };

struct PlanOutcome {
  std::vector<PlanRow> rows;  // fastest first, at most `top`
  size_t fitting = 0;         // all the layouts that fit
  int64_t video_tokens = 0;
  std::string problem;  // empty when rows is not empty
  PlanField field = PlanField::none;
};

PlanOutcome plan_training(const PlanForm& form, size_t top = 8);

// Defaults of a place: this machine (its RAM, a few CPU TFLOP/s) or an H100-class GPU node.
PlanForm defaults_for(TrainWhere where);
// This machine's physical memory in GB (10^9 bytes); 0 when unknown.
double machine_memory_gb();

}  // namespace mugv::studio
