// mugv generate --run NAME | --model DIR|NAME --prompt "..." --out F: text/image-to-video with a trained run
// or a released MUG-V model folder, a progress bar with ETA, and the prompt, seed and model kept in the
// file's metadata. With --model the release's defaults apply unless given: its negative prompt, fps 30, the
// aesthetic-score suffix of the prompt.
#include "command.h"

#include "catalog/catalog.h"
#include "catalog/generations.h"
#include "catalog/prompts.h"
#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "media/encoder.h"
#include "model/compute.h"
#include "model/release_files.h"
#include "sample/release_model.h"
#include "sample/sampler.h"
#include "sample/video_io.h"

#include <nlohmann/json.hpp>

#include <iostream>

namespace mugv::cli {
namespace {

void define(ParamRegistry& r) {
  r.add(param("generate.run", "--run", ParamType::text, nullptr, "the DiT run to sample from", "generate"));
  auto model =
      param("generate.model", "--model", ParamType::path, nullptr,
            "a released model instead of a run: its folder (dit.pt, vae.pt, a T5 folder) or its name under "
            "$MUGV_HOME/models",
            "generate");
  model.names_under_home = "models";
  r.add(model);
  auto offload =
      param("generate.offload", "--offload", ParamType::choice, "auto",
            "with --model: stream the DiT's blocks to the device when it does not fit (auto), always "
            "(blocks) or never (none)",
            "generate");
  offload.choices = {"auto", "none", "blocks"};
  r.add(offload);
  auto dtype = param("generate.dtype", "--dtype", ParamType::choice, "auto",
                     "with --model: the DiT and T5 dtype (auto: bf16 on a GPU, fp32 on a CPU)", "generate");
  dtype.choices = {"auto", "fp32", "bf16"};
  r.add(dtype);
  auto length =
      param("generate.length", "--length", ParamType::choice, nullptr,
            "the release's clip lengths: 5s (105 frames) or 3s (73 frames); overrides --frames", "generate");
  length.choices = {"5s", "3s"};
  r.add(length);
  auto aspect =
      param("generate.aspect", "--aspect", ParamType::choice, nullptr,
            "the release's 720p sizes, height:width as it names them: 9:16 (1280x720 landscape), 1:1 "
            "(960x960), 16:9 (720x1280 portrait); overrides --size",
            "generate");
  aspect.choices = {"9:16", "1:1", "16:9"};
  r.add(aspect);
  auto aesthetic = param(
      "generate.aesthetic", "--aesthetic", ParamType::real, 6.0,
      "with --model: the aesthetic score appended to the prompt as the release does (0: none)", "generate");
  aesthetic.min_value = 0.0;
  r.add(aesthetic);
  r.add(param("generate.prompt", "--prompt", ParamType::text, nullptr, "what the video should show",
              "generate"));
  r.add(param(
      "generate.negative", "--negative", ParamType::text, "",
      "what to steer away from (empty: the learned null caption; with --model the release's negative prompt)",
      "generate"));
  r.add(param("generate.image", "--image", ParamType::path, nullptr,
              "first-frame image (I2V / TI2V); scaled and centre-cropped to --size", "generate"));
  r.add(param("generate.out", "--out", ParamType::path, nullptr,
              "output: .mp4 (H.264), .webm (VP9), .gif, or a folder for PNG frames", "generate"));
  auto frames = param("generate.frames", "--frames", ParamType::integer, 17,
                      "frames: a multiple of the VAE's time compression, or one more", "generate");
  frames.min_value = 1;
  r.add(frames);
  auto size = param("generate.size", "--size", ParamType::size2d, "64x64",
                    "video size WxH: multiples of VAE compression x patch", "generate");
  size.min_value = 1;
  r.add(size);
  auto steps = param("generate.steps", "--steps", ParamType::integer, 25, "Euler steps", "generate");
  steps.min_value = 1;
  steps.max_value = 1000;
  r.add(steps);
  auto cfg = param("generate.cfg", "--cfg", ParamType::real, 4.0, "classifier-free guidance scale (1: off)",
                   "generate");
  cfg.min_value = 0.0;
  r.add(cfg);
  auto weights = param("generate.weights", "--weights", ParamType::choice, "auto",
                       "which weights of the checkpoint: auto (EMA when present), ema or model", "generate");
  weights.choices = {"auto", "ema", "model"};
  r.add(weights);
  r.add(device_param("generate.device", "generate"));
  auto seed = param("generate.seed", "--seed", ParamType::integer, 0,
                    "noise seed; the same seed gives the same video", "generate");
  seed.min_value = 0.0;
  r.add(seed);
  auto fps = param("generate.fps", "--fps", ParamType::real, 8.0,
                   "frame rate the model is told and the file gets", "generate");
  fps.min_value = 0.1;
  r.add(fps);
  auto lora = param(
      "generate.lora", "--lora", ParamType::list, nlohmann::json::array(),
      "adapter files to apply, FILE[:SCALE] (PEFT/diffusers safetensors or torch files), comma-separated",
      "generate");
  lora.item_type = ParamType::path;
  r.add(lora);
  r.add(param("generate.lora_merge", "--lora-merge", ParamType::boolean, false,
              "merge the adapters into the weights before sampling (default: applied at run time)",
              "generate"));
  r.add(param("generate.enhance", "--enhance", ParamType::boolean, false,
              "refine the result SDEdit-style (noise to 0.3, one step, CFG 2)", "generate"));
  r.add(param("generate.enhance_run", "--enhance-run", ParamType::text, nullptr,
              "run used by --enhance (default: the same run)", "generate"));
  auto crf = param("generate.crf", "--crf", ParamType::integer, 17, "quality for mp4/webm (lower is better)",
                   "generate");
  crf.min_value = 0;
  crf.max_value = 63;
  r.add(crf);
}

// Keeps the generation in the catalog's history (the studio's prompt library shows it): linked to the
// saved prompt with the same text when there is one. A catalog that cannot be written costs the history
// entry only, never the video.
void record_generation(const GenerateRequest& request, const std::optional<fs::path>& image,
                       const ModelBundle& bundle, const fs::path& out, const SampleResult& result) {
  try {
    Catalog catalog = Catalog::open(catalog_path());
    Generation g;
    g.prompt_text = request.prompt;
    g.negative = request.negative_prompt;
    PromptQuery query;
    query.text_contains = request.prompt;
    for (const auto& p : list_prompts(catalog, query))
      if (p.text == request.prompt) g.prompt_id = p.id;
    g.seed = request.seed;
    g.steps = request.steps;
    g.cfg_scale = request.cfg_scale;
    g.width = request.width;
    g.height = request.height;
    g.frames = request.frames;
    if (image) g.image_path = *image;
    g.output_path = fs::absolute(out);
    g.settings = {{bundle.run.preset == "release" ? "model" : "run", bundle.run.name},
                  {"checkpoint_step", bundle.checkpoint_step},
                  {"weights", to_string(bundle.weights)},
                  {"fps", request.fps},
                  {"metadata", result.metadata}};
    (void)add_generation(catalog, g);
  } catch (const Error& e) {
    log_warning(cat("generation not recorded in the catalog: ", e.what()));
  }
}

bool given_on_command_line(const ParamValues& v, std::string_view key) {
  return v.has(key) && v.source_of(key) != ParamSource::builtin_default;
}

int run(const Invocation& inv) {
  const auto& v = inv.values;
  const bool release = v.has("generate.model");
  if (release && v.has("generate.run"))
    throw Error(ErrorCode::usage, "--model", "give --run or --model, not both");
  if (!release && !v.has("generate.run"))
    throw Error(ErrorCode::usage, "--run", "name the run to sample from (or a released model with --model)");
  if (!v.has("generate.prompt")) throw Error(ErrorCode::usage, "--prompt", "a prompt is required");
  if (!v.has("generate.out"))
    throw Error(ErrorCode::usage, "--out", "give --out FILE.mp4|webm|gif or a folder");
  const fs::path out = v.get_text("generate.out");
  if (!format_from_path(out))
    throw Error(ErrorCode::usage, out.string(),
                "unknown output type; use .mp4, .webm, .gif or a folder for PNG frames");

  GenerateRequest request;
  request.prompt = v.get_text("generate.prompt");
  request.negative_prompt = v.get_text("generate.negative");
  if (release) {
    if (const double score = v.get_real("generate.aesthetic"); score > 0)
      request.prompt = with_aesthetic_score(request.prompt, score);
    if (!given_on_command_line(v, "generate.negative")) request.negative_prompt = release_negative_prompt();
  }
  request.seed = static_cast<uint64_t>(v.get_int("generate.seed"));
  request.steps = static_cast<int>(v.get_int("generate.steps"));
  request.cfg_scale = v.get_real("generate.cfg");
  request.frames = static_cast<int>(v.get_int("generate.frames"));
  const Size2D size = v.get_size2d("generate.size");
  request.width = static_cast<int>(size.width);
  request.height = static_cast<int>(size.height);
  if (v.has("generate.length"))
    request.frames =
        v.get_text("generate.length") == "5s" ? ReleaseDefaults::frames_5s : ReleaseDefaults::frames_3s;
  if (v.has("generate.aspect")) {
    // The release's table (mug_v/utils.py) names sizes height:width; its 3:4 and 4:3 sizes (1110 and 1108 px)
    // are not multiples of the VAE's 8 and are not offered.
    const std::string a = v.get_text("generate.aspect");
    request.height = a == "9:16" ? 720 : a == "1:1" ? 960 : 1280;
    request.width = a == "9:16" ? 1280 : a == "1:1" ? 960 : 720;
  }
  request.fps = release && !given_on_command_line(v, "generate.fps") ? ReleaseDefaults::fps
                                                                     : v.get_real("generate.fps");
  // The image is read and fitted before the model loads, so a bad file fails at once.
  std::optional<fs::path> image;
  if (v.has("generate.image")) {
    image = fs::path(v.get_text("generate.image"));
    request.first_frame = load_condition_image(*image, request.width, request.height);
  }

  const torch::Device device = choose_compute_device(v.get_text("generate.device"));
  ModelBundle bundle;
  if (release) {
    ReleaseLoadOptions options;
    options.device = device;
    if (v.get_text("generate.dtype") != "auto")
      options.dtype = v.get_text("generate.dtype") == "bf16" ? torch::kBFloat16 : torch::kFloat32;
    options.offload =
        offload_mode_from_string(v.get_text("generate.offload")).value_or(OffloadMode::automatic);
    options.frames = request.frames;
    options.width = request.width;
    options.height = request.height;
    const std::string given = v.get_text("generate.model");
    const fs::path dir = resolve_path_value(*v.registry().find_by_key("generate.model"), given);
    if (!fs::is_directory(dir))
      throw Error(ErrorCode::not_found, given,
                  cat("no such model folder (", dir.string(), "); installed models are in ",
                      models_dir().string(), " (mugv model list)"));
    bundle = load_release_model(dir, options);
  } else {
    bundle = load_for_inference(
        v.get_text("generate.run"), device,
        weights_kind_from_string(v.get_text("generate.weights")).value_or(WeightsKind::unknown));
  }
  std::vector<LoraArgument> adapters;
  for (const auto& text : v.get_text_list("generate.lora")) adapters.push_back(parse_lora_argument(text));
  if (!adapters.empty()) apply_lora_files(bundle, adapters, v.get_bool("generate.lora_merge"));
  validate_request(bundle, request);
  PreviewFn preview;
  if (inv.reporter.preview) {
    const auto report = inv.reporter.preview;
    preview = [report](int step, int, const std::vector<RgbFrame>& frames) { report(step, frames); };
  }
  SampleResult result = sample(bundle, request, inv.cancel, preview, inv.progress);
  finish_progress_line();
  if (v.get_bool("generate.enhance")) {
    if (v.has("generate.enhance_run") && v.get_text("generate.enhance_run") != bundle.run.name) {
      ModelBundle enhancer = load_for_inference(v.get_text("generate.enhance_run"), bundle.device);
      enhance(enhancer, request, EnhanceOptions{}, result, inv.cancel);
    } else {
      enhance(bundle, request, EnhanceOptions{}, result, inv.cancel);
    }
  }
  save_video(out, result, request.fps, static_cast<int>(v.get_int("generate.crf")));
  record_generation(request, image, bundle, out, result);

  if (inv.json) {
    nlohmann::json j = {{"out", out.string()},
                        {"frames", result.frames.size()},
                        {"width", request.width},
                        {"height", request.height},
                        {"checkpoint_step", bundle.checkpoint_step},
                        {"weights", to_string(bundle.weights)},
                        {"metadata", result.metadata}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "wrote " << out.string() << "  (" << result.frames.size() << " frames " << request.width
              << "x" << request.height << ", " << bundle.run.name << " step " << bundle.checkpoint_step
              << ", seed " << request.seed << ")\n";
  }
  return 0;
}

}  // namespace

Command generate_command() {
  Command c;
  c.words = {"generate"};
  c.summary =
      "generate a video from a prompt (and optionally a first-frame image) with a trained run or a released "
      "model";
  c.usage =
      "--run NAME | --model DIR|NAME --prompt \"...\" --out F.mp4|webm|gif|DIR [--negative --image F "
      "--frames "
      "--size WxH --steps --cfg --seed --fps --enhance --offload auto|none|blocks --dtype auto|fp32|bf16]";
  c.define = define;
  c.run = run;
  c.job_kind = "generate";
  return c;
}

}  // namespace mugv::cli
