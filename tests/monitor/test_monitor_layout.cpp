// The monitor's layout rules (ui/monitor/layout.h) at window heights from tiny to tall, with any number of
// plots and any splitter position: plots never below their minimum, the log never below five lines, and
// nothing wasted when there is room.
#include "layout.h"

#include <catch2/catch.hpp>

using namespace mugv::monitor;

TEST_CASE("the monitor's plots and log share the pane's height at every size", "[monitor]") {
  LayoutMetrics m;
  m.line_height = 19;
  m.spacing = 4;
  m.log_padding = 16;
  for (float available : {120.0f, 250.0f, 330.0f, 500.0f, 700.0f, 1400.0f}) {
    for (int plots : {0, 1, 4, 8}) {
      for (float share : {0.0f, 0.3f, kDefaultPlotsShare, 1.0f}) {
        INFO("available " << available << ", plots " << plots << ", share " << share);
        const DetailLayout l = layout_detail(available, plots, share, m);
        CHECK(l.log_lines >= kMinLogLines);
        CHECK(l.log_height >= kMinLogLines * m.line_height + m.log_padding);
        if (plots > 0) {
          CHECK(l.plot_height >= kMinPlotHeight);
          CHECK(l.plot_height <= kMaxPlotHeight);
          CHECK(l.plots_height >= kMinPlotHeight);
        }
        // Both fit in the pane unless even their minimums do not.
        const float space = available - m.splitter - m.line_height - 2 * m.spacing;
        if (space >= kMinPlotHeight + kMinLogLines * m.line_height + m.log_padding)
          CHECK(l.plots_height + l.log_height <= space + 0.01f);
      }
    }
  }
  // Room to spare: the log takes what the plots do not need.
  const DetailLayout roomy = layout_detail(1400, 1, 0.9f, m);
  CHECK(roomy.plot_height == kMaxPlotHeight);
  CHECK(roomy.log_lines > 40);
  // The splitter moves the share, within bounds.
  CHECK(drag_plots_share(0.5f, 100, 1000) == Approx(0.6f));
  CHECK(drag_plots_share(0.5f, -1000, 1000) == Approx(0.1f));
  CHECK(drag_plots_share(0.5f, 1000, 1000) == Approx(0.9f));
  CHECK(layout_detail(700, 4, 0.8f, m).plots_height > layout_detail(700, 4, 0.4f, m).plots_height);
}
