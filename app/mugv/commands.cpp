#include "command.h"

#ifdef MUGV_WITH_TORCH
#include "curation/torch_aesthetic.h"
#endif

namespace mugv::cli {

const std::vector<Command>& all_commands() {
  static const std::vector<Command> commands = [] {
    std::vector<Command> list = {
        probe_command(),           make_dataset_command(),
        dataset_import_command(),  dataset_list_command(),
        dataset_show_command(),    export_command(),
        caption_command(),         serve_command(),
        launch_command(),          plan_command(),
        curate_command(),          curate_redecide_command(),
        curate_dedup_command(),    curate_balance_command(),
        curate_merge_command(),    clips_list_command(),
        clips_show_command(),      dataset_export_command(),
        keys_generate_command(),   keys_authorize_command(),
        keys_list_command(),       keys_revoke_command(),
        convert_command(),         model_list_command(),
        megatron_import_command(), megatron_export_command(),
        presets_command(),         doctor_command(),
    };
#ifdef MUGV_WITH_TORCH
    // Every process that runs commands (the terminal and workers) asks for the list first, so the
    // LibTorch readers of user-supplied models are registered here, once.
    register_torch_aesthetic_loader();
    for (auto make :
         {model_info_command, encode_command, train_vae_command, train_command, resume_command,
          generate_command, eval_command, val_loss_command, sweep_command, grow_command, ema_command,
          pairs_command, label_command, lora_info_command, lora_extract_command, lora_merge_command})
      list.push_back(make());
#endif
    return list;
  }();
  return commands;
}

}  // namespace mugv::cli
