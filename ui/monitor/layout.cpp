#include "layout.h"

#include <algorithm>
#include <cmath>

namespace mugv::monitor {

DetailLayout layout_detail(float available, int plots, float plots_share, const LayoutMetrics& m) {
  DetailLayout out;
  // The splitter and the log's title line come off the top; the rest is shared.
  const float space = std::max(0.0f, available - m.splitter - m.line_height - 2 * m.spacing);
  const float log_min = kMinLogLines * m.line_height + m.log_padding;
  if (plots <= 0) {
    out.plots_height = m.line_height;
  } else {
    const float gaps = (plots - 1) * m.spacing;
    const float full = plots * kMaxPlotHeight + gaps;  // every plot at its largest: more is wasted
    const float share = std::clamp(plots_share, 0.1f, 0.9f) * space;
    out.plots_height = std::min({full, share, space - log_min});
    out.plots_height = std::max(out.plots_height, kMinPlotHeight);
    out.plot_height = std::clamp((out.plots_height - gaps) / plots, kMinPlotHeight, kMaxPlotHeight);
  }
  out.log_height = std::max(log_min, space - out.plots_height);
  out.log_lines = static_cast<int>(std::floor((out.log_height - m.log_padding) / m.line_height + 1e-3f));
  return out;
}

float drag_plots_share(float plots_share, float dy, float available) {
  if (available <= 0) return plots_share;
  return std::clamp(plots_share + dy / available, 0.1f, 0.9f);
}

nlohmann::json LayoutReport::to_json() const {
  return {{"window", {{"width", window_width}, {"height", window_height}}},
          {"plot_heights", plot_heights},
          {"plot_widths", plot_widths},
          {"plots_area_height", plots_area_height},
          {"log_height", log_height},
          {"log_visible_lines", log_visible_lines},
          {"plots_share", plots_share}};
}

}  // namespace mugv::monitor
