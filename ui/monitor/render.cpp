#include "render.h"

#include <GL/gl.h>
#include <imgui.h>

#include <algorithm>
#include <cfloat>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace mugv::monitor {

PreviewTexture::~PreviewTexture() {
  if (texture_) glDeleteTextures(1, &texture_);
}

void PreviewTexture::update(const PreviewFrames* p) {
  if (!p || p->frames.empty()) {
    frames_ = 0;
    serial_ = 0;
    return;
  }
  if (p->serial == serial_) return;
  const int n = std::min<int>(kMaxFrames, static_cast<int>(p->frames.size()));
  const int w = p->width, h = p->height;
  // The frames side by side in one RGB image, so one texture and one draw show them all.
  std::vector<uint8_t> strip(size_t(w) * n * h * 3);
  const size_t row = size_t(w) * 3;
  for (int f = 0; f < n; ++f)
    for (int y = 0; y < h; ++y)
      std::memcpy(&strip[(size_t(y) * w * n + size_t(f) * w) * 3], p->frames[size_t(f)].data() + y * row,
                  row);
  if (!texture_) glGenTextures(1, &texture_);
  GLint previous = 0, alignment = 4;
  glGetIntegerv(GL_TEXTURE_BINDING_2D, &previous);
  glGetIntegerv(GL_UNPACK_ALIGNMENT, &alignment);
  glBindTexture(GL_TEXTURE_2D, texture_);
  // Previews are small (32..256 px); nearest keeps their pixels honest when scaled up.
  glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
  glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
  glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_S, GL_CLAMP_TO_EDGE);
  glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_T, GL_CLAMP_TO_EDGE);
  glPixelStorei(GL_UNPACK_ALIGNMENT, 1);  // RGB rows of odd widths are not 4-byte aligned
  glTexImage2D(GL_TEXTURE_2D, 0, GL_RGB, w * n, h, 0, GL_RGB, GL_UNSIGNED_BYTE, strip.data());
  glPixelStorei(GL_UNPACK_ALIGNMENT, alignment);
  glBindTexture(GL_TEXTURE_2D, static_cast<GLuint>(previous));
  width_ = w;
  height_ = h;
  frames_ = n;
  serial_ = p->serial;
}

namespace {

ImVec4 state_colour(const std::string& state) {
  if (state == "running" || state == "starting") return ImVec4(0.40f, 0.85f, 0.45f, 1);
  if (state == "failed" || state == "interrupted") return ImVec4(0.95f, 0.40f, 0.35f, 1);
  if (state == "queued" || state == "paused") return ImVec4(0.95f, 0.80f, 0.35f, 1);
  if (state == "cancelled") return ImVec4(0.65f, 0.65f, 0.65f, 1);
  return ImVec4(0.75f, 0.80f, 0.90f, 1);
}

std::string duration(double s) {
  if (s < 0) return "-";
  char buf[32];
  long t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh %02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%ldm %02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

// The server's machine check on the status line: its warnings and failures, each with its fix in the tooltip.
void machine_line(const MonitorState& s) {
  if (!s.machine_checked()) return;
  ImGui::SameLine();
  const int warnings = s.machine_count("warn"), failures = s.machine_count("fail");
  if (!s.machine_check_error().empty())
    ImGui::TextDisabled("   machine: not checked");
  else if (warnings + failures == 0)
    ImGui::TextDisabled("   machine: ok");
  else
    ImGui::TextColored(failures ? ImVec4(0.95f, 0.40f, 0.35f, 1) : ImVec4(0.95f, 0.65f, 0.20f, 1),
                       "   machine: %d warning%s, %d failure%s", warnings, warnings == 1 ? "" : "s", failures,
                       failures == 1 ? "" : "s");
  if (!ImGui::IsItemHovered()) return;
  ImGui::BeginTooltip();
  if (!s.machine_check_error().empty()) ImGui::Text("the check failed: %s", s.machine_check_error().c_str());
  for (const MachineFinding& f : s.machine_findings()) {
    ImGui::Text("%-5s %-9s %s", f.status.c_str(), f.check.c_str(), f.detail.c_str());
    if (!f.fix.empty() && (f.status == "warn" || f.status == "fail"))
      ImGui::Text("                fix: %s", f.fix.c_str());
  }
  ImGui::EndTooltip();
}

void status_line(const MonitorState& s) {
  switch (s.connection()) {
    case Connection::connected:
      ImGui::TextColored(ImVec4(0.40f, 0.85f, 0.45f, 1), "connected");
      break;
    case Connection::connecting:
      ImGui::TextColored(ImVec4(0.95f, 0.80f, 0.35f, 1), "connecting");
      break;
    case Connection::lost:
      ImGui::TextColored(ImVec4(0.95f, 0.40f, 0.35f, 1), "connection lost, retrying every 2 s");
      break;
  }
  ImGui::SameLine();
  ImGui::Text("%s   server %s   protocol %d   %zu jobs   %" PRIu64 " events", s.endpoint().c_str(),
              s.server_version().empty() ? "?" : s.server_version().c_str(), protocol::kVersion,
              s.jobs().size(), s.events_seen());
  machine_line(s);
  if (s.connection() == Connection::lost) ImGui::TextWrapped("%s", s.connection_message().c_str());
}

void jobs_table(const MonitorState& s, UiState& ui) {
  const ImGuiTableFlags flags = ImGuiTableFlags_RowBg | ImGuiTableFlags_BordersInnerV |
                                ImGuiTableFlags_ScrollY | ImGuiTableFlags_SizingStretchProp;
  if (!ImGui::BeginTable("jobs", 5, flags)) return;
  ImGui::TableSetupScrollFreeze(0, 1);
  ImGui::TableSetupColumn("id", ImGuiTableColumnFlags_WidthFixed, 40);
  ImGui::TableSetupColumn("kind", ImGuiTableColumnFlags_WidthStretch, 1.2f);
  ImGui::TableSetupColumn("state", ImGuiTableColumnFlags_WidthStretch, 1.0f);
  ImGui::TableSetupColumn("progress", ImGuiTableColumnFlags_WidthStretch, 1.6f);
  ImGui::TableSetupColumn("ETA", ImGuiTableColumnFlags_WidthFixed, 64);
  ImGui::TableHeadersRow();
  for (const JobRow& r : s.jobs()) {
    ImGui::TableNextRow();
    ImGui::TableSetColumnIndex(0);
    char label[32];
    std::snprintf(label, sizeof label, "%" PRId64, r.id);
    if (ImGui::Selectable(label, r.id == ui.selected, ImGuiSelectableFlags_SpanAllColumns)) {
      ui.selected = r.id;
      ui.follow = false;
    }
    ImGui::TableSetColumnIndex(1);
    ImGui::TextUnformatted(r.kind.c_str());
    ImGui::TableSetColumnIndex(2);
    ImGui::TextColored(state_colour(r.state), "%s", r.state.c_str());
    ImGui::TableSetColumnIndex(3);
    if (auto f = r.fraction()) {
      char overlay[32];
      std::snprintf(overlay, sizeof overlay, "%.0f%%", *f * 100.0);
      ImGui::ProgressBar(static_cast<float>(*f), ImVec2(-1, 0), overlay);
    } else {
      ImGui::TextDisabled("-");
    }
    ImGui::TableSetColumnIndex(4);
    ImGui::TextUnformatted(r.terminal() ? "" : duration(r.eta_s).c_str());
  }
  ImGui::EndTable();
}

// The preview strip scaled to the pane's width, at most 4x and at most 160 px tall.
float preview_scale(const PreviewTexture& preview, float width) {
  const float scale =
      std::min({4.0f, width / float(preview.width() * preview.frames()), 160.0f / float(preview.height())});
  return std::max(scale, 0.1f);
}

std::vector<std::string> plot_names(const JobDetail& d) {
  static const char* kFirst[] = {"loss", "lr", "tokens_per_s", "mfu"};
  std::vector<std::string> names;
  for (const char* n : kFirst)
    if (d.metrics.count(n)) names.push_back(n);
  for (const auto& [name, series] : d.metrics)
    if (std::find(names.begin(), names.end(), name) == names.end() && names.size() < 8) names.push_back(name);
  return names;
}

// The plots in an area of the layout's height (scrolling when they are taller), each as tall as it says.
void metric_plots(const JobDetail& d, const std::vector<std::string>& names, const DetailLayout& layout,
                  LayoutReport& report) {
  ImGui::BeginChild("plots", ImVec2(0, layout.plots_height), false);
  report.plots_area_height = ImGui::GetWindowHeight();
  if (names.empty()) ImGui::TextDisabled("no metrics from this job");
  for (const auto& name : names) {
    const MetricSeries& m = d.metrics.at(name);
    char overlay[96];
    std::snprintf(overlay, sizeof overlay, "%s %.5g  (step %.0f)", name.c_str(), m.values.back(),
                  m.steps.back());
    // An explicit width: PlotLines (ImGui 1.86) takes its size as given, so -1 ("to the right edge", as other
    // widgets read it) drew a plot of negative width, which showed nothing.
    ImGui::PlotLines(("##" + name).c_str(), m.values.data(), static_cast<int>(m.values.size()), 0, overlay,
                     FLT_MAX, FLT_MAX, ImVec2(ImGui::GetContentRegionAvail().x, layout.plot_height));
    report.plot_heights.push_back(ImGui::GetItemRectSize().y);
    report.plot_widths.push_back(ImGui::GetItemRectSize().x);
  }
  ImGui::EndChild();
}

// The height preview_strip will take.
float preview_height(const JobDetail& d, PreviewTexture& preview, float width) {
  preview.update(d.preview.get());
  if (!preview.frames()) return ImGui::GetTextLineHeightWithSpacing();
  return ImGui::GetTextLineHeightWithSpacing() + preview_scale(preview, width) * float(preview.height()) +
         ImGui::GetStyle().ItemSpacing.y;
}

void preview_strip(const JobDetail& d, PreviewTexture& preview) {
  if (!preview.frames()) {
    ImGui::TextDisabled("no preview frames from this job");
    return;
  }
  if (d.preview->run.empty())
    ImGui::Text("preview: step %" PRId64 ", %zu frames of %dx%d", d.preview->step, d.preview->frames.size(),
                preview.width(), preview.height());
  else
    ImGui::Text("newest sample of run %s: step %" PRId64 ", %zu frames of %dx%d", d.preview->run.c_str(),
                d.preview->step, d.preview->frames.size(), preview.width(), preview.height());
  const float scale = preview_scale(preview, ImGui::GetContentRegionAvail().x);
  ImGui::Image(reinterpret_cast<ImTextureID>(static_cast<intptr_t>(preview.id())),
               ImVec2(float(preview.width() * preview.frames()) * scale, float(preview.height()) * scale));
}

// A bar between the plots and the log: dragging it moves the plots' share of the height.
void splitter(UiState& ui, float height, float available) {
  ImGui::InvisibleButton("splitter", ImVec2(-1, height));
  const bool active = ImGui::IsItemActive(), hovered = ImGui::IsItemHovered();
  if (active) ui.plots_share = drag_plots_share(ui.plots_share, ImGui::GetIO().MouseDelta.y, available);
  if (active || hovered) ImGui::SetMouseCursor(ImGuiMouseCursor_ResizeNS);
  const ImVec2 a = ImGui::GetItemRectMin(), b = ImGui::GetItemRectMax();
  const float y = 0.5f * (a.y + b.y);
  ImGui::GetWindowDrawList()->AddLine(ImVec2(a.x, y), ImVec2(b.x, y),
                                      ImGui::GetColorU32(active    ? ImGuiCol_SeparatorActive
                                                         : hovered ? ImGuiCol_SeparatorHovered
                                                                   : ImGuiCol_Separator),
                                      active || hovered ? 3.0f : 1.0f);
}

void job_detail(const MonitorState& s, UiState& ui, PreviewTexture& preview) {
  const JobRow* r = s.job(ui.selected);
  if (!r) {
    ImGui::TextDisabled("no job selected");
    return;
  }
  ImGui::Text("job %" PRId64 "  %s", r->id, r->kind.c_str());
  ImGui::SameLine();
  ImGui::TextColored(state_colour(r->state), "%s", r->state.c_str());
  if (!r->stage.empty()) {
    ImGui::Text("%s: %" PRId64 " / %" PRId64 " %s", r->stage.c_str(), r->done, r->total, r->unit.c_str());
    if (r->rate > 0 && !r->terminal()) {
      ImGui::SameLine();
      ImGui::Text("  %.3g %s/s  ETA %s", r->rate, r->unit.empty() ? "items" : r->unit.c_str(),
                  duration(r->eta_s).c_str());
    }
  }
  if (!r->error.empty()) ImGui::TextColored(ImVec4(0.95f, 0.40f, 0.35f, 1), "%s", r->error.c_str());
  static const JobDetail kEmpty;
  const JobDetail* d = s.detail(r->id);
  if (!d) d = &kEmpty;
  ImGui::Separator();

  // The plots, the preview, the splitter and the log share what is left of the pane (layout.h).
  const ImGuiStyle& style = ImGui::GetStyle();
  LayoutMetrics metrics;
  metrics.line_height = ImGui::GetTextLineHeightWithSpacing();
  metrics.spacing = style.ItemSpacing.y;
  // The log's frame: its padding and room for its horizontal scrollbar (long lines).
  metrics.log_padding = 2 * style.WindowPadding.y + style.ScrollbarSize;
  const float preview_h = preview_height(*d, preview, ImGui::GetContentRegionAvail().x);
  const float available = ImGui::GetContentRegionAvail().y - preview_h - style.ItemSpacing.y;
  const std::vector<std::string> names = plot_names(*d);
  const DetailLayout layout =
      layout_detail(available, static_cast<int>(names.size()), ui.plots_share, metrics);
  metric_plots(*d, names, layout, ui.layout);
  preview_strip(*d, preview);
  splitter(ui, metrics.splitter, available);
  ImGui::Text("log (%zu lines)", d->logs.size());
  ImGui::BeginChild("log", ImVec2(0, layout.log_height), true, ImGuiWindowFlags_HorizontalScrollbar);
  for (const auto& line : d->logs) ImGui::TextUnformatted(line.c_str());
  // Stay at the newest line unless the person scrolled up to read.
  if (ImGui::GetScrollY() >= ImGui::GetScrollMaxY() - 4) ImGui::SetScrollHereY(1.0f);
  // Whole lines the pane shows, inside its padding and any scrollbar: n lines take n * (line + spacing) -
  // spacing.
  const float inner = ImGui::GetWindowContentRegionMax().y - ImGui::GetWindowContentRegionMin().y;
  ui.layout.log_visible_lines =
      static_cast<int>(std::floor((inner + style.ItemSpacing.y) / metrics.line_height + 1e-3f));
  ImGui::EndChild();
  ui.layout.log_height = ImGui::GetItemRectSize().y;
}

}  // namespace

void choose_selection(const MonitorState& s, UiState& ui) {
  if (!ui.follow) {
    if (s.job(ui.selected)) return;
    ui.follow = true;  // the chosen job is gone from the server's list
  }
  const auto rows = s.jobs();
  for (const JobRow& r : rows)
    if (r.state == "running" || r.state == "starting" || r.state == "paused") {
      ui.selected = r.id;
      return;
    }
  ui.selected = rows.empty() ? 0 : rows.front().id;
}

void draw_monitor(const MonitorState& s, UiState& ui, PreviewTexture& preview) {
  const ImGuiViewport* vp = ImGui::GetMainViewport();
  ui.layout = LayoutReport();
  ui.layout.window_width = static_cast<int>(vp->Size.x);
  ui.layout.window_height = static_cast<int>(vp->Size.y);
  ui.layout.plots_share = ui.plots_share;
  ImGui::SetNextWindowPos(vp->WorkPos);
  ImGui::SetNextWindowSize(vp->WorkSize);
  const ImGuiWindowFlags flags = ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove |
                                 ImGuiWindowFlags_NoResize | ImGuiWindowFlags_NoSavedSettings |
                                 ImGuiWindowFlags_NoBringToFrontOnFocus;
  ImGui::Begin("mugv-monitor", nullptr, flags);
  status_line(s);
  ImGui::Separator();
  ImGui::BeginChild("jobs-pane", ImVec2(ImGui::GetContentRegionAvail().x * 0.45f, 0), true);
  jobs_table(s, ui);
  ImGui::EndChild();
  ImGui::SameLine();
  ImGui::BeginChild("detail-pane", ImVec2(0, 0), true);
  job_detail(s, ui, preview);
  ImGui::EndChild();
  ImGui::End();
}

RgbFrame read_framebuffer(int width, int height) {
  RgbFrame out(width, height);
  std::vector<uint8_t> bottom_up(out.rgb.size());
  GLint alignment = 4;
  glGetIntegerv(GL_PACK_ALIGNMENT, &alignment);
  glPixelStorei(GL_PACK_ALIGNMENT, 1);
  glReadBuffer(GL_BACK);
  glReadPixels(0, 0, width, height, GL_RGB, GL_UNSIGNED_BYTE, bottom_up.data());
  glPixelStorei(GL_PACK_ALIGNMENT, alignment);
  // GL's rows start at the bottom; images start at the top.
  const size_t row = size_t(width) * 3;
  for (int y = 0; y < height; ++y)
    std::memcpy(&out.rgb[size_t(y) * row], &bottom_up[size_t(height - 1 - y) * row], row);
  return out;
}

}  // namespace mugv::monitor
