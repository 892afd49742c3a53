#include "render.h"

#include <GL/gl.h>
#include <imgui.h>

#include <algorithm>
#include <cfloat>
#include <cinttypes>
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

void metric_plots(const JobDetail& d) {
  static const char* kFirst[] = {"loss", "lr", "tokens_per_s", "mfu"};
  std::vector<std::string> names;
  for (const char* n : kFirst)
    if (d.metrics.count(n)) names.push_back(n);
  for (const auto& [name, series] : d.metrics)
    if (std::find(names.begin(), names.end(), name) == names.end() && names.size() < 8) names.push_back(name);
  if (names.empty()) {
    ImGui::TextDisabled("no metrics from this job");
    return;
  }
  for (const auto& name : names) {
    const MetricSeries& m = d.metrics.at(name);
    char overlay[96];
    std::snprintf(overlay, sizeof overlay, "%s %.5g  (step %.0f)", name.c_str(), m.values.back(),
                  m.steps.back());
    ImGui::PlotLines(("##" + name).c_str(), m.values.data(), static_cast<int>(m.values.size()), 0, overlay,
                     FLT_MAX, FLT_MAX, ImVec2(-1, 64));
  }
}

void preview_strip(const JobDetail& d, PreviewTexture& preview) {
  preview.update(d.preview.get());
  if (!preview.frames()) {
    ImGui::TextDisabled("no preview frames from this job");
    return;
  }
  ImGui::Text("preview: step %" PRId64 ", %zu frames of %dx%d", d.preview->step, d.preview->frames.size(),
              preview.width(), preview.height());
  // Scaled to the pane's width, at most 4x and at most 160 px tall.
  const float avail = ImGui::GetContentRegionAvail().x;
  float scale =
      std::min({4.0f, avail / float(preview.width() * preview.frames()), 160.0f / float(preview.height())});
  scale = std::max(scale, 0.1f);
  ImGui::Image(reinterpret_cast<ImTextureID>(static_cast<intptr_t>(preview.id())),
               ImVec2(float(preview.width() * preview.frames()) * scale, float(preview.height()) * scale));
}

void job_detail(const MonitorState& s, const UiState& ui, PreviewTexture& preview) {
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
  metric_plots(*d);
  ImGui::Separator();
  preview_strip(*d, preview);
  ImGui::Separator();
  ImGui::Text("log (%zu lines)", d->logs.size());
  ImGui::BeginChild("log", ImVec2(0, 0), true, ImGuiWindowFlags_HorizontalScrollbar);
  for (const auto& line : d->logs) ImGui::TextUnformatted(line.c_str());
  // Stay at the newest line unless the person scrolled up to read.
  if (ImGui::GetScrollY() >= ImGui::GetScrollMaxY() - 4) ImGui::SetScrollHereY(1.0f);
  ImGui::EndChild();
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
