#include "parallel/layout.h"

#include "core/error.h"
#include "core/strings.h"

#include <algorithm>
#include <cctype>

namespace mugv {

const char* to_string(GroupKind kind) {
  switch (kind) {
    case GroupKind::tensor:
      return "tensor";
    case GroupKind::context:
      return "context";
    case GroupKind::data:
      return "data";
    case GroupKind::world:
      return "world";
    case GroupKind::sequence:
      return "sequence";
    case GroupKind::pipeline:
      return "pipeline";
    case GroupKind::replica:
      return "replica";
    default:
      return "unknown";
  }
}

ParallelLayout parse_layout(const std::string& text) {
  ParallelLayout layout;
  std::string t = to_lower(text);
  for (char& c : t)
    if (c == ',' || c == '.' || c == ' ') c = ';';
  for (const auto& part : split(t, ';')) {
    if (part.empty()) continue;
    size_t digits = part.find_first_of("0123456789");
    std::string name = part.substr(0, digits);
    if (!name.empty() && name.back() == '=') name.pop_back();
    if (digits == std::string::npos)
      throw Error(ErrorCode::invalid_argument, text, "expected e.g. tp2.cp1.dp4");
    int value = std::atoi(part.c_str() + digits);
    if (name == "tp")
      layout.tp = value;
    else if (name == "cp")
      layout.cp = value;
    else if (name == "dp")
      layout.dp = value;
    else if (name == "pp")
      layout.pp = value;
    else
      throw Error(ErrorCode::invalid_argument, text,
                  "unknown parallel dimension '" + name + "' (use tp, cp, dp, pp)");
  }
  return layout;
}

std::string to_string(const ParallelLayout& l) {
  return cat("tp", l.tp, ".cp", l.cp, ".dp", l.dp) + (l.pp > 1 ? cat(".pp", l.pp) : std::string());
}

void validate_layout(const ParallelLayout& l, int world_size, int heads, int depth) {
  if (l.tp < 1 || l.cp < 1 || l.dp < 1 || l.pp < 1)
    throw Error(ErrorCode::invalid_argument, to_string(l), "every parallel size must be at least 1");
  if (l.world() != world_size)
    throw Error(ErrorCode::invalid_argument, to_string(l),
                cat("tp × cp × dp × pp = ", l.world(), " does not match the world size ", world_size));
  if (depth > 0 && depth < l.pp)
    throw Error(ErrorCode::invalid_argument, to_string(l),
                cat(depth, " blocks cannot be split into ", l.pp, " pipeline stages"));
  if (heads > 0 && heads % (l.tp * l.cp) != 0)
    throw Error(ErrorCode::invalid_argument, to_string(l),
                cat(heads, " attention heads cannot be split over tp × cp = ", l.tp * l.cp, " ranks"));
}

RankCoords coords_of(int rank, const ParallelLayout& l) {
  return {rank % l.tp, (rank / l.tp) % l.cp, (rank / (l.tp * l.cp)) % l.dp, rank / (l.tp * l.cp * l.dp)};
}

int rank_of(const RankCoords& c, const ParallelLayout& l) {
  return c.tp_rank + l.tp * (c.cp_rank + l.cp * (c.dp_rank + l.dp * c.pp_rank));
}

std::vector<int> group_of(int rank, const ParallelLayout& l, GroupKind kind) {
  RankCoords me = coords_of(rank, l);
  std::vector<int> ranks;
  switch (kind) {
    case GroupKind::tensor:
      for (int i = 0; i < l.tp; ++i) ranks.push_back(rank_of({i, me.cp_rank, me.dp_rank, me.pp_rank}, l));
      break;
    case GroupKind::context:
      for (int i = 0; i < l.cp; ++i) ranks.push_back(rank_of({me.tp_rank, i, me.dp_rank, me.pp_rank}, l));
      break;
    case GroupKind::data:
      for (int i = 0; i < l.dp; ++i) ranks.push_back(rank_of({me.tp_rank, me.cp_rank, i, me.pp_rank}, l));
      break;
    case GroupKind::pipeline:
      for (int i = 0; i < l.pp; ++i) ranks.push_back(rank_of({me.tp_rank, me.cp_rank, me.dp_rank, i}, l));
      break;
    case GroupKind::replica:
      for (int p = 0; p < l.pp; ++p)
        for (int c = 0; c < l.cp; ++c)
          for (int t = 0; t < l.tp; ++t) ranks.push_back(rank_of({t, c, me.dp_rank, p}, l));
      break;
    case GroupKind::world:
      for (int i = 0; i < l.world(); ++i) ranks.push_back(i);
      break;
    case GroupKind::sequence:
      for (int c = 0; c < l.cp; ++c)
        for (int t = 0; t < l.tp; ++t) ranks.push_back(rank_of({t, c, me.dp_rank, me.pp_rank}, l));
      break;
    default:
      throw Error(ErrorCode::internal, "group kind", "unknown");
  }
  std::sort(ranks.begin(), ranks.end());
  return ranks;
}

std::vector<std::vector<int>> all_groups(const ParallelLayout& l, GroupKind kind) {
  std::vector<std::vector<int>> groups;
  for (int r = 0; r < l.world(); ++r) {
    auto g = group_of(r, l, kind);
    if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
  }
  return groups;
}

}  // namespace mugv
