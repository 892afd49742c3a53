#include "parallel/process_groups.h"

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "model/compute.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef MUGV_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <map>
#include <thread>

namespace mugv {

struct ProcessGroups::Groups {
  c10::intrusive_ptr<c10d::Store> store;
  std::map<GroupKind, c10::intrusive_ptr<c10d::ProcessGroup>> by_kind;
  std::map<GroupKind, std::vector<int>> members;
};

namespace {

// The network device Gloo binds to: loopback when the whole run is on this machine; otherwise the interface
// in MUGV_GLOO_IFNAME (as GLOO_SOCKET_IFNAME is for PyTorch), else the address this host's name resolves to.
std::shared_ptr<gloo::transport::Device> gloo_device(const std::string& master_addr) {
  if (const char* ifname = std::getenv("MUGV_GLOO_IFNAME"); ifname && *ifname)
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (master_addr == "localhost" || master_addr.rfind("127.", 0) == 0)
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

c10::intrusive_ptr<c10d::ProcessGroup> make_group(CommBackend backend,
                                                  const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                  int size, std::chrono::milliseconds timeout,
                                                  const std::string& master_addr) {
  if (backend == CommBackend::nccl) {
#ifdef MUGV_WITH_NCCL
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
#else
    throw Error(ErrorCode::unsupported, "nccl", "this build of MUG-V has no NCCL (CPU LibTorch); use gloo");
#endif
  }
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  opts->devices.push_back(gloo_device(master_addr));
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
}

// Every rank announces itself; rank 0 waits for all and names the missing ones on timeout. Then all ranks
// wait for rank 0's "complete", so every rank fails with the same message.
void wait_for_ranks(c10d::Store& store, int rank, int world, std::chrono::milliseconds timeout) {
  store.set(cat("mugv/arrived/", rank), std::vector<uint8_t>{1});
  auto deadline = std::chrono::steady_clock::now() + timeout;
  if (rank == 0) {
    std::vector<int> missing;
    while (true) {
      missing.clear();
      for (int r = 0; r < world; ++r)
        if (!store.check({cat("mugv/arrived/", r)})) missing.push_back(r);
      if (missing.empty() || std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::string verdict = missing.empty() ? "ok" : "";
    for (int r : missing) verdict += (verdict.empty() ? "" : ", ") + std::to_string(r);
    store.set("mugv/arrival", std::vector<uint8_t>(verdict.begin(), verdict.end()));
  }
  while (!store.check({"mugv/arrival"})) {
    if (std::chrono::steady_clock::now() > deadline + std::chrono::seconds(5))
      throw Error(ErrorCode::timeout, "rendezvous", "rank 0 never reported the arrival of all ranks");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto v = store.get("mugv/arrival");
  std::string verdict(v.begin(), v.end());
  if (verdict != "ok")
    throw Error(ErrorCode::timeout, "rendezvous",
                cat("rank(s) ", verdict, " of ", world, " never arrived within ", timeout.count(), " ms"));
}

void wait(const c10::intrusive_ptr<c10d::Work>& work) {
  if (!work->wait()) throw Error(ErrorCode::internal, "collective", "a collective operation failed");
}

// An in-place collective's tensor on the device the backend needs (ProcessGroups::comm_device_for): NCCL
// moves only CUDA tensors, but a run's control values (flags, counts, loss sums, batch headers) live on
// the CPU. Such a tensor travels through a copy on `where`; `finish` writes the result back. A tensor
// already there is used itself.
class Staged {
 public:
  Staged(torch::Tensor& tensor, const torch::Device& where) : original_(tensor) {
    if (tensor.device() != where) staged_ = tensor.to(where);
  }
  torch::Tensor& tensor() { return staged_.defined() ? staged_ : original_; }
  void finish() {
    if (staged_.defined()) original_.copy_(staged_);
  }

 private:
  torch::Tensor& original_;
  torch::Tensor staged_;
};

}  // namespace

const char* to_string(CommBackend b) {
  switch (b) {
    case CommBackend::gloo:
      return "gloo";
    case CommBackend::nccl:
      return "nccl";
    default:
      return "unknown";
  }
}

ProcessGroups::~ProcessGroups() = default;

std::shared_ptr<ProcessGroups> ProcessGroups::connect(const Rendezvous& rdv, const ParallelLayout& layout,
                                                      CommBackend backend,
                                                      std::chrono::milliseconds timeout) {
  validate_layout(layout, rdv.world_size);
  if (backend == CommBackend::nccl && !torch::cuda::is_available())
    throw Error(ErrorCode::unsupported, "nccl", "no CUDA device is available on this machine; use gloo");
  std::shared_ptr<ProcessGroups> pg(new ProcessGroups());
  pg->rendezvous_ = rdv;
  pg->layout_ = layout;
  pg->backend_ = backend;
  if (backend == CommBackend::nccl) pg->device_ = cuda_device_of_local_rank(rdv.local_rank);
  pg->groups_ = std::make_unique<Groups>();

  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(rdv.master_port);
  opts.isServer = rdv.rank == 0;
  opts.numWorkers = rdv.world_size;
  opts.waitWorkers = false;  // wait_for_ranks() does it, naming who is missing
  opts.timeout = timeout;
  try {
    pg->groups_->store = c10::make_intrusive<c10d::TCPStore>(rdv.master_addr, opts);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::timeout, cat(rdv.master_addr, ":", rdv.master_port),
                cat("cannot reach the rendezvous of rank 0: ", e.what()));
  }
  wait_for_ranks(*pg->groups_->store, rdv.rank, rdv.world_size, timeout);

  // Every rank creates every group in the same order (c10d requires it) and keeps the ones it is in.
  pg->groups_->by_kind[GroupKind::world] =
      make_group(backend, pg->groups_->store, rdv.rank, rdv.world_size, timeout, rdv.master_addr);
  pg->groups_->members[GroupKind::world] = group_of(rdv.rank, layout, GroupKind::world);
  for (GroupKind kind : {GroupKind::tensor, GroupKind::context, GroupKind::data, GroupKind::sequence,
                         GroupKind::pipeline, GroupKind::replica}) {
    auto groups = all_groups(layout, kind);
    for (size_t i = 0; i < groups.size(); ++i) {
      const auto& members = groups[i];
      auto me = std::find(members.begin(), members.end(), rdv.rank);
      if (me == members.end()) continue;
      auto prefixed =
          c10::make_intrusive<c10d::PrefixStore>(cat("mugv/", to_string(kind), "/", i), pg->groups_->store);
      pg->groups_->by_kind[kind] = make_group(backend, prefixed, static_cast<int>(me - members.begin()),
                                              static_cast<int>(members.size()), timeout, rdv.master_addr);
      pg->groups_->members[kind] = members;
    }
  }
  log_debug(cat("rank ", rdv.rank, "/", rdv.world_size, ": groups ready (", to_string(layout), ", ",
                to_string(backend), ")"));
  return pg;
}

c10d::ProcessGroup& ProcessGroups::group(GroupKind kind) {
  return *groups_->by_kind.at(kind);
}

int ProcessGroups::group_rank(GroupKind kind) const {
  const auto& m = groups_->members.at(kind);
  return static_cast<int>(std::find(m.begin(), m.end(), rendezvous_.rank) - m.begin());
}

int ProcessGroups::group_size(GroupKind kind) const {
  return static_cast<int>(groups_->members.at(kind).size());
}

void ProcessGroups::all_reduce_sum(GroupKind kind, torch::Tensor& tensor) {
  if (group_size(kind) == 1) return;
  Staged staged(tensor, comm_device_for(tensor));
  std::vector<torch::Tensor> tensors{staged.tensor()};
  wait(group(kind).allreduce(tensors));
  staged.finish();
}

std::function<void()> ProcessGroups::all_reduce_sum_async(GroupKind kind, torch::Tensor& tensor) {
  if (group_size(kind) == 1) return [] {};
  if (comm_device_for(tensor) != tensor.device()) {  // staged: nothing to overlap with
    all_reduce_sum(kind, tensor);
    return [] {};
  }
  std::vector<torch::Tensor> tensors{tensor};
  auto work = group(kind).allreduce(tensors);
  return [work] { wait(work); };
}

void ProcessGroups::broadcast(GroupKind kind, torch::Tensor& tensor, int root) {
  if (group_size(kind) == 1) return;
  Staged staged(tensor, comm_device_for(tensor));
  std::vector<torch::Tensor> tensors{staged.tensor()};
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  wait(group(kind).broadcast(tensors, opts));
  staged.finish();
}

void ProcessGroups::all_gather_into(GroupKind kind, const torch::Tensor& tensor,
                                    std::vector<torch::Tensor>& outputs) {
  if (static_cast<int>(outputs.size()) != group_size(kind))
    throw Error(ErrorCode::internal, "all_gather_into",
                cat(outputs.size(), " outputs for ", group_size(kind), " ranks"));
  if (group_size(kind) == 1) {
    outputs[0].copy_(tensor);
    return;
  }
  const torch::Device where = comm_device_for(tensor);
  std::vector<torch::Tensor> input{tensor.to(where).contiguous()};
  std::vector<std::vector<torch::Tensor>> output(1);
  for (const auto& out : outputs)
    output[0].push_back(out.device() == where ? out : torch::empty_like(out, out.options().device(where)));
  wait(group(kind).allgather(output, input));
  for (size_t i = 0; i < outputs.size(); ++i)
    if (!output[0][i].is_same(outputs[i])) outputs[i].copy_(output[0][i]);
}

torch::Tensor ProcessGroups::all_gather(GroupKind kind, const torch::Tensor& tensor, int64_t dim) {
  int n = group_size(kind);
  if (n == 1) return tensor;
  std::vector<torch::Tensor> input{tensor.to(comm_device_for(tensor)).contiguous()};
  std::vector<std::vector<torch::Tensor>> output(1);
  for (int i = 0; i < n; ++i) output[0].push_back(torch::empty_like(input[0]));
  wait(group(kind).allgather(output, input));  // list form: Gloo in 1.13 has no flat _allgather_base
  return torch::cat(output[0], dim).to(tensor.device());
}

torch::Tensor ProcessGroups::reduce_scatter_sum(GroupKind kind, const torch::Tensor& tensor, int64_t dim) {
  int n = group_size(kind);
  if (tensor.size(dim) % n != 0)
    throw Error(
        ErrorCode::invalid_argument, "reduce_scatter",
        cat("size ", tensor.size(dim), " along dim ", dim, " is not divisible by the group size ", n));
  if (n == 1) return tensor;
  // Gloo in LibTorch 1.13 has no reduce_scatter: all-reduce everything and keep this rank's slice.
  torch::Tensor full = tensor.clone();
  all_reduce_sum(kind, full);
  return full.chunk(n, dim)[group_rank(kind)].contiguous();
}

torch::Tensor ProcessGroups::all_to_all(GroupKind kind, const torch::Tensor& tensor, int64_t scatter_dim,
                                        int64_t gather_dim) {
  int n = group_size(kind);
  if (n == 1) return tensor;
  if (tensor.size(scatter_dim) % n != 0)
    throw Error(ErrorCode::invalid_argument, "all_to_all",
                cat("size ", tensor.size(scatter_dim), " along dim ", scatter_dim,
                    " is not divisible by the group size ", n));
  // Chunk i goes to rank i: move the scatter dim to the front so the chunks are contiguous blocks.
  auto chunks = tensor.chunk(n, scatter_dim);
  torch::Tensor input = torch::stack(std::vector<torch::Tensor>(chunks.begin(), chunks.end()), 0)
                            .to(comm_device_for(tensor))
                            .contiguous();
  torch::Tensor output = torch::empty_like(input);
  std::vector<int64_t> splits;  // equal splits
  wait(group(kind).alltoall_base(output, input, splits, splits));
  auto received = output.unbind(0);
  return torch::cat(std::vector<torch::Tensor>(received.begin(), received.end()), gather_dim)
      .to(tensor.device());
}

torch::Device ProcessGroups::comm_device_for(const torch::Tensor& tensor) const {
  return backend_ == CommBackend::nccl && !tensor.is_cuda() ? device_ : tensor.device();
}

void ProcessGroups::barrier(GroupKind kind) {
  if (group_size(kind) == 1) return;
  wait(group(kind).barrier());
}

ProcessGroups::PendingSend ProcessGroups::send_async(GroupKind kind, const torch::Tensor& tensor, int to,
                                                     int tag) {
  std::vector<torch::Tensor> tensors{tensor.to(comm_device_for(tensor)).contiguous()};
  auto work = group(kind).send(tensors, to, tag);
  // The sent data lives in the closures until the send is done and they are dropped.
  return {[work] { return work->isCompleted(); }, [work, tensors] { wait(work); }};
}

void ProcessGroups::recv(GroupKind kind, torch::Tensor& tensor, int from, int tag) {
  Staged staged(tensor, comm_device_for(tensor));
  std::vector<torch::Tensor> tensors{staged.tensor()};
  wait(group(kind).recv(tensors, from, tag));
  staged.finish();
}

}  // namespace mugv
