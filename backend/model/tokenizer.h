#pragma once
// Text tokenizer over SentencePiece. A Tokenizer owns one SentencePiece model; its serialized
// bytes (`model_bytes()`) are what a run saves beside its checkpoints, so training and sampling
// tokenize identically. T5's own spiece.model loads the same way (from_file).
//
// encode() returns exactly max_tokens ids: the pieces of the prompt, then the end-of-sequence id
// (when the model has one), then the pad id; mask[i] is 1 for real tokens (eos included) and 0
// for padding. An empty prompt gives just the eos token. A prompt longer than max_tokens is cut
// (keeping eos last) or refused, by TokenLimitPolicy.
//
// Thread-safety: encode/decode are const and safe to call concurrently; training is not.
//
// SentencePiece runs inside a helper module (libmugv_spm.so, see spm_shim.cpp) loaded on first
// use with dlopen, because Debian's libsentencepiece and LibTorch's libprotobuf cannot share one
// symbol scope. It is looked up at $MUGV_SPM_MODULE, beside the build tree's target, then in
// <prefix>/<libdir>/mugv/; a missing module is Error(not_found) naming the places tried.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class TokenLimitPolicy { unknown = 0, truncate, refuse };
const char* to_string(TokenLimitPolicy policy);
std::optional<TokenLimitPolicy> token_limit_policy_from_string(std::string_view name);

enum class TokenizerAlgorithm { unknown = 0, unigram, bpe };
const char* to_string(TokenizerAlgorithm algorithm);
std::optional<TokenizerAlgorithm> tokenizer_algorithm_from_string(std::string_view name);

struct TokenizedText {
  std::vector<int64_t> ids;   // max_tokens entries
  std::vector<int64_t> mask;  // max_tokens entries of 0 / 1
  int64_t length = 0;         // number of 1s in mask
  bool truncated = false;     // the prompt was cut to fit (TokenLimitPolicy::truncate)
};

class Tokenizer {
 public:
  // Trains on `sentences` (captions). BPE is the default because unigram seeds its vocabulary
  // from substrings repeated across distinct words, which a small caption set (the shapes
  // starter set has ~20 distinct words) does not have. vocab_size is an upper bound: a small corpus yields
  // fewer pieces (SentencePiece's hard_vocab_limit is off). Ids: pad 0, unk 1, eos 2. Throws
  // Error(invalid_argument) for an empty corpus or vocab_size < 8, Error(internal) when SentencePiece fails
  // (its message is kept).
  [[nodiscard]] static Tokenizer train(const std::vector<std::string>& sentences, int vocab_size,
                                       TokenizerAlgorithm algorithm = TokenizerAlgorithm::bpe);
  // Throws Error(format) naming `subject` when the bytes are not a SentencePiece model.
  [[nodiscard]] static Tokenizer from_bytes(const std::string& model_bytes,
                                            const std::string& subject = "tokenizer");
  // Throws Error(not_found / io) for an unreadable file, Error(format) for a file that is not a model.
  [[nodiscard]] static Tokenizer from_file(const std::filesystem::path& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Writes model_bytes() atomically. Throws Error(io) naming the path.
  void save(const std::filesystem::path& path) const;
  const std::string& model_bytes() const { return bytes_; }

  int vocab_size() const;
  int pad_id() const;
  int eos_id() const;  // -1 when the model has none
  int unk_id() const;

  // Throws Error(invalid_argument) for max_tokens < 1, or, with TokenLimitPolicy::refuse, for a
  // prompt that needs more than max_tokens ("prompt has 41 tokens; the limit is 32").
  [[nodiscard]] TokenizedText encode(std::string_view text, int max_tokens, TokenLimitPolicy policy) const;
  // The pieces alone: no eos, no padding.
  [[nodiscard]] std::vector<int> pieces(std::string_view text) const;
  // Decodes ids, stopping at the first eos and skipping padding.
  [[nodiscard]] std::string decode(const std::vector<int64_t>& ids) const;

 private:
  Tokenizer() = default;
  struct Handle;
  std::unique_ptr<Handle> handle_;
  std::string bytes_;
  int vocab_size_ = 0;
  int pad_id_ = 0;
  int eos_id_ = -1;
  int unk_id_ = -1;
};

}  // namespace mugv
