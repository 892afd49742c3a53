#pragma once
// Still images and picture helpers: reading PNG/JPEG/BMP, writing PNG, resizing, thumbnails and contact
// sheets. All functions are free of shared state and safe to call from any thread.
// Errors name the file: not_found, io (directory, unreadable, unwritable), format (not an image / not a
// supported one), corrupt (an image that does not decode), invalid_argument (bad sizes).

#include "media/frame.h"

#include <filesystem>
#include <string>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

// Decodes a PNG, JPEG or BMP file (recognised by content, not extension) to RGB24.
[[nodiscard]] RgbFrame read_image(const fs::path& path);
// PNG bytes of `frame` (RGB24, lossless).
[[nodiscard]] std::string encode_png(const RgbFrame& frame);
// Writes `frame` as a PNG file atomically (temporary file + rename).
void write_png(const fs::path& path, const RgbFrame& frame);

// `frame` scaled to width x height (0 on one side keeps the aspect) with the given fitting rule.
[[nodiscard]] RgbFrame resize(const RgbFrame& frame, int width, int height, ResizeMode mode);

// The frame at t_s (clamped into the video), scaled so its longer side is max_side (aspect kept).
[[nodiscard]] RgbFrame thumbnail(const fs::path& video_path, double t_s, int max_side);

// Frames laid out left to right, top to bottom, each fitted (fit_pad) into a tile_width x tile_height cell
// on black. The sheet is columns * tile_width wide and ceil(n / columns) * tile_height tall.
[[nodiscard]] RgbFrame contact_sheet(const std::vector<RgbFrame>& frames, int columns, int tile_width,
                                     int tile_height);

// A contact sheet of `tiles` frames at evenly spaced times (the middle of each of `tiles` equal spans);
// tile height follows the video's aspect ratio.
[[nodiscard]] RgbFrame video_contact_sheet(const fs::path& path, int tiles, int columns, int tile_width);

}  // namespace mugv
