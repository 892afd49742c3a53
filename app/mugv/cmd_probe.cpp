// mugv probe FILE [--json]: what a video file is, without decoding its pictures.
#include "command.h"

#include "media/probe.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace mugv::cli {
namespace {

nlohmann::json to_json(const MediaInfo& info) {
  return {{"path", info.path.string()},
          {"container", info.container},
          {"duration_s", info.duration_s},
          {"has_video", info.has_video},
          {"has_audio", info.has_audio},
          {"video_codec", info.video_codec},
          {"width", info.width},
          {"height", info.height},
          {"fps", info.fps},
          {"nominal_fps", info.nominal_fps},
          {"variable_frame_rate", info.variable_frame_rate},
          {"rotation_deg", info.rotation_deg},
          {"frame_count", info.frame_count},
          {"bit_rate", info.bit_rate},
          {"start_time_s", info.start_time_s},
          {"metadata", info.metadata}};
}

int run(const Invocation& inv) {
  MediaInfo info = probe(inv.positional[0]);
  if (inv.json) {
    std::cout << to_json(info).dump(2) << "\n";
    return 0;
  }
  std::printf(
      "%s\n  container   %s\n  video       %s %dx%d, %.3f fps (nominal %.3f)%s, rotation %d°\n"
      "  frames      %lld\n  duration    %.3f s\n  audio       %s\n  bit rate    %lld b/s\n",
      info.path.c_str(), info.container.c_str(), info.video_codec.c_str(), info.width, info.height, info.fps,
      info.nominal_fps, info.variable_frame_rate ? ", variable frame rate" : "", info.rotation_deg,
      static_cast<long long>(info.frame_count), info.duration_s, info.has_audio ? "yes" : "no",
      static_cast<long long>(info.bit_rate));
  for (const auto& [key, value] : info.metadata) std::printf("  %-11s %s\n", key.c_str(), value.c_str());
  return 0;
}

}  // namespace

Command probe_command() {
  Command c;
  c.words = {"probe"};
  c.summary = "show streams, duration, frame rate (and whether it varies), rotation and metadata of a video";
  c.usage = "FILE [--json]";
  c.min_positional = c.max_positional = 1;
  c.run = run;
  return c;
}

}  // namespace mugv::cli
