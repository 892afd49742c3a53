#pragma once
// Internal to backend/curation: views of RgbFrame as OpenCV matrices and the fixed-width resizes every
// analysis uses. The views borrow the frame's pixels: they are valid while the frame lives, read-only.

#include "media/frame.h"

#include <opencv2/core.hpp>

namespace mugv::curation_detail {

// A CV_8UC3 (RGB order) header over the frame's pixels; throws Error(invalid_argument) for an empty frame.
cv::Mat view_rgb(const RgbFrame& frame);

// `image` resized with area averaging to `width` px wide (height keeps the aspect ratio, at least 1 px);
// returned as is (shared, not copied) when it is already that wide or narrower.
cv::Mat fit_width(const cv::Mat& image, int width);

// 8-bit luma (BT.601, OpenCV's RGB2GRAY) of an RGB image.
cv::Mat luma_of(const cv::Mat& rgb);

}  // namespace mugv::curation_detail
