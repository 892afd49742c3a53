#pragma once
// The `mugv` subcommand framework. A Command declares its parameters in a ParamRegistry (so flags,
// help and presets come from one record each) and runs with the resolved values. The framework adds
// --help and --json to every command, turns usage errors into exit code 2 and other errors into
// exit code 1 with one line on stderr ("mugv probe: x.mp4: no video stream").

#include "core/params.h"
#include "core/progress.h"
#include "media/frame.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace mugv::cli {

// What a job reports besides progress, and the requests that come back to it. Every member may be empty
// (a terminal run): callers check before calling. In a worker they go to the server (service/worker_link.h).
struct JobReporter {
  std::function<void(int64_t step, const nlohmann::json& values)> metrics;
  std::function<void(int64_t step, const std::vector<RgbFrame>& frames)> preview;
  std::function<bool()> take_sample_request;  // true once after "sample now"
  std::function<bool()> take_save_request;    // true once after "save now"
};

struct Invocation {
  const ParamValues& values;
  std::vector<std::string> positional;
  bool json = false;     // --json: machine-readable output on stdout
  CancelToken cancel;    // fired by Ctrl-C in a terminal, or by the server in a worker
  ProgressFn progress;   // a terminal bar, or progress events to the server in a worker
  JobReporter reporter;  // empty in a terminal
  // The server job this command runs as (a worker); nullopt in a terminal. A command whose job is retried
  // after an interruption can recognise what its earlier attempt left behind by it.
  std::optional<int64_t> job_id = std::nullopt;
};

// Where a command runs: a terminal (the defaults) or a worker process reporting to the server.
struct ExecutionContext {
  CancelToken cancel;
  ProgressFn progress;  // empty: terminal_progress()
  JobReporter reporter;
  std::optional<int64_t> job_id;
};

struct Command {
  std::vector<std::string> words;  // {"dataset", "import"}
  std::string summary;             // one line for `mugv --help`
  std::string usage;               // "FILE [options]"
  int min_positional = 0;
  int max_positional = 0;
  std::function<void(ParamRegistry&)> define;  // may be empty: no parameters beyond the common ones
  std::function<int(const Invocation&)> run;   // returns the exit code
  std::string job_kind;  // the catalog job kind when the command can run as a server job; empty otherwise
  // What the positional arguments are. A server checks paths against its allowed roots before it queues the
  // command as a job (cmd_serve.cpp), so a command whose arguments are names or ids says text.
  ParamType positional_type = ParamType::path;
};

// Every command of this build, in help order.
const std::vector<Command>& all_commands();
// The command with exactly these words; nullptr when none.
const Command* find_command(const std::vector<std::string>& words);
// The command whose words are the longest prefix of `args`, and how many words it used; nullptr when none.
const Command* match_command(const std::vector<std::string>& args, size_t* used);

// Runs the command whose words prefix `args`; returns the process exit code.
int run_main(const std::vector<Command>& commands, const std::vector<std::string>& args);
// `mugv --server ENDPOINT COMMAND ...`: talks to a running server (submit, jobs, watch, ...).
int run_remote(const std::string& endpoint, const std::vector<std::string>& args);

// The command's full registry (its parameters plus --json and --help).
ParamRegistry command_registry(const Command& command);
// Parses a command's arguments as the terminal would (Error(usage) for bad ones): what a client sends when it
// submits the command as a job. Returns {"values": {key: value set on the command line}, "positional":
// [...]}.
nlohmann::json parse_command_arguments(const Command& command, const std::vector<std::string>& args);
// Runs a command from parse_command_arguments()'s JSON in `context` (a worker). Throws what the command
// throws; returns its exit code.
int run_command_from_json(const Command& command, const nlohmann::json& arguments,
                          const ExecutionContext& context);

// A ProgressFn drawing a one-line progress bar on stderr (only when stderr is a terminal, so logs and
// tests stay clean); call finish_progress_line() after the operation.
ProgressFn terminal_progress();
void finish_progress_line();
// Flushes standard output; throws Error(io) when what a command printed could not be written (a full disk,
// a closed pipe), so such a run does not exit 0.
void check_output_written();

// The commands, one function per file.
Command probe_command();
Command doctor_command();
Command convert_command();
Command model_list_command();
Command megatron_import_command();
Command megatron_export_command();
Command make_dataset_command();
Command dataset_import_command();
Command dataset_list_command();
Command dataset_show_command();
Command export_command();
Command caption_command();
Command curate_command();
Command curate_redecide_command();
Command curate_dedup_command();
Command curate_balance_command();
Command curate_merge_command();
Command clips_list_command();
Command clips_show_command();
Command dataset_export_command();
Command serve_command();
Command launch_command();
Command plan_command();
Command keys_generate_command();
Command keys_authorize_command();
Command keys_list_command();
Command keys_revoke_command();
Command presets_command();
// The presets listing (core/presets.h to_json records, kinds together) as `mugv presets` prints it; the
// remote `presets` prints a server's with it.
void print_presets(const nlohmann::json& presets);
// `mugv doctor`'s findings ({"checks": [{"check", "status", "detail", "fix"?}], "warnings", "failures"}):
// what `mugv doctor --json` prints and a server's check_machine answers; and their text form.
// `measure`: time the GEMMs (a second or two); without it the report is read from the build and machine only.
nlohmann::json doctor_report(bool measure = true);
void print_doctor_report(const nlohmann::json& report);

#ifdef MUGV_WITH_TORCH
// Commands that need LibTorch (files cmd_torch_*.cpp, built only with MUGV_WITH_TORCH).
Command model_info_command();
Command lora_info_command();
Command lora_extract_command();
Command lora_merge_command();
Command val_loss_command();
Command grow_command();
Command sweep_command();
Command ema_command();
Command pairs_command();
Command label_command();
Command encode_command();
Command train_vae_command();
Command train_command();
Command resume_command();
Command generate_command();
Command eval_command();
#endif

}  // namespace mugv::cli

namespace mugv::cli {
// A ParamSpec in one line for the common case.
inline ParamSpec param(std::string key, std::string flag, ParamType type, nlohmann::json default_value,
                       std::string help, std::string group = "options") {
  ParamSpec spec;
  spec.key = std::move(key);
  spec.flag = std::move(flag);
  spec.type = type;
  spec.default_value = std::move(default_value);
  spec.help = std::move(help);
  spec.group = std::move(group);
  return spec;
}

// `--device auto|cpu|cuda` of the sampling commands (model/compute.h resolves it).
inline ParamSpec device_param(std::string key, std::string group) {
  ParamSpec spec =
      param(std::move(key), "--device", ParamType::choice, "auto",
            "where the models run: cuda, cpu, or auto (cuda when a GPU is visible)", std::move(group));
  spec.choices = {"auto", "cpu", "cuda"};
  return spec;
}
}  // namespace mugv::cli
