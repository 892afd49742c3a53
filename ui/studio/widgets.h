#pragma once
// Small widgets the pages share.
//   MetricChart  a live line chart (Qt Charts) of one metric over steps, rescaling as points arrive
//   FramePlayer  shows a sequence of frames: animates a live preview, or plays a decoded video with a scrub
//                slider and frame stepping (Left/Right keys)
//   frames_from_rgb24 / load_video_frames  pictures from preview events and from video files

#include "media/frame.h"

#include <QChartView>
#include <QImage>
#include <QLabel>
#include <QLineSeries>
#include <QList>
#include <QPalette>
#include <QSlider>
#include <QTableWidgetItem>
#include <QTimer>
#include <QToolButton>
#include <QWidget>

#include <vector>

namespace mugv::studio {

class MetricChart : public QChartView {
  Q_OBJECT
 public:
  MetricChart(const QString& title, QWidget* parent = nullptr);
  void add_point(double step, double value);
  void clear_points();
  int point_count() const;

 private:
  QLineSeries* series_;
  double min_y_ = 0, max_y_ = 1, max_x_ = 1;
};

class FramePlayer : public QWidget {
  Q_OBJECT
 public:
  explicit FramePlayer(QWidget* parent = nullptr);
  // Replaces the frames; `loop` animates them continuously (live previews), otherwise the slider scrubs.
  void set_frames(QList<QImage> frames, double fps, bool loop);
  int frame_count() const { return frames_.size(); }
  int current_frame() const { return current_; }
  void show_frame(int index);
  void play(bool on);

 protected:
  void keyPressEvent(QKeyEvent* event) override;

 private:
  QLabel* view_;
  QSlider* slider_;
  QToolButton* play_;
  QLabel* position_;
  QTimer timer_;
  QList<QImage> frames_;
  int current_ = 0;
  bool loop_ = false;
};

// A table cell the user cannot edit.
QTableWidgetItem* read_only_cell(const QString& text);
// The dark theme's colours (for the Fusion style), with disabled controls greyed out.
QPalette dark_palette();

// rgb24 preview frames of an event (one blob per frame).
QList<QImage> frames_from_rgb24(const QList<QByteArray>& blobs, int width, int height);
QImage image_of(const RgbFrame& frame);
// Decodes a whole (short) video; throws mugv::Error naming the file.
QList<QImage> load_video_frames(const QString& path, double* fps);

}  // namespace mugv::studio
