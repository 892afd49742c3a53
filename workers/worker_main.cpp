// mugv-worker: runs one job for the server. `mugv-worker --server ENDPOINT --job ID`
// The job's parameters are a `mugv` command and its arguments (app/mugv), so a job does exactly what the same
// command does in a terminal; progress, logs and the result go to the server over the WorkerLink, and control
// messages (cancel, pause, resume) come back. stdout/stderr are the job's log file (the server redirects them).
#include "catalog/catalog.h"
#include "catalog/jobs.h"
#include "command.h"
#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "service/worker_link.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

namespace {

struct Args {
  std::string server;
  int64_t job = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--server") a.server = argv[i + 1];
    else if (flag == "--job") a.job = std::atoll(argv[i + 1]);
  }
  if (a.server.empty() || a.job <= 0) throw mugv::Error(mugv::ErrorCode::usage, "usage: mugv-worker --server ENDPOINT --job ID");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mugv;
  if (argc == 2 && std::string(argv[1]) == "--version") {
    std::printf("mugv-worker %s\n", MUGV_VERSION);
    return 0;
  }
  Args args;
  try {
    args = parse(argc, argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  std::unique_ptr<WorkerLink> link;
  try {
    link = std::make_unique<WorkerLink>(args.server, args.job);
  } catch (const Error& e) {
    std::fprintf(stderr, "mugv-worker: job %lld: %s\n", static_cast<long long>(args.job), e.what());
    return 1;
  }
  LogSink previous = set_log_sink(nullptr);
  set_log_sink(link->log_sink(previous));
  try {
    Catalog catalog = Catalog::open(catalog_path());
    auto job = get_job(catalog, args.job);
    if (!job) throw Error(ErrorCode::not_found, cat("job ", args.job), "not in the catalog");
    auto words = job->params.at("command").get<std::vector<std::string>>();
    const cli::Command* command = cli::find_command(words);
    if (!command) throw Error(ErrorCode::unsupported, job->params["command"].dump(), "this worker has no such command");
    log_info(cat("job ", job->id, ": mugv ", job->params["command"].dump(), " ", job->params.value("positional", nlohmann::json::array()).dump()));
    cli::ExecutionContext context{link->cancel_token(), link->progress_fn(), {}};
    WorkerLink* reporter_link = link.get();
    context.reporter.metrics = [reporter_link](int64_t step, const nlohmann::json& values) { reporter_link->metrics(step, values); };
    context.reporter.preview = [reporter_link](int64_t step, const std::vector<RgbFrame>& frames) { reporter_link->preview(step, frames); };
    context.reporter.take_sample_request = [reporter_link] { return reporter_link->take_sample_request(); };
    context.reporter.take_save_request = [reporter_link] { return reporter_link->take_save_request(); };
    int code = cli::run_command_from_json(*command, job->params, context);
    std::fflush(stdout);
    if (code == 0) link->finish(JobState::succeeded);
    else link->finish(JobState::failed, "unknown", cat("the command ended with exit code ", code));
    set_log_sink(previous);
    return code;
  } catch (const Error& e) {
    std::fflush(stdout);
    log_error(e.what());
    bool cancelled = e.code() == ErrorCode::cancelled;
    link->finish(cancelled ? JobState::cancelled : JobState::failed, to_string(e.code()), e.what());
    set_log_sink(previous);
    return cancelled ? 3 : exit_code_for(e.code());
  } catch (const std::exception& e) {
    log_error(cat("internal error: ", e.what()));
    link->finish(JobState::failed, "internal", e.what());
    set_log_sink(previous);
    return 1;
  }
}
