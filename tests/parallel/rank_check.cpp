// A rank of a multi-process collectives check, started by test_parallel through the launcher.
//   rank_check collectives LAYOUT   every collective on every group of LAYOUT, checked against the expected
//   sums rank_check missing              connects expecting a rank that never comes; succeeds when the
//   timeout names it
#include "core/error.h"
#include "parallel/process_groups.h"

#include <cstdio>
#include <string>

using namespace mugv;

namespace {

bool close(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && torch::allclose(a, b);
}

int check_collectives(const ParallelLayout& layout) {
  auto rdv = rendezvous_from_process_environment();
  auto pg = ProcessGroups::connect(rdv, layout, CommBackend::gloo, std::chrono::milliseconds(30000));
  int failures = 0;
  auto expect = [&](bool ok, const char* what, GroupKind kind) {
    if (!ok) {
      std::fprintf(stderr, "rank %d: %s on the %s group is wrong\n", rdv.rank, what, to_string(kind));
      ++failures;
    }
  };
  for (GroupKind kind : {GroupKind::world, GroupKind::tensor, GroupKind::context, GroupKind::data}) {
    int n = pg->group_size(kind), me = pg->group_rank(kind);
    auto members = group_of(rdv.rank, layout, kind);
    double member_sum = 0;
    for (int m : members) member_sum += m + 1;

    torch::Tensor x = torch::full({4, 6}, double(rdv.rank + 1), torch::kFloat64);
    pg->all_reduce_sum(kind, x);
    expect(close(x, torch::full({4, 6}, member_sum, torch::kFloat64)), "all_reduce", kind);

    torch::Tensor mine = torch::full({2, 3}, double(me), torch::kFloat64);
    torch::Tensor gathered = pg->all_gather(kind, mine, 0);
    torch::Tensor expected =
        torch::arange(n, torch::kFloat64).repeat_interleave(2).unsqueeze(1).expand({2 * n, 3});
    expect(close(gathered, expected), "all_gather", kind);

    // Row r of the input holds rank + r; after the sum each rank keeps rows [me*2, me*2+2).
    torch::Tensor rows = torch::arange(2 * n, torch::kFloat64).unsqueeze(1).expand({2 * n, 5}) + rdv.rank;
    torch::Tensor scattered = pg->reduce_scatter_sum(kind, rows.contiguous(), 0);
    torch::Tensor want =
        (torch::arange(2 * n, torch::kFloat64).unsqueeze(1).expand({2 * n, 5}) * n + (member_sum - n))
            .chunk(n, 0)[me];
    expect(close(scattered, want), "reduce_scatter", kind);

    // all_to_all: [n*2 (sequence), 3] split along dim 0, gathered along dim 1.
    torch::Tensor seq = torch::arange(2 * n * 3, torch::kFloat64).reshape({2 * n, 3}) + 1000.0 * me;
    torch::Tensor swapped = pg->all_to_all(kind, seq, 0, 1);
    std::vector<torch::Tensor> parts;
    for (int src = 0; src < n; ++src)
      parts.push_back(
          (torch::arange(2 * n * 3, torch::kFloat64).reshape({2 * n, 3}) + 1000.0 * src).chunk(n, 0)[me]);
    expect(close(swapped, torch::cat(parts, 1)), "all_to_all", kind);

    torch::Tensor b = torch::full({3}, double(me == 0 ? 42 : -1), torch::kFloat64);
    pg->broadcast(kind, b, 0);
    expect(close(b, torch::full({3}, 42.0, torch::kFloat64)), "broadcast", kind);
    pg->barrier(kind);
  }
  return failures == 0 ? 0 : 1;
}

int check_missing() {
  auto rdv = rendezvous_from_process_environment();
  try {
    ProcessGroups::connect(rdv, ParallelLayout{1, 1, rdv.world_size}, CommBackend::gloo,
                           std::chrono::milliseconds(1500));
  } catch (const Error& e) {
    std::string what = e.what();
    std::fprintf(stderr, "%s\n", what.c_str());
    return e.code() == ErrorCode::timeout && what.find("rank(s) 1 of 2 never arrived") != std::string::npos
               ? 0
               : 1;
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "collectives" && argc > 2) return check_collectives(parse_layout(argv[2]));
    if (mode == "missing") return check_missing();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank_check: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: rank_check collectives LAYOUT | missing\n");
  return 2;
}
