// mugv-worker: runs one job for the server. The job's parameters are a `mugv` command and its arguments
// (app/mugv), so a job does exactly what the same command does in a terminal.
//
//   mugv-worker --server ENDPOINT --job ID       a local job: the command comes from the catalog; progress,
//   logs
//                                                and the result go to the server over the WorkerLink, control
//                                                messages (cancel, pause, resume) come back; stdout/stderr
//                                                are the job's log file (the server redirects them).
//   mugv-worker --job-file F --report-dir D      a Slurm job (service/slurm_executor.h): the command comes
//   from
//                                                the job file; progress, metrics, logs and the result are
//                                                appended to D/events.jsonl (file_reports.h), which the
//                                                server tails; stdout/stderr are Slurm's output file. SIGTERM
//                                                (scancel) cancels the command. In an array, task i
//                                                (SLURM_ARRAY_TASK_ID) adds the job file's array[i] values
//                                                and reports in D/task-i; in a multi-rank job every rank runs
//                                                the command and rank 0 (SLURM_PROCID) reports.
//                                                With a live link (job file "link": true, a profile with
//                                                report = "tcp"), rank 0 also connects back to the server
//                                                with the job folder's link.json: previews go there, and
//                                                pause / resume / sample-now / save-now come back.
#include "catalog/catalog.h"
#include "catalog/jobs.h"
#include "command.h"
#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/path_confinement.h"
#include "core/paths.h"
#include "core/strings.h"
#include "service/file_reports.h"
#include "service/remote_link.h"
#include "service/worker_link.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

namespace {

struct Args {
  std::string server;
  int64_t job = 0;
  std::string job_file, report_dir;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--server")
      a.server = argv[i + 1];
    else if (flag == "--job")
      a.job = std::atoll(argv[i + 1]);
    else if (flag == "--job-file")
      a.job_file = argv[i + 1];
    else if (flag == "--report-dir")
      a.report_dir = argv[i + 1];
  }
  const bool linked = !a.server.empty() && a.job > 0, files = !a.job_file.empty() && !a.report_dir.empty();
  if (linked == files)
    throw mugv::Error(
        mugv::ErrorCode::usage,
        "usage: mugv-worker --server ENDPOINT --job ID | mugv-worker --job-file F --report-dir D");
  return a;
}

mugv::CancelToken* g_cancel = nullptr;

extern "C" void on_cancel_signal(int) {
  if (g_cancel) g_cancel->request_cancel();  // an atomic store: safe in a signal handler
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// A Slurm job's live link (cluster profile report = "tcp"; service/remote_link.h) from the job folder's link
// file. One that cannot be made is a warning, not a failure: the job goes on reporting through its files.
std::unique_ptr<mugv::WorkerLink> open_live_link(const mugv::fs::path& job_folder, int64_t job_id) {
  using namespace mugv;
  try {
    const RemoteLinkGrant grant = read_remote_link_file(remote_link_file(job_folder));
    auto link = std::make_unique<WorkerLink>(
        grant.endpoint, job_id, std::chrono::seconds(20),
        WorkerLinkSecrets{grant.token, CurveClientKeys{grant.server_public_key, grant.worker}});
    log_info(cat("live link to the server at ", grant.endpoint, " (previews and controls)"));
    return link;
  } catch (const Error& e) {
    log_warning(cat("no live link to the server (", e.what(), "); reporting through files only"));
    return nullptr;
  }
}

// The file-reporting mode: see the top of this file.
int run_from_job_file(const Args& args) {
  using namespace mugv;
  nlohmann::json job;
  try {
    job = read_json_file(args.job_file);
    job.at("command");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mugv-worker: %s: %s\n", args.job_file.c_str(), e.what());
    return 1;
  }
  fs::path report_dir = args.report_dir;
  if (job.contains("array")) {
    const int task = env_int("SLURM_ARRAY_TASK_ID", -1);
    if (task < 0 || task >= static_cast<int>(job["array"].size())) {
      std::fprintf(stderr, "mugv-worker: %s: an array job, but SLURM_ARRAY_TASK_ID is %s\n",
                   args.job_file.c_str(),
                   std::getenv("SLURM_ARRAY_TASK_ID") ? std::getenv("SLURM_ARRAY_TASK_ID") : "not set");
      return 1;
    }
    for (auto it = job["array"][task].begin(); it != job["array"][task].end(); ++it)
      job["values"][it.key()] = it.value();
    report_dir /= cat("task-", task);
  }
  std::unique_ptr<FileReportWriter> reports;
  // Ranks other than 0 run the same command but only log (to Slurm's output file), so every event is told
  // once.
  const bool reporting = env_int("SLURM_PROCID", 0) == 0;
  try {
    if (reporting) reports = std::make_unique<FileReportWriter>(report_dir);
  } catch (const Error& e) {
    std::fprintf(stderr, "mugv-worker: %s\n", e.what());
    return 1;
  }
  LogSink previous = set_log_sink(nullptr);
  if (reports)
    set_log_sink(reports->log_sink(previous));
  else
    set_log_sink(previous);
  std::unique_ptr<WorkerLink> link;
  if (reports && job.value("link", false) && !job.contains("array"))
    link = open_live_link(fs::path(args.job_file).parent_path(), job.value("job", int64_t(0)));
  // One token for SIGTERM (scancel) and the link, so a cancel ends a paused job too.
  CancelToken cancel = link ? link->cancel_token() : CancelToken();
  g_cancel = &cancel;
  std::signal(SIGTERM, on_cancel_signal);
  std::signal(SIGINT, on_cancel_signal);
  auto finish = [&](JobState state, const std::string& code, const std::string& message) {
    std::fflush(stdout);
    set_log_sink(previous);
    if (reports) reports->finish(state, code, message);
  };
  try {
    auto words = job["command"].get<std::vector<std::string>>();
    const cli::Command* command = cli::find_command(words);
    if (!command)
      throw Error(ErrorCode::unsupported, job["command"].dump(), "this worker has no such command");
    log_info(cat("job ", job.value("job", int64_t(0)), " on ", env_int("SLURM_NNODES", 1), " node(s), rank ",
                 env_int("SLURM_PROCID", 0), ": mugv ", job["command"].dump(), " ",
                 job.value("positional", nlohmann::json::array()).dump(), " ",
                 job.value("values", nlohmann::json::object()).dump()));
    // No job id: the ranks of a multi-rank job would each decide alone whether to continue a run
    // (ExecutionContext::job_id); a Slurm requeue is a fresh start under Slurm's own rules.
    ProgressFn progress = reports ? reports->progress_fn() : ProgressFn([](const Progress&) {});
    if (link)
      progress = [progress, gate = link->pause_gate()](const Progress& p) {
        progress(p);
        gate(p);
      };
    cli::ExecutionContext context{cancel, progress, {}, std::nullopt};
    FileReportWriter* writer = reports.get();
    if (writer)
      context.reporter.metrics = [writer](int64_t step, const nlohmann::json& values) {
        writer->metrics(step, values);
      };
    if (WorkerLink* live = link.get()) {
      context.reporter.preview = [live](int64_t step, const std::vector<RgbFrame>& frames) {
        live->preview(step, frames);
      };
      context.reporter.take_sample_request = [live] { return live->take_sample_request(); };
      context.reporter.take_save_request = [live] { return live->take_save_request(); };
    }
    const nlohmann::json arguments = {{"values", job.value("values", nlohmann::json::object())},
                                      {"positional", job.value("positional", nlohmann::json::array())}};
    int code = cli::run_command_from_json(*command, arguments, context);
    if (code == 0)
      finish(JobState::succeeded, "", "");
    else
      finish(JobState::failed, "unknown", cat("the command ended with exit code ", code));
    return code;
  } catch (const Error& e) {
    log_error(e.what());
    const bool cancelled = e.code() == ErrorCode::cancelled;
    finish(cancelled ? JobState::cancelled : JobState::failed, to_string(e.code()), e.what());
    return cancelled ? 3 : exit_code_for(e.code());
  } catch (const std::exception& e) {
    log_error(cat("internal error: ", e.what()));
    finish(JobState::failed, "internal", e.what());
    return 1;
  }
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
  if (!args.job_file.empty()) return run_from_job_file(args);
  if (const char* roots = std::getenv(kJobRootsEnv)) {
    // The server's allowed roots: every file the job finds on its own is checked against them too.
    try {
      set_job_confinement(PathConfinement::from_json(nlohmann::json::parse(roots)));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mugv-worker: job %lld: %s\n", static_cast<long long>(args.job), e.what());
      return 1;
    }
    ::unsetenv(kJobRootsEnv);
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
    if (!command)
      throw Error(ErrorCode::unsupported, job->params["command"].dump(), "this worker has no such command");
    log_info(cat("job ", job->id, ": mugv ", job->params["command"].dump(), " ",
                 job->params.value("positional", nlohmann::json::array()).dump()));
    cli::ExecutionContext context{link->cancel_token(), link->progress_fn(), {}, job->id};
    WorkerLink* reporter_link = link.get();
    context.reporter.metrics = [reporter_link](int64_t step, const nlohmann::json& values) {
      reporter_link->metrics(step, values);
    };
    context.reporter.preview = [reporter_link](int64_t step, const std::vector<RgbFrame>& frames) {
      reporter_link->preview(step, frames);
    };
    context.reporter.take_sample_request = [reporter_link] { return reporter_link->take_sample_request(); };
    context.reporter.take_save_request = [reporter_link] { return reporter_link->take_save_request(); };
    int code = cli::run_command_from_json(*command, job->params, context);
    std::fflush(stdout);
    if (code == 0)
      link->finish(JobState::succeeded);
    else
      link->finish(JobState::failed, "unknown", cat("the command ended with exit code ", code));
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
