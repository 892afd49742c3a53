#include "command.h"

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <new>

namespace mugv::cli {
namespace {

std::string joined(const std::vector<std::string>& words) {
  std::string s;
  for (const auto& w : words) s += (s.empty() ? "" : " ") + w;
  return s;
}

void print_overview(const std::vector<Command>& commands) {
  std::cout << "Usage: mugv COMMAND [options]\n\nMUG-V Studio command line, version " << MUGV_VERSION
            << ".\n\nCommands:\n";
  for (const auto& c : commands) {
    std::string name = joined(c.words);
    std::cout << "  " << name << std::string(name.size() < 18 ? 18 - name.size() : 1, ' ') << c.summary
              << "\n";
  }
  std::cout << "\nRun `mugv COMMAND --help` for a command's options.\n"
               "Exit codes: 0 ok, 1 failure (reason on stderr), 2 usage error.\n"
               "Environment: MUGV_HOME (data folder), MUGV_LOG_LEVEL (debug|info|warning|error).\n"
               "A running server: `mugv --server ENDPOINT "
               "submit|jobs|show|watch|cancel|pause|resume|retry|logs ...`.\n";
}

void check_positional(const Command& command, const std::vector<std::string>& positional) {
  if (static_cast<int>(positional.size()) < command.min_positional ||
      static_cast<int>(positional.size()) > command.max_positional)
    throw Error(ErrorCode::usage, cat("expected ", command.usage, " (got ", positional.size(),
                                      " argument(s)); see `mugv ", joined(command.words), " --help`"));
}

int run_command(const Command& command, const std::vector<std::string>& args) {
  const std::string name = "mugv " + joined(command.words);
  try {
    ParamRegistry registry = command_registry(command);
    ParamLayers layers;
    layers.command_line = parse_command_line(registry, args);
    layers.environment = process_environment();
    ParamValues values = resolve(registry, layers);
    if (values.get_bool("cli.help")) {
      std::cout << "Usage: " << name << " " << command.usage << "\n\n"
                << command.summary << "\n\n"
                << registry.help_text();
      return 0;
    }
    check_positional(command, layers.command_line.positional);
    const int code =
        command.run(Invocation{values, layers.command_line.positional, values.get_bool("cli.json"),
                               CancelToken(), terminal_progress(), JobReporter{}});
    check_output_written();
    return code;
  } catch (const Error& e) {
    finish_progress_line();
    std::string line = e.what();
    std::replace(line.begin(), line.end(), '\n', ' ');
    std::cerr << name << ": " << line << "\n";
    return exit_code_for(e.code());
  }
}

bool progress_line_open = false;

}  // namespace

void check_output_written() {
  // A full disk or a closed pipe shows only when the buffered output is flushed: a command whose result
  // never arrived has failed.
  errno = 0;
  std::cout.flush();
  const bool failed = !std::cout.good() || std::fflush(stdout) != 0 || std::ferror(stdout) != 0;
  if (failed)
    throw Error(
        ErrorCode::io, "standard output",
        std::string("the output could not be written: ") + (errno ? std::strerror(errno) : "write error"));
}

ProgressFn terminal_progress() {
  if (!::isatty(STDERR_FILENO)) return nullptr;
  return [](const Progress& p) {
    std::fprintf(stderr, "\r\033[K%s", render_progress_line(p).c_str());
    std::fflush(stderr);
    progress_line_open = true;
  };
}

void finish_progress_line() {
  if (progress_line_open) std::fputc('\n', stderr);
  progress_line_open = false;
}

int run_main(const std::vector<Command>& commands, const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_overview(commands);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--server") {
    if (args.size() < 2) {
      std::cerr << "mugv: --server needs an endpoint (ipc://PATH or tcp://HOST:PORT)\n";
      return 2;
    }
    return run_remote(args[1], std::vector<std::string>(args.begin() + 2, args.end()));
  }
  if (args[0] == "--version") {
    std::cout << "mugv " << MUGV_VERSION << "\n";
    return 0;
  }
  size_t used = 0;
  const Command* command = nullptr;
  for (const auto& c : commands) {
    if (c.words.size() > args.size() || !std::equal(c.words.begin(), c.words.end(), args.begin())) continue;
    if (!command || c.words.size() > command->words.size()) command = &c;
  }
  if (command) used = command->words.size();
  if (!command) {
    std::cerr << "mugv: unknown command '" << args[0]
              << (args.size() > 1 && args[1][0] != '-' ? " " + args[1] : "")
              << "'; run `mugv --help` for the list\n";
    return 2;
  }
  try {
    return run_command(*command, std::vector<std::string>(args.begin() + used, args.end()));
  } catch (const std::bad_alloc&) {
    finish_progress_line();
    std::cerr
        << "mugv " << joined(command->words)
        << ": out of memory: the request needs more memory than this machine can give (a smaller --size, "
           "--frames or --batch needs less)\n";
    return exit_code_for(ErrorCode::out_of_memory);
  } catch (const std::exception& e) {
    // One line: the libraries' messages carry their own backtraces after the first line.
    finish_progress_line();
    const std::string what = e.what();
    std::cerr << "mugv " << joined(command->words) << ": internal error: " << what.substr(0, what.find('\n'))
              << "\n";
    return 1;
  }
}

const Command* find_command(const std::vector<std::string>& words) {
  for (const auto& c : all_commands())
    if (c.words == words) return &c;
  return nullptr;
}

const Command* match_command(const std::vector<std::string>& args, size_t* used) {
  const Command* best = nullptr;
  for (const auto& c : all_commands()) {
    if (c.words.size() > args.size() || !std::equal(c.words.begin(), c.words.end(), args.begin())) continue;
    if (!best || c.words.size() > best->words.size()) best = &c;
  }
  if (best && used) *used = best->words.size();
  return best;
}

ParamRegistry command_registry(const Command& command) {
  ParamRegistry registry;
  if (command.define) command.define(registry);
  registry.add(param("cli.json", "--json", ParamType::boolean, false, "print machine-readable JSON on stdout",
                     "output"));
  registry.add(param("cli.help", "--help", ParamType::boolean, false, "show this help", "output"));
  return registry;
}

nlohmann::json parse_command_arguments(const Command& command, const std::vector<std::string>& args) {
  ParamRegistry registry = command_registry(command);
  CommandLine line = parse_command_line(registry, args);
  check_positional(command, line.positional);
  nlohmann::json values = nlohmann::json::object();
  for (const auto& item : line.values) values[item.key] = item.value;
  return {{"command", command.words}, {"values", values}, {"positional", line.positional}};
}

int run_command_from_json(const Command& command, const nlohmann::json& arguments,
                          const ExecutionContext& context) {
  ParamRegistry registry = command_registry(command);
  ParamLayers layers;
  layers.environment = process_environment();
  ParamValues values = resolve(registry, layers);
  for (auto it = arguments.at("values").begin(); it != arguments.at("values").end(); ++it)
    values.set(it.key(), it.value(), ParamSource::command_line, "job parameters");
  auto positional = arguments.at("positional").get<std::vector<std::string>>();
  check_positional(command, positional);
  return command.run(Invocation{values, positional, true, context.cancel,
                                context.progress ? context.progress : terminal_progress(), context.reporter,
                                context.job_id});
}

}  // namespace mugv::cli
