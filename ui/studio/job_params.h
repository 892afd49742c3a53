#pragma once
// The job parameters the studio submits: the same {"command": [...], "values": {key: value}, "positional":
// [...]} a `mugv --server EP submit COMMAND ...` sends (app/mugv/command.h parse_command_arguments), built
// from the studio's forms. Keys are the commands' parameter keys. Pure functions.

#include "service/client.h"

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace mugv::studio {

// A job to submit: its kind, params and the jobs it waits for (header() is the submit_job request).
using JobRequest = JobSubmission;

// The dataset the studio makes on first launch (`make-dataset shapes`, imported under this name).
inline constexpr const char* kStarterDataset = "shapes";

JobRequest make_job(std::string kind, std::vector<std::string> command, nlohmann::json values,
                    std::vector<std::string> positional = {});

// A released model of the server's list_models reply as the studio lists it: "NAME  (released, 10.8 B
// parameters, 39.1 GiB)", with ", incomplete: WHAT IT LACKS" or ", unusable: WHY" when it cannot be used.
std::string released_model_label(const nlohmann::json& listed);

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
// Whether the form only waits for input (no model chosen yet, no prompt written): validate() still says
// what is missing, but as a hint rather than an error.
bool awaiting_input(const GenerateForm& form);
JobRequest generate_job(const GenerateForm& form);

struct TrainForm {
  std::string run, dataset, vae_run, model = "tiny", train_preset = "tiny", sample_prompts;
  // Fine-tuning: the DiT run or released model folder to start from (its model and latent space are used; a
  // released model's training preset is mugv-finetune and `model` stays empty), and LoRA settings (empty:
  // every weight trains). `from_weights`: which of its weights, "ema" or "model" (empty: the command's
  // default, ema; runs made by grow, merge or ema hold model weights only).
  std::string from, lora, from_weights;
  int steps = 200, batch = 4, sample_every = 0;
  std::string optimizer = "adamw";           // adamw | muon (train/muon.h)
  std::string parametrization = "standard";  // standard | mup (train/parametrization.h)
  std::string curriculum;  // `train --curriculum`: a preset of presets/curricula or a TOML file; empty: none
  // Parallel layout (`train --tp --cp --zero --recompute`), chosen from the planner's table (layout_plan.h).
  int tp = 1, cp = 1, zero = 0;
  std::string recompute = "none";
  int recompute_blocks = 0;      // `train --recompute-blocks`: partial recompute (0: every block)
  std::string offload = "none";  // `train --offload`: blocks (LoRA: the frozen base swapped in) or none
  // Pipeline stages (`train --pp --pp-schedule --pp-virtual --micro-batches`): the schedule (1f1b |
  // interleaved), the interleaved schedule's chunks per stage (at least 2; 1F1B ignores it) and the
  // micro-batches per step on each data-parallel replica (0: the command's default).
  int pp = 1;
  std::string pp_schedule = "1f1b";
  int pp_virtual = 2, micro_batches = 0;
  // 0: train in the server's own worker (one rank); N: on N nodes of `tasks_per_node` ranks, one GPU each,
  // through the server's cluster profile `cluster` ("default": the Slurm of the server's machine), whose
  // Slurm executor follows the run (params executor, cluster, nodes, tasks_per_node, gpus_per_node).
  int slurm_nodes = 0, tasks_per_node = 1;
  std::string cluster;
  // The stage: "flow" trains on the dataset; "sft" is the same on the dataset's clips matching `clip_filter`
  // (a catalog filter such as "decision=keep,aesthetic>=5,tag=hq"); "dpo" (preferred pairs) and "kto"
  // (good / bad generations) post-train the `from` run against its frozen self on labelled generations
  // (no dataset), learning from `preference_labels` (all | human | auto) with `preference_beta` and the
  // weight of the preferred generations' flow loss, `preference_sft_weight` (an anchor; 0: none).
  std::string objective = "flow", clip_filter, preference_labels = "all";
  double preference_beta = 1000.0, preference_sft_weight = 0.0;
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
// "Grow first": `form.from` grown `width` times into "<form.run>-grown", then the run trains from the grown
// run's weights (it has no EMA ones). Check validate_grow(form.from, form.run + "-grown", width) first.
std::vector<JobRequest> grow_then_train_jobs(const TrainForm& form, int width);

// `mugv train-vae --preset PRESET --dataset D --run NAME [--steps N]`: the VAE whose latent space a DiT
// learns. steps 0: the preset's.
struct VaeForm {
  std::string run, dataset, preset = "tiny-vae";
  int steps = 0;
};
std::string validate(const VaeForm& form);
JobRequest train_vae_job(const VaeForm& form);
// `mugv encode --dataset D --vae-run V`: the dataset's latent cache, what a DiT run trains on.
// The latent space a dataset is encoded into: a VAE run's (`mugv encode --dataset D --vae-run V`), or a
// released model's VAE at a clip geometry (`mugv encode --dataset D --model DIR --size WxH --frames F`), what
// a fine-tune of that model learns.
struct LatentSpace {
  std::string vae_run;
  std::string model;  // a released model folder on the server
  int width = 0, height = 0, frames = 0;
};
JobRequest encode_job(const std::string& dataset, const LatentSpace& space);

// What a DiT run still needs before it can train: a new model, a VAE (trained on the run's dataset, named as
// the run's VAE run) and the dataset's latents encoded with its VAE run; a fine-tune, the dataset's latents
// in its base's latent space (`encode_with`: the base's VAE run, or the released model's VAE).
struct LatentSteps {
  bool train_vae = false;
  std::string vae_run;
  std::string vae_preset = VaeForm().preset;
  int vae_steps = 0;  // 0: the preset's
  bool encode = false;
  LatentSpace encode_with;  // a fine-tune's; a new model encodes with the form's VAE run
};
// Empty when the steps fit the run; "new VAE: ..." or "encode: ..." otherwise.
std::string validate(const LatentSteps& steps, const TrainForm& form);
// The jobs that train the run, in order: [train_vae] [encode] train. Submitted as a chain (each after the
// one before it), they run one after the other whatever else is queued.
std::vector<JobRequest> training_jobs(const TrainForm& form, const LatentSteps& steps);

// `mugv pairs`: two generations of each prompt of a text file (one prompt a line) by a DiT run, stored as
// pending preference pairs for the labelling queue (LabelPage). `count` 0 makes one pair per prompt.
struct PairsForm {
  std::string run, prompts;
  int count = 0, seed = 0, steps = 25, frames = 17, width = 64, height = 64;
};
std::string validate(const PairsForm& form);
JobRequest pairs_job(const PairsForm& form);
// `mugv label --auto LABELLER [--criterion C]`: labels every pending pair with an automatic labeller
// ("shapes"), on everything it judges or on one criterion (empty: the command's default).
JobRequest auto_label_job(const std::string& labeller, const std::string& criterion = "");

// A job's progress event as the jobs table shows it: "train 120/400 steps, 3.2/s, ETA 1m 30s" (the parts the
// event has).
std::string progress_text(const nlohmann::json& progress);
// What a queued job waits for, as the jobs table shows it (server job JSON: waiting_on, blocked_by):
// "after #12" / "after #12, #13", or "blocked by #12 (failed)" while a dependency ended without success and
// waits for a retry; empty when it waits for nothing. `states`: the states of the jobs named, where known.
std::string waiting_text(const nlohmann::json& job, const std::map<int64_t, std::string>& states);

// The starter dataset: `make-dataset shapes --out DIR ...` then `dataset import DIR --name NAME`.
JobRequest make_starter_job(const std::string& out_dir, int count);
JobRequest import_job(const std::string& input, const std::string& dataset);
JobRequest curate_job(const std::string& input, const std::string& dataset, const std::string& preset);
JobRequest redecide_job(const std::string& dataset, const std::string& preset);

}  // namespace mugv::studio
