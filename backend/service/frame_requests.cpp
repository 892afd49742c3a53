#include "service/frame_requests.h"

#include "catalog/clips.h"
#include "catalog/generations.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "media/decoder.h"
#include "media/image.h"
#include "media/probe.h"
#include "train/run_layout.h"
#include "train/run_samples.h"

#include <algorithm>

namespace mugv {

using protocol::Message;

namespace {

// Up to `count` rgb24 frames of `clip`'s span of `path`, evenly spread, the longer side at most `max_side`
// (count 1: the middle frame). `what` names the video in errors ("clip 12").
Message decode_frames(const std::string& what, const Clip& clip, const fs::path& path, int count,
                      int max_side) {
  std::vector<RgbFrame> frames;
  double fps = clip.fps;
  if (count == 1) {
    frames.push_back(thumbnail(path, 0.5 * (clip.start_s + clip.end_s), max_side));
  } else {
    DecodeOptions d;
    // Never enlarge: the player scales on screen.
    const int side = std::min(max_side, std::max({clip.width, clip.height, 16}));
    const bool landscape = clip.width >= clip.height;
    d.width = landscape ? side : 0;
    d.height = landscape ? 0 : side;
    d.resize = ResizeMode::stretch;
    const double span = clip.end_s - clip.start_s;
    if (span > 0 && clip.fps > 0 && span * clip.fps > count) d.fps = fps = count / span;
    VideoDecoder decoder(path, d);
    if (decoder.seek(clip.start_s)) {
      while (static_cast<int>(frames.size()) < count) {
        auto f = decoder.next();
        if (!f || (span > 0 && f->pts_s >= clip.end_s - 1e-6)) break;
        frames.push_back(std::move(*f));
      }
    }
    if (frames.empty()) throw Error(ErrorCode::corrupt, path.string(), cat("no decodable frame in ", what));
  }
  Message reply = protocol::make_ok({{"width", frames.front().width},
                                     {"height", frames.front().height},
                                     {"fps", fps},
                                     {"format", "rgb24"},
                                     {"frames", frames.size()}});
  for (const auto& f : frames) reply.blobs.emplace_back(f.rgb.begin(), f.rgb.end());
  return reply;
}

}  // namespace

FrameRequests::FrameRequests(Catalog& catalog, const PathConfinement& roots)
    : catalog_(catalog), roots_(roots) {}

// Pictures of one clip for clients that cannot read this machine's files (protocol.h, clip_frames). The
// catalog is read and the source checked here, like a job's files, so a catalog entry pointing outside the
// roots shows nothing; the decoding (up to 64 frames at 1024 px: seconds) runs on the reply pool, so that
// it never holds up other requests or the workers' heartbeats.
ReplyPool::Work FrameRequests::on_clip_frames(const Message& m) const {
  const auto& h = m.header;
  const int64_t id = h["clip"];
  const auto clip = get_clip(catalog_, id);
  if (!clip) throw Error(ErrorCode::not_found, cat("clip ", id), "no such clip");
  const auto source = get_source(catalog_, clip->source_id);
  if (!source) throw Error(ErrorCode::not_found, cat("clip ", id), "its source video is not in the catalog");
  roots_.check(cat("clip ", id), source->path.string());
  const int count = h.value("count", 1);
  const int max_side = h.value("max_side", 128);
  return [id, clip = *clip, path = source->path, count, max_side] {
    Message reply = decode_frames(cat("clip ", id), clip, path, count, max_side);
    reply.header["clip"] = id;
    return reply;
  };
}

// The same for a generated video (the labelling view shows both generations of a pair): the whole file.
ReplyPool::Work FrameRequests::on_generation_frames(const Message& m) const {
  const auto& h = m.header;
  const int64_t id = h["generation"];
  const auto g = get_generation(catalog_, id);
  if (!g) throw Error(ErrorCode::not_found, cat("generation ", id), "no such generation");
  roots_.check(cat("generation ", id), g->output_path.string());
  Clip whole;
  whole.fps = g->settings.value("fps", 8.0);
  whole.end_s = whole.fps > 0 ? g->frames / whole.fps : 0;
  whole.width = g->width;
  whole.height = g->height;
  const int count = h.value("count", 1), max_side = h.value("max_side", 128);
  return [id, whole, path = g->output_path, count, max_side] {
    Message reply = decode_frames(cat("generation ", id), whole, path, count, max_side);
    reply.header["generation"] = id;
    return reply;
  };
}

// The videos a run rendered while training (train/run_samples.h), for clients that cannot read this
// machine's files: the Runs page's sample gallery. The run and file names are checked here (the file must
// stay inside the run's folder, then inside the server's roots); reading each video's metadata (its prompt)
// and decoding run on the reply pool.
ReplyPool::Work FrameRequests::on_list_run_samples(const Message& m) const {
  const std::string run = m.header["run"];
  const RunPaths paths = run_paths(run);  // Error(invalid_argument) for a name that is not a run name
  (void)read_run_manifest(paths);         // Error(not_found) naming the run and the known ones
  const size_t limit = m.header.value("limit", 100);
  return [run, paths, limit] {
    nlohmann::json samples = nlohmann::json::array();
    for (const RunSampleFile& f : list_run_samples(paths, limit)) {
      nlohmann::json entry = {{"step", f.step}, {"file", f.file}, {"size", f.size}};
      try {
        const MediaInfo info = probe(f.path, ProbeDepth::headers);
        const auto tag = [&](const char* key) {
          const auto it = info.metadata.find(key);
          return it == info.metadata.end() ? std::string() : it->second;
        };
        entry.update({{"prompt", tag("prompt")},
                      {"seed", tag("seed")},
                      {"width", info.width},
                      {"height", info.height},
                      {"frames", info.frame_count},
                      {"fps", info.fps}});
      } catch (const Error& e) {
        entry["error"] = e.what();  // a file still being written, or damaged: listed, not played
      }
      samples.push_back(std::move(entry));
    }
    return protocol::make_ok({{"run", run}, {"samples", samples}});
  };
}

ReplyPool::Work FrameRequests::on_run_sample_frames(const Message& m) const {
  const auto& h = m.header;
  const std::string run = h["run"], file = h["file"];
  const int64_t step = h["step"];
  const fs::path path = run_sample_path(run_paths(run), step, file);
  roots_.check(cat("run ", run, ", step ", step, ", ", file), path.string());
  const int count = h.value("count", 1), max_side = h.value("max_side", 128);
  return [run, step, file, path, count, max_side] {
    const MediaInfo info = probe(path, ProbeDepth::headers);
    Clip whole;
    whole.fps = info.fps > 0 ? info.fps : 8.0;
    whole.end_s = info.duration_s;
    whole.width = info.width;
    whole.height = info.height;
    Message reply =
        decode_frames(cat("run ", run, ", step ", step, ", ", file), whole, path, count, max_side);
    reply.header.update({{"run", run}, {"step", step}, {"file", file}});
    return reply;
  };
}

}  // namespace mugv
