#include "model/tokenizer.h"

#include "core/error.h"
#include "core/paths.h"

#include <dlfcn.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

namespace mugv {

namespace {

// The C interface of spm_shim.cpp.
struct SpmApi {
  void (*free_buffer)(void*) = nullptr;
  int (*train)(const char*, const char* const*, size_t, char**, size_t*, char**) = nullptr;
  void* (*load)(const char*, size_t, char**) = nullptr;
  void (*release)(void*) = nullptr;
  void (*ids)(void*, int*, int*, int*, int*) = nullptr;
  int (*encode)(void*, const char*, size_t, int**, size_t*, char**) = nullptr;
  int (*decode)(void*, const int*, size_t, char**, size_t*, char**) = nullptr;
};

template <typename Fn>
void bind(void* library, const char* name, Fn& out, const std::string& path) {
  out = reinterpret_cast<Fn>(dlsym(library, name));
  if (!out) throw Error(ErrorCode::format, path, std::string("SentencePiece module lacks ") + name);
}

const SpmApi& spm() {
  static SpmApi api;
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::filesystem::path> candidates;
    if (const char* env = std::getenv("MUGV_SPM_MODULE"); env && *env) candidates.emplace_back(env);
    candidates.emplace_back(MUGV_SPM_MODULE_BUILD_PATH);
    candidates.push_back(executable_path().parent_path().parent_path() / MUGV_SPM_MODULE_INSTALL_DIR /
                         "libmugv_spm.so");
    std::string tried;
    for (const auto& path : candidates) {
      tried += (tried.empty() ? "" : ", ") + path.string();
      if (!std::filesystem::exists(path)) continue;
      void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (!library) throw Error(ErrorCode::io, path.string(), std::string("cannot load: ") + dlerror());
      const std::string p = path.string();
      bind(library, "mugv_spm_free", api.free_buffer, p);
      bind(library, "mugv_spm_train", api.train, p);
      bind(library, "mugv_spm_load", api.load, p);
      bind(library, "mugv_spm_release", api.release, p);
      bind(library, "mugv_spm_ids", api.ids, p);
      bind(library, "mugv_spm_encode", api.encode, p);
      bind(library, "mugv_spm_decode", api.decode, p);
      return;
    }
    throw Error(ErrorCode::not_found, "tokenizer",
                "SentencePiece module libmugv_spm.so not found (tried " + tried + ")");
  });
  if (!api.load) throw Error(ErrorCode::not_found, "tokenizer", "SentencePiece module could not be loaded");
  return api;
}

std::string take_error(char* error) {
  std::string message = error ? error : "unknown error";
  if (error) spm().free_buffer(error);
  return message;
}

}  // namespace

struct Tokenizer::Handle {
  void* processor = nullptr;
  ~Handle() {
    if (processor) spm().release(processor);
  }
};

const char* to_string(TokenLimitPolicy policy) {
  switch (policy) {
    case TokenLimitPolicy::truncate:
      return "truncate";
    case TokenLimitPolicy::refuse:
      return "refuse";
    case TokenLimitPolicy::unknown:
      break;
  }
  return "unknown";
}

std::optional<TokenLimitPolicy> token_limit_policy_from_string(std::string_view name) {
  if (name == "truncate") return TokenLimitPolicy::truncate;
  if (name == "refuse") return TokenLimitPolicy::refuse;
  if (name == "unknown") return TokenLimitPolicy::unknown;
  return std::nullopt;
}

const char* to_string(TokenizerAlgorithm algorithm) {
  switch (algorithm) {
    case TokenizerAlgorithm::unigram:
      return "unigram";
    case TokenizerAlgorithm::bpe:
      return "bpe";
    case TokenizerAlgorithm::unknown:
      break;
  }
  return "unknown";
}

std::optional<TokenizerAlgorithm> tokenizer_algorithm_from_string(std::string_view name) {
  if (name == "unigram") return TokenizerAlgorithm::unigram;
  if (name == "bpe") return TokenizerAlgorithm::bpe;
  if (name == "unknown") return TokenizerAlgorithm::unknown;
  return std::nullopt;
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::train(const std::vector<std::string>& sentences, int vocab_size,
                           TokenizerAlgorithm algorithm) {
  if (sentences.empty()) throw Error(ErrorCode::invalid_argument, "tokenizer", "no sentences to train on");
  if (vocab_size < 8) {
    throw Error(ErrorCode::invalid_argument, "tokenizer",
                "vocab_size " + std::to_string(vocab_size) + " is too small (at least 8)");
  }
  if (algorithm == TokenizerAlgorithm::unknown) {
    throw Error(ErrorCode::invalid_argument, "tokenizer", "algorithm must be unigram or bpe");
  }
  std::ostringstream args;
  args << "--model_type=" << to_string(algorithm) << " --vocab_size=" << vocab_size
       << " --hard_vocab_limit=false --pad_id=0 --unk_id=1 --bos_id=-1 --eos_id=2"
       << " --character_coverage=1.0 --minloglevel=2 --num_threads=1";
  std::vector<const char*> pointers;
  for (const auto& s : sentences) pointers.push_back(s.c_str());
  char* model = nullptr;
  size_t model_size = 0;
  char* error = nullptr;
  if (spm().train(args.str().c_str(), pointers.data(), pointers.size(), &model, &model_size, &error) != 0) {
    throw Error(ErrorCode::internal, "tokenizer", "training failed: " + take_error(error));
  }
  std::string bytes(model, model_size);
  spm().free_buffer(model);
  return from_bytes(bytes);
}

Tokenizer Tokenizer::from_bytes(const std::string& model_bytes, const std::string& subject) {
  char* error = nullptr;
  void* processor = spm().load(model_bytes.data(), model_bytes.size(), &error);
  if (!processor) throw Error(ErrorCode::format, subject, "not a SentencePiece model: " + take_error(error));
  Tokenizer t;
  t.handle_ = std::make_unique<Handle>();
  t.handle_->processor = processor;
  t.bytes_ = model_bytes;
  spm().ids(processor, &t.vocab_size_, &t.pad_id_, &t.eos_id_, &t.unk_id_);
  if (t.pad_id_ < 0) t.pad_id_ = 0;
  return t;
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(std::filesystem::exists(path) ? ErrorCode::io : ErrorCode::not_found, path.string(),
                "cannot open the tokenizer model");
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return from_bytes(bytes.str(), path.string());
}

void Tokenizer::save(const std::filesystem::path& path) const {
  write_file_atomic(path, bytes_.data(), bytes_.size());
}

int Tokenizer::vocab_size() const {
  return vocab_size_;
}
int Tokenizer::pad_id() const {
  return pad_id_;
}
int Tokenizer::eos_id() const {
  return eos_id_;
}
int Tokenizer::unk_id() const {
  return unk_id_;
}

std::vector<int> Tokenizer::pieces(std::string_view text) const {
  int* ids = nullptr;
  size_t count = 0;
  char* error = nullptr;
  if (spm().encode(handle_->processor, text.data(), text.size(), &ids, &count, &error) != 0) {
    throw Error(ErrorCode::internal, "tokenizer", "encode failed: " + take_error(error));
  }
  std::vector<int> out(ids, ids + count);
  spm().free_buffer(ids);
  return out;
}

TokenizedText Tokenizer::encode(std::string_view text, int max_tokens, TokenLimitPolicy policy) const {
  if (max_tokens < 1) throw Error(ErrorCode::invalid_argument, "tokenizer", "max_tokens must be at least 1");
  if (policy == TokenLimitPolicy::unknown) {
    throw Error(ErrorCode::invalid_argument, "tokenizer", "token limit policy must be truncate or refuse");
  }
  std::vector<int> ids = pieces(text);
  const int eos = eos_id();
  const size_t needed = ids.size() + (eos >= 0 ? 1 : 0);
  TokenizedText out;
  if (needed > static_cast<size_t>(max_tokens)) {
    if (policy == TokenLimitPolicy::refuse) {
      throw Error(ErrorCode::invalid_argument, "prompt",
                  "prompt has " + std::to_string(needed) + " tokens; the limit is " +
                      std::to_string(max_tokens) + " (shorten it or allow truncation)");
    }
    ids.resize(static_cast<size_t>(max_tokens) - (eos >= 0 ? 1 : 0));
    out.truncated = true;
  }
  if (eos >= 0) ids.push_back(eos);
  out.ids.assign(static_cast<size_t>(max_tokens), pad_id());
  out.mask.assign(static_cast<size_t>(max_tokens), 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    out.ids[i] = ids[i];
    out.mask[i] = 1;
  }
  out.length = static_cast<int64_t>(ids.size());
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> kept;
  const int eos = eos_id();
  for (int64_t id : ids) {
    if (id == eos) break;
    if (id == pad_id() || id < 0 || id >= vocab_size()) continue;
    kept.push_back(static_cast<int>(id));
  }
  char* text = nullptr;
  size_t size = 0;
  char* error = nullptr;
  if (spm().decode(handle_->processor, kept.data(), kept.size(), &text, &size, &error) != 0) {
    throw Error(ErrorCode::internal, "tokenizer", "decode failed: " + take_error(error));
  }
  std::string out(text, size);
  spm().free_buffer(text);
  return out;
}

}  // namespace mugv
