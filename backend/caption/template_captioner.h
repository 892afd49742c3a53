#pragma once
// Captions from a template over the clip's metadata: "a clip from {source_name}, {motion_word} motion".
// Placeholders are {key} for any metadata key (dotted keys reach into objects); a placeholder whose key
// is missing makes that clip fail with the key named, so a typo never writes a caption with a hole in it.

#include "caption/captioner.h"

namespace mugv {

class TemplateCaptioner final : public Captioner {
 public:
  explicit TemplateCaptioner(std::string pattern);
  CaptionResult caption(const CaptionInput& input) override;
  std::string producer() const override { return "template:" + pattern_; }
  CaptionerKind kind() const override { return CaptionerKind::template_; }

 private:
  std::string pattern_;
};

}  // namespace mugv
