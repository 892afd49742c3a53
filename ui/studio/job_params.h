#pragma once
// The job parameters the studio submits: the same {"command": [...], "values": {key: value}, "positional":
// [...]} a `mugv --server EP submit COMMAND ...` sends (app/mugv/command.h parse_command_arguments), built
// from the studio's forms. Keys are the commands' parameter keys. Pure functions.

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace mugv::studio {

struct JobRequest {
  std::string kind;  // the catalog job kind ("generate", "train", ...)
  nlohmann::json params;
  nlohmann::json header() const { return {{"kind", kind}, {"params", params}}; }
};

JobRequest make_job(std::string kind, std::vector<std::string> command, nlohmann::json values,
                    std::vector<std::string> positional = {});

struct GenerateForm {
  std::string run;    // a trained DiT run, or:
  std::string model;  // a released model folder on the server (from its list_models reply)
  std::string prompt, negative, image, out;
  int seed = 0, steps = 25, frames = 17, width = 64, height = 64;
  double cfg = 4.0, fps = 8.0;
  std::vector<std::string> lora;  // adapter files on the server, "FILE[:SCALE]" (generate --lora)
  bool lora_merge = false;
};
// Empty when the form is valid, otherwise what is wrong with which field ("prompt: write what the video
// shows").
std::string validate(const GenerateForm& form);
JobRequest generate_job(const GenerateForm& form);

struct TrainForm {
  std::string run, dataset, vae_run, model = "tiny", train_preset = "tiny", sample_prompts;
  // Fine-tuning: the DiT run to start from (its model and VAE run are used), and LoRA settings (empty: every
  // weight trains). `from_weights`: which of its weights, "ema" or "model" (empty: the command's default,
  // ema; runs made by grow, merge or ema hold model weights only).
  std::string from, lora, from_weights;
  int steps = 200, batch = 4, sample_every = 0;
  std::string optimizer = "adamw";           // adamw | muon (train/muon.h)
  std::string parametrization = "standard";  // standard | mup (train/parametrization.h)
  // Parallel layout (`train --tp --cp --zero --recompute`), chosen from the planner's table (layout_plan.h).
  int tp = 1, cp = 1, zero = 0;
  std::string recompute = "none";
  // Pipeline stages (`train --pp --pp-schedule --pp-virtual --micro-batches`): the schedule (1f1b |
  // interleaved), the interleaved schedule's chunks per stage (at least 2; 1F1B ignores it) and the
  // micro-batches per step on each data-parallel replica (0: the command's default).
  int pp = 1;
  std::string pp_schedule = "1f1b";
  int pp_virtual = 2, micro_batches = 0;
  // 0: train in the server's own worker (one rank); N: `train --slurm` on N nodes of `tasks_per_node` ranks,
  // one GPU each.
  int slurm_nodes = 0, tasks_per_node = 1;
  // The stage: "flow" trains on the dataset; "sft" is the same on the dataset's clips matching `clip_filter`
  // (a catalog filter such as "decision=keep,aesthetic>=5,tag=hq"); "dpo" (preferred pairs) and "kto"
  // (good / bad generations) post-train the `from` run against its frozen self on labelled generations
  // (no dataset), learning from `preference_labels` (all | human | auto) with `preference_beta`.
  std::string objective = "flow", clip_filter, preference_labels = "all";
  double preference_beta = 1000.0;
  bool learns_from_labels() const { return objective == "dpo" || objective == "kto"; }
};
std::string validate(const TrainForm& form);
// The job's values; the stage's keys only where they differ from the command's defaults, and no dataset or
// VAE run for dpo / kto.
JobRequest train_job(const TrainForm& form);

// `mugv grow --run RUN --out OUT --width W`: a wider copy of a DiT run that computes the same function.
// Empty when valid, otherwise what is wrong ("new run name: a name without '/'").
std::string validate_grow(const std::string& run, const std::string& out, int width);
JobRequest grow_job(const std::string& run, const std::string& out, int width);

// `mugv pairs`: two generations of each prompt of a text file (one prompt a line) by a DiT run, stored as
// pending preference pairs for the labelling queue (LabelPage). `count` 0 makes one pair per prompt.
struct PairsForm {
  std::string run, prompts;
  int count = 0, seed = 0, steps = 25, frames = 17, width = 64, height = 64;
};
std::string validate(const PairsForm& form);
JobRequest pairs_job(const PairsForm& form);
// `mugv label --auto LABELLER`: labels every pending pair with an automatic labeller ("shapes").
JobRequest auto_label_job(const std::string& labeller);

// A job's progress event as the jobs table shows it: "train 120/400 steps, 3.2/s, ETA 1m 30s" (the parts the
// event has).
std::string progress_text(const nlohmann::json& progress);

// The starter dataset: `make-dataset shapes --out DIR ...` then `dataset import DIR --name NAME`.
JobRequest make_starter_job(const std::string& out_dir, int count);
JobRequest import_job(const std::string& input, const std::string& dataset);
JobRequest curate_job(const std::string& input, const std::string& dataset, const std::string& preset);
JobRequest redecide_job(const std::string& dataset, const std::string& preset);

}  // namespace mugv::studio
