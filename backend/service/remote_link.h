#pragma once
// A live link for a Slurm job's worker (cluster profile `report = "tcp"`, cluster_profiles.h): what the
// rank-0 worker on a node needs to connect back to the server over CURVE tcp, made fresh for every
// submission:
//
// - endpoint: the server's tcp request endpoint as the nodes reach it (the profile's server_endpoint);
// - server_public_key: the server's CURVE key (Z85);
// - worker: a key pair made for this submission alone; the server's ZAP handler accepts it as
//   "worker:<job>" while the job is in Slurm (zap_handler.h), and forgets it afterwards;
// - token: the proof, in the worker's hello and heartbeats, that it runs this job's submission.
//
// The executor writes it before sbatch as <job folder>/link.json with mode 0600 (it holds secrets; the job
// folder is on storage the nodes share); the worker reads it at start, and a restarted server reads it back
// to admit the still-running worker again. The events file stays the job's durable record (progress,
// metrics, logs, the result); the link adds what a file cannot carry: live previews, and pause / resume /
// sample-now / save-now going to the worker.

#include "service/curve_keys.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace mugv {

struct RemoteLinkGrant {
  std::string endpoint;
  std::string server_public_key;
  CurveKeyPair worker;
  std::string token;
};

// A fresh worker key pair and token for a worker that will connect to `endpoint` (Error(unsupported) when
// libzmq has no CURVE).
[[nodiscard]] RemoteLinkGrant make_remote_link_grant(const std::string& endpoint,
                                                     const std::string& server_public_key);

// <job folder>/link.json
std::filesystem::path remote_link_file(const std::filesystem::path& job_folder);
// Written atomically with mode 0600. Error(io) naming the file when it cannot be.
void write_remote_link_file(const std::filesystem::path& file, const RemoteLinkGrant& grant);
// Error(not_found) for a missing file, Error(forbidden) when others can read it, Error(format) naming the
// file and the member for anything malformed (a bad key, an endpoint that is not tcp://).
[[nodiscard]] RemoteLinkGrant read_remote_link_file(const std::filesystem::path& file);

// Error(invalid_argument) naming `what` unless `endpoint` is tcp://HOST:PORT with a port from 1 to 65535.
// Returns the port.
int check_tcp_endpoint(const std::string& endpoint, const std::string& what);

}  // namespace mugv
