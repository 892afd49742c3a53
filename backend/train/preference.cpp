#include "train/preference.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "model/weights.h"

namespace mugv {
namespace {

void check_errors(const torch::Tensor& a, const torch::Tensor& b, const char* what) {
  if (a.dim() != 1 || !a.sizes().equals(b.sizes()))
    throw Error(
        ErrorCode::invalid_argument, what,
        cat("per-sample errors must be [B] tensors of one size (got ", a.sizes(), " and ", b.sizes(), ")"));
}

void check_weights(double beta, double sft_weight) {
  if (!(beta > 0))
    throw Error(ErrorCode::invalid_argument, "--preference-beta", cat("must be > 0 (got ", beta, ")"));
  if (!(sft_weight >= 0))
    throw Error(ErrorCode::invalid_argument, "--preference-sft-weight",
                cat("must be >= 0 (got ", sft_weight, ")"));
}

}  // namespace

const char* to_string(TrainObjective objective) {
  switch (objective) {
    case TrainObjective::flow:
      return "flow";
    case TrainObjective::dpo:
      return "dpo";
    case TrainObjective::kto:
      return "kto";
    default:
      return "unknown";
  }
}

std::optional<TrainObjective> train_objective_from_string(std::string_view name) {
  if (name == "flow") return TrainObjective::flow;
  if (name == "dpo") return TrainObjective::dpo;
  if (name == "kto") return TrainObjective::kto;
  return std::nullopt;
}

PreferenceLoss dpo_loss(const torch::Tensor& policy_winner, const torch::Tensor& policy_loser,
                        const torch::Tensor& reference_winner, const torch::Tensor& reference_loser,
                        double beta, double sft_weight, const SumOverRanks& sum_over_ranks) {
  check_errors(policy_winner, policy_loser, "dpo");
  check_errors(policy_winner, reference_winner, "dpo");
  check_errors(policy_winner, reference_loser, "dpo");
  check_weights(beta, sft_weight);
  const auto delta = (policy_winner - reference_winner.detach()) - (policy_loser - reference_loser.detach());
  const auto terms = -torch::nn::functional::logsigmoid(-0.5 * beta * delta);
  // The whole batch's pair count and statistics in one sum over the ranks.
  const auto d = delta.detach().to(torch::kFloat64);
  const bool anchored = sft_weight > 0;  // the anchor's term is built only when asked for
  const auto f64 = d.options();
  auto stats =
      torch::stack({torch::full({}, double(d.size(0)), f64), terms.detach().to(torch::kFloat64).sum(),
                    (d < 0).to(torch::kFloat64).sum(), -d.sum(),
                    anchored ? policy_winner.detach().to(torch::kFloat64).sum() : torch::zeros({}, f64)})
          .cpu();
  if (sum_over_ranks) sum_over_ranks(stats);
  const auto st = stats.accessor<double, 1>();
  const double pairs = std::max(1.0, st[0]);
  PreferenceLoss out;
  out.loss = terms.sum() / pairs;
  out.value = st[1] / pairs;
  if (anchored) {
    out.loss = out.loss + sft_weight * (policy_winner.sum() / pairs);
    out.sft = st[4] / pairs;
    out.value += sft_weight * out.sft;
  }
  out.accuracy = st[2] / pairs;
  out.margin = st[3] / pairs;
  return out;
}

PreferenceLoss kto_loss(const torch::Tensor& policy, const torch::Tensor& reference,
                        const torch::Tensor& desirable, double beta, double sft_weight,
                        double desirable_weight, double undesirable_weight,
                        const SumOverRanks& sum_over_ranks) {
  check_errors(policy, reference, "kto");
  check_weights(beta, sft_weight);
  if (desirable.dim() != 1 || desirable.size(0) != policy.size(0) || desirable.scalar_type() != torch::kBool)
    throw Error(ErrorCode::invalid_argument, "kto", "desirable must be a [B] bool tensor");
  const auto reward = reference.detach() - policy;
  const auto r = reward.detach().to(torch::kFloat64);
  const auto good_mask = desirable.to(r.device()), bad_mask = good_mask.logical_not();
  auto sum_of = [](const torch::Tensor& t) { return t.to(torch::kFloat64).sum(); };
  // First sum: the item counts and the rewards' total, for z over the whole batch.
  auto counts =
      torch::stack({torch::full({}, double(r.size(0)), r.options()), r.sum(), sum_of(good_mask)}).cpu();
  if (sum_over_ranks) sum_over_ranks(counts);
  const double items = std::max(1.0, counts[0].item<double>()), desirable_items = counts[2].item<double>(),
               undesirable_items = counts[0].item<double>() - desirable_items;
  const double z = std::max(0.0, counts[1].item<double>() / items);
  const auto good = desirable_weight * (1 - torch::sigmoid(beta * (reward - z)));
  const auto bad = undesirable_weight * (1 - torch::sigmoid(beta * (z - reward)));
  const auto terms = torch::where(desirable, good, bad);
  // Only when asked for; a batch of only undesirable items has nothing to anchor to.
  const bool anchored = sft_weight > 0 && desirable_items > 0;
  // Second sum: the loss's parts and the statistics.
  auto stats = torch::stack({sum_of(terms.detach()), sum_of(torch::where(good_mask, r > z, r < z)),
                             r.masked_select(good_mask).sum(), r.masked_select(bad_mask).sum(),
                             anchored ? sum_of(policy.detach().masked_select(desirable))
                                      : torch::zeros({}, r.options())})
                   .cpu();
  if (sum_over_ranks) sum_over_ranks(stats);
  const auto st = stats.accessor<double, 1>();
  PreferenceLoss out;
  out.loss = terms.sum() / items;
  out.value = st[0] / items;
  if (anchored) {
    out.loss = out.loss + sft_weight * (policy.masked_select(desirable).sum() / desirable_items);
    out.sft = st[4] / desirable_items;
    out.value += sft_weight * out.sft;
  }
  out.reference = z;
  out.accuracy = st[1] / items;
  out.margin = (desirable_items > 0 ? st[2] / desirable_items : 0.0) -
               (undesirable_items > 0 ? st[3] / undesirable_items : 0.0);
  return out;
}

fs::path generation_latent_path(const fs::path& video) {
  fs::path p = video;
  if (!p.filename().empty()) return p += ".latent.safetensors";
  return p.parent_path() += ".latent.safetensors";  // a folder of frames "out/"
}

void write_generation_latent(const fs::path& file, const torch::Tensor& latent, const std::string& prompt,
                             const std::string& latent_space, double fps, int64_t frames, int64_t height,
                             int64_t width) {
  auto t = latent.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  if (t.dim() == 5) t = t.squeeze(0);
  SafetensorsWriter writer;
  writer.add_borrowed("latent", DType::f32, t.sizes().vec(), t.data_ptr(), t.nbytes());
  writer.set_metadata("prompt", prompt);
  writer.set_metadata("latent_space", latent_space);
  writer.set_metadata("fps", cat(fps));
  writer.set_metadata("frames", std::to_string(frames));
  writer.set_metadata("height", std::to_string(height));
  writer.set_metadata("width", std::to_string(width));
  writer.write(file);
}

void write_preference_data(const fs::path& dir, const PreferenceCollection& collection) {
  nlohmann::json items = nlohmann::json::array();
  for (size_t k = 0; k < collection.items.size(); ++k) {
    const auto& item = collection.items[k];
    const auto& latent = collection.latents[k];
    CachedClip clip;
    clip.clip_id = int64_t(k);
    clip.caption = item.caption;
    const auto& g = collection.geometry[k];
    clip.fps = g.fps;
    clip.frames = g.frames;
    clip.height = g.height;
    clip.width = g.width;
    write_cached_clip(dir, clip, latent);
    items.push_back(
        {{"generations", item.generations}, {"desirable", item.desirable}, {"caption", item.caption}});
  }
  write_json_atomic(dir / "items.json", {{"items", items}});
}

PreferenceData read_preference_data(const fs::path& dir) {
  const fs::path index = dir / "items.json";
  const auto json = read_json_file(index);
  if (!json.contains("items") || !json["items"].is_array())
    throw Error(ErrorCode::format, index.string(), "has no \"items\" list");
  PreferenceData data;
  for (const auto& item : json["items"]) {
    PreferenceItem p;
    p.generations = item.value("generations", std::vector<int64_t>{});
    p.desirable = item.value("desirable", true);
    p.caption = item.value("caption", std::string());
    data.items.push_back(std::move(p));
  }
  data.clips = list_cached_clips(dir);
  if (data.clips.size() != data.items.size())
    throw Error(ErrorCode::corrupt, dir.string(),
                cat(data.items.size(), " items are listed but ", data.clips.size(), " latents are readable"));
  return data;
}

}  // namespace mugv
