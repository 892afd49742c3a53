// mugv: the command-line entry point. Everything is in the commands; this only dispatches.
#include "command.h"

#include <string>
#include <vector>

int main(int argc, char** argv) {
  using namespace mugv::cli;
  const std::vector<Command> commands = {
      probe_command(),          make_dataset_command(), dataset_import_command(),
      dataset_list_command(),   dataset_show_command(), export_command(),
  };
  return run_main(commands, std::vector<std::string>(argv + 1, argv + argc));
}
