// mugv export INPUT --out OUT | --contact-sheet PNG: a range of a video as mp4/webm/gif/PNG frames, or a
// contact sheet, with title/comment metadata kept in the container.
#include "command.h"

#include "core/error.h"
#include "media/decoder.h"
#include "media/encoder.h"
#include "media/image.h"
#include "media/probe.h"

#include <nlohmann/json.hpp>

#include <iostream>

namespace mugv::cli {
namespace {

void define(ParamRegistry& r) {
  r.add(param("export.out", "--out", ParamType::path, nullptr,
              "output: .mp4 (H.264), .webm (VP9), .gif, or a folder for PNG frames", "export"));
  r.add(param("export.contact_sheet", "--contact-sheet", ParamType::path, nullptr,
              "write a PNG contact sheet of evenly spaced frames instead of a clip", "export"));
  auto tiles =
      param("export.tiles", "--tiles", ParamType::integer, 12, "frames on the contact sheet", "export");
  tiles.min_value = 1;
  tiles.max_value = 400;
  r.add(tiles);
  auto columns =
      param("export.columns", "--columns", ParamType::integer, 4, "contact sheet columns", "export");
  columns.min_value = 1;
  r.add(columns);
  auto start = param("export.start", "--start", ParamType::real, 0.0, "start time in seconds", "export");
  start.min_value = 0.0;
  r.add(start);
  r.add(param("export.end", "--end", ParamType::real, 0.0, "end time in seconds (0: the end)", "export"));
  r.add(param("export.size", "--size", ParamType::size2d, nullptr,
              "output size WxH (center crop); default: as the input", "export"));
  auto fps =
      param("export.fps", "--fps", ParamType::real, 0.0, "output frame rate (0: as the input)", "export");
  fps.min_value = 0.0;
  r.add(fps);
  auto crf = param("export.crf", "--crf", ParamType::integer, 17, "quality for mp4/webm (lower is better)",
                   "export");
  crf.min_value = 0;
  crf.max_value = 63;
  r.add(crf);
  r.add(param("export.title", "--title", ParamType::text, nullptr, "title stored in the file", "metadata"));
  r.add(param("export.comment", "--comment", ParamType::text, nullptr, "comment stored in the file",
              "metadata"));
}

int run(const Invocation& inv) {
  const fs::path input = inv.positional[0];
  const auto& v = inv.values;
  nlohmann::json result = {{"input", input.string()}};
  if (v.has("export.contact_sheet")) {
    fs::path sheet_path = v.get_text("export.contact_sheet");
    RgbFrame sheet = video_contact_sheet(input, static_cast<int>(v.get_int("export.tiles")),
                                         static_cast<int>(v.get_int("export.columns")), 160);
    write_png(sheet_path, sheet);
    result["contact_sheet"] = sheet_path.string();
    result["width"] = sheet.width;
    result["height"] = sheet.height;
  } else {
    if (!v.has("export.out"))
      throw Error(ErrorCode::usage, "--out", "give --out FILE or --contact-sheet FILE.png");
    fs::path out = v.get_text("export.out");
    auto format = format_from_path(out);
    if (!format)
      throw Error(ErrorCode::usage, out.string(),
                  "unknown output type; use .mp4, .webm, .gif or a folder for PNG frames");
    DecodeOptions dec;
    if (v.has("export.size")) {
      Size2D size = v.get_size2d("export.size");
      dec.width = static_cast<int>(size.width);
      dec.height = static_cast<int>(size.height);
    }
    dec.fps = v.get_real("export.fps");
    MediaInfo info = probe(input, ProbeDepth::headers);
    auto frames = decode_range(input, v.get_real("export.start"), v.get_real("export.end"), dec, &inv.cancel);
    if (frames.empty())
      throw Error(ErrorCode::invalid_argument, input.string(), "no frames in the requested range");
    EncodeOptions enc;
    enc.format = *format;
    enc.fps = dec.fps > 0 ? dec.fps : (info.fps > 0 ? info.fps : 8.0);
    enc.crf = static_cast<int>(v.get_int("export.crf"));
    if (v.has("export.title")) enc.metadata["title"] = v.get_text("export.title");
    if (v.has("export.comment")) enc.metadata["comment"] = v.get_text("export.comment");
    encode_video(out, frames, enc);
    result["out"] = out.string();
    result["format"] = to_string(*format);
    result["frames"] = frames.size();
    result["width"] = frames.front().width;
    result["height"] = frames.front().height;
  }
  if (inv.json)
    std::cout << result.dump(2) << "\n";
  else
    std::cout << "wrote "
              << (result.contains("out") ? result["out"] : result["contact_sheet"]).get<std::string>()
              << "\n";
  return 0;
}

}  // namespace

Command export_command() {
  Command c;
  c.words = {"export"};
  c.summary = "export a video range to mp4/webm/gif/PNG frames with metadata, or a contact sheet";
  c.usage = "INPUT (--out OUT | --contact-sheet OUT.png) [options]";
  c.min_positional = c.max_positional = 1;
  c.define = define;
  c.run = run;
  c.job_kind = "export";
  return c;
}

}  // namespace mugv::cli
