#include "train/text_feature_cache.h"

#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "model/weights.h"

namespace mugv {

TextFeatureCache::TextFeatureCache(const std::string& encoder_id, TextEncoderBase& encoder)
    : dir_(mugv_home() / "cache" / "text" / sha256_hex(encoder_id).substr(0, 32)), encoder_(encoder) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) throw Error(ErrorCode::io, dir_.string(), "cannot create the text feature cache: " + ec.message());
}

torch::Tensor TextFeatureCache::features(const torch::Tensor& ids, const torch::Tensor& mask) {
  torch::NoGradGuard no_grad;
  const auto cpu_ids = ids.to(torch::kCPU, torch::kInt64).contiguous();
  const auto cpu_mask = mask.to(torch::kCPU, torch::kFloat32).contiguous();
  const auto device = ids.device();
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < cpu_ids.size(0); ++b) {
    const auto row_ids = cpu_ids[b].contiguous(), row_mask = cpu_mask[b].contiguous();
    Sha256 key;
    key.update(row_ids.data_ptr(), row_ids.nbytes());
    key.update(row_mask.data_ptr(), row_mask.nbytes());
    const auto file = dir_ / (key.finish_hex() + ".safetensors");
    torch::Tensor row;
    std::error_code ec;
    if (std::filesystem::exists(file, ec)) {
      try {
        auto st = SafetensorsFile::open(file);
        row = tensor_from_view(st.at("features"), file.string());
      } catch (const Error& e) {
        log_warning(cat(file.string(), ": recomputed (", e.what(), ")"));
      }
    }
    if (!row.defined()) {
      row = encoder_.forward(row_ids.unsqueeze(0).to(device), row_mask.unsqueeze(0).to(device))[0]
                .to(torch::kCPU)
                .contiguous();
      save_named_tensors({{"features", row}}, file, {{"tokens", std::to_string(row_ids.size(0))}});
    }
    rows.push_back(row);
  }
  return torch::stack(rows).to(device);
}

}  // namespace mugv
