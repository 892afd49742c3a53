#include "curation/torch_aesthetic.h"

#include "core/error.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "curation/aesthetic_model.h"
#include "model/weights.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

namespace mugv {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kDefaultInputSize = 224;

std::string lower_extension(const fs::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

// A TorchScript module that maps [N, 3, S, S] images in [0, 1] to something, with its input size S.
struct ScriptedImageModel {
  torch::jit::Module module;
  int64_t input_size = kDefaultInputSize;

  static ScriptedImageModel load(const fs::path& file) {
    ScriptedImageModel m;
    try {
      m.module = torch::jit::load(file.string(), torch::kCPU);
    } catch (const c10::Error& e) {
      throw Error(ErrorCode::format, file.string(),
                  cat("not a readable TorchScript file (", first_line(e.what_without_backtrace()), ")"));
    }
    m.module.eval();
    if (m.module.hasattr("input_size")) {
      const auto size = m.module.attr("input_size");
      if (!size.isInt() || size.toInt() < 8 || size.toInt() > 4096)
        throw Error(ErrorCode::format, file.string(), "attribute input_size must be an integer in 8..4096");
      m.input_size = size.toInt();
    }
    return m;
  }

  static std::string first_line(const char* text) {
    std::string s(text);
    return s.substr(0, s.find('\n'));
  }

  // The picture as the contract says: centre square, area-resized to S x S, [1, 3, S, S] in [0, 1].
  torch::Tensor input_of(const RgbFrame& picture) const {
    if (picture.width <= 0 || picture.height <= 0 ||
        picture.rgb.size() != size_t(picture.width) * picture.height * 3)
      throw Error(ErrorCode::invalid_argument, "aesthetic model", "picture has no pixels");
    auto image = torch::from_blob(const_cast<uint8_t*>(picture.rgb.data()),
                                  {picture.height, picture.width, 3}, torch::kUInt8)
                     .permute({2, 0, 1})
                     .to(torch::kFloat32)
                     .div(255.0)
                     .unsqueeze(0);
    const int64_t side = std::min<int64_t>(picture.width, picture.height);
    image = image.narrow(2, (picture.height - side) / 2, side).narrow(3, (picture.width - side) / 2, side);
    namespace F = torch::nn::functional;
    auto options = F::InterpolateFuncOptions().size(std::vector<int64_t>{input_size, input_size});
    if (side >= input_size)
      options.mode(torch::kArea);
    else
      options.mode(torch::kBilinear).align_corners(false);
    return F::interpolate(image, options).contiguous();
  }

  torch::Tensor run(const torch::Tensor& images, const fs::path& file) {
    try {
      auto out = module.forward({images});
      if (!out.isTensor())
        throw Error(ErrorCode::invalid_argument, file.string(), "forward did not return a tensor");
      return out.toTensor().to(torch::kFloat32);
    } catch (const c10::Error& e) {
      throw Error(ErrorCode::invalid_argument, file.string(),
                  cat("forward failed: ", first_line(e.what_without_backtrace())));
    }
  }
};

double single_score(const torch::Tensor& out, const fs::path& file) {
  if (out.numel() != 1)
    throw Error(ErrorCode::invalid_argument, file.string(),
                cat("expected one score per image, got a tensor of shape ", out.sizes()));
  const double value = out.item<double>();
  if (!std::isfinite(value))
    throw Error(ErrorCode::invalid_argument, file.string(), "the score is not a finite number");
  return value;
}

class ScriptedPredictor final : public AestheticModel {
 public:
  explicit ScriptedPredictor(const fs::path& file) : file_(file), model_(ScriptedImageModel::load(file)) {}
  double score(const RgbFrame& picture) override {
    torch::NoGradGuard no_grad;
    return single_score(model_.run(model_.input_of(picture), file_), file_);
  }
  std::string source() const override { return "model:" + file_.filename().string(); }

 private:
  fs::path file_;
  ScriptedImageModel model_;
};

enum class HeadActivation { unknown = 0, none, relu, gelu };

class MlpHeadPredictor final : public AestheticModel {
 public:
  explicit MlpHeadPredictor(const fs::path& file) : file_(file) {
    const SafetensorsFile st = SafetensorsFile::open(file);
    const auto& meta = st.metadata();
    const auto features = meta.find("features");
    if (features == meta.end() || features->second.empty())
      throw Error(ErrorCode::format, file.string(),
                  "metadata \"features\" must name the TorchScript feature extractor the head reads");
    const fs::path extractor = file.parent_path() / features->second;
    std::error_code ec;
    if (!fs::is_regular_file(extractor, ec))
      throw Error(ErrorCode::format, file.string(),
                  cat("feature extractor ", extractor.string(), " does not exist"));
    features_ = ScriptedImageModel::load(extractor);

    const std::string normalize = meta.count("normalize") ? meta.at("normalize") : "l2";
    if (normalize != "l2" && normalize != "none")
      throw Error(ErrorCode::format, file.string(),
                  cat("metadata normalize '", normalize, "' is not l2 or none"));
    l2_normalize_ = normalize == "l2";
    const std::string activation = meta.count("activation") ? meta.at("activation") : "none";
    static const std::map<std::string, HeadActivation> kinds = {
        {"none", HeadActivation::none}, {"relu", HeadActivation::relu}, {"gelu", HeadActivation::gelu}};
    if (!kinds.count(activation))
      throw Error(ErrorCode::format, file.string(),
                  cat("metadata activation '", activation, "' is not none, relu or gelu"));
    activation_ = kinds.at(activation);

    std::map<int64_t, std::string> layers;  // index -> "layers.<i>"
    for (const auto& name : st.names()) {
      if (!starts_with(name, "layers.")) continue;
      const auto parts = split(name, '.');
      char* end = nullptr;
      const long long index = parts.size() == 3 ? std::strtoll(parts[1].c_str(), &end, 10) : -1;
      if (index < 0 || !end || *end)
        throw Error(ErrorCode::format, file.string(), cat("unexpected tensor ", name));
      layers[index] = cat("layers.", index);
    }
    if (layers.empty())
      throw Error(ErrorCode::format, file.string(), "no layers.<i>.weight tensors: not an MLP head");
    for (const auto& [index, prefix] : layers) {
      torch::Tensor w = tensor_from_view(st.at(prefix + ".weight"), file.string()).to(torch::kFloat32);
      torch::Tensor b = tensor_from_view(st.at(prefix + ".bias"), file.string()).to(torch::kFloat32);
      if (w.dim() != 2 || b.dim() != 1 || b.size(0) != w.size(0))
        throw Error(ErrorCode::invalid_argument, file.string(),
                    cat(prefix, ": weight [out, in] and bias [out] expected"));
      if (!weights_.empty() && weights_.back().size(0) != w.size(1))
        throw Error(ErrorCode::invalid_argument, file.string(),
                    cat(prefix, " takes ", w.size(1), " inputs but the layer before gives ",
                        weights_.back().size(0)));
      weights_.push_back(w);
      biases_.push_back(b);
    }
    if (weights_.back().size(0) != 1)
      throw Error(ErrorCode::invalid_argument, file.string(),
                  "the last layer must have one output (the score)");
  }

  double score(const RgbFrame& picture) override {
    torch::NoGradGuard no_grad;
    auto x = features_.run(features_.input_of(picture), file_).flatten(1);
    if (x.size(1) != weights_.front().size(1))
      throw Error(ErrorCode::invalid_argument, file_.string(),
                  cat("the feature extractor gives ", x.size(1), " features; the head takes ",
                      weights_.front().size(1)));
    if (l2_normalize_) x = x / x.norm(2, 1, true).clamp_min(1e-12);
    for (size_t i = 0; i < weights_.size(); ++i) {
      x = torch::addmm(biases_[i], x, weights_[i].t());
      if (i + 1 == weights_.size()) break;
      if (activation_ == HeadActivation::relu) x = torch::relu(x);
      if (activation_ == HeadActivation::gelu) x = torch::gelu(x);
    }
    return single_score(x, file_);
  }
  std::string source() const override { return "model:" + file_.filename().string(); }

 private:
  fs::path file_;
  ScriptedImageModel features_;
  bool l2_normalize_ = true;
  HeadActivation activation_ = HeadActivation::none;
  std::vector<torch::Tensor> weights_, biases_;
};

std::shared_ptr<AestheticModel> load_torch_aesthetic(const fs::path& file) {
  const std::string ext = lower_extension(file);
  if (ext == ".pt" || ext == ".ts" || ext == ".torchscript") return std::make_shared<ScriptedPredictor>(file);
  if (ext == ".safetensors") return std::make_shared<MlpHeadPredictor>(file);
  return nullptr;
}

}  // namespace

void register_torch_aesthetic_loader() {
  static std::once_flag once;
  std::call_once(once, [] { register_aesthetic_model_loader(load_torch_aesthetic); });
}

}  // namespace mugv
