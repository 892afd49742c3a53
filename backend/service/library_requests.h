#pragma once
// The server's answers to the requests that read or edit the library: datasets and their clips, captions,
// prompts, generations, preference labels, runs, installed released models and cluster profiles. They need
// the catalog and $MUGV_HOME alone — no job queue, no worker — so they live apart from the server's job
// handling; server.cpp's route table sends each of these requests here, on the server's thread.
//
// The request schema (request_schema.h) has checked each header's members and types before a call. A call
// throws Error(not_found) for an item that does not exist (naming it, e.g. the dataset) and
// Error(invalid_argument) for a request that contradicts itself; the server turns a throw into an error
// reply. A run folder that cannot be read is left out of list_runs with a warning in the server's log, so one
// damaged run does not hide the others. Not thread-safe (the catalog connection is the server's).

#include "catalog/catalog.h"
#include "catalog/preferences.h"
#include "service/protocol.h"

#include <nlohmann/json.hpp>

#include <filesystem>

namespace mugv {

class LibraryRequests {
 public:
  // `catalog` must outlive this object; `home` is the server's $MUGV_HOME (cluster profiles, models).
  LibraryRequests(Catalog& catalog, std::filesystem::path home);

  protocol::Message on_list_clusters(const protocol::Message& m) const;
  protocol::Message on_list_models(const protocol::Message& m) const;
  // The presets this server's jobs would use (its installed ones and those under its home), of one kind or of
  // all, with their resolved values; a broken file is listed with its problem.
  protocol::Message on_list_presets(const protocol::Message& m) const;
  // One record shape for every run, from the catalog's runs table and the run folders, merged by name.
  protocol::Message on_list_runs(const protocol::Message& m) const;
  protocol::Message on_list_datasets(const protocol::Message& m) const;
  protocol::Message on_list_clips(const protocol::Message& m) const;
  protocol::Message on_edit_caption(const protocol::Message& m) const;
  protocol::Message on_list_prompts(const protocol::Message& m) const;
  protocol::Message on_save_prompt(const protocol::Message& m) const;
  protocol::Message on_list_generations(const protocol::Message& m) const;
  protocol::Message on_list_preferences(const protocol::Message& m) const;
  protocol::Message on_label_preference(const protocol::Message& m) const;

 private:
  nlohmann::json pair_json(const Preference& p) const;

  Catalog& catalog_;
  std::filesystem::path home_;
};

}  // namespace mugv
