#pragma once
// Drawing one monitor frame with Dear ImGui from a MonitorState snapshot, plus the two GL pieces the
// monitor owns itself: the preview texture and the framebuffer read-back used by --screenshot.
// Everything here runs on the render thread with the GL context current; it never touches the network.
//
// Layout: a status line (connection, endpoint, server version), the jobs table on the left (id, kind,
// state, progress, ETA; a click selects), and the selected job on the right: metric plots (loss, lr,
// tokens/s, MFU first, then any other numeric metric), the latest preview frames, a splitter, the last log
// lines. The plots and the log share the pane's height by layout.h's rules at any window size.

#include "layout.h"
#include "media/frame.h"
#include "monitor_state.h"

#include <cstdint>

namespace mugv::monitor {

// What the person chose; survives between frames.
struct UiState {
  int64_t selected = 0;
  bool follow = true;  // until a row is clicked: select the running job, else the newest one
  float plots_share = kDefaultPlotsShare;  // moved by the splitter between plots and log
  LayoutReport layout;                     // what the last frame measured
};

// The latest preview of the selected job as one GL texture: up to kMaxFrames frames side by side.
class PreviewTexture {
 public:
  static constexpr int kMaxFrames = 8;
  PreviewTexture() = default;
  ~PreviewTexture();
  PreviewTexture(const PreviewTexture&) = delete;
  PreviewTexture& operator=(const PreviewTexture&) = delete;

  // Uploads `p` unless it is the preview already uploaded (same serial). Null clears.
  void update(const PreviewFrames* p);
  unsigned id() const { return texture_; }
  int width() const { return width_; }
  int height() const { return height_; }
  int frames() const { return frames_; }

 private:
  unsigned texture_ = 0;
  uint64_t serial_ = 0;
  int width_ = 0, height_ = 0, frames_ = 0;
};

// Follows the selection rule of UiState (a no-op once the person picked a job that still exists).
void choose_selection(const MonitorState& s, UiState& ui);
// Builds the ImGui frame (between ImGui::NewFrame and ImGui::Render).
void draw_monitor(const MonitorState& s, UiState& ui, PreviewTexture& preview);
// The current back buffer as RGB24, top row first (call after rendering, before swapping).
RgbFrame read_framebuffer(int width, int height);

}  // namespace mugv::monitor
