#include "parallel/rendezvous.h"

#include "core/error.h"
#include "core/strings.h"

#include <cstdio>
#include <cstdlib>

namespace mugv {
namespace {

int int_var(const EnvGetter& env, const std::string& name, int fallback) {
  auto v = env(name);
  if (!v || v->empty()) return fallback;
  char* end = nullptr;
  long x = std::strtol(v->c_str(), &end, 10);
  if (!end || *end) throw Error(ErrorCode::invalid_argument, name, "expected an integer, got '" + *v + "'");
  return static_cast<int>(x);
}

// `scontrol show node NAME` → NodeAddr=...; the name itself when scontrol is absent or silent.
std::string scontrol_node_addr(const std::string& node) {
  std::string cmd = "scontrol show node '" + node + "' 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return node;
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  ::pclose(p);
  size_t pos = out.find("NodeAddr=");
  if (pos == std::string::npos) return node;
  size_t end = out.find_first_of(" \n", pos);
  std::string addr = out.substr(pos + 9, end - pos - 9);
  return addr.empty() ? node : addr;
}

void check(const Rendezvous& r, const std::string& rank_var, const std::string& world_var) {
  if (r.world_size < 1)
    throw Error(ErrorCode::invalid_argument, world_var, cat("must be >= 1, got ", r.world_size));
  if (r.rank < 0 || r.rank >= r.world_size)
    throw Error(ErrorCode::invalid_argument, rank_var,
                cat("rank ", r.rank, " is outside 0..", r.world_size - 1));
  if (r.master_port <= 0 || r.master_port > 65535)
    throw Error(ErrorCode::invalid_argument, "MASTER_PORT", cat("port ", r.master_port, " is out of range"));
}

}  // namespace

const char* to_string(RendezvousSource s) {
  switch (s) {
    case RendezvousSource::single:
      return "single";
    case RendezvousSource::torchrun:
      return "torchrun";
    case RendezvousSource::slurm:
      return "slurm";
    default:
      return "unknown";
  }
}

std::vector<std::string> expand_slurm_nodelist(const std::string& list) {
  std::vector<std::string> names;
  size_t i = 0;
  while (i < list.size()) {
    size_t bracket = list.find('[', i), comma = list.find(',', i);
    if (bracket == std::string::npos || (comma != std::string::npos && comma < bracket)) {
      std::string name = list.substr(i, comma == std::string::npos ? std::string::npos : comma - i);
      if (!name.empty()) names.push_back(name);
      if (comma == std::string::npos) break;
      i = comma + 1;
      continue;
    }
    std::string prefix = list.substr(i, bracket - i);
    size_t close = list.find(']', bracket);
    if (close == std::string::npos)
      throw Error(ErrorCode::invalid_argument, list, "unbalanced '[' in the node list");
    for (const auto& range : split(list.substr(bracket + 1, close - bracket - 1), ',')) {
      size_t dash = range.find('-');
      if (dash == std::string::npos) {
        names.push_back(prefix + range);
        continue;
      }
      std::string lo = range.substr(0, dash), hi = range.substr(dash + 1);
      int a = std::atoi(lo.c_str()), b = std::atoi(hi.c_str());
      for (int n = a; n <= b; ++n) {
        std::string digits = std::to_string(n);
        if (digits.size() < lo.size())
          digits = std::string(lo.size() - digits.size(), '0') + digits;  // n[01-04]
        names.push_back(prefix + digits);
      }
    }
    i = close + 1;
    if (i < list.size() && list[i] == ',') ++i;
  }
  return names;
}

Rendezvous rendezvous_from_environment(const EnvGetter& env, const NodeResolver& resolve) {
  Rendezvous r;
  if (env("RANK") && env("WORLD_SIZE")) {
    r.source = RendezvousSource::torchrun;
    r.rank = int_var(env, "RANK", 0);
    r.world_size = int_var(env, "WORLD_SIZE", 1);
    r.local_rank = int_var(env, "LOCAL_RANK", r.rank);
    r.local_world_size = int_var(env, "LOCAL_WORLD_SIZE", r.world_size);
    r.master_addr = env("MASTER_ADDR").value_or("127.0.0.1");
    r.master_port = int_var(env, "MASTER_PORT", 29500);
    check(r, "RANK", "WORLD_SIZE");
    return r;
  }
  if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    r.source = RendezvousSource::slurm;
    r.rank = int_var(env, "SLURM_PROCID", 0);
    r.world_size = int_var(env, "SLURM_NTASKS", 1);
    r.local_rank = int_var(env, "SLURM_LOCALID", 0);
    r.local_world_size = int_var(env, "SLURM_NTASKS_PER_NODE", 1);
    auto nodes =
        expand_slurm_nodelist(env("SLURM_JOB_NODELIST").value_or(env("SLURM_NODELIST").value_or("")));
    if (auto addr = env("MASTER_ADDR"))
      r.master_addr = *addr;
    else if (!nodes.empty())
      r.master_addr = resolve ? resolve(nodes.front()) : scontrol_node_addr(nodes.front());
    r.master_port = int_var(env, "MASTER_PORT", 20000 + int_var(env, "SLURM_JOB_ID", 0) % 20000);
    check(r, "SLURM_PROCID", "SLURM_NTASKS");
    return r;
  }
  return r;
}

Rendezvous rendezvous_from_process_environment() {
  return rendezvous_from_environment([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  });
}

}  // namespace mugv
