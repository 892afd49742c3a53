#include "model/config.h"

#include "core/error.h"
#include "core/presets.h"

#include <algorithm>
#include <limits>
#include <set>

namespace mugv {

const char* to_string(Recompute recompute) {
  switch (recompute) {
    case Recompute::none:
      return "none";
    case Recompute::selective:
      return "selective";
    case Recompute::full:
      return "full";
    case Recompute::unknown:
      break;
  }
  return "unknown";
}

std::optional<Recompute> recompute_from_string(std::string_view name) {
  if (name == "none") return Recompute::none;
  if (name == "selective") return Recompute::selective;
  if (name == "full") return Recompute::full;
  if (name == "unknown") return Recompute::unknown;
  return std::nullopt;
}

namespace {

std::string fmt_int(int64_t v) {
  return std::to_string(v);
}

bool is_power_of_two(int v) {
  return v > 0 && (v & (v - 1)) == 0;
}

int log2_int(int v) {
  int n = 0;
  while (v > 1) {
    v >>= 1;
    ++n;
  }
  return n;
}

[[noreturn]] void bad(const std::string& subject, const std::string& message) {
  throw Error(ErrorCode::invalid_argument, subject, message);
}

void require_positive(int value, const char* key, const std::string& subject) {
  if (value <= 0) bad(subject, std::string(key) + " must be positive, got " + fmt_int(value));
}

// Reads one table of the preset, refusing keys it does not know so that a typo is never ignored.
class TableReader {
 public:
  TableReader(const nlohmann::json& root, const char* table, const std::string& subject)
      : table_(table), subject_(subject) {
    if (root.contains(table)) {
      values_ = root.at(table);
      if (!values_.is_object()) bad(subject_, std::string("[") + table + "] must be a table");
    } else {
      values_ = nlohmann::json::object();
    }
  }

  void integer(const char* key, int& out) {
    seen_.insert(key);
    if (!values_.contains(key)) return;
    const auto& v = values_.at(key);
    if (!v.is_number_integer()) bad(subject_, where(key) + " must be an integer");
    out = v.get<int>();
  }
  void real(const char* key, double& out) {
    seen_.insert(key);
    if (!values_.contains(key)) return;
    const auto& v = values_.at(key);
    if (!v.is_number()) bad(subject_, where(key) + " must be a number");
    out = v.get<double>();
  }
  void boolean(const char* key, bool& out) {
    seen_.insert(key);
    if (!values_.contains(key)) return;
    const auto& v = values_.at(key);
    if (!v.is_boolean()) bad(subject_, where(key) + " must be true or false");
    out = v.get<bool>();
  }
  void integers(const char* key, std::vector<int>& out) {
    seen_.insert(key);
    if (!values_.contains(key)) return;
    const auto& v = values_.at(key);
    if (!v.is_array()) bad(subject_, where(key) + " must be an array of integers");
    out.clear();
    for (const auto& item : v) {
      if (!item.is_number_integer()) bad(subject_, where(key) + " must be an array of integers");
      out.push_back(item.get<int>());
    }
  }
  void triple(const char* key, int& t, int& h, int& w) {
    std::vector<int> values;
    integers(key, values);
    if (!values_.contains(key)) return;
    if (values.size() != 3) bad(subject_, where(key) + " must be [t, h, w]");
    t = values[0];
    h = values[1];
    w = values[2];
  }
  std::optional<std::string> text(const char* key) {
    seen_.insert(key);
    if (!values_.contains(key)) return std::nullopt;
    const auto& v = values_.at(key);
    if (!v.is_string()) bad(subject_, where(key) + " must be a string");
    return v.get<std::string>();
  }
  bool has(const char* key) const { return values_.contains(key); }
  void finish() const {
    for (const auto& item : values_.items()) {
      if (!seen_.count(item.key())) bad(subject_, "unknown key " + where(item.key().c_str()));
    }
  }

 private:
  std::string where(const char* key) const { return std::string(table_) + "." + key; }
  nlohmann::json values_;
  const char* table_;
  std::string subject_;
  std::set<std::string> seen_;
};

}  // namespace

const char* to_string(TextEncoderKind kind) {
  switch (kind) {
    case TextEncoderKind::small_transformer:
      return "small_transformer";
    case TextEncoderKind::t5:
      return "t5";
    case TextEncoderKind::unknown:
      break;
  }
  return "unknown";
}

std::optional<TextEncoderKind> text_encoder_kind_from_string(std::string_view name) {
  if (name == "small_transformer") return TextEncoderKind::small_transformer;
  if (name == "t5") return TextEncoderKind::t5;
  if (name == "unknown") return TextEncoderKind::unknown;
  return std::nullopt;
}

const char* to_string(VAENorm norm) {
  switch (norm) {
    case VAENorm::group:
      return "group";
    case VAENorm::channel_rms:
      return "channel_rms";
    case VAENorm::none:
      return "none";
  }
  return "unknown";
}

std::optional<VAENorm> vae_norm_from_string(std::string_view name) {
  if (name == "group") return VAENorm::group;
  if (name == "channel_rms") return VAENorm::channel_rms;
  if (name == "none") return VAENorm::none;
  return std::nullopt;
}

void validate(const DiTConfig& c, const std::string& subject) {
  require_positive(c.hidden, "dit.hidden", subject);
  require_positive(c.depth, "dit.depth", subject);
  require_positive(c.heads, "dit.heads", subject);
  require_positive(c.head_dim, "dit.head_dim", subject);
  require_positive(c.mlp_ratio, "dit.mlp_ratio", subject);
  require_positive(c.in_channels, "dit.in_channels", subject);
  require_positive(c.patch_t, "dit.patch[0]", subject);
  require_positive(c.patch_h, "dit.patch[1]", subject);
  require_positive(c.patch_w, "dit.patch[2]", subject);
  require_positive(c.text_dim, "dit.text_dim", subject);
  require_positive(c.text_tokens, "dit.text_tokens", subject);
  require_positive(c.frequency_dim, "dit.frequency_dim", subject);
  if (c.heads * c.head_dim != c.hidden) {
    bad(subject, "dit.hidden " + fmt_int(c.hidden) + " is not heads " + fmt_int(c.heads) + " x head_dim " +
                     fmt_int(c.head_dim));
  }
  // 3D RoPE rotates pairs of dimensions, head_dim / 6 pairs per axis (h, w, t).
  if (c.head_dim < 6 || c.head_dim % 2 != 0) {
    bad(subject, "dit.head_dim " + fmt_int(c.head_dim) + " must be even and at least 6 for 3D RoPE");
  }
  if (c.frequency_dim % 2 != 0) bad(subject, "dit.frequency_dim must be even");
  if (!(c.rope_theta > 1.0)) bad(subject, "dit.rope_theta must be greater than 1");
  if (!(c.attention_multiplier > 0.0)) bad(subject, "dit.attention_multiplier must be positive");
}

void validate(const VAEConfig& c, const std::string& subject) {
  require_positive(c.latent_channels, "vae.latent_channels", subject);
  require_positive(c.base_channels, "vae.base_channels", subject);
  require_positive(c.res_blocks, "vae.res_blocks", subject);
  if (c.decoder_window < 0) bad(subject, "vae.decoder_window must not be negative");
  if (!(c.kl_weight >= 0.0)) bad(subject, "vae.kl_weight must not be negative");
  for (int v : {c.compress_t, c.compress_h, c.compress_w}) {
    if (!is_power_of_two(v)) bad(subject, "vae.compress values must be powers of two, got " + fmt_int(v));
  }
  if (c.compress_h != c.compress_w) bad(subject, "vae.compress: height and width compression must be equal");
  if (c.channel_mult.empty()) bad(subject, "vae.channel_mult must not be empty");
  for (int m : c.channel_mult) require_positive(m, "vae.channel_mult entries", subject);
  if (c.pixel_shortcut && c.latent_channels < 3) {
    bad(subject, "vae.pixel_shortcut needs at least 3 latent channels (one per colour), got " +
                     fmt_int(c.latent_channels));
  }
  if (!is_power_of_two(c.patch) || c.patch > c.compress_h) {
    bad(subject, "vae.patch " + fmt_int(c.patch) + " must be a power of two no larger than compress " +
                     fmt_int(c.compress_h));
  }
  const int downs = std::max(vae_temporal_downsamples(c), vae_spatial_downsamples(c));
  if (static_cast<int>(c.channel_mult.size()) < downs) {
    bad(subject, "vae.channel_mult has " + fmt_int(static_cast<int64_t>(c.channel_mult.size())) +
                     " levels; compression " + fmt_int(c.compress_t) + "x" + fmt_int(c.compress_h) +
                     " with patch " + fmt_int(c.patch) + " needs at least " + fmt_int(downs));
  }
}

void validate(const TextEncoderConfig& c, const std::string& subject) {
  if (c.kind == TextEncoderKind::unknown) bad(subject, "text.kind must be \"small_transformer\" or \"t5\"");
  require_positive(c.vocab_size, "text.vocab_size", subject);
  require_positive(c.dim, "text.dim", subject);
  require_positive(c.layers, "text.layers", subject);
  require_positive(c.heads, "text.heads", subject);
  require_positive(c.head_dim, "text.head_dim", subject);
  require_positive(c.ff_dim, "text.ff_dim", subject);
  require_positive(c.max_tokens, "text.max_tokens", subject);
  if (c.kind == TextEncoderKind::small_transformer && c.heads * c.head_dim != c.dim) {
    bad(subject, "text.dim " + fmt_int(c.dim) + " is not heads " + fmt_int(c.heads) + " x head_dim " +
                     fmt_int(c.head_dim));
  }
  if (c.kind == TextEncoderKind::t5) {
    require_positive(c.relative_buckets, "text.relative_buckets", subject);
    require_positive(c.relative_max_distance, "text.relative_max_distance", subject);
  }
}

void validate(const ModelPreset& p) {
  const std::string& subject = p.name;
  validate(p.dit, subject);
  validate(p.vae, subject);
  validate(p.text, subject);
  if (p.dit.in_channels != p.vae.latent_channels) {
    bad(subject, "dit.in_channels " + fmt_int(p.dit.in_channels) + " differs from vae.latent_channels " +
                     fmt_int(p.vae.latent_channels));
  }
  if (p.dit.text_dim != p.text.dim) {
    bad(subject, "dit.text_dim " + fmt_int(p.dit.text_dim) + " differs from text.dim " + fmt_int(p.text.dim));
  }
}

ModelPreset model_preset_from_json(const nlohmann::json& values, const std::string& name,
                                   const std::string& subject) {
  if (!values.is_object()) bad(subject, "a model preset must be a table");
  ModelPreset p;
  p.name = name;
  for (const auto& item : values.items()) {
    const std::string& key = item.key();
    if (key == "description") {
      if (!item.value().is_string()) bad(subject, "description must be a string");
      p.description = item.value().get<std::string>();
    } else if (key != "dit" && key != "vae" && key != "text") {
      bad(subject, "unknown key " + key + " (expected [dit], [vae], [text] or description)");
    }
  }

  TableReader text(values, "text", subject);
  if (auto kind = text.text("kind")) {
    auto parsed = text_encoder_kind_from_string(*kind);
    if (!parsed || *parsed == TextEncoderKind::unknown) {
      bad(subject, "text.kind \"" + *kind + "\" is not one of small_transformer, t5");
    }
    p.text.kind = *parsed;
  }
  text.integer("vocab_size", p.text.vocab_size);
  text.integer("dim", p.text.dim);
  text.integer("layers", p.text.layers);
  text.integer("heads", p.text.heads);
  text.integer("head_dim", p.text.head_dim);
  text.integer("ff_dim", p.text.ff_dim);
  text.integer("max_tokens", p.text.max_tokens);
  text.integer("relative_buckets", p.text.relative_buckets);
  text.integer("relative_max_distance", p.text.relative_max_distance);
  text.finish();
  if (!text.has("head_dim") && p.text.heads > 0) p.text.head_dim = p.text.dim / p.text.heads;

  TableReader vae(values, "vae", subject);
  vae.integer("latent_channels", p.vae.latent_channels);
  vae.triple("compress", p.vae.compress_t, p.vae.compress_h, p.vae.compress_w);
  vae.integer("patch", p.vae.patch);
  vae.integer("base_channels", p.vae.base_channels);
  vae.integers("channel_mult", p.vae.channel_mult);
  vae.integer("res_blocks", p.vae.res_blocks);
  vae.integer("decoder_window", p.vae.decoder_window);
  if (auto norm = vae.text("norm")) {
    auto parsed = vae_norm_from_string(*norm);
    if (!parsed) bad(subject, "vae.norm \"" + *norm + "\" is not one of group, channel_rms, none");
    p.vae.norm = *parsed;
  }
  vae.boolean("pixel_shortcut", p.vae.pixel_shortcut);
  vae.real("kl_weight", p.vae.kl_weight);
  vae.finish();

  TableReader dit(values, "dit", subject);
  dit.integer("hidden", p.dit.hidden);
  dit.integer("depth", p.dit.depth);
  dit.integer("heads", p.dit.heads);
  dit.integer("head_dim", p.dit.head_dim);
  dit.integer("mlp_ratio", p.dit.mlp_ratio);
  p.dit.in_channels = p.vae.latent_channels;
  dit.integer("in_channels", p.dit.in_channels);
  dit.triple("patch", p.dit.patch_t, p.dit.patch_h, p.dit.patch_w);
  p.dit.text_dim = p.text.dim;
  dit.integer("text_dim", p.dit.text_dim);
  p.dit.text_tokens = p.text.max_tokens;
  dit.integer("text_tokens", p.dit.text_tokens);
  dit.real("rope_theta", p.dit.rope_theta);
  dit.real("attention_multiplier", p.dit.attention_multiplier);
  dit.integer("frequency_dim", p.dit.frequency_dim);
  dit.boolean("null_caption", p.dit.null_caption);
  dit.finish();
  if (!dit.has("head_dim") && p.dit.heads > 0) p.dit.head_dim = p.dit.hidden / p.dit.heads;

  validate(p);
  return p;
}

ModelPreset load_model_preset(std::string_view name) {
  nlohmann::json values = load_preset("models", name);
  auto ref = find_preset("models", name);
  const std::string subject = ref ? ref->path.string() : std::string(name);
  return model_preset_from_json(values, std::string(name), subject);
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const auto& ref : list_presets("models")) names.push_back(ref.name);
  return names;
}

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A checkpoint tensor of the given rank, or Error(format) naming it.
std::vector<int64_t> checkpoint_shape(const TensorShapeLookup& shape, const std::string& name, size_t rank,
                                      const std::string& subject) {
  auto found = shape(name);
  if (!found) throw Error(ErrorCode::format, subject, "no tensor " + name + ": not a MUG-V DiT checkpoint");
  if (found->size() != rank)
    throw Error(ErrorCode::format, subject,
                name + " is " + shape_text(*found) + "; expected " + std::to_string(rank) + " dimensions");
  return *found;
}

}  // namespace

TensorShapeLookup shapes_of(const WeightFiles& files) {
  return [&files](const std::string& name) -> std::optional<std::vector<int64_t>> {
    if (!files.contains(name)) return std::nullopt;
    return files.at(name).shape;
  };
}

DiTConfig dit_config_from_checkpoint(const TensorShapeLookup& shape, int text_tokens,
                                     const std::string& subject) {
  auto misfit = [&](const std::string& name, const std::vector<int64_t>& s, const std::string& why) {
    throw Error(ErrorCode::format, subject, name + " is " + shape_text(s) + ": " + why);
  };
  DiTConfig c;
  const auto patch = checkpoint_shape(shape, "x_embedder.proj.weight", 5, subject);
  c.hidden = int(patch[0]);
  c.in_channels = int(patch[1]);
  c.patch_t = int(patch[2]);
  c.patch_h = int(patch[3]);
  c.patch_w = int(patch[4]);
  const auto q_norm = checkpoint_shape(shape, "blocks.0.attn.q_norm.weight", 1, subject);
  c.head_dim = int(q_norm[0]);
  if (c.head_dim <= 0 || c.hidden % c.head_dim != 0)
    misfit("blocks.0.attn.q_norm.weight", q_norm,
           "hidden " + std::to_string(c.hidden) + " is not a whole number of heads");
  c.heads = c.hidden / c.head_dim;
  while (shape("blocks." + std::to_string(c.depth) + ".scale_shift_table")) ++c.depth;
  const auto fc1 = checkpoint_shape(shape, "blocks.0.mlp.fc1.weight", 2, subject);
  if (fc1[1] != c.hidden || fc1[0] % c.hidden != 0)
    misfit("blocks.0.mlp.fc1.weight", fc1, "not a whole multiple of hidden " + std::to_string(c.hidden));
  c.mlp_ratio = int(fc1[0] / c.hidden);
  const auto y_proj = checkpoint_shape(shape, "y_embedder.y_proj.fc1.weight", 2, subject);
  if (y_proj[0] != c.hidden)
    misfit("y_embedder.y_proj.fc1.weight", y_proj, "expected " + std::to_string(c.hidden) + " rows");
  c.text_dim = int(y_proj[1]);
  const auto t_freq = checkpoint_shape(shape, "t_embedder.mlp.0.weight", 2, subject);
  c.frequency_dim = int(t_freq[1]);
  if (auto null_caption = shape("null_caption")) {
    if (null_caption->size() != 2 || (*null_caption)[1] != c.text_dim)
      misfit("null_caption", *null_caption, "expected [tokens, " + std::to_string(c.text_dim) + "]");
    c.null_caption = true;
    c.text_tokens = int((*null_caption)[0]);
  } else {
    c.null_caption = false;
    c.text_tokens = text_tokens;
  }
  const auto out = checkpoint_shape(shape, "final_layer.linear.weight", 2, subject);
  const int64_t outputs = int64_t(c.patch_t) * c.patch_h * c.patch_w * dit_out_channels(c);
  if (out[0] != outputs || out[1] != c.hidden)
    misfit("final_layer.linear.weight", out,
           "expected [" + std::to_string(outputs) + ", " + std::to_string(c.hidden) + "] (2 x " +
               std::to_string(c.in_channels) + " channels per patch element)");
  if (c.depth == 0)
    throw Error(ErrorCode::format, subject, "no blocks.N tensors: not a MUG-V DiT checkpoint");
  validate(c, subject);
  return c;
}

void check_dit_matches_checkpoint(const DiTConfig& preset, const std::string& preset_name,
                                  const TensorShapeLookup& shape, const std::string& subject) {
  const DiTConfig file = dit_config_from_checkpoint(shape, preset.text_tokens, subject);
  auto compare = [&](const char* what, int64_t in_file, int64_t in_preset, const char* tensor) {
    if (in_file == in_preset) return;
    throw Error(ErrorCode::invalid_argument, subject,
                std::string(tensor) + " says " + what + " " + std::to_string(in_file) + "; preset " +
                    preset_name + " has " + std::to_string(in_preset));
  };
  compare("hidden", file.hidden, preset.hidden, "x_embedder.proj.weight");
  compare("latent channels", file.in_channels, preset.in_channels, "x_embedder.proj.weight");
  compare("patch t", file.patch_t, preset.patch_t, "x_embedder.proj.weight");
  compare("patch h", file.patch_h, preset.patch_h, "x_embedder.proj.weight");
  compare("patch w", file.patch_w, preset.patch_w, "x_embedder.proj.weight");
  compare("head_dim", file.head_dim, preset.head_dim, "blocks.0.attn.q_norm.weight");
  compare("depth", file.depth, preset.depth, "blocks.N.scale_shift_table");
  compare("mlp_ratio", file.mlp_ratio, preset.mlp_ratio, "blocks.0.mlp.fc1.weight");
  compare("text width", file.text_dim, preset.text_dim, "y_embedder.y_proj.fc1.weight");
  compare("frequency_dim", file.frequency_dim, preset.frequency_dim, "t_embedder.mlp.0.weight");
  compare("learned null caption (1 = present)", file.null_caption, preset.null_caption, "null_caption");
  if (file.null_caption) compare("text tokens", file.text_tokens, preset.text_tokens, "null_caption");
}

TextEncoderConfig t5_config_from_hf_json(const nlohmann::json& config, int max_tokens,
                                         const std::string& subject) {
  if (!config.is_object()) throw Error(ErrorCode::format, subject, "not a JSON object");
  auto text = [&](const char* key) -> std::string {
    auto it = config.find(key);
    if (it == config.end() || !it->is_string())
      throw Error(ErrorCode::format, subject, std::string("no text \"") + key + "\"");
    return it->get<std::string>();
  };
  auto integer = [&](const char* key) -> int {
    auto it = config.find(key);
    if (it == config.end() || !it->is_number_integer() || it->get<int64_t>() <= 0 ||
        it->get<int64_t>() > std::numeric_limits<int>::max())
      throw Error(ErrorCode::format, subject, std::string("no positive 32-bit integer \"") + key + "\"");
    return it->get<int>();
  };
  const std::string type = text("model_type");
  if (type != "t5" && type != "umt5")
    throw Error(ErrorCode::unsupported, subject, "model_type \"" + type + "\" is not a T5 encoder");
  const std::string feed_forward = config.contains("feed_forward_proj") ? text("feed_forward_proj") : "relu";
  if (feed_forward != "gated-gelu")
    throw Error(
        ErrorCode::unsupported, subject,
        "feed_forward_proj \"" + feed_forward + "\": only T5 v1.1's gated-gelu feed-forward is supported");
  TextEncoderConfig c;
  c.kind = TextEncoderKind::t5;
  c.dim = integer("d_model");
  c.head_dim = integer("d_kv");
  c.ff_dim = integer("d_ff");
  c.layers = integer("num_layers");
  c.heads = integer("num_heads");
  c.vocab_size = integer("vocab_size");
  c.relative_buckets = integer("relative_attention_num_buckets");
  c.relative_max_distance = config.contains("relative_attention_max_distance")
                                ? integer("relative_attention_max_distance")
                                : 128;  // the default of the configs written before the key existed
  c.max_tokens = max_tokens;
  validate(c, subject);
  return c;
}

DiTConfig release_width_dit(int hidden, int heads, int depth) {
  DiTConfig c = load_model_preset("mugv-10b").dit;
  c.hidden = hidden;
  c.heads = heads;
  c.head_dim = heads > 0 ? hidden / heads : 0;
  c.depth = depth;
  validate(c, "release width DiT");
  return c;
}

int64_t dit_video_tokens(const DiTConfig& c, int64_t latent_frames, int64_t latent_height,
                         int64_t latent_width) {
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  return ceil_div(latent_frames, c.patch_t) * ceil_div(latent_height, c.patch_h) *
         ceil_div(latent_width, c.patch_w);
}

namespace {
int64_t linear_parameters(int64_t in, int64_t out) {
  return in * out + out;
}
}  // namespace

int64_t dit_block_parameter_count(const DiTConfig& c) {
  const int64_t d = c.hidden;
  const int64_t hd = c.head_dim;
  const int64_t ff = d * c.mlp_ratio;
  const auto linear = linear_parameters;
  int64_t block = 6 * d;                                             // per-block adaLN table
  block += linear(d, 3 * d) + 2 * hd + linear(d, d);                 // self-attention
  block += 2 * d;                                                    // affine cross-attention norm
  block += linear(d, d) + linear(d, 2 * d) + 2 * hd + linear(d, d);  // cross-attention
  block += linear(d, ff) + linear(ff, d);                            // MLP
  return block;
}

int64_t dit_final_layer_parameter_count(const DiTConfig& c) {
  const int64_t d = c.hidden;
  const int64_t out = int64_t(c.patch_t) * c.patch_h * c.patch_w * dit_out_channels(c);
  return 2 * d + linear_parameters(d, out);  // final adaLN table + linear
}

int64_t dit_parameter_count(const DiTConfig& c) {
  const int64_t d = c.hidden;
  const int64_t patch_volume = int64_t(c.patch_t) * c.patch_h * c.patch_w;
  const auto linear = linear_parameters;

  int64_t n = 0;
  n += int64_t(c.in_channels) * patch_volume * d + d;            // patchify Conv3d
  n += 2 * (linear(c.frequency_dim, d) + linear(d, d));          // timestep + fps embedders
  n += linear(d, 6 * d);                                         // adaLN-single
  n += linear(c.text_dim, d) + linear(d, d);                     // caption projection MLP
  if (c.null_caption) n += int64_t(c.text_tokens) * c.text_dim;  // learned null caption
  n += 2 * d;                                                    // start / end tokens
  n += dit_block_parameter_count(c) * c.depth;
  n += dit_final_layer_parameter_count(c);
  return n;
}

double dit_flops_per_token(const DiTConfig& c, int64_t video_tokens, int64_t text_tokens) {
  const double n = static_cast<double>(dit_parameter_count(c));
  const double ld = static_cast<double>(c.depth) * c.hidden;
  const double s = static_cast<double>(video_tokens + 2);
  return 6.0 * n + 12.0 * ld * s + 12.0 * ld * static_cast<double>(text_tokens);
}

int64_t vae_parameter_count(const VAEConfig& c) {
  // GroupNorm has a gain and a bias per channel, the channel RMS norm a gain only, none nothing.
  auto norm = [&](int64_t ch) -> int64_t {
    return c.norm == VAENorm::group ? 2 * ch : c.norm == VAENorm::channel_rms ? ch : 0;
  };
  auto conv = [](int64_t in, int64_t out, int64_t kernel_volume) { return in * out * kernel_volume + out; };
  auto res_block = [&](int64_t in, int64_t out) {
    int64_t n = norm(in) + conv(in, out, 27) + norm(out) + conv(out, out, 27);
    if (in != out) n += conv(in, out, 1);
    return n;
  };
  const int levels = static_cast<int>(c.channel_mult.size());
  const int t_downs = vae_temporal_downsamples(c);
  const int s_downs = vae_spatial_downsamples(c);
  const int downs = std::max(t_downs, s_downs);
  const int64_t latent = c.latent_channels;
  const int64_t pixel_channels = 3 * int64_t(c.patch) * c.patch;
  auto level_channels = [&](int i) { return int64_t(c.base_channels) * c.channel_mult[i]; };

  int64_t n = conv(pixel_channels, level_channels(0), 27);  // encoder
  int64_t ch = level_channels(0);
  for (int i = 0; i < levels; ++i) {
    const int64_t out = level_channels(i);
    for (int b = 0; b < c.res_blocks; ++b) {
      n += res_block(ch, out);
      ch = out;
    }
    if (i < downs) n += conv(ch, ch, 27);
  }
  n += res_block(ch, ch) + norm(ch) + conv(ch, 2 * latent, 27);

  ch = level_channels(levels - 1);  // decoder
  n += conv(latent, ch, int64_t(9) * (2 * c.decoder_window + 1)) + res_block(ch, ch);
  for (int i = levels - 1; i >= 0; --i) {  // upsampling before each level's blocks, as in vae.cpp
    const int64_t out = level_channels(i);
    if (i < downs) {
      n += (i < s_downs) ? conv(ch, 4 * out, 27) : conv(ch, out, 27);
      ch = out;
    }
    for (int b = 0; b < c.res_blocks; ++b) {
      n += res_block(ch, out);
      ch = out;
    }
  }
  n += norm(ch) + conv(ch, pixel_channels, 27);
  return n;
}

int vae_temporal_downsamples(const VAEConfig& c) {
  return log2_int(c.compress_t);
}

int vae_spatial_downsamples(const VAEConfig& c) {
  return log2_int(c.compress_h / std::max(c.patch, 1));
}

int64_t text_encoder_parameter_count(const TextEncoderConfig& c) {
  const int64_t d = c.dim;
  const int64_t f = c.ff_dim;
  if (c.kind == TextEncoderKind::small_transformer) {
    int64_t layer = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d);
    return int64_t(c.vocab_size) * d + int64_t(c.max_tokens) * d + layer * c.layers + 2 * d;
  }
  if (c.kind == TextEncoderKind::t5) {
    const int64_t inner = int64_t(c.heads) * c.head_dim;
    int64_t layer = 4 * d * inner + d + 3 * d * f + d;
    return int64_t(c.vocab_size) * d + layer * c.layers + int64_t(c.relative_buckets) * c.heads + d;
  }
  return 0;
}

}  // namespace mugv
