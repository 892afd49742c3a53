#pragma once
// Reads post-training data from the catalog (catalog/preferences.h) for the trainer (train/preference.h),
// which itself never opens the catalog: `mugv train --objective dpo|kto` collects here and hands the
// collection to train_dit. Not thread-safe (one Catalog per thread).

#include "catalog/catalog.h"
#include "train/preference.h"

#include <cstdint>
#include <string>

namespace mugv {

// Labelled preferences of the catalog for `objective` (dpo: pairs labelled a or b; kto: those pairs'
// winners and losers, and single good/bad labels, each generation once per label) whose labeller matches
// `labels` ("all", "human" or "auto": labellers starting "auto:"), read in the latent space `latent_space`
// with `channels` latent channels. Unusable generations are skipped with the reason.
[[nodiscard]] PreferenceCollection collect_preferences(Catalog& catalog, TrainObjective objective,
                                                       const std::string& labels,
                                                       const std::string& latent_space, int64_t channels);

}  // namespace mugv
