// Writes the seed corpus of fuzz_weight_files.cpp: one small valid file per reader, made by this project's
// writers (which tests elsewhere check against files torch wrote), each prefixed with its selector byte.
// Run by the build before the fuzzer: `fuzz_weight_seeds OUT_DIR`.
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"
#include "core/torch_pickle.h"
#include "core/zip_archive.h"
#include "interop/dist_checkpoint.h"
#include "interop/pickle.h"
#include "interop/torch_archive.h"

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_seed(const fs::path& dir, const std::string& name, char selector, const std::string& bytes) {
  std::ofstream out(dir / name, std::ios::binary);
  out.put(selector);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path dir = argv[1];
  fs::create_directories(dir);
  const fs::path scratch = dir / ".scratch";
  fs::create_directories(scratch);
  const std::array<float, 6> weights{1, 2, 3, 4, 5, 6};
  const std::array<uint16_t, 2> half{0x3c00, 0xc000};
  try {
    mugv::SafetensorsWriter safetensors;
    safetensors.add("blocks.0.attn.qkv.weight", mugv::DType::f32, {2, 3}, weights.data(), sizeof weights);
    safetensors.add("blocks.0.attn.qkv.bias", mugv::DType::bf16, {2}, half.data(), sizeof half);
    safetensors.set_metadata("format", "pt");
    safetensors.write(scratch / "a.safetensors");
    write_seed(dir, "safetensors", 0, read_bytes(scratch / "a.safetensors"));

    mugv::TorchCheckpointWriter checkpoint(scratch / "a.pt");
    checkpoint.add("x_embedder.proj.weight", mugv::DType::f32, {3, 2}, weights.data(), sizeof weights);
    const std::string storage = checkpoint.add_storage(mugv::DType::f32, weights.data(), sizeof weights);
    checkpoint.add_view("t_embedder.bias", storage, 2, {2});
    checkpoint.finish();
    const std::string pt = read_bytes(scratch / "a.pt");
    write_seed(dir, "torch_checkpoint", 1, pt);

    mugv::TorchTensorRecord record;
    record.name = "final_layer.linear.weight";
    record.dtype = mugv::DType::f32;
    record.storage_key = "0";
    record.storage_numel = 6;
    record.shape = {2, 3};
    record.stride = {3, 1};
    write_seed(dir, "torch_pickle", 2, mugv::write_torch_pickle({record}));

    const auto metadata = mugv::make_newobj(
        mugv::make_global("torch.distributed.checkpoint.metadata", "Metadata"), {},
        mugv::make_dict(
            {{mugv::make_string("state_dict_metadata"),
              mugv::make_dict({{mugv::make_string("model.weight"),
                                mugv::make_tuple({mugv::make_int(4), mugv::make_float(0.5),
                                                  mugv::make_bytes("ab"), mugv::make_none()})}})}}));
    write_seed(dir, "pickle_protocol4", 3, mugv::write_pickle(metadata, 4));
    write_seed(
        dir, "pickle_protocol2", 3,
        mugv::write_pickle(mugv::make_list({mugv::make_bool(true), mugv::make_string("iteration")}), 2));

    mugv::TorchArchiveWriter archive;
    const auto tensor = archive.add_tensor(mugv::DType::f32, {6}, weights.data(), sizeof weights);
    write_seed(dir, "torch_archive", 4,
               archive.finish(mugv::make_dict(
                   {{mugv::make_string("weight"), tensor}, {mugv::make_string("step"), mugv::make_int(7)}})));

    mugv::ZipWriter zip(scratch / "a.zip", {64, true});
    zip.add("archive/data.pkl", "abc", 3);
    zip.add("archive/version", "3\n", 2);
    zip.finish();
    write_seed(dir, "zip64", 5, read_bytes(scratch / "a.zip"));

    // A distributed checkpoint: one tensor in two chunks and one object; the input is the .metadata's
    // length (16 bits, little-endian), the .metadata and the .distcp.
    mugv::DistCheckpointWriter dcp(scratch / "dcp");
    dcp.add_chunk("decoder.layers.0.weight", mugv::DType::f32, {2, 3}, {0, 0}, {1, 3}, weights.data(), 12);
    dcp.add_chunk("decoder.layers.0.weight", mugv::DType::f32, {2, 3}, {1, 0}, {1, 3}, weights.data() + 3,
                  12);
    dcp.add_object("rng_state/shard_0_1", "bytes");
    dcp.finish();
    const std::string dcp_metadata = read_bytes(scratch / "dcp" / ".metadata");
    if (dcp_metadata.size() > 0xffff) throw std::runtime_error("the seed's .metadata is over 64 KiB");
    const std::string length{char(dcp_metadata.size() & 0xff), char(dcp_metadata.size() >> 8)};
    write_seed(dir, "dist_checkpoint", 6,
               length + dcp_metadata + read_bytes(scratch / "dcp" / "__0_0.distcp"));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_weight_seeds: %s\n", e.what());
    return 1;
  }
  fs::remove_all(scratch);
  return 0;
}
