#include "core/error.h"
#include "parallel/layout.h"
#include "parallel/rendezvous.h"

#include <catch2/catch.hpp>

#include <map>
#include <set>

using namespace mugv;

TEST_CASE("Megatron rank order: tensor parallel fastest, then context, then data", "[unit][parallel]") {
  ParallelLayout l{2, 2, 2};
  CHECK(group_of(0, l, GroupKind::tensor) == std::vector<int>{0, 1});
  CHECK(group_of(5, l, GroupKind::tensor) == std::vector<int>{4, 5});
  CHECK(group_of(1, l, GroupKind::context) == std::vector<int>{1, 3});
  CHECK(group_of(1, l, GroupKind::data) == std::vector<int>{1, 5});
  for (int r = 0; r < 8; ++r) CHECK(rank_of(coords_of(r, l), l) == r);
  for (auto kind : {GroupKind::tensor, GroupKind::context, GroupKind::data}) {
    std::multiset<int> seen;
    for (const auto& g : all_groups(l, kind)) seen.insert(g.begin(), g.end());
    CHECK(seen.size() == 8);
    CHECK(std::set<int>(seen.begin(), seen.end()).size() == 8);  // each rank exactly once
  }
}

TEST_CASE("layouts that do not fit are refused with the reason", "[unit][parallel]") {
  CHECK_NOTHROW(validate_layout({2, 1, 2}, 4, 8));
  CHECK_THROWS_WITH(validate_layout({2, 1, 2}, 6), Catch::Contains("does not match the world size 6"));
  CHECK_THROWS_WITH(validate_layout({4, 1, 1}, 4, 6), Catch::Contains("6 attention heads"));
  CHECK_THROWS_AS(validate_layout({0, 1, 1}, 0), Error);
  auto l = parse_layout("tp2.cp1.dp4");
  CHECK((l.tp == 2 && l.cp == 1 && l.dp == 4));
  CHECK(parse_layout("tp=2,dp=3").world() == 6);
  CHECK(parse_layout("pp2").pp == 2);
  CHECK_THROWS_WITH(parse_layout("ep2"), Catch::Contains("unknown parallel dimension 'ep'"));
  CHECK_THROWS_WITH(validate_layout({1, 1, 1, 4}, 4, 8, 3),
                    Catch::Contains("3 blocks cannot be split into 4"));
  CHECK(to_string(ParallelLayout{2, 1, 2, 1}) == "tp2.cp1.dp2");
  CHECK(to_string(ParallelLayout{2, 1, 1, 2}) == "tp2.cp1.dp1.pp2");
}

TEST_CASE("pipeline stages are the slowest dimension (Megatron's tp-cp-dp-pp order)", "[unit][parallel]") {
  const ParallelLayout l{2, 1, 2, 2};  // 8 ranks
  CHECK(coords_of(5, l).pp_rank == 1);
  CHECK(coords_of(5, l).dp_rank == 0);
  CHECK(group_of(1, l, GroupKind::pipeline) == std::vector<int>{1, 5});
  CHECK(group_of(6, l, GroupKind::data) == std::vector<int>{4, 6});
  CHECK(group_of(4, l, GroupKind::tensor) == std::vector<int>{4, 5});
  CHECK(group_of(4, l, GroupKind::sequence) == std::vector<int>{4, 5});
  CHECK(group_of(2, l, GroupKind::replica) == std::vector<int>{2, 3, 6, 7});
  for (int r = 0; r < 8; ++r) CHECK(rank_of(coords_of(r, l), l) == r);
  for (auto kind : {GroupKind::pipeline, GroupKind::replica, GroupKind::data}) {
    std::multiset<int> seen;
    for (const auto& g : all_groups(l, kind)) seen.insert(g.begin(), g.end());
    CHECK(seen.size() == 8);
    CHECK(std::set<int>(seen.begin(), seen.end()).size() == 8);
  }
}

TEST_CASE("rendezvous from torchrun and Slurm environments", "[unit][parallel]") {
  std::map<std::string, std::string> env;
  auto getter = [&](const std::string& k) -> std::optional<std::string> {
    auto it = env.find(k);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  CHECK(rendezvous_from_environment(getter).source == RendezvousSource::single);

  env = {{"RANK", "3"},
         {"WORLD_SIZE", "4"},
         {"LOCAL_RANK", "1"},
         {"MASTER_ADDR", "10.1.2.3"},
         {"MASTER_PORT", "1234"}};
  auto r = rendezvous_from_environment(getter);
  CHECK(r.source == RendezvousSource::torchrun);
  CHECK((r.rank == 3 && r.world_size == 4 && r.local_rank == 1 && r.master_port == 1234));
  env["RANK"] = "4";
  CHECK_THROWS_WITH(rendezvous_from_environment(getter), Catch::Contains("RANK"));

  env = {{"SLURM_PROCID", "1"},
         {"SLURM_NTASKS", "2"},
         {"SLURM_LOCALID", "0"},
         {"SLURM_JOB_NODELIST", "n[1-2]"},
         {"SLURM_JOB_ID", "42"}};
  r = rendezvous_from_environment(getter,
                                  [](const std::string& node) { return node == "n1" ? "127.0.0.1" : "?"; });
  CHECK(r.source == RendezvousSource::slurm);
  CHECK(r.master_addr == "127.0.0.1");
  CHECK(r.master_port == 20042);
  CHECK(expand_slurm_nodelist("gpu[01-03,7],head") ==
        std::vector<std::string>{"gpu01", "gpu02", "gpu03", "gpu7", "head"});
}
