// Runs: the job queue (reorder, pause, resume, cancel, retry; a job that waits for others shows which), the
// new-run dialog with the planner's layouts (new_run_dialog.h), live charts of loss / learning rate /
// throughput / MFU, the live sample preview, logs, and the gallery of the samples a run rendered at each step
// (from the server, so a remote run's too).
#include "job_params.h"
#include "new_run_dialog.h"
#include "pages.h"
#include "service/job_json.h"

#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QInputDialog>
#include <QLineEdit>
#include <QScrollArea>
#include <QSplitter>
#include <QVBoxLayout>

namespace mugv::studio {

using protocol::MessageType;

namespace {

// "train run=r1 steps=400 …": the command with the values it was given, each by its key's last part.
QString command_text(const nlohmann::json& params) {
  QStringList words;
  for (const auto& w : params.value("command", nlohmann::json::array()))
    words << QString::fromStdString(w.get<std::string>());
  for (const auto& p : params.value("positional", nlohmann::json::array()))
    words << QString::fromStdString(p.get<std::string>());
  const auto values = params.value("values", nlohmann::json::object());
  for (auto it = values.begin(); it != values.end(); ++it) {
    const std::string& key = it.key();
    const std::string name = key.substr(key.rfind('.') + 1);
    words << QString::fromStdString(name + "=" + (it->is_string() ? it->get<std::string>() : it->dump()));
  }
  return words.join(' ');
}

// "dpo of demo @ step 400", "sft (decision=keep) of demo @ step 400": the stage that post-trained a run.
QString post_trained_text(const nlohmann::json& p) {
  const QString filter = QString::fromStdString(p.value("clip_filter", ""));
  return QString("%1%2 of %3 @ step %4")
      .arg(QString::fromStdString(p.value("stage", "")), filter.isEmpty() ? QString() : " (" + filter + ")",
           QString::fromStdString(p.value("run", "")))
      .arg(p.value("step", int64_t(0)));
}

}  // namespace

RunsPage::RunsPage(BackendLink& link, QWidget* parent) : QWidget(parent), link_(link) {
  jobs_ = new QTableWidget(0, 5, this);
  jobs_->setHorizontalHeaderLabels({"job", "kind", "state", "progress", "command"});
  jobs_->horizontalHeader()->setStretchLastSection(true);
  jobs_->setSelectionBehavior(QAbstractItemView::SelectRows);
  jobs_->setSelectionMode(QAbstractItemView::SingleSelection);
  auto* buttons = new QHBoxLayout;
  struct Action {
    const char* label;
    const char* tip;
    MessageType type;
  };
  for (const Action& a :
       {Action{"Pause", "Pause the job at its next step", MessageType::pause_job},
        Action{"Resume",
               "Resume a paused job, or continue a cancelled or failed training run from its last "
               "checkpoint",
               MessageType::resume_job},
        Action{"Cancel", "Cancel the job (training saves a checkpoint first)", MessageType::cancel_job},
        Action{"Retry", "Queue a failed, cancelled or interrupted job again", MessageType::retry_job},
        Action{"Move up", "Run this queued job first", MessageType::reorder_job},
        Action{"Sample now", "Render the training samples at the next step", MessageType::sample_now},
        Action{"Save now", "Write a checkpoint at the next step", MessageType::save_now}}) {
    auto* b = new QPushButton(a.label, this);
    b->setToolTip(a.tip);
    const MessageType type = a.type;
    connect(b, &QPushButton::clicked, this, [this, type] { act(type); });
    buttons->addWidget(b);
  }
  auto* new_run = new QPushButton("New run…", this);
  new_run->setToolTip("Start a training run from presets (Ctrl+N)");
  connect(new_run, &QPushButton::clicked, this, &RunsPage::open_new_run_dialog);
  buttons->addStretch(1);
  buttons->addWidget(new_run);

  loss_ = new MetricChart("loss", this);
  lr_ = new MetricChart("learning rate", this);
  throughput_ = new MetricChart("tokens / s", this);
  mfu_ = new MetricChart("MFU", this);
  auto* charts = new QGridLayout;
  charts->addWidget(loss_, 0, 0);
  charts->addWidget(lr_, 0, 1);
  charts->addWidget(throughput_, 1, 0);
  charts->addWidget(mfu_, 1, 1);
  error_ = new QLabel(this);
  error_->setWordWrap(true);
  error_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  error_->setStyleSheet("color: #d33;");
  error_->setVisible(false);
  log_ = new QPlainTextEdit(this);
  log_->setReadOnly(true);
  log_->setMaximumBlockCount(5000);
  log_->setToolTip("The selected job's log");
  samples_ = new FramePlayer(this);
  samples_->setToolTip(
      "Samples rendered during training: live while the job runs (the first sample prompt), else the run's "
      "newest");

  runs_ = new QTableWidget(0, 6, this);
  runs_->setHorizontalHeaderLabels({"run", "kind", "base", "adapter (LoRA)", "made from", "checkpoints"});
  runs_->horizontalHeader()->setStretchLastSection(true);
  runs_->setSelectionBehavior(QAbstractItemView::SelectRows);
  runs_->setToolTip(
      "Runs on the server. A fine-tune names the run and step it started from; a LoRA run's checkpoints "
      "hold its adapter (mugv lora extract writes one as a PEFT file); \"made from\" names the run a grown, "
      "merged or averaged run was made from, and the stage (SFT, DPO, KTO) that post-trained a fine-tune");
  runs_->setSelectionMode(QAbstractItemView::SingleSelection);
  auto* grow = new QPushButton("Grow 2x…", this);
  grow->setToolTip(
      "A new run whose DiT has twice the width (hidden size and heads) and computes the same function "
      "(HyperCloning); start a run from it to train the wide model on from the small one");
  connect(grow, &QPushButton::clicked, this, [this] {
    const QString run = selected_run();
    if (run.isEmpty()) {
      emit message("select a DiT run in the runs table first");
      return;
    }
    bool ok = false;
    const QString out =
        QInputDialog::getText(this, "Grow run", "Name of the grown run", QLineEdit::Normal, run + "-w2", &ok);
    if (ok) grow_run(run, out.trimmed(), 2);
  });

  auto* top = new QWidget(this);
  auto* top_layout = new QVBoxLayout(top);
  top_layout->addLayout(buttons);
  auto* lists = new QSplitter(Qt::Horizontal, top);
  lists->addWidget(jobs_);
  auto* runs_box = new QWidget(lists);
  auto* runs_layout = new QVBoxLayout(runs_box);
  runs_layout->setContentsMargins(0, 0, 0, 0);
  runs_layout->addWidget(runs_, 1);
  runs_layout->addWidget(grow, 0, Qt::AlignLeft);
  lists->addWidget(runs_box);
  lists->setStretchFactor(0, 3);
  lists->setStretchFactor(1, 2);
  top_layout->addWidget(lists, 1);
  auto* bottom = new QWidget(this);
  auto* bottom_layout = new QHBoxLayout(bottom);
  auto* chart_box = new QWidget(bottom);
  chart_box->setLayout(charts);
  bottom_layout->addWidget(chart_box, 3);
  auto* side = new QVBoxLayout;
  side->addWidget(samples_, 1);
  side->addWidget(error_);
  side->addWidget(log_, 1);
  bottom_layout->addLayout(side, 2);

  // The sample gallery: a run's steps on the left, the selected step's videos on the right.
  auto* gallery = new QWidget(this);
  samples_title_ = new QLabel("Select a run to see the samples it rendered while training.", gallery);
  sample_steps_ = new QListWidget(gallery);
  sample_steps_->setToolTip("The steps this run rendered samples at, newest first, with their prompts");
  sample_steps_->setMaximumWidth(420);
  auto* players = new QWidget(gallery);
  sample_grid_ = new QGridLayout(players);
  auto* scroll = new QScrollArea(gallery);
  scroll->setWidgetResizable(true);
  scroll->setWidget(players);
  auto* refresh_samples = new QPushButton("Refresh", gallery);
  refresh_samples->setToolTip("List the run's samples again");
  auto* gallery_head = new QHBoxLayout;
  gallery_head->addWidget(samples_title_, 1);
  gallery_head->addWidget(refresh_samples);
  auto* gallery_row = new QHBoxLayout;
  gallery_row->addWidget(sample_steps_, 1);
  gallery_row->addWidget(scroll, 2);
  auto* gallery_layout = new QVBoxLayout(gallery);
  gallery_layout->addLayout(gallery_head);
  gallery_layout->addLayout(gallery_row, 1);

  details_ = new QTabWidget(this);
  details_->addTab(bottom, "Training");
  details_->addTab(gallery, "Sample gallery");
  auto* split = new QSplitter(Qt::Vertical, this);
  split->addWidget(top);
  split->addWidget(details_);
  auto* layout = new QVBoxLayout(this);
  layout->addWidget(split);

  connect(jobs_, &QTableWidget::itemSelectionChanged, this, [this] { show_job(selected_job()); });
  connect(runs_, &QTableWidget::itemSelectionChanged, this, [this] {
    if (!selected_run().isEmpty()) show_samples(selected_run());
  });
  connect(sample_steps_, &QListWidget::currentRowChanged, this, [this](int row) {
    if (row >= 0) play_sample_step(sample_steps_->item(row)->data(Qt::UserRole).toLongLong());
  });
  connect(refresh_samples, &QPushButton::clicked, this, &RunsPage::list_samples);
  sample_refresh_.setSingleShot(true);
  sample_refresh_.setInterval(1000);
  connect(&sample_refresh_, &QTimer::timeout, this, &RunsPage::list_samples);
  connect(&link_, &BackendLink::connected, this, &RunsPage::refresh);
  connect(&link_, &BackendLink::disconnected, this, &RunsPage::mark_jobs_unknown);
  connect(&link_, &BackendLink::event, this, &RunsPage::on_event);
}

int64_t RunsPage::selected_job() const {
  const auto rows = jobs_->selectionModel()->selectedRows();
  return rows.isEmpty() ? 0 : jobs_->item(rows.first().row(), 0)->text().toLongLong();
}

void RunsPage::select_job(int64_t id) {
  for (int r = 0; r < jobs_->rowCount(); ++r)
    if (jobs_->item(r, 0)->text().toLongLong() == id) jobs_->selectRow(r);
  show_job(id);
}

void RunsPage::refresh() {
  refresh_runs();
  list_samples();
  link_.call(
      MessageType::list_jobs, {{"limit", 200}},
      [this](const nlohmann::json& reply) {
        if (!link_.is_connected()) return;  // an answer from before the server was lost is out of date
        const int64_t keep = selected_job();
        std::map<int64_t, std::string> states;
        for (const auto& j : reply["jobs"]) states[j["id"].get<int64_t>()] = j["state"].get<std::string>();
        jobs_->setRowCount(0);
        for (const auto& j : reply["jobs"]) {
          const int row = jobs_->rowCount();
          jobs_->insertRow(row);
          auto* id = read_only_cell(QString::number(j["id"].get<int64_t>()));
          id->setData(Qt::UserRole, QString::fromStdString(training_run(j)));
          jobs_->setItem(row, 0, id);
          jobs_->setItem(row, 1, read_only_cell(QString::fromStdString(j["kind"].get<std::string>())));
          jobs_->setItem(row, 2, read_only_cell(QString::fromStdString(j["state"].get<std::string>())));
          // A job that waits for others says so where a running one shows its progress.
          jobs_->setItem(row, 3, read_only_cell(QString::fromStdString(waiting_text(j, states))));
          auto* command = read_only_cell(command_text(j["params"]));
          command->setToolTip(QString::fromStdString(j.value("error_message", "")));
          jobs_->setItem(row, 4, command);
          if (j["id"].get<int64_t>() == keep) jobs_->selectRow(row);
        }
        if (failed_ != 0) select_job(std::exchange(failed_, 0));
      },
      [this](const QString& m) { emit message(m); });
}

void RunsPage::refresh_runs() {
  link_.call(
      MessageType::list_runs, {},
      [this](const nlohmann::json& reply) {
        runs_->setRowCount(0);
        for (const auto& r : reply.value("runs", nlohmann::json::array())) {
          const int row = runs_->rowCount();
          runs_->insertRow(row);
          auto text = [&](const char* key) {
            const auto& v = r.contains(key) ? r[key] : nlohmann::json();
            return v.is_string() ? QString::fromStdString(v.get<std::string>()) : QString();
          };
          QString base;
          if (r.contains("base") && r["base"].is_object())
            base = QString("%1 @ step %2 (%3)")
                       .arg(QString::fromStdString(r["base"].value("run", "")))
                       .arg(r["base"].value("step", int64_t(0)))
                       .arg(QString::fromStdString(r["base"].value("weights", "")));
          QString made_from;
          if (r.contains("lineage") && r["lineage"].is_object()) {
            const auto& l = r["lineage"];
            if (l.contains("grown_from"))
              made_from = QString("grown %1x from %2 @ step %3")
                              .arg(l["grown_from"].value("width", 0))
                              .arg(QString::fromStdString(l["grown_from"].value("run", "")))
                              .arg(l["grown_from"].value("step", int64_t(0)));
            else if (l.contains("merged_from"))
              made_from = QString("%1 with adapters merged")
                              .arg(QString::fromStdString(l["merged_from"].value("run", "")));
            else if (l.contains("ema_from"))
              made_from = QString("%1 averaged, EMA length %2 @ step %3")
                              .arg(QString::fromStdString(l["ema_from"].value("run", "")))
                              .arg(l["ema_from"].value("sigma_rel", 0.0))
                              .arg(l["ema_from"].value("step", int64_t(0)));
            else if (l.contains("post_trained_from"))
              made_from = post_trained_text(l["post_trained_from"]);
          }
          QStringList steps;
          if (r.contains("checkpoints") && r["checkpoints"].is_array())
            for (const auto& step : r["checkpoints"]) steps << QString::number(step.get<int64_t>());
          runs_->setItem(row, 0, read_only_cell(text("name")));
          runs_->setItem(row, 1, read_only_cell(text("kind")));
          runs_->setItem(row, 2, read_only_cell(base));
          runs_->setItem(row, 3, read_only_cell(text("lora")));
          runs_->setItem(row, 4, read_only_cell(made_from));
          runs_->setItem(row, 5, read_only_cell(steps.join(", ")));
        }
      },
      [this](const QString& m) { emit message(m); });
}

QString RunsPage::selected_run() const {
  const auto rows = runs_->selectionModel()->selectedRows();
  return rows.isEmpty() ? QString() : runs_->item(rows.first().row(), 0)->text();
}

void RunsPage::mark_jobs_unknown() {
  // Whatever the server was running or about to run, nobody runs it now: the next server decides (it requeues
  // interrupted jobs), and the list is read again once a server answers.
  for (int r = 0; r < jobs_->rowCount(); ++r) {
    QTableWidgetItem* state = jobs_->item(r, 2);
    const QString s = state->text();
    if (s == "running" || s == "starting" || s == "queued" || s == "paused") {
      state->setText("unknown (no server)");
      state->setToolTip(QString("was %1 when the connection to the server was lost").arg(s));
      jobs_->item(r, 3)->setText("");
    }
  }
}

void RunsPage::show_samples(const QString& run) {
  if (run != samples_run_) {
    samples_run_ = run;
    sample_list_ = nlohmann::json::array();
    playing_step_ = -1;
    ++sample_plays_;
    sample_count_ = 0;
    for (auto& [player, prompt] : sample_players_) {
      player->set_frames({}, 8.0, false);
      player->hide();
      prompt->hide();
    }
    sample_steps_->clear();
  }
  list_samples();
}

void RunsPage::list_samples() {
  if (samples_run_.isEmpty()) return;
  const uint64_t ticket = ++sample_listings_;
  const QString run = samples_run_;
  link_.call(
      MessageType::list_run_samples, {{"run", run.toStdString()}, {"limit", 500}},
      [this, ticket, run](const nlohmann::json& reply) {
        if (ticket != sample_listings_ || run != samples_run_) return;
        sample_list_ = reply.value("samples", nlohmann::json::array());
        // One row per step (the listing is newest step first), with its prompts.
        std::vector<std::pair<int64_t, QStringList>> steps;
        for (const auto& sample : sample_list_) {
          const int64_t step = sample.value("step", int64_t(0));
          if (steps.empty() || steps.back().first != step) steps.push_back({step, {}});
          steps.back().second << QString::fromStdString(sample.value("prompt", ""));
        }
        const int64_t keep = playing_step_;
        QSignalBlocker quiet(sample_steps_);
        sample_steps_->clear();
        for (const auto& [step, prompts] : steps) {
          auto* item = new QListWidgetItem(QString("step %1 · %2").arg(step).arg(prompts.join(" | ")));
          item->setData(Qt::UserRole, QVariant::fromValue<qlonglong>(step));
          item->setToolTip(prompts.join("\n"));
          sample_steps_->addItem(item);
          if (step == keep) sample_steps_->setCurrentItem(item);
        }
        samples_title_->setText(
            steps.empty()
                ? QString("Run %1 has no samples yet (train with --sample-every N, or Sample now).").arg(run)
                : QString("Samples of run %1: %2 steps").arg(run).arg(steps.size()));
        // Nothing chosen yet (or the chosen step is gone): the newest step plays.
        if (sample_steps_->currentRow() < 0 && sample_steps_->count() > 0) {
          sample_steps_->setCurrentRow(0);
          play_sample_step(steps.front().first);
        }
      },
      [this, ticket, run](const QString& m) {
        if (ticket != sample_listings_) return;
        samples_title_->setText(QString("The samples of run %1 cannot be listed: %2").arg(run, m));
        emit message(m);
      });
}

void RunsPage::play_sample_step(int64_t step) {
  if (step == playing_step_) return;
  playing_step_ = step;
  const uint64_t ticket = ++sample_plays_;
  std::vector<nlohmann::json> files;
  for (const auto& sample : sample_list_)
    if (sample.value("step", int64_t(0)) == step) files.push_back(sample);
  while (sample_players_.size() < files.size()) {
    auto* player = new FramePlayer(this);
    auto* prompt = new QLabel(this);
    prompt->setWordWrap(true);
    prompt->setTextInteractionFlags(Qt::TextSelectableByMouse);
    const int index = static_cast<int>(sample_players_.size());
    sample_grid_->addWidget(player, (index / 2) * 2, index % 2);
    sample_grid_->addWidget(prompt, (index / 2) * 2 + 1, index % 2);
    sample_players_.push_back({player, prompt});
  }
  sample_count_ = static_cast<int>(files.size());
  for (size_t i = 0; i < sample_players_.size(); ++i) {
    auto [player, prompt] = sample_players_[i];
    player->set_frames({}, 8.0, false);
    player->setVisible(i < files.size());
    prompt->setVisible(i < files.size());
  }
  const QString run = samples_run_;
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& sample = files[i];
    const QString file = QString::fromStdString(sample.value("file", ""));
    auto [player, prompt] = sample_players_[i];
    QString caption = QString::fromStdString(sample.value("prompt", ""));
    if (!sample.value("seed", "").empty())
      caption += QString(" (seed %1)").arg(QString::fromStdString(sample.value("seed", "")));
    prompt->setText(caption.isEmpty() ? file : caption);
    prompt->setToolTip(QString("%1, step %2, %3 (%4 bytes)")
                           .arg(run)
                           .arg(step)
                           .arg(file)
                           .arg(sample.value("size", int64_t(0))));
    if (sample.contains("error")) {
      prompt->setText(QString("%1: %2").arg(file, QString::fromStdString(sample.value("error", ""))));
      continue;
    }
    play_run_sample(player, run, step, file, [this, ticket] { return ticket == sample_plays_; });
  }
}

QList<FramePlayer*> RunsPage::sample_players() const {
  QList<FramePlayer*> shown;
  for (int i = 0; i < sample_count_; ++i) shown << sample_players_[size_t(i)].first;
  return shown;
}

QString RunsPage::sample_prompt(int index) const {
  return index >= 0 && index < sample_count_ ? sample_players_[size_t(index)].second->text() : QString();
}

void RunsPage::grow_run(const QString& run, const QString& out, int width) {
  const std::string problem = validate_grow(run.toStdString(), out.toStdString(), width);
  if (!problem.empty()) {
    emit message(QString::fromStdString(problem));
    return;
  }
  submit_job(
      link_, grow_job(run.toStdString(), out.toStdString(), width).header(),
      [this, out](int64_t id) {
        emit message(QString("growing into %1 as job %2").arg(out).arg(id));
        refresh();
      },
      [this](const QString& m) { emit message("growth refused: " + m); });
}

void RunsPage::act(MessageType type) {
  const int64_t id = selected_job();
  if (!id) {
    emit message("select a job first");
    return;
  }
  // Resume continues a cancelled, failed or interrupted training job too: the server retries it as a
  // continuation of its run (from the last checkpoint); paused jobs resume as they are.
  if (type == MessageType::resume_job) {
    const auto rows = jobs_->selectionModel()->selectedRows();
    const QString state = rows.isEmpty() ? QString() : jobs_->item(rows.first().row(), 2)->text();
    const QString kind = rows.isEmpty() ? QString() : jobs_->item(rows.first().row(), 1)->text();
    if (kind == "train" && (state == "cancelled" || state == "failed" || state == "interrupted"))
      type = MessageType::retry_job;
  }
  nlohmann::json h = {{"job", id}};
  if (type == MessageType::reorder_job) h["position"] = 0;
  link_.call(
      type, h, [this](const nlohmann::json&) { refresh(); }, [this](const QString& m) { emit message(m); });
}

void RunsPage::show_job(int64_t id) {
  if (id == shown_job_ || id == 0) return;
  shown_job_ = id;
  for (MetricChart* c : {loss_, lr_, throughput_, mfu_}) c->clear_points();
  log_->clear();
  error_->clear();
  error_->setVisible(false);
  samples_->set_frames({}, 8.0, false);
  for (int r = 0; r < jobs_->rowCount(); ++r)
    if (jobs_->item(r, 0)->text().toLongLong() == id)
      show_newest_sample(id, jobs_->item(r, 0)->data(Qt::UserRole).toString());
  link_.call(MessageType::job_logs, {{"job", id}, {"tail_lines", 500}},
             [this, id](const nlohmann::json& reply) {
               if (id == shown_job_)
                 log_->setPlainText(QString::fromStdString(reply["text"].get<std::string>()));
             });
  // Metrics already reported (the job's stored events), then live ones from events.
  load_stored_metrics(id, 0);
}

void RunsPage::play_run_sample(FramePlayer* player, const QString& run, int64_t step, const QString& file,
                               std::function<bool()> wanted) {
  link_.call_frames(
      MessageType::run_sample_frames,
      {{"run", run.toStdString()},
       {"step", step},
       {"file", file.toStdString()},
       {"count", 64},
       {"max_side", 256}},
      [player, wanted](const nlohmann::json& reply, const QList<QByteArray>& frames) {
        if (wanted())
          player->set_frames(frames_from_rgb24(frames, reply.value("width", 0), reply.value("height", 0)),
                             reply.value("fps", 8.0), true);
      },
      [this, wanted, run, step, file](const QString& m) {
        if (wanted())
          emit message(
              QString("sample %1 of run %2, step %3 cannot be played: %4").arg(file, run).arg(step).arg(m));
      });
}

void RunsPage::show_newest_sample(int64_t id, const QString& run) {
  if (run.isEmpty()) return;
  const uint64_t previews = live_previews_;
  // Stale when another job is shown, or a live preview came in meanwhile (it is newer than any stored
  // sample).
  auto current = [this, id, previews] { return id == shown_job_ && previews == live_previews_; };
  link_.call(MessageType::list_run_samples, {{"run", run.toStdString()}, {"limit", 1}},
             [this, run, current](const nlohmann::json& reply) {
               if (!current()) return;
               for (const auto& sample : reply.value("samples", nlohmann::json::array())) {
                 if (sample.contains("error")) continue;
                 play_run_sample(samples_, run, sample.value("step", int64_t(0)),
                                 QString::fromStdString(sample.value("file", "")), current);
                 return;  // the first readable video of the newest step: what the live preview showed
               }
             });
}

// One page of the job's stored metrics after event `after`, then the next page until none is left (a long
// training run has more than one reply holds).
void RunsPage::load_stored_metrics(int64_t id, int64_t after) {
  link_.call(
      MessageType::get_job, {{"job", id}, {"types", {"metrics"}}, {"after_event", after}},
      [this, id, after](const nlohmann::json& reply) {
        if (id != shown_job_) return;
        const auto& job = reply.value("job", nlohmann::json::object());
        if (after == 0 && !job.value("error_message", "").empty()) {
          error_->setText(QString("%1: %2").arg(QString::fromStdString(job.value("state", "")),
                                                QString::fromStdString(job.value("error_message", ""))));
          error_->setVisible(true);
        }
        for (const auto& e : reply.value("events", nlohmann::json::array())) {
          const auto& p = e["payload"];
          on_event(QString("job/%1/metrics").arg(id),
                   {{"type", "metrics"}, {"step", p["step"]}, {"values", p["values"]}}, {});
        }
        if (reply.value("more", false)) load_stored_metrics(id, reply.value("next_after", int64_t(0)));
      });
}

void RunsPage::on_event(const QString& topic, const nlohmann::json& header, const QList<QByteArray>& blobs) {
  const std::string type = header.value("type", "");
  if (type == "state") {
    // A job that failed is announced with its whole error and selected, so its log and charts show.
    const std::string state = header.value("state", "");
    if (state == "failed" || state == "interrupted") {
      const auto& job = header.value("job_info", nlohmann::json::object());
      const int64_t id = job.value("id", int64_t(0));
      emit message(
          QString("job %1 %2: %3")
              .arg(id)
              .arg(QString::fromStdString(state), QString::fromStdString(job.value("error_message", ""))));
      failed_ = id;
      if (id == shown_job_) shown_job_ = 0;  // show it again, with its error
    }
    refresh();  // a dependency that succeeded, failed or was retried changes what its dependents wait on
    return;
  }
  const int64_t id = topic.section('/', 1, 1).toLongLong();
  if (type == "progress") {
    for (int r = 0; r < jobs_->rowCount(); ++r) {
      if (jobs_->item(r, 0)->text().toLongLong() != id) continue;
      jobs_->item(r, 3)->setText(QString::fromStdString(progress_text(header)));
    }
    return;
  }
  // A training job rendered samples (its preview is the first of them): the gallery lists them too.
  if (type == "preview" && !samples_run_.isEmpty() && !sample_refresh_.isActive()) sample_refresh_.start();
  if (id != shown_job_) return;
  if (type == "metrics") {
    const auto& v = header["values"];
    const double step = header.value("step", 0.0);
    auto add = [&](MetricChart* chart, const char* key) {
      if (v.contains(key) && v[key].is_number()) chart->add_point(step, v[key].get<double>());
    };
    add(loss_, "loss");
    add(lr_, "lr");
    add(throughput_, "tokens_per_s");
    add(mfu_, "mfu");
  } else if (type == "log") {
    log_->appendPlainText(QString::fromStdString(header.value("text", "")));
  } else if (type == "preview") {
    ++live_previews_;
    samples_->set_frames(frames_from_rgb24(blobs, header.value("width", 0), header.value("height", 0)), 8.0,
                         true);
  }
}

void RunsPage::start_training(const TrainForm& form) {
  submit_job(
      link_, train_job(form).header(),
      [this](int64_t id) {
        emit message(QString("training queued as job %1").arg(id));
        refresh();
        shown_job_ = 0;
        select_job(id);
      },
      [this](const QString& m) { emit message("training refused: " + m); });
}

void RunsPage::start_chain(std::vector<JobRequest> jobs) {
  QStringList steps;
  for (const JobRequest& job : jobs) steps << QString::fromStdString(job.kind);
  submit_chain(
      link_, std::move(jobs),
      [this, steps](const std::vector<int64_t>& ids) {
        QStringList queued;
        for (size_t i = 0; i < ids.size(); ++i)
          queued << QString("%1 as job %2").arg(steps[int(i)]).arg(ids[i]);
        emit message(QString("queued %1, each after the one before").arg(queued.join(", ")));
        refresh();
        shown_job_ = 0;
        select_job(ids.back());
      },
      [this](const QString& m) { emit message(m); });
}

void RunsPage::grow_then_train(const TrainForm& form, int width) {
  const std::string problem = validate_grow(form.from, form.run + "-grown", width);
  if (!problem.empty()) {
    emit message(QString::fromStdString(problem));
    return;
  }
  start_chain(grow_then_train_jobs(form, width));
}

void RunsPage::open_new_run_dialog() {
  NewRunDialog dialog(link_, this);
  if (dialog.exec() == QDialog::Accepted) start_chain(dialog.jobs());
}

}  // namespace mugv::studio
