#include "widgets.h"

#include "core/error.h"
#include "media/decoder.h"

#include <QChart>
#include <QHBoxLayout>
#include <QKeyEvent>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>

namespace mugv::studio {

MetricChart::MetricChart(const QString& title, QWidget* parent)
    : QChartView(parent), series_(new QLineSeries) {
  auto* chart = new QChart;
  chart->addSeries(series_);
  chart->setTitle(title);
  chart->legend()->hide();
  chart->createDefaultAxes();
  chart->setMargins(QMargins(2, 2, 2, 2));
  if (palette().color(QPalette::Window).lightness() < 128) chart->setTheme(QChart::ChartThemeDark);
  setChart(chart);
  setRenderHint(QPainter::Antialiasing);
  setMinimumHeight(150);
}

void MetricChart::add_point(double step, double value) {
  if (series_->count() == 0) min_y_ = max_y_ = value;
  series_->append(step, value);
  min_y_ = std::min(min_y_, value);
  max_y_ = std::max(max_y_, value);
  max_x_ = std::max(max_x_, step);
  const double pad = (max_y_ - min_y_) * 0.05 + 1e-9;
  // A metric that is never negative (loss, learning rate, throughput) keeps its axis at or above zero.
  const double low = min_y_ >= 0 ? std::max(0.0, min_y_ - pad) : min_y_ - pad;
  chart()->axes(Qt::Horizontal).first()->setRange(0, max_x_);
  chart()->axes(Qt::Vertical).first()->setRange(low, max_y_ + pad);
}

void MetricChart::clear_points() {
  series_->clear();
  max_x_ = 1;
}

int MetricChart::point_count() const {
  return static_cast<int>(series_->count());
}

FramePlayer::FramePlayer(QWidget* parent) : QWidget(parent) {
  view_ = new QLabel(this);
  view_->setAlignment(Qt::AlignCenter);
  view_->setMinimumSize(256, 256);
  view_->setStyleSheet("background: #111;");
  slider_ = new QSlider(Qt::Horizontal, this);
  slider_->setToolTip("Scrub through the frames (Left/Right step one frame)");
  play_ = new QToolButton(this);
  play_->setText("Play");
  play_->setCheckable(true);
  play_->setToolTip("Play or pause (Space)");
  position_ = new QLabel(this);
  auto* controls = new QHBoxLayout;
  controls->addWidget(play_);
  controls->addWidget(slider_, 1);
  controls->addWidget(position_);
  auto* layout = new QVBoxLayout(this);
  layout->addWidget(view_, 1);
  layout->addLayout(controls);
  setFocusPolicy(Qt::StrongFocus);
  connect(slider_, &QSlider::valueChanged, this, &FramePlayer::show_frame);
  connect(play_, &QToolButton::toggled, this, &FramePlayer::play);
  connect(&timer_, &QTimer::timeout, this, [this] {
    if (frames_.isEmpty()) return;
    const int next = current_ + 1;
    if (next >= frames_.size() && !loop_) {
      play(false);
      return;
    }
    show_frame(next % frames_.size());
  });
}

void FramePlayer::set_frames(QList<QImage> frames, double fps, bool loop) {
  frames_ = std::move(frames);
  loop_ = loop;
  timer_.setInterval(static_cast<int>(1000.0 / std::max(1.0, fps)));
  slider_->setRange(0, std::max(0, static_cast<int>(frames_.size()) - 1));
  slider_->setEnabled(!loop);
  if (current_ >= frames_.size()) current_ = 0;
  show_frame(loop ? current_ : 0);
  if (loop) play(true);
}

void FramePlayer::show_frame(int index) {
  if (frames_.isEmpty()) {
    view_->clear();
    position_->clear();
    return;
  }
  current_ = std::clamp(index, 0, static_cast<int>(frames_.size()) - 1);
  const QImage& f = frames_[current_];
  // Previews are latent-sized (a few pixels): scale without smoothing so they stay legible.
  view_->setPixmap(
      QPixmap::fromImage(f.scaled(view_->size(), Qt::KeepAspectRatio,
                                  f.width() < 64 ? Qt::FastTransformation : Qt::SmoothTransformation)));
  position_->setText(QString("%1 / %2").arg(current_ + 1).arg(frames_.size()));
  if (slider_->value() != current_) slider_->setValue(current_);
}

void FramePlayer::play(bool on) {
  if (play_->isChecked() != on) play_->setChecked(on);
  if (on)
    timer_.start();
  else
    timer_.stop();
}

void FramePlayer::keyPressEvent(QKeyEvent* event) {
  if (event->key() == Qt::Key_Left)
    show_frame(current_ - 1);
  else if (event->key() == Qt::Key_Right)
    show_frame(current_ + 1);
  else if (event->key() == Qt::Key_Space)
    play(!timer_.isActive());
  else
    QWidget::keyPressEvent(event);
}

QTableWidgetItem* read_only_cell(const QString& text) {
  auto* item = new QTableWidgetItem(text);
  item->setFlags(item->flags() & ~Qt::ItemIsEditable);
  return item;
}

QList<QImage> frames_from_rgb24(const QList<QByteArray>& blobs, int width, int height) {
  QList<QImage> out;
  for (const auto& b : blobs) {
    if (b.size() != qsizetype(width) * height * 3) continue;
    out.push_back(
        QImage(reinterpret_cast<const uchar*>(b.constData()), width, height, width * 3, QImage::Format_RGB888)
            .copy());
  }
  return out;
}

QImage image_of(const RgbFrame& f) {
  return QImage(f.rgb.data(), f.width, f.height, f.width * 3, QImage::Format_RGB888).copy();
}

QList<QImage> load_video_frames(const QString& path, double* fps) {
  VideoDecoder decoder(path.toStdString());
  if (fps) *fps = decoder.info().fps > 0 ? decoder.info().fps : 8.0;
  QList<QImage> frames;
  while (auto f = decoder.next()) frames.push_back(image_of(*f));
  if (frames.isEmpty()) throw Error(ErrorCode::format, path.toStdString(), "the video has no frames");
  return frames;
}

QPalette dark_palette() {
  QPalette p;
  p.setColor(QPalette::Window, QColor(37, 37, 38));
  p.setColor(QPalette::WindowText, QColor(220, 220, 220));
  p.setColor(QPalette::Base, QColor(30, 30, 30));
  p.setColor(QPalette::AlternateBase, QColor(45, 45, 48));
  p.setColor(QPalette::Text, QColor(220, 220, 220));
  p.setColor(QPalette::Button, QColor(50, 50, 52));
  p.setColor(QPalette::ButtonText, QColor(220, 220, 220));
  p.setColor(QPalette::Highlight, QColor(14, 99, 156));
  p.setColor(QPalette::HighlightedText, Qt::white);
  p.setColor(QPalette::ToolTipBase, QColor(50, 50, 52));
  p.setColor(QPalette::ToolTipText, QColor(220, 220, 220));
  // setColor() above set every colour group; a disabled control must look disabled.
  for (auto role : {QPalette::WindowText, QPalette::Text, QPalette::ButtonText})
    p.setColor(QPalette::Disabled, role, QColor(120, 120, 120));
  p.setColor(QPalette::Disabled, QPalette::Button, QColor(42, 42, 44));
  p.setColor(QPalette::Disabled, QPalette::Base, QColor(37, 37, 38));
  p.setColor(QPalette::Disabled, QPalette::Highlight, QColor(70, 70, 72));
  return p;
}

}  // namespace mugv::studio
