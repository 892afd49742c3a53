#include "train/trainer_step.h"

#include "core/error.h"
#include "core/strings.h"
#include "train/flow.h"
#include "train/pipeline_step.h"

#include <chrono>
#include <cmath>

namespace mugv::dit_training {
namespace {

// The samples of the global batch that this data-parallel rank trains on: [begin, end).
std::pair<int64_t, int64_t> my_samples(const Session& s, int64_t batch) {
  const int64_t dp = s.layout().dp, rank = s.coords().dp_rank;
  return {batch * rank / dp, batch * (rank + 1) / dp};
}

// The start of the DiT's pass for a flow batch (model/dit.h begin_pass): the captions encoded (or read from
// `text_cache`) and dropped where the batch says. Call under the run's autocast.
DiTPass begin_velocity_pass(const Session& s, DiTBundleImpl& model, TextFeatureCache* text_cache,
                            const FlowBatch& fb, const torch::Tensor& ids_t, const torch::Tensor& mask_t,
                            const torch::Tensor& fps) {
  const int64_t text_tokens = s.preset.text.max_tokens;
  const bool any_cond = fb.cond_mask.any().item<bool>();
  auto text = text_cache ? text_cache->features(ids_t, mask_t) : model.text->forward(ids_t, mask_t);
  // A DiT without a learned null caption (the release layout) drops captions to the encoded empty prompt.
  torch::Tensor null_text, null_mask;
  if (!model.dit->has_null_caption() && fb.drop_caption.any().item<bool>()) {
    const auto empty = s.tokenizer->encode("", static_cast<int>(text_tokens), TokenLimitPolicy::truncate);
    null_mask = torch::tensor(empty.mask, torch::kLong).view({1, -1}).to(s.device, torch::kFloat32);
    const auto empty_ids = torch::tensor(empty.ids, torch::kLong).view({1, -1}).to(s.device);
    null_text =
        text_cache ? text_cache->features(empty_ids, null_mask) : model.text->forward(empty_ids, null_mask);
  }
  // A model without a learned null caption (the release layout) needs nothing when no caption is dropped;
  // one with it always goes through drop_captions, so its null caption gets a (zero) gradient every step.
  const bool pass_through = !model.dit->has_null_caption() && !fb.drop_caption.any().item<bool>();
  auto [text_in, mask_in] =
      pass_through ? std::make_pair(text, mask_t)
                   : model.dit->drop_captions(text, mask_t, fb.drop_caption, null_text, null_mask);
  return model.dit->begin_pass(fb.x_t, fb.t * kDiTTimesteps, text_in, mask_in, fps,
                               any_cond ? fb.cond_mask : torch::Tensor());
}

// The velocity part of the DiT's output for a finished pass, in fp32.
torch::Tensor velocity_of(const Session& s, DiTBundleImpl& model, DiTPass& pass) {
  return model.dit->finish_pass(pass).narrow(1, 0, s.preset.dit.in_channels).to(torch::kFloat32);
}

// The velocity `model` predicts for a flow batch, in fp32 (the loss and its gradient are computed in fp32);
// captions are dropped where the batch says. `text_cache`: the frozen text encoder's cached features, or null
// to run the model's own text encoder.
torch::Tensor predict_velocity(const Session& s, DiTBundleImpl& model, TextFeatureCache* text_cache,
                               const FlowBatch& fb, const torch::Tensor& ids_t, const torch::Tensor& mask_t,
                               const torch::Tensor& fps) {
  AutocastScope autocast(s.precision, s.device.type());
  DiTPass pass = begin_velocity_pass(s, model, text_cache, fb, ids_t, mask_t, fps);
  model.dit->run_blocks(pass, 0, s.preset.dit.depth);
  return velocity_of(s, model, pass);
}

FlowBatch sample_range(const FlowBatch& fb, int64_t begin, int64_t end) {
  auto part = [&](const torch::Tensor& t) { return t.narrow(0, begin, end - begin); };
  return {part(fb.x_t), part(fb.t), part(fb.target), part(fb.cond_mask), part(fb.drop_caption)};
}

// Forward and backward of one flow step as micro-batches through this rank's pipeline stage
// (train/pipeline_step.h); the gradients are left accumulated in the parameters. Each micro-batch's loss is
// its squared-error sum over the elements every data-parallel rank counts in this step, so the summed
// gradients are those of the whole batch's mean, as in one process. Returns the step's loss (on every rank)
// and this stage's waits.
PipelineStepResult pipelined_flow_step(Session& s, const StepData& batch, int64_t step,
                                       const torch::Tensor& ids_t, const torch::Tensor& mask_t,
                                       const torch::Tensor& fps) {
  const auto& o = s.options;
  // On the CPU: each micro-batch goes to the device when its forward starts, so a stage never holds the
  // replica's whole batch there.
  const FlowBatch fb =
      make_flow_batch(batch.latents, o.seed, step, batch.height, batch.width, batch.flow, batch.first);
  auto counted = torch::tensor({flow_loss_elements(fb.target, fb.cond_mask)}, torch::kFloat64);
  if (s.groups) s.groups->all_reduce_sum(GroupKind::data, counted);
  const double total = std::max(1.0, counted.item<double>());
  // Micro-batches: as many as asked, at most one per sample (interleaving needs a multiple of the stages).
  const int64_t samples = batch.latents.size(0);
  int micro = int(std::min<int64_t>(s.micro_batches, samples));
  if (s.pipeline.virtual_stages > 1) micro -= micro % s.pipeline.stages;
  if (micro < 1)
    throw Error(
        ErrorCode::invalid_argument, o.run,
        cat("step ", step, ": ", samples, " sample(s) per replica cannot fill the interleaved schedule's ",
            s.pipeline.stages, " micro-batches; raise --batch"));
  auto range = [&](int j) { return std::make_pair(samples * j / micro, samples * (j + 1) / micro); };
  std::vector<FlowBatch> parts;
  for (int j = 0; j < micro; ++j) parts.push_back(sample_range(fb, range(j).first, range(j).second));
  // A micro-batch's copy on the device from its forward to its loss, so a stage that is both the first and
  // the last copies it once; released once its loss is computed.
  std::vector<FlowBatch> on_device(static_cast<size_t>(micro));
  DiTBundleImpl& model = *s.model;
  PipelineStepHooks hooks;
  hooks.begin = [&](int j) {
    AutocastScope autocast(s.precision, s.device.type());
    const auto [b, e] = range(j);
    on_device[size_t(j)] = to_device(parts[size_t(j)], s.device);
    return begin_velocity_pass(s, model, s.text_cache.get(), on_device[size_t(j)], ids_t.narrow(0, b, e - b),
                               mask_t.narrow(0, b, e - b), fps.narrow(0, b, e - b));
  };
  hooks.resume = [&](int j, const DiTPassTensors& received) {
    AutocastScope autocast(s.precision, s.device.type());  // as begin_pass computes the RoPE angles
    return model.dit->resume_pass(parts[size_t(j)].x_t, received);
  };
  hooks.blocks = [&](DiTPass& pass, BlockRange blocks) {
    AutocastScope autocast(s.precision, s.device.type());
    model.dit->run_blocks(pass, blocks.first, blocks.last);
  };
  hooks.loss = [&](int j, DiTPass& pass) {
    torch::Tensor prediction;
    {
      AutocastScope autocast(s.precision, s.device.type());
      prediction = velocity_of(s, model, pass);
    }
    FlowBatch& copied = on_device[size_t(j)];
    const FlowBatch& part = parts[size_t(j)];
    const torch::Tensor target = copied.target.defined() ? copied.target : part.target.to(s.device);
    const torch::Tensor cond_mask = copied.target.defined() ? copied.cond_mask : part.cond_mask.to(s.device);
    copied = FlowBatch{};
    return masked_flow_loss_parts(prediction, target, cond_mask).squared_error_sum / total;
  };
  PipelineStepResult result = run_pipeline_step(s.groups, s.pipeline, s.stage(), micro, s.device, hooks);
  if (s.groups) {  // the last stage's sum, over the data-parallel replicas, on every rank
    auto loss = torch::tensor({result.loss}, torch::kFloat64);
    s.groups->all_reduce_sum(GroupKind::data, loss);
    if (s.stage() != s.pipeline.stages - 1) loss.zero_();
    s.groups->all_reduce_sum(GroupKind::pipeline, loss);
    result.loss = loss.item<double>();
  }
  return result;
}

// One post-training step's loss (train/preference.h) on this batch of preference items: the policy's and the
// frozen reference's per-sample flow errors under the same t and noise. A DPO item's latent holds the
// winner's channels then the loser's; both halves draw the same t and noise (the draws depend only on the
// sample's index in the batch). Conditioning frames and caption dropout are off: the labels judge whole
// videos of their prompts.
PreferenceLoss preference_step_loss(Session& s, const StepData& batch, int64_t step,
                                    const torch::Tensor& ids_t, const torch::Tensor& mask_t,
                                    const torch::Tensor& fps) {
  const auto& o = s.options;
  FlowOptions plain = o.flow;
  plain.p_first_frame = 0;
  plain.p_caption_dropout = 0;
  // Noise from per-sample seeds by the items' places in the whole batch, so a rank's part of the batch draws
  // what one process would for the same items.
  auto flow_of = [&](const torch::Tensor& x0) {
    return to_device(
        make_flow_batch(x0.contiguous(), o.seed, step, batch.height, batch.width, plain, batch.first),
        s.device);
  };
  const SumOverRanks sum_over_ranks = [&s](torch::Tensor& t) {
    if (s.groups && s.layout().dp > 1) s.groups->all_reduce_sum(GroupKind::data, t);
  };
  auto errors = [&](DiTBundleImpl& model, TextFeatureCache* cache, const FlowBatch& fb,
                    const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& rates) {
    return per_sample_flow_error(predict_velocity(s, model, cache, fb, ids, mask, rates), fb.target,
                                 torch::Tensor());
  };
  if (s.objective == TrainObjective::dpo) {
    const int64_t c = s.preset.dit.in_channels, n = batch.latents.size(0);
    const FlowBatch both =
        concat(flow_of(batch.latents.narrow(1, 0, c)), flow_of(batch.latents.narrow(1, c, c)));
    const auto ids2 = torch::cat({ids_t, ids_t}), mask2 = torch::cat({mask_t, mask_t});
    const auto fps2 = torch::cat({fps, fps});
    const auto policy = errors(*s.model, s.text_cache.get(), both, ids2, mask2, fps2);
    torch::Tensor reference;
    {
      torch::NoGradGuard no_grad;
      reference = errors(*s.reference, nullptr, both, ids2, mask2, fps2);
    }
    return dpo_loss(policy.narrow(0, 0, n), policy.narrow(0, n, n), reference.narrow(0, 0, n),
                    reference.narrow(0, n, n), o.preference_beta, o.preference_sft_weight, sum_over_ranks);
  }
  const FlowBatch fb = flow_of(batch.latents);
  std::vector<uint8_t> desirable;
  for (int64_t id : batch.clip_ids) desirable.push_back(s.preference_items.at(size_t(id)).desirable ? 1 : 0);
  const auto labels = torch::tensor(desirable, torch::kUInt8).to(torch::kBool).to(s.device);
  const auto policy = errors(*s.model, s.text_cache.get(), fb, ids_t, mask_t, fps);
  torch::Tensor reference;
  {
    torch::NoGradGuard no_grad;
    reference = errors(*s.reference, nullptr, fb, ids_t, mask_t, fps);
  }
  return kto_loss(policy, reference, labels, o.preference_beta, o.preference_sft_weight, 1.0, 1.0,
                  sum_over_ranks);
}

// One step's forward and backward on this rank: afterwards each parameter's gradient is its part of the
// gradient of the whole batch's loss (summed over the data-parallel ranks once s.sync->end_step() ran). A
// non-finite loss stops the run before the backward: `stop_nonfinite` throws.
ForwardBackward forward_backward(Session& s, const StepData& batch, int64_t step,
                                 const std::function<void(const char*, double)>& stop_nonfinite) {
  const auto& o = s.options;
  const auto& latents = batch.latents;
  const auto fps = batch.fps.to(s.device);
  const auto ids_t = batch.ids.to(s.device);
  const auto mask_t = batch.mask.to(s.device);
  ForwardBackward out;
  if (s.pipelined()) {  // the schedule runs the backward of each micro-batch itself
    s.optimizer->zero_grad();
    if (s.sync) s.sync->begin_step(/*overlap=*/false);
    const PipelineStepResult piped = pipelined_flow_step(s, batch, step, ids_t, mask_t, fps);
    out.loss = piped.loss;
    out.pipeline_wait_ms = piped.receive_ms + piped.send_ms;
    out.pipeline_ms = piped.total_ms;
    if (!std::isfinite(out.loss)) stop_nonfinite("loss", out.loss);
    return out;
  }
  torch::Tensor loss;
  if (is_preference_objective(s.objective)) {
    const PreferenceLoss preference = preference_step_loss(s, batch, step, ids_t, mask_t, fps);
    loss = preference.loss;
    out.loss = preference.value;
    out.objective_metrics = {{"accuracy", preference.accuracy}, {"margin", preference.margin}};
    if (s.options.preference_sft_weight > 0) out.objective_metrics["sft"] = preference.sft;
    if (s.objective == TrainObjective::kto) out.objective_metrics["reference_point"] = preference.reference;
  } else if (s.layout().dp > 1) {
    // The noise is drawn on the CPU from per-sample seeds, so a run's noise is the same on any device.
    const FlowBatch fb = to_device(
        make_flow_batch(latents, o.seed, step, batch.height, batch.width, batch.flow, batch.first), s.device);
    const torch::Tensor pred = predict_velocity(s, *s.model, s.text_cache.get(), fb, ids_t, mask_t, fps);
    // Each rank holds part of the batch: loss = (its squared-error sum) / (elements counted on all ranks),
    // so the data-parallel SUM of gradients is the gradient of the whole batch's mean.
    auto parts = masked_flow_loss_parts(pred, fb.target, fb.cond_mask);
    auto counted = torch::tensor({parts.counted}, torch::kFloat64);
    s.groups->all_reduce_sum(GroupKind::data, counted);
    loss = parts.squared_error_sum / std::max(1.0, counted.item<double>());
    auto total = loss.detach().to(torch::kFloat64).reshape({1});
    s.groups->all_reduce_sum(GroupKind::data, total);
    out.loss = total.item<double>();
  } else {
    const FlowBatch fb = to_device(
        make_flow_batch(latents, o.seed, step, batch.height, batch.width, batch.flow, batch.first), s.device);
    const torch::Tensor pred = predict_velocity(s, *s.model, s.text_cache.get(), fb, ids_t, mask_t, fps);
    loss = masked_flow_loss(pred, fb.target, fb.cond_mask);
    out.loss = loss.item<double>();
  }
  if (!std::isfinite(out.loss)) stop_nonfinite("loss", out.loss);
  s.optimizer->zero_grad();
  if (s.sync) s.sync->begin_step();
  loss.backward();
  return out;
}

}  // namespace

StepData next_step_data(const Session& s, LatentLoader* loader, int64_t text_tokens) {
  const bool shared = s.groups && s.groups->group_size(GroupKind::replica) > 1;
  StepData d;
  d.flow = s.options.flow;
  torch::Tensor header = torch::zeros({12}, torch::kInt64);
  if (loader) {
    Batch batch = loader->next();
    d.global_batch = batch.latents.size(0);
    const auto [first, last] = my_samples(s, d.global_batch);
    d.first = first;
    d.latents = batch.latents.narrow(0, first, last - first).contiguous();
    d.clip_ids.assign(batch.clip_ids.begin() + first, batch.clip_ids.begin() + last);
    d.fps = batch.fps.narrow(0, first, last - first).contiguous();
    std::vector<int64_t> ids, mask;
    for (int64_t i = first; i < last; ++i) {
      auto tok = s.tokenizer->encode(batch.captions[size_t(i)], static_cast<int>(text_tokens),
                                     TokenLimitPolicy::truncate);
      ids.insert(ids.end(), tok.ids.begin(), tok.ids.end());
      mask.insert(mask.end(), tok.mask.begin(), tok.mask.end());
    }
    d.ids = torch::tensor(ids, torch::kInt64).view({last - first, text_tokens});
    d.mask = torch::tensor(mask, torch::kInt64).view({last - first, text_tokens}).to(torch::kFloat32);
    d.height = batch.height;
    d.width = batch.width;
    d.cursor = batch.cursor;
    d.next_cursor = loader->cursor();
    d.wait_ms = batch.wait_ms;
    if (!shared) return d;
    const auto shape = d.latents.sizes();
    header = torch::tensor({shape[0], shape[1], shape[2], shape[3], shape[4], d.global_batch, d.first,
                            d.height, d.width, d.next_cursor.epoch, d.next_cursor.position, int64_t(0)},
                           torch::kInt64);
  }
  if (!shared) return d;
  s.groups->broadcast(GroupKind::replica, header, 0);
  auto h = header.accessor<int64_t, 1>();
  if (!loader) {
    d.latents = torch::empty({h[0], h[1], h[2], h[3], h[4]}, torch::kFloat32);
    d.fps = torch::empty({h[0]}, torch::kFloat32);
    d.ids = torch::empty({h[0], text_tokens}, torch::kInt64);
    d.mask = torch::empty({h[0], text_tokens}, torch::kFloat32);
    d.global_batch = h[5];
    d.first = h[6];
    d.height = h[7];
    d.width = h[8];
    d.next_cursor = {h[9], h[10]};
  }
  for (torch::Tensor* t : {&d.latents, &d.fps, &d.ids, &d.mask})
    s.groups->broadcast(GroupKind::replica, *t, 0);
  return d;
}

void apply_curriculum(const Session& s, StepData& batch, int64_t step) {
  const CurriculumStep cs = curriculum_step(s.curriculum, step, s.options.seed);
  if (cs.stage < 0) return;
  const int64_t frames = batch.latents.size(2);
  const int64_t kept = cs.images ? 1 : cs.latent_frames > 0 ? std::min(cs.latent_frames, frames) : frames;
  if (kept < frames) batch.latents = batch.latents.narrow(2, 0, kept).contiguous();
  if (cs.p_first_frame) batch.flow.p_first_frame = *cs.p_first_frame;
  if (kept == 1) batch.flow.p_first_frame = 0;  // conditioning on the only frame would leave nothing to learn
  batch.curriculum = cs.to_json();
  batch.curriculum["latent_frames"] = kept;
  batch.curriculum["p_first_frame"] = batch.flow.p_first_frame;
}

StepOutcome train_step(Session& s, const StepData& batch, int64_t step,
                       const std::function<void(const char*, double)>& stop_nonfinite) {
  const auto& o = s.options;
  StepOutcome u;
  u.pass = forward_backward(s, batch, step, stop_nonfinite);
  if (s.sync) {
    s.sync->end_step();
    u.grad_norm = s.sync->clip_grad_norm(o.grad_clip);
    u.communication_ms = s.sync->communication_ms();
  } else {
    std::vector<torch::Tensor> params;
    for (auto& [name, p] : s.params) params.push_back(p);
    u.grad_norm = clip_grad_norm(params, o.grad_clip);
  }
  if (!std::isfinite(u.grad_norm)) stop_nonfinite("gradient norm", u.grad_norm);
  u.lr = scheduled_lr(step, o.lr, o.warmup_steps, o.steps, o.schedule, o.min_lr);
  auto t_optimizer = std::chrono::steady_clock::now();
  s.optimizer->step(u.lr);
  if (s.zero_sharded)  // the parameter all-gather of ZeRO-1 is communication too
    u.communication_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_optimizer).count();
  s.ema->update(s.params, step);
  if (s.power_ema) s.power_ema->update(s.params, step);
  return u;
}

}  // namespace mugv::dit_training
