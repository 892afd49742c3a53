// mugv launch --nproc N [--nnodes M --node-rank K --master HOST:PORT] -- COMMAND...: the local rank launcher.
#include "command.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "parallel/launcher.h"

#include <csignal>
#include <cstdio>

namespace mugv::cli {
namespace {

CancelToken* g_cancel = nullptr;
extern "C" void on_launch_signal(int) {
  if (g_cancel) g_cancel->request_cancel();
}

void define(ParamRegistry& r) {
  auto nproc =
      param("launch.nproc", "--nproc", ParamType::integer, 1, "ranks to start on this node", "launch");
  nproc.min_value = 1;
  nproc.max_value = 1024;
  r.add(nproc);
  auto nnodes = param("launch.nnodes", "--nnodes", ParamType::integer, 1, "nodes in the run", "launch");
  nnodes.min_value = 1;
  r.add(nnodes);
  auto node_rank =
      param("launch.node_rank", "--node-rank", ParamType::integer, 0, "this node's index", "launch");
  node_rank.min_value = 0;
  r.add(node_rank);
  r.add(param("launch.master", "--master", ParamType::text, nullptr,
              "rendezvous HOST:PORT of node 0 (default: 127.0.0.1 and a free port)", "launch"));
  auto grace = param("launch.kill_grace_s", "--kill-grace", ParamType::real, 10.0,
                     "seconds the other ranks get to stop after one fails, before SIGKILL", "launch");
  grace.min_value = 0.0;
  r.add(grace);
}

int run(const Invocation& inv) {
  const auto& v = inv.values;
  LaunchOptions o;
  o.nproc = static_cast<int>(v.get_int("launch.nproc"));
  o.nnodes = static_cast<int>(v.get_int("launch.nnodes"));
  o.node_rank = static_cast<int>(v.get_int("launch.node_rank"));
  o.kill_grace = std::chrono::milliseconds(static_cast<int64_t>(v.get_real("launch.kill_grace_s") * 1000));
  if (v.has("launch.master")) {
    std::string master = v.get_text("launch.master");
    size_t colon = master.rfind(':');
    if (colon == std::string::npos)
      throw Error(ErrorCode::usage, "--master", "expected HOST:PORT, got '" + master + "'");
    o.master_addr = master.substr(0, colon);
    o.master_port = std::atoi(master.c_str() + colon + 1);
  } else if (o.nnodes > 1) {
    throw Error(ErrorCode::usage, "--master", "a multi-node launch needs --master HOST:PORT");
  }
  o.command = inv.positional;
  // `mugv launch -- train ...` means this mugv's own train command.
  size_t used = 0;
  if (match_command(o.command, &used)) o.command.insert(o.command.begin(), executable_path().string());
  CancelToken cancel = inv.cancel;
  g_cancel = &cancel;
  std::signal(SIGINT, on_launch_signal);
  std::signal(SIGTERM, on_launch_signal);
  LaunchResult result = launch(o, cancel);
  g_cancel = nullptr;
  if (result.exit_code != 0) std::fprintf(stderr, "mugv launch: %s\n", result.message.c_str());
  return result.exit_code;
}

}  // namespace

Command launch_command() {
  Command c;
  c.words = {"launch"};
  c.summary = "start the ranks of a distributed run on this node; one failing rank stops them all";
  c.usage = "--nproc N [--nnodes M --node-rank K --master HOST:PORT] -- COMMAND [ARGS...]";
  c.min_positional = 1;
  c.max_positional = 10000;
  c.define = define;
  c.run = run;
  return c;
}

}  // namespace mugv::cli
