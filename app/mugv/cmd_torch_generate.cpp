// mugv generate --run NAME | --model DIR|NAME --prompt "..." --out F: text/image-to-video with a trained run
// or a released MUG-V model folder, a progress bar with ETA, and the prompt, seed and model kept in the
// file's metadata. With --model the release's defaults apply unless given: its negative prompt, fps 30, the
// aesthetic-score suffix of the prompt.
#include "command.h"

#include "catalog/catalog.h"
#include "catalog/generations.h"
#include "catalog/preferences.h"
#include "catalog/prompts.h"
#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "core/utf8.h"
#include "media/encoder.h"
#include "model/compute.h"
#include "model/release_files.h"
#include "sample/release_model.h"
#include "sample/sampler.h"
#include "sample/video_io.h"
#include "train/preference.h"

#include <nlohmann/json.hpp>

#include <array>
#include <fstream>
#include <iomanip>
#include <iostream>

namespace mugv::cli {
namespace {

void define_generate(ParamRegistry& r) {
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
// saved prompt with the same text when there is one, with its final latent kept beside the video
// (train/preference.h) so that labelled generations can post-train the model. A catalog or latent that cannot
// be written costs the history entry only, never the video.
// Returns the generation's id, or nullopt when it could not be recorded.
std::optional<int64_t> record_generation(const GenerateRequest& request, const std::optional<fs::path>& image,
                                         const ModelBundle& bundle, const fs::path& out,
                                         const SampleResult& result, const std::string& latent_space) {
  std::string latent_file;
  try {
    const fs::path file = fs::absolute(generation_latent_path(out));
    write_generation_latent(file, result.latent, request.prompt, latent_space, request.fps, request.frames,
                            request.height, request.width);
    latent_file = file.string();
  } catch (const std::exception& e) {
    log_warning(
        cat("the generation's latent was not kept (it cannot be used for post-training): ", e.what()));
  }
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
    if (!latent_file.empty()) g.settings["latent"] = latent_file;
    return add_generation(catalog, g).id;
  } catch (const Error& e) {
    log_warning(cat("generation not recorded in the catalog: ", e.what()));
  }
  return std::nullopt;
}

bool given_on_command_line(const ParamValues& v, std::string_view key) {
  return v.has(key) && v.source_of(key) != ParamSource::builtin_default;
}

int run_generate(const Invocation& inv) {
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
  std::string latent_space;  // which VAE's latents the model denoises (train/preference.h)
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
    latent_space = release_latent_cache_name(find_release_model(dir));
  } else {
    bundle = load_for_inference(
        v.get_text("generate.run"), device,
        weights_kind_from_string(v.get_text("generate.weights")).value_or(WeightsKind::unknown));
    latent_space = bundle.run.vae_run;
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
  (void)record_generation(request, image, bundle, out, result, latent_space);

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

void define_pairs(ParamRegistry& r) {
  r.add(param("pairs.run", "--run", ParamType::text, nullptr, "the DiT run to generate with", "pairs"));
  r.add(param("pairs.prompts", "--prompts", ParamType::path, nullptr,
              "text file: one prompt per line (blank lines and lines starting with # are skipped)", "pairs"));
  auto count = param("pairs.count", "--count", ParamType::integer, 0,
                     "pairs to make (0: one per prompt; fewer than the prompts: the first ones; more: the "
                     "prompts again in order, every pair with seeds of its own)",
                     "pairs");
  count.min_value = 0;
  r.add(count);
  auto seed = param("pairs.seed", "--seed", ParamType::integer, 0,
                    "noise seed of the first generation; pair k uses seed + 2k and seed + 2k + 1", "pairs");
  seed.min_value = 0;
  r.add(seed);
  r.add(param("pairs.out_dir", "--out-dir", ParamType::path, nullptr,
              "where the videos go (default: $MUGV_HOME/generations/pairs-RUN)", "pairs"));
  auto steps = param("pairs.steps", "--steps", ParamType::integer, 25, "Euler steps", "pairs");
  steps.min_value = 1;
  r.add(steps);
  auto cfg = param("pairs.cfg", "--cfg", ParamType::real, 4.0, "classifier-free guidance scale", "pairs");
  cfg.min_value = 0.0;
  r.add(cfg);
  r.add(param("pairs.size", "--size", ParamType::size2d, "64x64", "video size WxH", "pairs"));
  auto frames = param("pairs.frames", "--frames", ParamType::integer, 17, "frames", "pairs");
  frames.min_value = 1;
  r.add(frames);
  auto fps = param("pairs.fps", "--fps", ParamType::real, 8.0, "frame rate", "pairs");
  fps.min_value = 0.1;
  r.add(fps);
  auto weights = param("pairs.weights", "--weights", ParamType::choice, "auto",
                       "which weights of the checkpoint: auto (EMA when present), ema or model", "pairs");
  weights.choices = {"auto", "ema", "model"};
  r.add(weights);
  r.add(device_param("pairs.device", "pairs"));
}

std::vector<std::string> read_prompt_lines(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw Error(ErrorCode::not_found, file.string(), "cannot read the prompt file");
  std::vector<std::string> prompts;
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    auto text = trim(++line_no == 1 ? without_bom(line) : std::string_view(line));
    if (text.empty() || text[0] == '#') continue;
    // Checked before any generation runs: the pairs' stored metadata is JSON, which needs UTF-8.
    if (!is_utf8(text))
      throw Error(ErrorCode::format, file.string(), cat("line ", line_no, " is not UTF-8 text"));
    prompts.push_back(text);
  }
  if (prompts.empty()) throw Error(ErrorCode::invalid_argument, file.string(), "holds no prompt");
  return prompts;
}

// `mugv pairs`: two generations of each prompt (different seeds), stored as pending preference pairs for the
// labelling view and `mugv label`. Each generation keeps its latent, so labelled pairs can post-train the
// run.
int run_pairs(const Invocation& inv) {
  const auto& v = inv.values;
  if (!v.has("pairs.run")) throw Error(ErrorCode::usage, "--run", "name the run to generate with");
  if (!v.has("pairs.prompts")) throw Error(ErrorCode::usage, "--prompts", "give a prompt file");
  const std::string run = v.get_text("pairs.run");
  std::vector<std::string> prompts = read_prompt_lines(v.get_text("pairs.prompts"));
  if (const int64_t count = v.get_int("pairs.count"); count > 0) {
    // Several pairs of one prompt give the labeller more chances of two videos that differ.
    std::vector<std::string> chosen;
    for (int64_t k = 0; k < count; ++k) chosen.push_back(prompts[size_t(k) % prompts.size()]);
    prompts = std::move(chosen);
  }
  const fs::path out_dir = v.has("pairs.out_dir") ? fs::path(v.get_text("pairs.out_dir"))
                                                  : mugv_home() / "generations" / cat("pairs-", run);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error(ErrorCode::io, out_dir.string(), "cannot create the folder: " + ec.message());
  GenerateRequest base;
  base.steps = static_cast<int>(v.get_int("pairs.steps"));
  base.cfg_scale = v.get_real("pairs.cfg");
  const Size2D size = v.get_size2d("pairs.size");
  base.width = static_cast<int>(size.width);
  base.height = static_cast<int>(size.height);
  base.frames = static_cast<int>(v.get_int("pairs.frames"));
  base.fps = v.get_real("pairs.fps");
  ModelBundle bundle = load_for_inference(
      run, choose_compute_device(v.get_text("pairs.device")),
      weights_kind_from_string(v.get_text("pairs.weights")).value_or(WeightsKind::unknown));
  base.prompt = prompts.front();
  validate_request(bundle, base);
  const uint64_t first_seed = static_cast<uint64_t>(v.get_int("pairs.seed"));
  Catalog catalog = Catalog::open(catalog_path());
  ProgressMeter meter(inv.progress, "pairs", "pairs", int64_t(prompts.size()));
  nlohmann::json made = nlohmann::json::array();
  for (size_t k = 0; k < prompts.size(); ++k) {
    std::array<std::optional<int64_t>, 2> ids;
    for (size_t side = 0; side < 2; ++side) {
      GenerateRequest request = base;
      request.prompt = prompts[k];
      request.seed = first_seed + 2 * k + side;
      validate_request(bundle, request);
      const SampleResult result = sample(bundle, request, inv.cancel);
      const fs::path out =
          out_dir / cat("pair-", std::setw(4), std::setfill('0'), k, side ? "-b" : "-a", ".mp4");
      save_video(out, result, request.fps);
      ids[side] = record_generation(request, std::nullopt, bundle, out, result, bundle.run.vae_run);
    }
    if (!ids[0] || !ids[1])
      throw Error(ErrorCode::io, catalog_path().string(),
                  cat("pair ", k, ": its generations were not recorded"));
    const Preference pair = add_preference_pair(catalog, *ids[0], *ids[1]);
    made.push_back({{"pair", pair.id}, {"prompt", prompts[k]}, {"a", *ids[0]}, {"b", *ids[1]}});
    meter.update(int64_t(k + 1), prompts[k]);
  }
  meter.flush();
  finish_progress_line();
  if (inv.json)
    std::cout << nlohmann::json{{"pairs", made}, {"out_dir", out_dir.string()}}.dump() << "\n";
  else
    std::cout << made.size() << " pending pairs in " << out_dir.string()
              << " (label them in the studio or with "
              << "`mugv label`)\n";
  return 0;
}

}  // namespace

Command pairs_command() {
  Command c;
  c.words = {"pairs"};
  c.summary = "generate two videos of each prompt with a run and store them as pending preference pairs";
  c.usage =
      "--run NAME --prompts FILE [--count N --seed S --out-dir DIR --steps --cfg --size --frames --fps]";
  c.define = define_pairs;
  c.run = run_pairs;
  c.job_kind = "generate";
  return c;
}

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
  c.define = define_generate;
  c.run = run_generate;
  c.job_kind = "generate";
  return c;
}

}  // namespace mugv::cli
