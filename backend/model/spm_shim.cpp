// SentencePiece behind a C interface, built as a module that tokenizer.cpp loads with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND). Debian's libsentencepiece bundles its own protobuf-lite
// and exports those symbols; linked into a process that also loads LibTorch's libprotobuf, the
// two copies interpose each other and the process crashes during static initialisation. Loaded
// locally with deep binding, each library keeps its own protobuf.
// Every buffer returned is malloc'ed and released with mugv_spm_free.

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

char* copy_out(const std::string& s, size_t* size = nullptr) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (!out) return nullptr;
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  if (size) *size = s.size();
  return out;
}

class ArrayIterator : public sentencepiece::SentenceIterator {
 public:
  ArrayIterator(const char* const* sentences, size_t count) : sentences_(sentences), count_(count) {
    if (count_ > 0) value_ = sentences_[0];
  }
  bool done() const override { return index_ >= count_; }
  void Next() override {
    if (++index_ < count_) value_ = sentences_[index_];
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  const char* const* sentences_;
  size_t count_;
  size_t index_ = 0;
  std::string value_;
};

}  // namespace

extern "C" {

void mugv_spm_free(void* p) {
  std::free(p);
}

int mugv_spm_train(const char* args, const char* const* sentences, size_t count, char** model,
                   size_t* model_size, char** error) {
  ArrayIterator iterator(sentences, count);
  std::string bytes;
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &iterator, &bytes);
  if (!status.ok()) {
    *error = copy_out(status.ToString());
    return 1;
  }
  *model = copy_out(bytes, model_size);
  return 0;
}

void* mugv_spm_load(const char* bytes, size_t size, char** error) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  auto status = processor->LoadFromSerializedProto(std::string(bytes, size));
  if (!status.ok()) {
    *error = copy_out(status.ToString());
    delete processor;
    return nullptr;
  }
  return processor;
}

void mugv_spm_release(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

void mugv_spm_ids(void* handle, int* vocab_size, int* pad_id, int* eos_id, int* unk_id) {
  auto* p = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  *vocab_size = p->GetPieceSize();
  *pad_id = p->pad_id();
  *eos_id = p->eos_id();
  *unk_id = p->unk_id();
}

int mugv_spm_encode(void* handle, const char* text, size_t size, int** ids, size_t* count, char** error) {
  auto* p = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  std::vector<int> out;
  auto status = p->Encode(std::string(text, size), &out);
  if (!status.ok()) {
    *error = copy_out(status.ToString());
    return 1;
  }
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.size() + 1)));
  if (!out.empty()) std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  *count = out.size();
  return 0;
}

int mugv_spm_decode(void* handle, const int* ids, size_t count, char** text, size_t* size, char** error) {
  auto* p = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  std::string out;
  auto status = p->Decode(std::vector<int>(ids, ids + count), &out);
  if (!status.ok()) {
    *error = copy_out(status.ToString());
    return 1;
  }
  *text = copy_out(out, size);
  return 0;
}

}  // extern "C"
