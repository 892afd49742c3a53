// Label: the labelling queue (list_preferences) with the two generations of the shown pair playing side by
// side (generation_frames), the labels a person gives (label_preference, with undo), and the jobs that fill
// the queue (`mugv pairs`) or empty it automatically (`mugv label --auto shapes`).
#include "command_specs.h"
#include "job_params.h"
#include "pages.h"

#include <QFileDialog>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QVBoxLayout>

namespace mugv::studio {

using protocol::MessageType;

namespace {

// Pending pairs asked for at a time: enough to find the pair an undo brought back in all but huge queues.
constexpr int kQueueWindow = 1000;

}  // namespace

LabelPage::LabelPage(BackendLink& link, QWidget* parent) : QWidget(parent), link_(link) {
  prompt_ = new QLabel(this);
  prompt_->setWordWrap(true);
  prompt_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  QFont bigger = prompt_->font();
  bigger.setPointSizeF(bigger.pointSizeF() * 1.3);
  prompt_->setFont(bigger);
  prompt_->setToolTip("The prompt both videos were generated from");
  counts_ = new QLabel(this);
  counts_->setToolTip("Pairs waiting for a label, and the labels given so far (by people and labellers)");
  left_ = new FramePlayer(this);
  left_->setToolTip("Generation a of the pair");
  right_ = new FramePlayer(this);
  right_->setToolTip("Generation b of the pair");
  left_button_ = new QPushButton("Left is better", this);
  left_button_->setShortcut(QKeySequence(Qt::Key_1));
  left_button_->setToolTip("Prefer the left video (1)");
  right_button_ = new QPushButton("Right is better", this);
  right_button_->setShortcut(QKeySequence(Qt::Key_2));
  right_button_->setToolTip("Prefer the right video (2)");
  skip_button_ = new QPushButton("Skip", this);
  skip_button_->setShortcut(QKeySequence(Qt::Key_S));
  skip_button_->setToolTip("No preference: both are equally good or bad (S)");
  undo_button_ = new QPushButton("Undo", this);
  undo_button_->setShortcut(QKeySequence::Undo);
  undo_button_->setToolTip("Take your last label back and show that pair again (Ctrl+Z)");

  run_ = new QComboBox(this);
  run_->setToolTip("The DiT run that generates both videos of each pair");
  prompts_file_ = new QLineEdit(this);
  prompts_file_->setPlaceholderText("prompts.txt on the server: one prompt a line");
  prompts_file_->setToolTip(
      "A text file with one prompt a line (blank lines and lines starting with # skipped)");
  auto* browse = new QPushButton("…", this);
  browse->setToolTip("Choose the prompt file");
  count_ = new QSpinBox(this);
  count_->setRange(0, 100000);
  count_->setSpecialValueText("every prompt");
  count_->setToolTip("Pairs to make (one per prompt, from the top of the file)");
  auto* make = new QPushButton("Make pairs", this);
  make->setToolTip("Generate two videos of each prompt with the run and queue them here as pairs");
  auto* automatic = new QPushButton("Auto-label (shapes)", this);
  automatic->setToolTip(
      "Label every pending pair with the starter set's evaluator (which video shows the prompt's color, "
      "shape and direction)");
  // The choices and their help come from the server's `mugv label` (fetched on refresh).
  criterion_ = new QComboBox(this);

  auto* players = new QHBoxLayout;
  for (auto [title, player] : {std::pair{"Left", left_}, std::pair{"Right", right_}}) {
    auto* column = new QVBoxLayout;
    column->addWidget(new QLabel(title, this));
    column->addWidget(player, 1);
    players->addLayout(column, 1);
  }
  auto* buttons = new QHBoxLayout;
  buttons->addWidget(left_button_);
  buttons->addWidget(skip_button_);
  buttons->addWidget(right_button_);
  buttons->addStretch(1);
  buttons->addWidget(undo_button_);
  auto* pairs_box = new QGroupBox("Make pairs", this);
  auto* pairs_row = new QHBoxLayout(pairs_box);
  pairs_row->addWidget(new QLabel("Run", pairs_box));
  pairs_row->addWidget(run_, 1);
  pairs_row->addWidget(new QLabel("Prompts", pairs_box));
  pairs_row->addWidget(prompts_file_, 2);
  pairs_row->addWidget(browse);
  pairs_row->addWidget(new QLabel("Count", pairs_box));
  pairs_row->addWidget(count_);
  pairs_row->addWidget(make);
  pairs_row->addWidget(automatic);
  pairs_row->addWidget(criterion_);
  auto* layout = new QVBoxLayout(this);
  layout->addWidget(prompt_);
  layout->addWidget(counts_);
  layout->addLayout(players, 1);
  layout->addLayout(buttons);
  layout->addWidget(pairs_box);

  connect(left_button_, &QPushButton::clicked, this, [this] { pick("a"); });
  connect(right_button_, &QPushButton::clicked, this, [this] { pick("b"); });
  connect(skip_button_, &QPushButton::clicked, this, [this] { pick("skip"); });
  connect(undo_button_, &QPushButton::clicked, this, &LabelPage::undo);
  connect(browse, &QPushButton::clicked, this, [this] {
    const QString f = QFileDialog::getOpenFileName(this, "Prompt file", {}, "Text (*.txt);;All files (*)");
    if (!f.isEmpty()) prompts_file_->setText(f);
  });
  connect(make, &QPushButton::clicked, this, &LabelPage::make_pairs);
  connect(automatic, &QPushButton::clicked, this, &LabelPage::auto_label);
  connect(&link_, &BackendLink::connected, this, &LabelPage::refresh);
  connect(
      &link_, &BackendLink::event, this,
      [this](const QString&, const nlohmann::json& header, const QList<QByteArray>&) { on_event(header); });
  show_pair(nullptr);
}

void LabelPage::refresh() {
  if (criterion_->count() == 0)
    fetch_command_specs(link_, [this](const CommandSpecs& specs) {
      if (const ParamSpec* spec = specs.find({"label"}, "--criterion")) apply_spec(*criterion_, *spec);
    });
  refresh_runs();
  load(pair_);
}

void LabelPage::refresh_runs() {
  link_.call(
      MessageType::list_runs, {},
      [this](const nlohmann::json& reply) {
        const QString current = run_->currentText();
        run_->clear();
        for (const auto& r : reply.value("runs", nlohmann::json::array()))
          if (r.value("kind", "") == "dit")
            run_->addItem(QString::fromStdString(r["name"].get<std::string>()));
        if (!current.isEmpty()) run_->setCurrentText(current);
      },
      [this](const QString& m) { emit message(m); });
}

void LabelPage::load(int64_t keep, const nlohmann::json& fallback) {
  const uint64_t ticket = ++loads_;
  link_.call(
      MessageType::list_preferences, {{"limit", kQueueWindow}},
      [this, keep, fallback, ticket](const nlohmann::json& reply) {
        if (ticket != loads_) return;  // a later request answers for the queue as it is now
        busy_ = false;
        const auto counts = reply.value("counts", nlohmann::json::object());
        QString text = QString("%1 pending · %2 preferred · %3 skipped")
                           .arg(counts.value("pending", int64_t(0)))
                           .arg(counts.value("preferred", int64_t(0)))
                           .arg(counts.value("skipped", int64_t(0)));
        const int64_t good = counts.value("good", int64_t(0)), bad = counts.value("bad", int64_t(0));
        if (good + bad > 0) text += QString(" · %1 good · %2 bad").arg(good).arg(bad);
        counts_->setText(text);
        const auto pairs = reply.value("pairs", nlohmann::json::array());
        nlohmann::json chosen;
        for (const auto& p : pairs)
          if (keep != 0 && p.value("id", int64_t(0)) == keep) chosen = p;
        // Beyond the listed part of the queue: the pair the caller knows (the one an undo brought back).
        if (chosen.is_null() && fallback.is_object()) chosen = fallback;
        if (chosen.is_null() && !pairs.empty()) chosen = pairs.front();
        show_pair(chosen);
      },
      [this, ticket](const QString& m) {
        if (ticket == loads_) busy_ = false;
        emit message(m);
      });
}

void LabelPage::show_pair(const nlohmann::json& pair) {
  const bool any = pair.is_object();
  for (QPushButton* b : {left_button_, right_button_, skip_button_}) b->setEnabled(any);
  if (!any) {
    pair_ = 0;
    prompt_->setText("Nothing to label: make pairs below, or label them automatically.");
    left_->set_frames({}, 8.0, false);
    right_->set_frames({}, 8.0, false);
    return;
  }
  const int64_t id = pair.value("id", int64_t(0));
  if (id == pair_) return;  // shown already, its frames loaded or on their way
  pair_ = id;
  prompt_->setText(QString::fromStdString(pair.value("prompt", "")));
  left_->set_frames({}, 8.0, false);
  right_->set_frames({}, 8.0, false);
  load_frames(id, pair.value("a", int64_t(0)), left_);
  load_frames(id, pair.value("b", int64_t(0)), right_);
}

void LabelPage::load_frames(int64_t pair, int64_t generation, FramePlayer* player) {
  link_.call_frames(
      MessageType::generation_frames, {{"generation", generation}, {"count", 64}, {"max_side", 256}},
      [this, pair, player](const nlohmann::json& reply, const QList<QByteArray>& frames) {
        if (pair != pair_) return;  // another pair is shown since
        player->set_frames(frames_from_rgb24(frames, reply.value("width", 0), reply.value("height", 0)),
                           reply.value("fps", 8.0), true);
      },
      [this, pair, generation](const QString& m) {
        if (pair == pair_) emit message(QString("generation %1 cannot be played: %2").arg(generation).arg(m));
      });
}

void LabelPage::pick(const QString& choice) {
  if (pair_ == 0 || busy_) return;
  busy_ = true;
  const int64_t id = pair_;
  link_.call(
      MessageType::label_preference, {{"id", id}, {"choice", choice.toStdString()}},
      [this](const nlohmann::json&) { load(0); },
      [this, id](const QString& m) {
        busy_ = false;
        emit message(QString("pair %1 not labelled: %2").arg(id).arg(m));
      });
}

void LabelPage::undo() {
  if (busy_) return;
  busy_ = true;
  link_.call(
      MessageType::label_preference, {{"undo", true}},
      [this](const nlohmann::json& reply) {
        const int64_t id = reply.value("id", int64_t(0));
        emit message(QString("pair %1 is pending again").arg(id));
        load(id, reply.value("pair", nlohmann::json()));
      },
      [this](const QString& m) {
        busy_ = false;
        emit message(m);
      });
}

void LabelPage::make_pairs() {
  PairsForm f;
  f.run = run_->currentText().toStdString();
  f.prompts = prompts_file_->text().trimmed().toStdString();
  f.count = count_->value();
  const std::string problem = validate(f);
  if (!problem.empty()) {
    emit message(QString::fromStdString(problem));
    return;
  }
  submit_job(
      link_, pairs_job(f).header(),
      [this](int64_t id) { emit message(QString("making pairs (job %1)").arg(id)); },
      [this](const QString& m) { emit message("pairs refused: " + m); });
}

void LabelPage::auto_label() {
  submit_job(
      link_, auto_label_job("shapes", criterion_->currentText().toStdString()).header(),
      [this](int64_t id) {
        emit message(QString("labelling the pending pairs automatically (job %1)").arg(id));
      },
      [this](const QString& m) { emit message("automatic labelling refused: " + m); });
}

void LabelPage::on_event(const nlohmann::json& header) {
  if (header.value("type", "") != "state") return;
  const auto job = header.value("job_info", nlohmann::json::object());
  const std::string kind = job.value("kind", ""), state = header.value("state", "");
  // `mugv pairs` (generate) fills the queue; `mugv label` (model) empties it.
  if (state == "succeeded" && (kind == "generate" || kind == "model")) load(pair_);
  // A run appears or gains checkpoints: the runs offered for pairs follow.
  if ((kind == "train" || kind == "model") && state != "queued" && state != "running") refresh_runs();
}

}  // namespace mugv::studio
