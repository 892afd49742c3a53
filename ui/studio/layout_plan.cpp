#include "layout_plan.h"

#include "core/error.h"
#include "core/strings.h"
#include "model/config.h"
#include "model/lora_spec.h"
#include "parallel/planner.h"

#include <unistd.h>

#include <algorithm>
#include <map>
#include <optional>

namespace mugv::studio {

std::string PlanRow::recompute_cell() const {
  if (block_swap) return recompute + "+swap";
  return recompute_blocks > 0 ? cat(recompute, ":", recompute_blocks) : recompute;
}

std::string PlanRow::text() const {
  std::string text =
      cat(to_string(ParallelLayout{tp, cp, dp, pp}), ", ZeRO-", zero, ", ", recompute, " recompute");
  if (recompute_blocks > 0 && !block_swap) text += cat(" of the first ", recompute_blocks, " blocks");
  if (block_swap) text += ", block swap";
  if (pp > 1)
    text += cat(", ", schedule, virtual_stages > 1 ? cat(" x", virtual_stages) : "", ", ", micro_batches,
                " micro-batches");
  return text;
}

double machine_memory_gb() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? double(pages) * double(page) / 1e9 : 0.0;
}

PlanForm defaults_for(TrainWhere where) {
  PlanForm f;
  f.where = where;
  if (where == TrainWhere::this_machine) {
    f.gpus = f.gpus_per_node = 1;
    const double ram = machine_memory_gb();
    f.memory_gb = ram > 0 ? ram : 16;
    f.peak_tflops = 1;  // fp32 on a desktop CPU's vector units: the order of a TFLOP/s
  }
  return f;
}

PlanOutcome plan_training(const PlanForm& form, size_t top) {
  PlanOutcome out;
  // The planner names values by meaning; the dialog shows the problem beside the field.
  static const std::map<std::string, PlanField> fields = {
      {"gpus", PlanField::gpus},         {"gpus-per-node", PlanField::gpus_per_node},
      {"gpu-mem-gb", PlanField::memory}, {"peak-tflops", PlanField::peak},
      {"height", PlanField::size},       {"width", PlanField::size},
      {"frames", PlanField::frames},     {"global-batch", PlanField::batch}};
  ModelPreset preset;
  try {
    preset = form.preset ? *form.preset
             : form.model_values.is_null()
                 ? load_model_preset(form.model)
                 : model_preset_from_json(form.model_values, form.model,
                                          "the server's model preset " + form.model);
  } catch (const Error& e) {
    out.problem = e.what();
    out.field = PlanField::model;
    return out;
  }
  if (form.batch < 1) {
    out.problem = "batch: at least one clip per step";
    out.field = PlanField::batch;
    return out;
  }
  const bool cpu = form.where == TrainWhere::this_machine;
  PlanRequest r;
  r.cluster.gpus = cpu ? 1 : form.gpus;
  r.cluster.gpus_per_node = cpu ? 1 : form.gpus_per_node;
  r.cluster.gpu_memory_bytes = form.memory_gb * 1e9;
  r.cluster.peak_flops = form.peak_tflops * 1e12;
  r.frames = form.frames;
  r.height = form.height;
  r.width = form.width;
  r.global_batch = form.batch;
  r.memory = MemoryOptions::for_device(cpu ? TrainDevice::cpu : TrainDevice::gpu, preset);
  if (!form.lora.empty()) {
    try {
      r.memory.adapter_parameters = lora_parameter_count(preset.dit, parse_lora_config(form.lora));
    } catch (const Error& e) {
      out.problem = std::string("LoRA: ") + e.what();
      out.field = PlanField::lora;
      return out;
    }
  }
  // The planner tries micro-batches of powers of two and its maximum; asking once per data-parallel size
  // with that maximum at batch / dp makes sure the one micro-batch `mugv train` uses is among them.
  std::vector<PlannedLayout> fitting;
  std::optional<Plan>
      least_memory;  // the attempt whose smallest candidate needs least (for the no-fit message)
  try {
    validate_request(preset, r);
    for (int dp = 1; dp <= r.cluster.gpus; ++dp) {
      if (r.cluster.gpus % dp != 0 || form.batch % dp != 0) continue;
      r.max_micro_batch = form.batch / dp;
      Plan plan = plan_layouts(preset, r);
      out.video_tokens = plan.video_tokens;
      for (const PlannedLayout& p : plan.fitting)
        if (p.layout.dp == dp && (p.layout.pp > 1 || p.grad_accumulation == 1)) fitting.push_back(p);
      if (plan.smallest && (!least_memory || !least_memory->smallest ||
                            plan.smallest->memory.total() < least_memory->smallest->memory.total()))
        least_memory = std::move(plan);
    }
  } catch (const Error& e) {
    auto it = fields.find(e.subject());
    out.field = it == fields.end() ? PlanField::none : it->second;
    out.problem = e.what();
    return out;
  }
  std::stable_sort(fitting.begin(), fitting.end(), [](const PlannedLayout& a, const PlannedLayout& b) {
    if (a.cost.step_s != b.cost.step_s) return a.cost.step_s < b.cost.step_s;
    return a.memory.total() < b.memory.total();
  });
  out.fitting = fitting.size();
  for (const PlannedLayout& p : fitting) {
    if (out.rows.size() >= top) break;
    PlanRow row;
    row.tp = p.layout.tp;
    row.cp = p.layout.cp;
    row.dp = p.layout.dp;
    row.zero = p.zero;
    row.recompute = to_string(p.recompute);
    row.recompute_blocks = p.recompute_blocks;
    row.block_swap = p.offload_blocks;
    row.micro_batch = p.micro_batch;
    row.pp = p.layout.pp;
    row.schedule = to_string(p.schedule);
    row.virtual_stages = p.virtual_stages;
    row.micro_batches = static_cast<int>(p.grad_accumulation);
    row.memory_gb = double(p.memory.total()) / 1e9;
    row.step_s = p.cost.step_s;
    row.mfu = p.cost.mfu;
    out.rows.push_back(row);
  }
  if (out.rows.empty()) {
    if (!least_memory) {
      out.problem = cat(
          "batch ", form.batch, ": no layout of ", r.cluster.gpus, " GPUs takes it (the data-parallel size ",
          "must divide the batch, and tp x cp the heads within a node); use a multiple of the GPU count");
      out.field = PlanField::batch;
    } else {
      out.problem = no_fit_message(preset, r, *least_memory);
      if (cpu) out.problem = "this machine: " + out.problem;
      out.field = PlanField::memory;
    }
  }
  return out;
}

}  // namespace mugv::studio
