// mugv: the command-line entry point. Everything is in the commands; this only dispatches.
#include "command.h"

#include <string>
#include <vector>

int main(int argc, char** argv) {
  return mugv::cli::run_main(mugv::cli::all_commands(), std::vector<std::string>(argv + 1, argv + argc));
}
