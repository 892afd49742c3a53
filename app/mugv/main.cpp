// mugv: the command-line entry point. Everything is in the commands; this only dispatches.
#include "command.h"

#include <string>
#include <vector>

int main(int argc, char** argv) {
  using namespace mugv::cli;
  std::vector<Command> commands = {
      probe_command(),          make_dataset_command(), dataset_import_command(),
      dataset_list_command(),   dataset_show_command(), export_command(),
      caption_command(),
  };
#ifdef MUGV_WITH_TORCH
  for (auto make : {model_info_command, encode_command, train_vae_command, train_command, resume_command,
                    generate_command, eval_command})
    commands.push_back(make());
#endif
  return run_main(commands, std::vector<std::string>(argv + 1, argv + argc));
}
