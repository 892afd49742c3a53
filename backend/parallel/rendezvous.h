#pragma once
// Who this process is in a multi-process run and where rank 0 listens, from the launcher's environment:
// - torchrun style (mugv launch sets these): RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
//   MASTER_PORT;
// - Slurm (srun): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE, SLURM_JOB_NODELIST,
//   SLURM_JOB_ID; the master is the first host of the node list (its address from `scontrol show node`
//   when the name does not resolve), the port MASTER_PORT or one derived from the job id;
// - nothing: a single process, rank 0 of 1.
// Torch-free.

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

enum class RendezvousSource { unknown = 0, single, torchrun, slurm };
const char* to_string(RendezvousSource source);

struct Rendezvous {
  RendezvousSource source = RendezvousSource::single;
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

using EnvGetter = std::function<std::optional<std::string>(const std::string&)>;
// Resolves a Slurm node name to an address (default: `scontrol show node NAME` NodeAddr, else the name).
using NodeResolver = std::function<std::string(const std::string& node)>;

// Throws Error(invalid_argument) naming the variable for inconsistent values (RANK >= WORLD_SIZE, ...).
Rendezvous rendezvous_from_environment(const EnvGetter& env, const NodeResolver& resolve = nullptr);
Rendezvous rendezvous_from_process_environment();

// Expands a Slurm host list ("n[1-3,7],gpu05") into names.
std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist);

}  // namespace mugv
