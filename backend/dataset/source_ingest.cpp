#include "dataset/source_ingest.h"

namespace mugv {

Source source_from_probe(const std::filesystem::path& path, const std::string& hash, const MediaInfo& info) {
  Source s;
  s.path = std::filesystem::absolute(path);
  s.content_hash = hash;
  s.size_bytes = static_cast<int64_t>(std::filesystem::file_size(path));
  s.duration_s = info.duration_s;
  s.fps = info.fps;
  s.width = info.width;
  s.height = info.height;
  s.variable_frame_rate = info.variable_frame_rate;
  s.status = SourceStatus::ok;
  s.info = {{"format", info.container},        {"codec", info.video_codec},
            {"frame_count", info.frame_count}, {"nominal_fps", info.nominal_fps},
            {"rotation", info.rotation_deg},   {"has_audio", info.has_audio}};
  return s;
}

void record_failed_source(Catalog& catalog, const std::filesystem::path& path, const std::string& hash,
                          const std::string& reason) {
  if (hash.empty() || find_source_by_hash(catalog, hash)) return;
  Source s;
  s.path = std::filesystem::absolute(path);
  s.content_hash = hash;
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  s.size_bytes = ec ? 0 : static_cast<int64_t>(size);
  s.status = SourceStatus::pending;
  s = add_source(catalog, s);
  mark_source_failed(catalog, s.id, reason);
}

}  // namespace mugv
