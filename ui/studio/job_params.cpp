#include "job_params.h"

#include "core/strings.h"

#include <cstdio>

namespace mugv::studio {

JobRequest make_job(std::string kind, std::vector<std::string> command, nlohmann::json values,
                    std::vector<std::string> positional) {
  JobRequest job;
  job.kind = std::move(kind);
  job.params = {
      {"command", std::move(command)}, {"values", std::move(values)}, {"positional", std::move(positional)}};
  return job;
}

std::string released_model_label(const nlohmann::json& m) {
  const auto& dit = m["dit"];
  std::string label = m["name"].get<std::string>() + "  (released";
  if (dit.contains("parameters")) {
    char parameters[48];
    std::snprintf(parameters, sizeof parameters, ", %.3g B parameters",
                  dit["parameters"].get<double>() / 1e9);
    label += parameters;
  }
  label += ", " + human_bytes(m["bytes"].get<double>());
  if (m.contains("problem"))
    label += ", incomplete: " + m["problem"].get<std::string>();
  else if (m.contains("preset_error"))
    label += ", unusable: " + m["preset_error"].get<std::string>();
  return label + ")";
}

namespace {
bool no_model(const GenerateForm& f) {
  return f.run.empty() && f.model.empty();
}
bool no_prompt(const GenerateForm& f) {
  return f.prompt.find_first_not_of(" \t\n") == std::string::npos;
}
}  // namespace

bool awaiting_input(const GenerateForm& f) {
  return no_model(f) || no_prompt(f);
}

std::string validate(const GenerateForm& f) {
  if (no_model(f)) return "model: choose a trained DiT run or a released model";
  if (no_prompt(f)) return "prompt: write what the video should show";
  if (f.width < 16 || f.height < 16 || f.width % 16 || f.height % 16)
    return "size: width and height must be multiples of 16";
  if (f.frames < 1) return "frames: at least 1";
  if (f.out.empty()) return "output: choose where the video is written";
  return {};
}

JobRequest generate_job(const GenerateForm& f) {
  nlohmann::json values = {{"generate.prompt", f.prompt},
                           {"generate.seed", f.seed},
                           {"generate.steps", f.steps},
                           {"generate.cfg", f.cfg},
                           {"generate.frames", f.frames},
                           {"generate.size", std::to_string(f.width) + "x" + std::to_string(f.height)},
                           {"generate.out", f.out}};
  // A released model brings its own defaults (fps 30, its negative prompt) unless the form sets them.
  if (f.model.empty()) {
    values["generate.run"] = f.run;
    values["generate.fps"] = f.fps;
  } else {
    values["generate.model"] = f.model;
  }
  if (!f.negative.empty()) values["generate.negative"] = f.negative;
  if (!f.image.empty()) values["generate.image"] = f.image;
  if (!f.lora.empty()) {
    values["generate.lora"] = f.lora;
    values["generate.lora_merge"] = f.lora_merge;
  }
  return make_job("generate", {"generate"}, values);
}

std::string validate(const TrainForm& f) {
  if (f.run.empty() || f.run.find('/') != std::string::npos) return "run name: a name without '/'";
  if (f.objective != "flow" && f.objective != "sft" && !f.learns_from_labels())
    return "stage: flow, sft, dpo or kto";
  const std::string stage = f.objective == "dpo" ? "DPO" : "KTO";
  if (f.learns_from_labels() && f.from.empty()) return stage + ": choose the run to post-train";
  if (f.learns_from_labels() && f.clip_filter.find_first_not_of(" \t") != std::string::npos)
    return stage + ": learns from labelled generations, not from a clip subset; clear the clip filter";
  if (f.objective == "sft" && f.clip_filter.find_first_not_of(" \t") == std::string::npos)
    return "SFT: write the clip filter, e.g. decision=keep,aesthetic>=5";
  if (f.learns_from_labels() && f.preference_labels != "all" && f.preference_labels != "human" &&
      f.preference_labels != "auto")
    return "labels: all, human or auto";
  if (f.learns_from_labels() && !(f.preference_beta > 0)) return "beta: more than 0";
  if (f.learns_from_labels() && !(f.preference_sft_weight >= 0)) return "anchor: 0 or more";
  if (f.dataset.empty() && !f.learns_from_labels()) return "dataset: choose a dataset";
  if (f.vae_run.empty() && f.from.empty())
    return "VAE run: choose the VAE whose latents the DiT learns (train one first)";
  if (!f.lora.empty() && f.from.empty())
    return "LoRA: adapters train on a base; choose the run to start from";
  if (!f.from_weights.empty() && f.from_weights != "ema" && f.from_weights != "model")
    return "start from: its ema or model weights";
  if (f.steps < 1) return "steps: at least 1";
  if (f.batch < 1) return "batch: at least 1";
  if (f.optimizer != "adamw" && f.optimizer != "muon") return "optimizer: adamw or muon";
  if (f.parametrization != "standard" && f.parametrization != "mup")
    return "parametrization: standard or mup";
  if (f.tp < 1 || f.cp < 1) return "layout: tp and cp are at least 1";
  if (f.pp < 1) return "layout: pp is at least 1";
  if (f.pp_schedule != "1f1b" && f.pp_schedule != "interleaved")
    return "layout: the pipeline schedule is 1f1b or interleaved";
  if (f.pp_virtual < 2) return "layout: the interleaved schedule has at least 2 chunks per stage";
  if (f.micro_batches < 0) return "layout: micro-batches are 0 (the default) or more";
  if (f.zero != 0 && f.zero != 1) return "layout: ZeRO stage 0 or 1";
  if (f.recompute != "none" && f.recompute != "selective" && f.recompute != "full")
    return "layout: recompute is none, selective or full";
  if (f.recompute_blocks < 0) return "layout: recomputed blocks are 0 (all) or more";
  if (f.offload != "none" && f.offload != "blocks") return "layout: offload is none or blocks";
  if (f.offload == "blocks" && f.lora.empty())
    return "layout: block swap keeps a frozen base in host memory; it needs LoRA adapters";
  if (f.learns_from_labels() && (f.tp * f.cp > 1 || f.pp > 1 || f.micro_batches > 1))
    return "layout: DPO and KTO split the batch over the ranks, not the model (data parallel and ZeRO-1; no "
           "tensor, context or pipeline parallel, one batch per step)";
  if (f.learns_from_labels() && !f.curriculum.empty())
    return "curriculum: DPO and KTO learn from labelled generations as they are; a curriculum shapes flow "
           "training on a dataset";
  if (!f.cluster.empty() && f.slurm_nodes == 0)
    return "Slurm: a cluster profile takes runs on the GPU cluster; choose where the run trains";
  if (f.cluster.empty() && f.slurm_nodes > 0)
    return "Slurm: choose one of the server's cluster profiles (\"default\" is the Slurm of its machine)";
  if (f.slurm_nodes == 0 && f.tp * f.cp > 1)
    return "layout: tensor and context parallel need several ranks; train on a GPU cluster";
  if (f.slurm_nodes == 0 && f.pp > 1)
    return "layout: pipeline stages need several ranks; train on a GPU cluster";
  if (f.slurm_nodes > 0 && (f.slurm_nodes * f.tasks_per_node) % (f.tp * f.cp * f.pp) != 0)
    return "layout: tp x cp x pp must divide the cluster's ranks";
  return {};
}

JobRequest train_job(const TrainForm& f) {
  nlohmann::json values = {{"train.preset", f.train_preset},
                           {"train.run", f.run},
                           {"train.steps", f.steps},
                           {"train.batch", f.batch},
                           {"train.sample_every", f.sample_every},
                           {"train.optimizer", f.optimizer},
                           {"train.parametrization", f.parametrization}};
  if (!f.curriculum.empty()) values["train.curriculum"] = f.curriculum;
  if (!f.model.empty()) values["train.model"] = f.model;
  if (!f.sample_prompts.empty()) values["train.sample_prompts"] = f.sample_prompts;
  // DPO and KTO read labelled generations and their base's latent space, not a dataset.
  if (f.learns_from_labels()) {
    values["train.objective"] = f.objective;
    if (f.preference_labels != "all") values["train.preference_labels"] = f.preference_labels;
    if (f.preference_beta != 1000.0) values["train.preference_beta"] = f.preference_beta;
    if (f.preference_sft_weight != 0.0) values["train.preference_sft_weight"] = f.preference_sft_weight;
  } else {
    values["train.dataset"] = f.dataset;
    if (!f.vae_run.empty()) values["train.vae_run"] = f.vae_run;
    if (f.clip_filter.find_first_not_of(" \t") != std::string::npos)
      values["train.clip_filter"] = f.clip_filter;
  }
  if (!f.from.empty()) {
    values["train.from"] = f.from;
    values["train.lora"] = f.lora;
    if (!f.from_weights.empty()) values["train.from_weights"] = f.from_weights;
  }
  values["train.tp"] = f.tp;
  values["train.cp"] = f.cp;
  values["train.zero"] = f.zero;
  values["train.recompute"] = f.recompute;
  values["train.recompute_blocks"] = f.recompute_blocks;
  if (!f.lora.empty()) values["train.offload"] = f.offload;
  values["train.pp"] = f.pp;
  values["train.pp_schedule"] = f.pp_schedule;
  values["train.pp_virtual"] = f.pp_virtual;
  values["train.micro_batches"] = f.micro_batches;
  JobRequest job = make_job("train", {"train"}, values);
  if (f.slurm_nodes > 0) {
    // The server's Slurm executor runs the job on the profile's cluster and follows it to its end; every
    // rank drives one GPU, so a node is asked for as many GPUs as it runs ranks.
    job.params["executor"] = "slurm";
    job.params["cluster"] = f.cluster;
    job.params["nodes"] = f.slurm_nodes;
    job.params["tasks_per_node"] = f.tasks_per_node;
    job.params["gpus_per_node"] = f.tasks_per_node;
  }
  return job;
}

std::string validate_grow(const std::string& run, const std::string& out, int width) {
  if (run.empty()) return "run: choose the DiT run to grow";
  if (out.empty() || out.find('/') != std::string::npos) return "new run name: a name without '/'";
  if (out == run) return "new run name: the grown run needs a name of its own";
  if (width < 2 || width > 8) return "width: a factor from 2 to 8";
  return {};
}

JobRequest grow_job(const std::string& run, const std::string& out, int width) {
  return make_job("model", {"grow"}, {{"grow.run", run}, {"grow.out", out}, {"grow.width", width}});
}

std::vector<JobRequest> grow_then_train_jobs(const TrainForm& form, int width) {
  TrainForm next = form;
  next.from = form.run + "-grown";
  next.from_weights = "model";  // a grown run holds no EMA weights
  return {grow_job(form.from, next.from, width), train_job(next)};
}

std::string validate(const VaeForm& f) {
  if (f.run.empty() || f.run.find('/') != std::string::npos) return "new VAE: a run name without '/'";
  if (f.dataset.empty()) return "new VAE: choose the dataset it learns from";
  if (f.preset.empty()) return "new VAE: choose its training preset";
  if (f.steps < 0) return "new VAE: steps are 0 (the preset's) or more";
  return {};
}

JobRequest train_vae_job(const VaeForm& f) {
  nlohmann::json values = {{"train.preset", f.preset}, {"train.dataset", f.dataset}, {"train.run", f.run}};
  if (f.steps > 0) values["train.steps"] = f.steps;
  return make_job("train_vae", {"train-vae"}, values);
}

JobRequest encode_job(const std::string& dataset, const LatentSpace& space) {
  if (space.model.empty())
    return make_job("encode", {"encode"}, {{"encode.dataset", dataset}, {"encode.vae_run", space.vae_run}});
  return make_job("encode", {"encode"},
                  {{"encode.dataset", dataset},
                   {"encode.model", space.model},
                   {"encode.size", std::to_string(space.width) + "x" + std::to_string(space.height)},
                   {"encode.frames", space.frames}});
}

namespace {

// The latent space the encode step of `steps` writes: a fine-tune's base's, or the new model's VAE run.
LatentSpace encode_space(const LatentSteps& steps, const TrainForm& form) {
  if (!form.from.empty()) return steps.encode_with;
  LatentSpace space;
  space.vae_run = form.vae_run;
  return space;
}

}  // namespace

std::string validate(const LatentSteps& steps, const TrainForm& form) {
  if (!steps.train_vae && !steps.encode) return {};
  if (form.learns_from_labels())
    return "encode: DPO and KTO learn from labelled generations in their base's latent space; there is "
           "nothing to encode";
  if (steps.train_vae && !form.from.empty())
    return "new VAE: a fine-tune learns its base's latents; train a new model to train a VAE for it";
  if (steps.train_vae) {
    if (const std::string why =
            validate(VaeForm{steps.vae_run, form.dataset, steps.vae_preset, steps.vae_steps});
        !why.empty())
      return why;
    if (form.vae_run != steps.vae_run)
      return "new VAE: the run learns the new VAE's latents; name it the same";
    if (!steps.encode) return "encode: the new VAE's latents must be encoded before the run trains on them";
  }
  if (form.dataset.empty()) return "encode: choose the dataset to encode";
  const LatentSpace space = encode_space(steps, form);
  if (!space.model.empty()) {
    if (space.width < 16 || space.height < 16 || space.frames < 1)
      return "encode: a released model's VAE encodes the clips at the run's clip size and frames; set them";
  } else if (space.vae_run.empty()) {
    return form.from.empty() ? "encode: choose the VAE run to encode with"
                             : "encode: the run it starts from names no VAE run to encode with";
  }
  return {};
}

std::vector<JobRequest> training_jobs(const TrainForm& form, const LatentSteps& steps) {
  std::vector<JobRequest> jobs;
  if (steps.train_vae)
    jobs.push_back(train_vae_job({steps.vae_run, form.dataset, steps.vae_preset, steps.vae_steps}));
  if (steps.encode) jobs.push_back(encode_job(form.dataset, encode_space(steps, form)));
  jobs.push_back(train_job(form));
  return jobs;
}

std::string validate(const PairsForm& f) {
  if (f.run.empty()) return "run: choose the DiT run to generate with";
  if (f.prompts.find_first_not_of(" \t") == std::string::npos)
    return "prompts: choose a text file with one prompt a line";
  if (f.count < 0) return "count: 0 (one pair per prompt) or more";
  if (f.steps < 1) return "steps: at least 1";
  if (f.frames < 1) return "frames: at least 1";
  if (f.width < 16 || f.height < 16 || f.width % 16 || f.height % 16)
    return "size: width and height must be multiples of 16";
  return {};
}

JobRequest pairs_job(const PairsForm& f) {
  return make_job("generate", {"pairs"},
                  {{"pairs.run", f.run},
                   {"pairs.prompts", f.prompts},
                   {"pairs.count", f.count},
                   {"pairs.seed", f.seed},
                   {"pairs.steps", f.steps},
                   {"pairs.size", std::to_string(f.width) + "x" + std::to_string(f.height)},
                   {"pairs.frames", f.frames}});
}

JobRequest auto_label_job(const std::string& labeller, const std::string& criterion) {
  nlohmann::json values = {{"label.auto", labeller}};
  if (!criterion.empty()) values["label.criterion"] = criterion;
  return make_job("model", {"label"}, values);
}

JobRequest make_starter_job(const std::string& out_dir, int count) {
  return make_job("make_dataset", {"make-dataset"}, {{"dataset.out", out_dir}, {"dataset.count", count}},
                  {"shapes"});
}

JobRequest import_job(const std::string& input, const std::string& dataset) {
  return make_job("import", {"dataset", "import"}, {{"dataset.name", dataset}}, {input});
}

JobRequest curate_job(const std::string& input, const std::string& dataset, const std::string& preset) {
  return make_job("curate", {"curate"}, {{"curate.dataset", dataset}, {"curate.preset", preset}}, {input});
}

JobRequest redecide_job(const std::string& dataset, const std::string& preset) {
  return make_job("curate", {"curate", "redecide"}, {{"curate.dataset", dataset}, {"curate.preset", preset}});
}

std::string progress_text(const nlohmann::json& p) {
  auto number = [&](const char* key) {
    return p.contains(key) && p[key].is_number() ? p[key].get<double>() : -1.0;
  };
  std::string text = p.value("stage", std::string());
  const double done = number("done"), total = number("total"), rate = number("rate"), eta = number("eta_s");
  if (total > 0) {
    text += cat(text.empty() ? "" : " ", int64_t(done), "/", int64_t(total));
    if (auto unit = p.value("unit", std::string()); !unit.empty()) text += " " + unit;
  }
  if (rate > 0) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, rate >= 10 ? "%.0f/s" : "%.2g/s", rate);
    text += std::string(", ") + buffer;
  }
  if (eta >= 0 && total > 0 && done < total) text += ", ETA " + human_duration(eta);
  return text;
}

std::string waiting_text(const nlohmann::json& job, const std::map<int64_t, std::string>& states) {
  auto ids_of = [&](const char* key) {
    std::vector<int64_t> ids;
    if (job.contains(key) && job[key].is_array())
      for (const auto& id : job[key])
        if (id.is_number_integer()) ids.push_back(id.get<int64_t>());
    return ids;
  };
  auto list = [&](const std::vector<int64_t>& ids, bool with_state) {
    std::string text;
    for (int64_t id : ids) {
      text += cat(text.empty() ? "#" : ", #", id);
      const auto state = states.find(id);
      if (with_state && state != states.end()) text += " (" + state->second + ")";
    }
    return text;
  };
  if (const auto blocked = ids_of("blocked_by"); !blocked.empty()) return "blocked by " + list(blocked, true);
  if (const auto waiting = ids_of("waiting_on"); !waiting.empty()) return "after " + list(waiting, false);
  return {};
}

}  // namespace mugv::studio
