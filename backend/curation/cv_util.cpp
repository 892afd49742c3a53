#include "curation/cv_util.h"

#include "core/error.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace mugv::curation_detail {

cv::Mat view_rgb(const RgbFrame& frame) {
  if (frame.empty())
    throw Error(ErrorCode::invalid_argument, "frame", "a frame without pixels cannot be analysed");
  return cv::Mat(frame.height, frame.width, CV_8UC3, const_cast<uint8_t*>(frame.rgb.data()),
                 frame.stride_bytes());
}

cv::Mat fit_width(const cv::Mat& image, int width) {
  if (image.cols <= width) return image;
  const int height =
      std::max(1, static_cast<int>(std::lround(static_cast<double>(image.rows) * width / image.cols)));
  cv::Mat out;
  cv::resize(image, out, cv::Size(width, height), 0, 0, cv::INTER_AREA);
  return out;
}

cv::Mat luma_of(const cv::Mat& rgb) {
  cv::Mat gray;
  cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
  return gray;
}

}  // namespace mugv::curation_detail
