#include "command.h"

namespace mugv::cli {

const std::vector<Command>& all_commands() {
  static const std::vector<Command> commands = [] {
    std::vector<Command> list = {
        probe_command(),        make_dataset_command(), dataset_import_command(), dataset_list_command(),
        dataset_show_command(), export_command(),       caption_command(),        serve_command(),
        launch_command(),
    };
#ifdef MUGV_WITH_TORCH
    for (auto make : {model_info_command, encode_command, train_vae_command, train_command, resume_command,
                      generate_command, eval_command})
      list.push_back(make());
#endif
    return list;
  }();
  return commands;
}

}  // namespace mugv::cli
