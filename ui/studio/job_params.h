#pragma once
// The job parameters the studio submits: the same {"command": [...], "values": {key: value}, "positional": [...]}
// a `mugv --server EP submit COMMAND ...` sends (app/mugv/command.h parse_command_arguments), built from the
// studio's forms. Keys are the commands' parameter keys. Pure functions.

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
  std::string run, prompt, negative, image, out;
  int seed = 0, steps = 25, frames = 17, width = 64, height = 64;
  double cfg = 4.0, fps = 8.0;
};
// Empty when the form is valid, otherwise what is wrong with which field ("prompt: write what the video shows").
std::string validate(const GenerateForm& form);
JobRequest generate_job(const GenerateForm& form);

struct TrainForm {
  std::string run, dataset, vae_run, model = "tiny", train_preset = "tiny", sample_prompts;
  int steps = 200, batch = 4, sample_every = 0;
};
std::string validate(const TrainForm& form);
JobRequest train_job(const TrainForm& form);

// The starter dataset: `make-dataset shapes --out DIR ...` then `dataset import DIR --name NAME`.
JobRequest make_starter_job(const std::string& out_dir, int count);
JobRequest import_job(const std::string& input, const std::string& dataset);
JobRequest curate_job(const std::string& input, const std::string& dataset, const std::string& preset);
JobRequest redecide_job(const std::string& dataset, const std::string& preset);

// Rough training memory per device for the new-run dialog (weights + grads + AdamW + EMA at fp32, and the
// activations of one step), from the preset's shapes; "" with a reason in `problem` when the preset or
// geometry is unknown.
struct MemoryEstimate {
  double gib = 0;
  long long parameters = 0;
  std::string problem;
};
MemoryEstimate estimate_training_memory(const std::string& model_preset, int batch, int frames, int height, int width);

}  // namespace mugv::studio
