#include "model/mugv_vae_config.h"
#include "core/strings.h"

#include <algorithm>
#include <cmath>

namespace mugv {

namespace {

Error config_error(const std::string& field, const std::string& message) {
  return Error(ErrorCode::invalid_argument, "mugv_vae." + field, message);
}

int64_t count_true(const std::vector<bool>& flags) {
  return std::count(flags.begin(), flags.end(), true);
}

// ---- The name / shape table, mirroring the modules of model/mugv_vae.cpp ----------------------

class ShapeTable {
 public:
  void add(const std::string& name, std::vector<int64_t> shape) {
    items.emplace_back(name, std::move(shape));
  }
  void norm(const std::string& p, int64_t c) {
    add(p + ".weight", {c});
    add(p + ".bias", {c});
  }
  void conv2d(const std::string& p, int64_t in, int64_t out, int64_t k) {
    add(p + ".weight", {out, in, k, k});
    add(p + ".bias", {out});
  }
  void linear(const std::string& p, int64_t in, int64_t out) {
    add(p + ".weight", {out, in});
    add(p + ".bias", {out});
  }
  void conv3d(const std::string& p, int64_t in, int64_t out, int64_t k, bool bias) {
    add(p + ".conv.weight", {out, in, k, k, k});
    if (bias) add(p + ".conv.bias", {out});
  }
  void resnet2d(const std::string& p, int64_t in, int64_t out) {
    norm(p + ".norm1", in);
    conv2d(p + ".conv1", in, out, 3);
    norm(p + ".norm2", out);
    conv2d(p + ".conv2", out, out, 3);
    if (in != out) conv2d(p + ".conv_shortcut", in, out, 1);
  }
  void mid2d(const std::string& p, int64_t c) {
    const std::string a = p + ".attentions.0";
    norm(a + ".group_norm", c);
    linear(a + ".to_q", c, c);
    linear(a + ".to_k", c, c);
    linear(a + ".to_v", c, c);
    linear(a + ".to_out.0", c, c);
    resnet2d(p + ".resnets.0", c, c);
    resnet2d(p + ".resnets.1", c, c);
  }
  void resblock3d(const std::string& p, int64_t in, int64_t out) {
    norm(p + ".norm1", in);
    conv3d(p + ".conv1", in, out, 3, false);
    norm(p + ".norm2", out);
    conv3d(p + ".conv2", out, out, 3, false);
    if (in != out) conv3d(p + ".conv3", in, out, 1, false);
  }

  std::vector<std::pair<std::string, std::vector<int64_t>>> items;
};

}  // namespace

const std::vector<double>& mugv_release_latent_mean() {
  static const std::vector<double> mean = {
      -0.0194091796875, 0.09619140625, -0.796875,     0.1591796875,
      -0.2578125,       0.359375,      -0.3203125,    -0.287109375,
      -0.0069580078125, 0.3046875,     0.310546875,   -0.451171875,
      -0.1728515625,    0.369140625,   0.2177734375,  -3.075599670410156e-05,
      0.1630859375,     -0.267578125,  -0.1962890625, -0.1298828125,
      -0.28515625,      -0.515625,     0.5859375,     -0.34375};
  return mean;
}

const std::vector<double>& mugv_release_latent_std() {
  static const std::vector<double> std = {0.8817, 0.6523, 0.9152, 1.2117, 3.3516, 0.7528, 0.8177, 0.8637,
                                          0.9075, 2.8875, 0.8980, 1.1202, 1.0003, 2.5163, 0.6652, 1.2573,
                                          0.7279, 1.0777, 1.5159, 0.8680, 1.1859, 1.0484, 2.4750, 1.5881};
  return std;
}

int64_t MugvVAEConfig::spatial_factor() const {
  return spatial_channels.empty() ? 1 : int64_t(1) << (spatial_channels.size() - 1);
}

std::vector<int64_t> MugvVAEConfig::temporal_widths() const {
  std::vector<int64_t> widths;
  for (int64_t m : temporal_multipliers) widths.push_back(temporal_filters * m);
  return widths;
}

int64_t MugvVAEConfig::temporal_factor() const {
  return int64_t(1) << count_true(encoder_temporal_downsample);
}

bool operator==(const MugvVAEConfig& a, const MugvVAEConfig& b) {
  return a.image_channels == b.image_channels && a.spatial_channels == b.spatial_channels &&
         a.spatial_layers_per_block == b.spatial_layers_per_block &&
         a.spatial_latent_channels == b.spatial_latent_channels && a.spatial_groups == b.spatial_groups &&
         a.spatial_scaling == b.spatial_scaling && a.temporal_filters == b.temporal_filters &&
         a.temporal_multipliers == b.temporal_multipliers && a.temporal_res_blocks == b.temporal_res_blocks &&
         a.encoder_temporal_downsample == b.encoder_temporal_downsample &&
         a.decoder_temporal_upsample == b.decoder_temporal_upsample &&
         a.temporal_groups == b.temporal_groups && a.latent_channels == b.latent_channels &&
         a.micro_frame_size == b.micro_frame_size && a.micro_batch_size == b.micro_batch_size &&
         a.latent_mean == b.latent_mean && a.latent_std == b.latent_std;
}

void validate(const MugvVAEConfig& c) {
  auto positive = [](int64_t value, const char* field) {
    if (value < 1) throw config_error(field, "must be at least 1, got " + std::to_string(value));
  };
  positive(c.image_channels, "image_channels");
  positive(c.spatial_layers_per_block, "spatial_layers_per_block");
  positive(c.spatial_latent_channels, "spatial_latent_channels");
  positive(c.spatial_groups, "spatial_groups");
  positive(c.temporal_filters, "temporal_filters");
  positive(c.temporal_res_blocks, "temporal_res_blocks");
  positive(c.temporal_groups, "temporal_groups");
  positive(c.latent_channels, "latent_channels");
  if (c.spatial_channels.empty()) throw config_error("spatial_channels", "needs at least one level");
  for (int64_t ch : c.spatial_channels) {
    if (ch < 1 || ch % c.spatial_groups != 0) {
      throw config_error("spatial_channels", "width " + std::to_string(ch) +
                                                 " is not a positive multiple of " +
                                                 std::to_string(c.spatial_groups) + " groups");
    }
  }
  if (!(c.spatial_scaling > 0.0) || !std::isfinite(c.spatial_scaling)) {
    throw config_error("spatial_scaling", "must be positive and finite");
  }
  if (c.temporal_multipliers.empty()) throw config_error("temporal_multipliers", "needs at least one level");
  // The encoder's first res block normalises the bare filter count (conv_in's width).
  std::vector<int64_t> widths = c.temporal_widths();
  widths.push_back(c.temporal_filters);
  for (int64_t w : widths) {
    if (w < 1 || w % c.temporal_groups != 0) {
      throw config_error("temporal_multipliers", "width " + std::to_string(w) +
                                                     " is not a positive multiple of " +
                                                     std::to_string(c.temporal_groups) + " groups");
    }
  }
  const size_t transitions = c.temporal_multipliers.size() - 1;
  if (c.encoder_temporal_downsample.size() != transitions) {
    throw config_error("encoder_temporal_downsample",
                       "needs one flag per level but the last (" + std::to_string(transitions) + ")");
  }
  if (c.decoder_temporal_upsample.size() != transitions) {
    throw config_error("decoder_temporal_upsample",
                       "needs one flag per level but the last (" + std::to_string(transitions) + ")");
  }
  const int64_t decoder_factor = int64_t(2) << count_true(c.decoder_temporal_upsample);
  if (decoder_factor != c.temporal_factor()) {
    throw config_error("decoder_temporal_upsample",
                       "the decoder multiplies time by " + std::to_string(decoder_factor) +
                           " but the encoder divides it by " + std::to_string(c.temporal_factor()));
  }
  if (c.micro_frame_size < 0 || c.micro_frame_size % c.temporal_factor() != 0) {
    throw config_error("micro_frame_size", std::to_string(c.micro_frame_size) +
                                               " is not 0 or a positive multiple of the temporal factor " +
                                               std::to_string(c.temporal_factor()));
  }
  if (c.micro_batch_size < 0) throw config_error("micro_batch_size", "must be 0 (all frames) or positive");
  auto stats = [&](const std::vector<double>& values, const char* field, bool positive_only) {
    if (!values.empty() && int64_t(values.size()) != c.latent_channels) {
      throw config_error(field, "holds " + std::to_string(values.size()) + " values for " +
                                    std::to_string(c.latent_channels) + " latent channels");
    }
    for (double v : values) {
      if (!std::isfinite(v) || (positive_only && !(v > 0.0))) {
        throw config_error(field,
                           positive_only ? "values must be positive and finite" : "values must be finite");
      }
    }
  };
  stats(c.latent_mean, "latent_mean", false);
  stats(c.latent_std, "latent_std", true);
}

std::vector<std::pair<std::string, std::vector<int64_t>>> mugv_vae_tensor_shapes(const MugvVAEConfig& c) {
  validate(c);
  ShapeTable t;
  const int64_t latent = c.latent_channels;
  t.add("logvar", {});
  t.add("scale", {1, latent, 1, 1, 1});
  t.add("shift", {1, latent, 1, 1, 1});

  const std::string s = kMugvVaeSpatialPrefix;
  const auto& ch = c.spatial_channels;
  const int64_t levels = int64_t(ch.size());
  const int64_t top = ch.back();
  t.conv2d(s + "encoder.conv_in", c.image_channels, ch[0], 3);
  for (int64_t i = 0; i < levels; ++i) {
    const std::string p = s + "encoder.down_blocks." + std::to_string(i);
    int64_t in = i == 0 ? ch[0] : ch[i - 1];
    for (int64_t j = 0; j < c.spatial_layers_per_block; ++j, in = ch[i]) {
      t.resnet2d(p + ".resnets." + std::to_string(j), in, ch[i]);
    }
    if (i + 1 < levels) t.conv2d(p + ".downsamplers.0.conv", ch[i], ch[i], 3);
  }
  t.mid2d(s + "encoder.mid_block", top);
  t.norm(s + "encoder.conv_norm_out", top);
  t.conv2d(s + "encoder.conv_out", top, 2 * c.spatial_latent_channels, 3);

  t.conv2d(s + "decoder.conv_in", c.spatial_latent_channels, top, 3);
  for (int64_t i = 0; i < levels; ++i) {
    const std::string p = s + "decoder.up_blocks." + std::to_string(i);
    const int64_t out = ch[levels - 1 - i];
    int64_t in = ch[levels - std::max<int64_t>(i, 1)];
    for (int64_t j = 0; j <= c.spatial_layers_per_block; ++j, in = out) {
      t.resnet2d(p + ".resnets." + std::to_string(j), in, out);
    }
    if (i + 1 < levels) t.conv2d(p + ".upsamplers.0.conv", out, out, 3);
  }
  t.mid2d(s + "decoder.mid_block", top);
  t.norm(s + "decoder.conv_norm_out", ch[0]);
  t.conv2d(s + "decoder.conv_out", ch[0], c.image_channels, 3);

  const std::string e = std::string(kMugvVaeTemporalPrefix) + "encoder.";
  const std::vector<int64_t> w = c.temporal_widths();
  const int64_t n = int64_t(w.size());
  t.conv3d(e + "conv_in", top, c.temporal_filters, 3, false);
  int64_t prev = c.temporal_filters;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < c.temporal_res_blocks; ++j, prev = w[i]) {
      t.resblock3d(e + "block_res_blocks." + std::to_string(i) + "." + std::to_string(j), prev, w[i]);
    }
  }
  for (int64_t i = 0; i + 1 < n; ++i) {
    if (c.encoder_temporal_downsample[i])
      t.conv3d(e + "conv_blocks." + std::to_string(i), w[i], w[i], 3, true);
  }
  for (int64_t j = 0; j < c.temporal_res_blocks; ++j)
    t.resblock3d(e + "res_blocks." + std::to_string(j), w[n - 1], w[n - 1]);
  t.norm(e + "norm1", w[n - 1]);
  t.conv3d(e + "conv2", w[n - 1], 2 * latent, 1, true);
  t.conv3d(std::string(kMugvVaeTemporalPrefix) + "quant_conv", 2 * latent, 2 * latent, 1, true);
  t.conv3d(std::string(kMugvVaeTemporalPrefix) + "post_quant_conv", latent, latent, 1, true);

  const std::string d = std::string(kMugvVaeTemporalPrefix) + "decoder.";
  t.conv3d(d + "conv1", latent, w[n - 1], 3, true);
  for (int64_t j = 0; j < c.temporal_res_blocks; ++j)
    t.resblock3d(d + "res_blocks." + std::to_string(j), w[n - 1], w[n - 1]);
  t.resblock3d(d + "upsample_block", w[n - 1], w[n - 1]);
  for (int64_t i = 0; i < n; ++i) {
    int64_t in = i + 1 < n ? w[i + 1] : w[n - 1];
    for (int64_t j = 0; j < c.temporal_res_blocks; ++j, in = w[i]) {
      t.resblock3d(d + "block_res_blocks." + std::to_string(i) + "." + std::to_string(j), in, w[i]);
    }
  }
  for (int64_t k = 0; k + 1 < n; ++k) {
    if (c.decoder_temporal_upsample[k]) {
      t.conv3d(d + "conv_blocks." + std::to_string(k), w[k + 1], 2 * w[k + 1], 3, true);
    }
  }
  t.norm(d + "norm1", w[0]);
  t.conv3d(d + "conv_out", w[0], top, 3, true);
  return std::move(t.items);
}

int64_t mugv_vae_parameter_count(const MugvVAEConfig& config) {
  int64_t total = 0;
  for (const auto& [name, shape] : mugv_vae_tensor_shapes(config)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    total += n;
  }
  return total;
}

MugvVAEConfig mugv_vae_config_from_shapes(
    const std::function<std::optional<std::vector<int64_t>>(const std::string& name)>& shape_of,
    const MugvVAEConfig& base) {
  auto require = [&](const std::string& name, size_t rank) {
    auto shape = shape_of(name);
    if (!shape) throw Error(ErrorCode::invalid_argument, name, "missing from the checkpoint");
    if (shape->size() != rank) {
      throw Error(ErrorCode::invalid_argument, name,
                  "has shape " + shape_string(*shape) + " but a tensor of rank " + std::to_string(rank) +
                      " was expected");
    }
    return *shape;
  };
  auto present = [&](const std::string& name) { return shape_of(name).has_value(); };

  MugvVAEConfig c = base;
  const std::string s = kMugvVaeSpatialPrefix;
  c.image_channels = require(s + "encoder.conv_in.weight", 4)[1];
  c.spatial_channels.clear();
  for (int i = 0;; ++i) {
    const std::string name = s + "encoder.down_blocks." + std::to_string(i) + ".resnets.0.conv1.weight";
    if (i > 0 && !present(name)) break;
    c.spatial_channels.push_back(require(name, 4)[0]);
  }
  c.spatial_layers_per_block = 0;
  while (present(s + "encoder.down_blocks.0.resnets." + std::to_string(c.spatial_layers_per_block) +
                 ".conv1.weight")) {
    ++c.spatial_layers_per_block;
  }
  c.spatial_latent_channels = require(s + "decoder.conv_in.weight", 4)[1];

  const std::string t = kMugvVaeTemporalPrefix;
  c.temporal_filters = require(t + "encoder.conv_in.conv.weight", 5)[0];
  c.temporal_multipliers.clear();
  for (int i = 0;; ++i) {
    const std::string name = t + "encoder.block_res_blocks." + std::to_string(i) + ".0.conv1.conv.weight";
    if (i > 0 && !present(name)) break;
    const int64_t width = require(name, 5)[0];
    if (c.temporal_filters < 1 || width % c.temporal_filters != 0) {
      throw Error(ErrorCode::invalid_argument, name,
                  "width " + std::to_string(width) + " is not a multiple of the " +
                      std::to_string(c.temporal_filters) + " filters of encoder.conv_in");
    }
    c.temporal_multipliers.push_back(width / c.temporal_filters);
  }
  c.temporal_res_blocks = 0;
  while (present(t + "encoder.block_res_blocks.0." + std::to_string(c.temporal_res_blocks) +
                 ".conv1.conv.weight")) {
    ++c.temporal_res_blocks;
  }
  c.encoder_temporal_downsample.clear();
  c.decoder_temporal_upsample.clear();
  for (size_t i = 0; i + 1 < c.temporal_multipliers.size(); ++i) {
    c.encoder_temporal_downsample.push_back(
        present(t + "encoder.conv_blocks." + std::to_string(i) + ".conv.weight"));
    c.decoder_temporal_upsample.push_back(
        present(t + "decoder.conv_blocks." + std::to_string(i) + ".conv.weight"));
  }
  c.latent_channels = require(t + "post_quant_conv.conv.weight", 5)[0];
  if (int64_t(c.latent_mean.size()) != c.latent_channels) c.latent_mean.clear();
  if (int64_t(c.latent_std.size()) != c.latent_channels) c.latent_std.clear();

  // The layout read above may still be inconsistent (e.g. an encoder and a decoder of different
  // temporal factors); validate() names the field, the walk below the tensor.
  validate(c);
  for (const auto& [name, expected] : mugv_vae_tensor_shapes(c)) {
    auto actual = shape_of(name);
    if (!actual) {
      throw Error(ErrorCode::invalid_argument, name,
                  "missing from the checkpoint (expected shape " + shape_string(expected) + ")");
    }
    if (*actual != expected) {
      throw Error(ErrorCode::invalid_argument, name,
                  "has shape " + shape_string(*actual) + "; the layout read from the checkpoint expects " +
                      shape_string(expected));
    }
  }
  return c;
}

}  // namespace mugv
