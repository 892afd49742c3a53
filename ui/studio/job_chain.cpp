// Chains of jobs: each submitted after the one before it, waiting for it on the server (depends_on).
#include "pages.h"

#include <memory>

namespace mugv::studio {

void submit_chain(BackendLink& link, std::vector<JobRequest> jobs,
                  std::function<void(const std::vector<int64_t>&)> done,
                  std::function<void(const QString&)> failed) {
  // One request at a time: a job's dependency is the id the server gave the job before it.
  struct State {
    std::vector<JobRequest> jobs;
    std::vector<int64_t> ids;
    std::function<void(const std::vector<int64_t>&)> done;
    std::function<void(const QString&)> failed;
  };
  auto state = std::make_shared<State>(State{std::move(jobs), {}, std::move(done), std::move(failed)});
  auto next = std::make_shared<std::function<void()>>();
  *next = [&link, state, weak = std::weak_ptr<std::function<void()>>(next)] {
    if (state->ids.size() == state->jobs.size()) {
      if (state->done) state->done(state->ids);
      return;
    }
    JobRequest job = state->jobs[state->ids.size()];
    if (!state->ids.empty()) job.depends_on.push_back(state->ids.back());
    auto self = weak.lock();
    link.call(
        protocol::MessageType::submit_job, job.header(),
        [state, self](const nlohmann::json& reply) {
          state->ids.push_back(reply["job"]["id"].get<int64_t>());
          if (self) (*self)();
        },
        [&link, state, kind = job.kind](const QString& why) {
          // What was queued would wait for a job that never comes: cancelling the first cancels the rest.
          if (!state->ids.empty())
            link.call(protocol::MessageType::cancel_job, {{"job", state->ids.front()}},
                      [](const nlohmann::json&) {});
          if (state->failed)
            state->failed(QString("%1 (step %2 of %3) refused: %4")
                              .arg(QString::fromStdString(kind))
                              .arg(state->ids.size() + 1)
                              .arg(state->jobs.size())
                              .arg(why));
        });
  };
  (*next)();
}

}  // namespace mugv::studio
