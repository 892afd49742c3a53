#pragma once
// How the selected job's pane shares its height between the metric plots and the log: a pure function of the
// height ImGui offers and the font's metrics, so it is the same at every window size and testable without a
// window. Rules:
//   - every plot is at least kMinPlotHeight tall, and at most kMaxPlotHeight;
//   - the log pane keeps at least kMinLogLines whole lines and takes the height the plots leave;
//   - the splitter between them sets the plots' share of the height both get (plots_share, clamped);
//   - plots that do not fit at their minimum height scroll inside their area; when even one plot and the
//     log's minimum do not fit, both keep their minimum and the pane scrolls.
// LayoutReport is what one frame measured after drawing (the heights ImGui gave the items), for --dump-state.

#include <nlohmann/json.hpp>

#include <vector>

namespace mugv::monitor {

inline constexpr float kMinPlotHeight = 80;
inline constexpr float kMaxPlotHeight = 180;
inline constexpr int kMinLogLines = 5;
inline constexpr float kDefaultPlotsShare = 0.6f;

struct LayoutMetrics {
  float line_height = 16;  // a text line with its spacing (ImGui::GetTextLineHeightWithSpacing)
  float spacing = 4;       // between items (ImGuiStyle::ItemSpacing.y)
  float log_padding = 16;  // the log pane's frame: top and bottom padding, and its horizontal scrollbar
  float splitter = 6;      // the splitter's height
};

struct DetailLayout {
  float plots_height = 0;  // the plots' area (it scrolls when the plots are taller)
  float plot_height = 0;   // each plot
  float log_height = 0;    // the log pane, frame included
  int log_lines = 0;       // whole lines the log pane shows
};

// `available`: the height for the plots, the splitter, the log's title line and the log pane; `plots`: how
// many plots there are (0: one line says there are none).
DetailLayout layout_detail(float available, int plots, float plots_share, const LayoutMetrics& m);
// The plots' share after dragging the splitter by `dy` pixels within `available`, kept within [0.1, 0.9].
float drag_plots_share(float plots_share, float dy, float available);

// What a drawn frame measured.
struct LayoutReport {
  int window_width = 0, window_height = 0;
  std::vector<float> plot_heights;  // each drawn plot
  std::vector<float> plot_widths;
  float plots_area_height = 0;
  float log_height = 0;
  int log_visible_lines = 0;
  float plots_share = 0;
  nlohmann::json to_json() const;
};

}  // namespace mugv::monitor
