#include "curation/aesthetic_model.h"

#include "core/error.h"

#include <mutex>
#include <vector>

namespace mugv {
namespace {

std::mutex& loaders_mutex() {
  static std::mutex m;
  return m;
}

std::vector<AestheticModelLoader>& loaders() {
  static std::vector<AestheticModelLoader> list;
  return list;
}

}  // namespace

void register_aesthetic_model_loader(AestheticModelLoader loader) {
  std::lock_guard<std::mutex> lock(loaders_mutex());
  loaders().push_back(std::move(loader));
}

std::shared_ptr<AestheticModel> load_aesthetic_model(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    throw Error(ErrorCode::not_found, file.string(), "no such aesthetic model file");
  std::vector<AestheticModelLoader> candidates;
  {
    std::lock_guard<std::mutex> lock(loaders_mutex());
    candidates = loaders();
  }
  for (const auto& loader : candidates)
    if (auto model = loader(file)) return model;
  throw Error(
      ErrorCode::unsupported, file.string(),
      candidates.empty()
          ? "this build has no LibTorch, so it cannot run aesthetic models; the heuristic scorer is used "
            "when aesthetic.model is empty"
          : "not an aesthetic model type this build reads (.pt/.ts/.torchscript TorchScript, .safetensors "
            "MLP head)");
}

}  // namespace mugv
