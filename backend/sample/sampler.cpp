#include "sample/sampler.h"

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "model/run_models.h"
#include "model/timestep_shift.h"
#include "sample/schedule.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <sstream>

namespace mugv {
namespace {

struct TextBatch {
  torch::Tensor features;  // [B, S, text_dim]
  torch::Tensor mask;      // [B, S] float
};

TextBatch encode_text(ModelBundle& b, const std::string& text) {
  auto tok = b.tokenizer->encode(text, b.preset.dit.text_tokens, b.prompt_limit);
  if (tok.truncated)
    log_warning(cat("prompt cut to ", b.preset.dit.text_tokens, " tokens, as the model was trained"));
  auto ids = torch::tensor(tok.ids, torch::kLong).view({1, -1}).to(b.device);
  auto mask = torch::tensor(tok.mask, torch::kLong).view({1, -1}).to(b.device);
  auto features = b.text->forward(ids, mask);
  return {features, mask.to(features.dtype())};
}

// Conditional and unconditional captions stacked as a batch of 2 (cond first).
TextBatch guidance_text(ModelBundle& b, const GenerateRequest& r, bool with_uncond) {
  TextBatch cond = encode_text(b, r.prompt);
  if (!with_uncond) return cond;
  TextBatch uncond;
  if (!r.negative_prompt.empty()) {
    uncond = encode_text(b, r.negative_prompt);
  } else if (!b.dit->has_null_caption()) {
    uncond = encode_text(
        b, "");  // a release-layout DiT has no learned null caption: guide against an empty prompt
  } else {
    auto [text, mask] = b.dit->drop_captions(cond.features, cond.mask, torch::ones({1}, torch::kBool));
    uncond = {text, mask};
  }
  return {torch::cat({cond.features, uncond.features}),
          torch::cat({cond.mask, uncond.mask.to(cond.mask.dtype())})};
}

// The DiT's velocity for x [1, C, n, h, w] at time t under each caption of `text`: [B, C, n, h, w].
torch::Tensor velocities(ModelBundle& b, const torch::Tensor& x, double t, const TextBatch& text, double fps,
                         const torch::Tensor& cond_mask) {
  const int64_t batch = text.features.size(0);
  auto opts = torch::TensorOptions().dtype(x.dtype()).device(b.device);
  auto xb = batch == 1 ? x : x.expand({batch, -1, -1, -1, -1}).contiguous();
  auto tb = torch::full({batch}, t * kDiTTimesteps, opts);
  auto fb = torch::full({batch}, fps, opts);
  auto cm = cond_mask.defined() ? cond_mask.expand({batch, -1}).contiguous() : cond_mask;
  return b.dit->forward(xb, tb, text.features, text.mask, fb, cm);
}

// Classifier-free guidance of velocities() for (cond) or (cond, uncond).
torch::Tensor guide(const torch::Tensor& v, double cfg) {
  if (v.size(0) == 1) return v;
  auto v_cond = v.narrow(0, 0, 1), v_uncond = v.narrow(0, 1, 1);
  return v_uncond + cfg * (v_cond - v_uncond);
}

// Guided velocity: `text` holds the conditional caption alone, or (cond, uncond).
torch::Tensor velocity(ModelBundle& b, const torch::Tensor& x, double t, const TextBatch& text, double cfg,
                       double fps, const torch::Tensor& cond_mask) {
  return guide(velocities(b, x, t, text, fps, cond_mask), cfg);
}

std::vector<RgbFrame> preview_frames(const ModelBundle& b, const torch::Tensor& x0_normalised) {
  auto z =
      (b.latent_rgb_space_raw ? b.codec->denormalize(x0_normalised) : x0_normalised)[0].to(torch::kFloat);
  auto rgb = torch::einsum("kc,cnhw->knhw", {b.latent_rgb_weight.to(torch::kFloat), z}) +
             b.latent_rgb_bias.to(torch::kFloat).view({3, 1, 1, 1});
  std::vector<RgbFrame> frames;
  for (int64_t i = 0; i < rgb.size(1); ++i) frames.push_back(to_rgb_frame(rgb.select(1, i)));
  return frames;
}

torch::Tensor image_tensor(const RgbFrame& f, torch::Device device) {
  auto t = torch::from_blob(const_cast<uint8_t*>(f.rgb.data()), {f.height, f.width, 3}, torch::kUInt8)
               .to(torch::kFloat)
               .permute({2, 0, 1});
  return (t / 127.5 - 1.0).reshape({1, 3, 1, f.height, f.width}).to(device);
}

void check_multiple(const char* what, int value, int unit) {
  if (value < unit || value % unit != 0)
    throw Error(ErrorCode::invalid_argument, what,
                cat(what, " ", value, " is not a multiple of ", unit, " (VAE compression x DiT patch)"));
}

std::string format_double(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// Euler steps over `times` on x, re-pinning conditioning frames after each.
torch::Tensor integrate(ModelBundle& b, torch::Tensor x, const std::vector<double>& times,
                        const TextBatch& text, double cfg, double fps, const torch::Tensor& cond_mask,
                        const torch::Tensor& cond_latent, const CancelToken& cancel, const PreviewFn& preview,
                        ProgressMeter* meter) {
  const int total = static_cast<int>(times.size()) - 1;
  for (int i = 0; i < total; ++i) {
    cancel.throw_if_cancelled("generate");
    auto v = velocity(b, x, times[i], text, cfg, fps, cond_mask);
    if (preview) {
      auto x0 = x + times[i] * v;
      if (cond_latent.defined()) x0.narrow(2, 0, 1).copy_(cond_latent);
      preview(i + 1, total, preview_frames(b, x0));
    }
    x = x + (times[i] - times[i + 1]) * v;
    if (cond_latent.defined()) x.narrow(2, 0, 1).copy_(cond_latent);
    if (meter) meter->update(i + 1);
  }
  return x;
}

// The video of a finished latent: the whole latent decoded, or, for codecs that decode image-to-video results
// as the release does, the latents after the pinned first one decoded to frames - 1 frames behind the
// conditioning image itself (`first_frame`, the fitted image).
std::vector<RgbFrame> decode_video(ModelBundle& b, const torch::Tensor& latent, int frames,
                                   const std::optional<RgbFrame>& first_frame) {
  if (first_frame && b.codec->decodes_after_condition_frame()) {
    std::vector<RgbFrame> out = {*first_frame};
    if (frames > 1) {
      auto rest = video_to_frames(b.codec->decode(latent.narrow(2, 1, latent.size(2) - 1), frames - 1)[0]);
      out.insert(out.end(), rest.begin(), rest.end());
    }
    return out;
  }
  return video_to_frames(b.codec->decode(latent, frames)[0]);
}

}  // namespace

void validate_request(const ModelBundle& b, const GenerateRequest& r) {
  const VideoCodec& codec = *b.codec;
  const auto& dit = b.preset.dit;
  if (r.steps < 1)
    throw Error(ErrorCode::invalid_argument, "steps", cat("steps must be at least 1, got ", r.steps));
  if (!(r.cfg_scale >= 0))
    throw Error(ErrorCode::invalid_argument, "cfg", cat("cfg scale must be >= 0, got ", r.cfg_scale));
  if (!(r.fps > 0)) throw Error(ErrorCode::invalid_argument, "fps", cat("fps must be positive, got ", r.fps));
  check_multiple("height", r.height, codec.compress_h() * dit.patch_h);
  check_multiple("width", r.width, codec.compress_w() * dit.patch_w);
  const int64_t latent_frames = codec.latent_frames(r.frames);
  if (latent_frames % dit.patch_t != 0)
    throw Error(ErrorCode::invalid_argument, "frames",
                cat("frames ", r.frames, " gives ", latent_frames,
                    " latent frames, not a multiple of the patch ", dit.patch_t));
  if (trim(r.prompt).empty()) throw Error(ErrorCode::invalid_argument, "prompt", "the prompt is empty");
  for (const auto* text : {&r.prompt, &r.negative_prompt}) {
    if (text->empty()) continue;
    try {
      (void)b.tokenizer->encode(*text, dit.text_tokens, b.prompt_limit);
    } catch (const Error& e) {
      throw Error(e.code(), text == &r.prompt ? "prompt" : "negative prompt", e.message());
    }
  }
  if (r.first_frame && (r.first_frame->pixels.width != r.width || r.first_frame->pixels.height != r.height))
    throw Error(
        ErrorCode::invalid_argument, r.first_frame->name,
        cat("the conditioning image is ", r.first_frame->pixels.width, "x", r.first_frame->pixels.height,
            ", not the requested ", r.width, "x", r.height, " (load_condition_image fits it)"));
}

namespace {

// The seeded noise x_1 [1, C, n, h, w] and the shifted Euler schedule of a (validated) request.
struct StartingPoint {
  torch::Tensor noise;
  double shift_ratio = 0;
  std::vector<double> times;
};

StartingPoint starting_point(const ModelBundle& b, const GenerateRequest& r) {
  const VideoCodec& codec = *b.codec;
  const int64_t n = codec.latent_frames(r.frames);
  const int64_t h = r.height / codec.compress_h(), w = r.width / codec.compress_w(),
                c = codec.latent_channels();
  StartingPoint start;
  start.shift_ratio = timestep_shift_ratio(n, r.height, r.width, r.shift_base_px.value_or(b.shift_base_px));
  start.times = euler_timesteps(r.steps, start.shift_ratio);
  auto gen = at::detail::createCPUGenerator(r.seed);
  start.noise = at::randn({1, c, n, h, w}, gen, torch::TensorOptions().dtype(torch::kFloat)).to(b.device);
  return start;
}

}  // namespace

SampleResult sample(ModelBundle& b, const GenerateRequest& r, const CancelToken& cancel,
                    const PreviewFn& preview, const ProgressFn& progress) {
  validate_request(b, r);
  torch::NoGradGuard no_grad;
  const StartingPoint start = starting_point(b, r);
  SampleResult result;
  result.shift_ratio = start.shift_ratio;
  const auto& times = start.times;
  const int64_t n = start.noise.size(2);
  auto x = start.noise;

  torch::Tensor cond_mask;
  std::optional<RgbFrame> image;
  if (r.first_frame) {
    image = r.first_frame->pixels;
    result.cond_latent = b.codec->encode(image_tensor(*image, b.device)).to(x.dtype());
    cond_mask = torch::zeros({1, n}, torch::TensorOptions().dtype(torch::kBool).device(b.device));
    cond_mask.index_put_({0, 0}, true);
    x.narrow(2, 0, 1).copy_(result.cond_latent);
  }

  const bool guided = r.cfg_scale != 1.0;
  const TextBatch text = guidance_text(b, r, guided);
  ProgressMeter meter(progress, "generate", "steps", r.steps);
  x = integrate(b, x, times, text, r.cfg_scale, r.fps, cond_mask, result.cond_latent, cancel, preview,
                &meter);
  meter.flush();

  cancel.throw_if_cancelled("generate");
  result.latent = x;
  result.frames = decode_video(b, x, r.frames, image);
  auto& m = result.metadata;
  m["title"] = r.prompt;
  m["prompt"] = r.prompt;
  m["negative_prompt"] = r.negative_prompt;
  m["seed"] = std::to_string(r.seed);
  m["steps"] = std::to_string(r.steps);
  m["cfg"] = format_double(r.cfg_scale);
  m["model"] = b.run.preset;
  m["run"] = b.run.name;
  m["checkpoint_step"] = std::to_string(b.checkpoint_step);
  m["weights"] = to_string(b.weights);
  m["vae_run"] = b.run.vae_run;
  m["sampler"] = "euler (shifted, r=" + format_double(result.shift_ratio) + ")";
  if (r.first_frame) m["first_frame"] = r.first_frame->name;
  if (!b.adapters.empty()) {
    std::string list;
    for (const auto& a : b.adapters) list += (list.empty() ? "" : ", ") + a;
    m["lora"] = list;
  }
  m["comment"] = cat("seed ", r.seed, ", ", r.steps, " steps, cfg ", format_double(r.cfg_scale), ", ",
                     b.run.name, " step ", b.checkpoint_step);
  return result;
}

void enhance(ModelBundle& e, const GenerateRequest& r, const EnhanceOptions& o, SampleResult& result,
             const CancelToken& cancel) {
  if (!result.latent.defined())
    throw Error(ErrorCode::invalid_argument, "enhance", "nothing to enhance: no latent");
  if (e.codec->latent_channels() != result.latent.size(1))
    throw Error(ErrorCode::invalid_argument, e.run.name,
                cat("enhancer latents have ", e.codec->latent_channels(), " channels; the video has ",
                    result.latent.size(1)));
  if (o.steps < 1 || !(o.sigma > 0) || o.sigma > 1)
    throw Error(ErrorCode::invalid_argument, "enhance", "sigma must be in (0, 1] and steps at least 1");
  torch::NoGradGuard no_grad;
  const int64_t n = result.latent.size(2);
  const double ratio = timestep_shift_ratio(n, r.height, r.width, r.shift_base_px.value_or(e.shift_base_px));
  const auto times = refine_timesteps(o.steps, o.sigma, ratio);
  // Its own noise stream, derived from the seed so that enhancing stays reproducible.
  auto gen = at::detail::createCPUGenerator(r.seed ^ 0x5d1f0e2a9b3c4d77ull);
  auto eps = at::randn(result.latent.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat))
                 .to(result.latent.device(), result.latent.dtype());
  auto x = (1.0 - o.sigma) * result.latent + o.sigma * eps;
  torch::Tensor cond_mask;
  if (result.cond_latent.defined()) {
    cond_mask = torch::zeros({1, n}, torch::TensorOptions().dtype(torch::kBool).device(x.device()));
    cond_mask.index_put_({0, 0}, true);
    x.narrow(2, 0, 1).copy_(result.cond_latent);
  }
  const TextBatch text = guidance_text(e, r, o.cfg_scale != 1.0);
  x = integrate(e, x, times, text, o.cfg_scale, r.fps, cond_mask, result.cond_latent, cancel, nullptr,
                nullptr);
  result.latent = x;
  std::optional<RgbFrame> image;
  if (result.cond_latent.defined() && !result.frames.empty()) image = result.frames.front();
  result.frames = decode_video(e, x, static_cast<int>(result.frames.size()), image);
  result.metadata["enhancer"] = cat(e.run.name, " step ", e.checkpoint_step, ", sigma ",
                                    format_double(o.sigma), ", cfg ", format_double(o.cfg_scale));
}

PromptSensitivity prompt_sensitivity(ModelBundle& b, const GenerateRequest& r,
                                     const std::map<std::string, std::vector<std::string>>& groups,
                                     const CancelToken& cancel) {
  if (r.first_frame)
    throw Error(ErrorCode::invalid_argument, "image", "word sensitivity is measured for T2V only");
  validate_request(b, r);
  std::vector<std::string> prompts;  // every alternative, group by group
  for (const auto& [name, alternatives] : groups) {
    for (const auto& prompt : alternatives) {
      GenerateRequest check = r;
      check.prompt = prompt;
      validate_request(b, check);
      prompts.push_back(prompt);
    }
  }
  torch::NoGradGuard no_grad;
  const StartingPoint start = starting_point(b, r);
  const bool guided = r.cfg_scale != 1.0;
  const TextBatch text = guidance_text(b, r, guided);
  std::vector<torch::Tensor> features, masks;
  for (const auto& prompt : prompts) {
    TextBatch t = encode_text(b, prompt);
    features.push_back(t.features);
    masks.push_back(t.mask);
  }
  const TextBatch alternatives =
      prompts.empty() ? TextBatch{} : TextBatch{torch::cat(features), torch::cat(masks)};

  PromptSensitivity out;
  auto x = start.noise;
  const int total = static_cast<int>(start.times.size()) - 1;
  for (int i = 0; i < total; ++i) {
    cancel.throw_if_cancelled("sensitivity");
    const double t = start.times[i];
    const auto both = velocities(b, x, t, text, r.fps, {});  // cond (and uncond) in one batch
    const auto x0 = x + t * both.narrow(0, 0, 1);
    const double scale = std::max(x0.pow(2).mean().sqrt().item<double>(), 1e-12);
    torch::Tensor rms;  // [P]: one value per alternative prompt
    if (alternatives.features.defined())
      rms = (x + t * velocities(b, x, t, alternatives, r.fps, {}) - x0).pow(2).flatten(1).mean(1).sqrt();
    int64_t k = 0;
    for (const auto& [name, group] : groups) {
      const auto size = static_cast<int64_t>(group.size());
      out.change[name].push_back(size ? rms.narrow(0, k, size).mean().item<double>() / scale : 0.0);
      k += size;
    }
    out.times.push_back(t);
    x = x + (t - start.times[i + 1]) * guide(both, r.cfg_scale);
  }
  return out;
}

}  // namespace mugv
