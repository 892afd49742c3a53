// Datasets: the catalog's datasets, the starter dataset, imports and curation runs, and the clips of the
// selected dataset as a thumbnail grid and a table with their scores, decision and reason, filters, an
// undoable caption editor and a clip player.
#include "job_params.h"
#include "pages.h"
#include "preset_choices.h"

#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QIcon>
#include <QInputDialog>
#include <QMenu>
#include <QPainter>
#include <QPixmap>
#include <QSplitter>
#include <QTabWidget>
#include <QUndoCommand>
#include <QVBoxLayout>

namespace mugv::studio {

using protocol::MessageType;

void submit_job(BackendLink& link, const nlohmann::json& header, std::function<void(int64_t)> done,
                std::function<void(const QString&)> failed) {
  link.call(
      MessageType::submit_job, header,
      [done](const nlohmann::json& reply) { done(reply["job"]["id"].get<int64_t>()); }, failed);
}

namespace {

QString number(const nlohmann::json& v, int precision = 1) {
  return v.is_number() ? QString::number(v.get<double>(), 'f', precision) : QString("–");
}

// A caption edit the undo stack can take back: both directions go through the server (each edit is a new
// human caption version; nothing is overwritten).
class CaptionEdit : public QUndoCommand {
 public:
  CaptionEdit(DatasetsPage& page, BackendLink& link, int64_t clip, QString before, QString after)
      : page_(page), link_(link), clip_(clip), before_(std::move(before)), after_(std::move(after)) {
    setText(QString("caption of clip %1").arg(clip));
  }
  void redo() override { send(after_); }
  void undo() override { send(before_); }

 private:
  void send(const QString& text) {
    DatasetsPage* page = &page_;
    link_.call(
        MessageType::edit_caption, {{"clip", clip_}, {"text", text.toStdString()}},
        [page](const nlohmann::json&) { page->refresh(); },
        [page](const QString& m) { emit page->message("caption not saved: " + m); });
  }
  DatasetsPage& page_;
  BackendLink& link_;
  int64_t clip_;
  QString before_, after_;
};

}  // namespace

DatasetsPage::DatasetsPage(BackendLink& link, QString home, QWidget* parent)
    : QWidget(parent), link_(link), home_(std::move(home)), undo_(new QUndoStack(this)) {
  datasets_ = new QListWidget(this);
  datasets_->setToolTip("Datasets in the catalog");
  auto* starter = new QPushButton("Create starter dataset", this);
  starter->setToolTip(
      "Generate the shapes starter set (colored shapes moving on plain backgrounds) and import it");
  auto* import = new QPushButton("Import…", this);
  import->setToolTip(
      "Import a folder of clips (with sidecar .txt captions, or its manifest.jsonl / .json / .csv) or a "
      "manifest file as a dataset");
  auto* import_menu = new QMenu(import);
  QAction* import_folder = import_menu->addAction("Folder of clips…");
  QAction* import_manifest = import_menu->addAction("Manifest file (JSONL, JSON, CSV)…");
  import->setMenu(import_menu);
  auto* curate = new QPushButton("Curate folder…", this);
  curate->setToolTip("Split long videos at scene cuts, score every clip and keep or reject it with a reason");
  preset_ = new QComboBox(this);
  fill_preset_combo(*preset_, local_preset_choices("curation"), false);
  preset_->setCurrentText("mugv");
  preset_->setToolTip("Curation preset (the server's): MUG-V's thresholds, lenient ones, or a user's own");
  auto* redecide = new QPushButton("Re-decide", this);
  redecide->setToolTip("Apply the preset's thresholds to the stored scores again (no decoding)");

  clips_ = new QTableWidget(0, 9, this);
  clips_->setHorizontalHeaderLabels(
      {"clip", "start s", "end s", "decision", "reason", "sharpness", "motion", "aesthetic", "caption"});
  clips_->horizontalHeader()->setStretchLastSection(true);
  clips_->setSelectionBehavior(QAbstractItemView::SelectRows);
  clips_->setToolTip("Double-click a caption to edit it (Ctrl+Z undoes)");
  decision_filter_ = new QComboBox(this);
  decision_filter_->addItems({"all", "keep", "reject"});
  decision_filter_->setToolTip("Show clips with this decision");
  reason_filter_ = new QLineEdit(this);
  reason_filter_->setPlaceholderText("reason, e.g. sharpness<200");
  reason_filter_->setToolTip(
      "Show clips whose reason contains this text (a rejection lists every failed threshold)");
  grid_ = new QListWidget(this);
  grid_->setViewMode(QListView::IconMode);
  grid_->setIconSize(QSize(128, 96));
  grid_->setGridSize(QSize(148, 130));
  grid_->setResizeMode(QListView::Adjust);
  grid_->setMovement(QListView::Static);
  grid_->setToolTip("Double-click a clip to play it");
  auto* views = new QTabWidget(this);
  views->addTab(grid_, "Grid");
  views->addTab(clips_, "Table");

  auto* left = new QVBoxLayout;
  left->addWidget(datasets_, 1);
  for (QWidget* w : std::initializer_list<QWidget*>{starter, import, curate}) left->addWidget(w);
  auto* redecide_row = new QHBoxLayout;
  redecide_row->addWidget(preset_);
  redecide_row->addWidget(redecide);
  left->addLayout(redecide_row);
  auto* left_widget = new QWidget(this);
  left_widget->setLayout(left);
  auto* filters = new QHBoxLayout;
  filters->addWidget(new QLabel("Decision", this));
  filters->addWidget(decision_filter_);
  filters->addWidget(new QLabel("Reason", this));
  filters->addWidget(reason_filter_, 1);
  auto* right = new QVBoxLayout;
  right->addLayout(filters);
  right->addWidget(views, 1);
  auto* right_widget = new QWidget(this);
  right_widget->setLayout(right);
  auto* split = new QSplitter(this);
  split->addWidget(left_widget);
  split->addWidget(right_widget);
  split->setStretchFactor(1, 3);
  auto* layout = new QVBoxLayout(this);
  layout->addWidget(split);

  connect(starter, &QPushButton::clicked, this, [this] { create_starter_dataset(); });
  connect(import_folder, &QAction::triggered, this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, "Import a folder of clips");
    if (dir.isEmpty()) return;
    const QString name = QInputDialog::getText(
        this, "Dataset name", "Name of the new dataset:", QLineEdit::Normal, QDir(dir).dirName());
    if (!name.isEmpty()) import_dataset(dir, name);
  });
  connect(import_manifest, &QAction::triggered, this, [this] {
    const QString file = QFileDialog::getOpenFileName(this, "Import a manifest", home_,
                                                      "Manifests (*.jsonl *.json *.csv);;All files (*)");
    if (file.isEmpty()) return;
    const QString name =
        QInputDialog::getText(this, "Dataset name", "Name of the new dataset:", QLineEdit::Normal,
                              QFileInfo(file).completeBaseName());
    if (!name.isEmpty()) import_dataset(file, name);
  });
  connect(curate, &QPushButton::clicked, this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, "Curate a folder of raw videos");
    if (dir.isEmpty()) return;
    const QString name = QInputDialog::getText(
        this, "Dataset name", "Curated dataset name:", QLineEdit::Normal, QDir(dir).dirName() + "-curated");
    if (name.isEmpty()) return;
    submit_job(
        link_,
        curate_job(dir.toStdString(), name.toStdString(), preset_->currentText().toStdString()).header(),
        [this](int64_t id) { emit message(QString("curation queued as job %1").arg(id)); },
        [this](const QString& m) { emit message("curation refused: " + m); });
  });
  connect(redecide, &QPushButton::clicked, this, [this] {
    if (!datasets_->currentItem()) return;
    submit_job(
        link_,
        redecide_job(datasets_->currentItem()->data(Qt::UserRole).toString().toStdString(),
                     preset_->currentText().toStdString())
            .header(),
        [this](int64_t id) { emit message(QString("re-decision queued as job %1").arg(id)); },
        [this](const QString& m) { emit message("re-decision refused: " + m); });
  });
  connect(datasets_, &QListWidget::currentItemChanged, this, [this] { load_clips(); });
  connect(decision_filter_, &QComboBox::currentIndexChanged, this, [this] { load_clips(); });
  connect(reason_filter_, &QLineEdit::editingFinished, this, [this] { load_clips(); });
  connect(grid_, &QListWidget::itemDoubleClicked, this,
          [this](QListWidgetItem* item) { open_clip(item->data(Qt::UserRole).toLongLong()); });
  connect(clips_, &QTableWidget::cellDoubleClicked, this, [this](int row, int column) {
    if (column != 8) {
      open_clip(clips_->item(row, 0)->text().toLongLong());
      return;
    }
    const int64_t clip = clips_->item(row, 0)->text().toLongLong();
    const QString before = clips_->item(row, 8)->text();
    bool ok = false;
    const QString after = QInputDialog::getMultiLineText(
        this, "Caption", QString("Caption of clip %1:").arg(clip), before, &ok);
    if (ok && after != before) edit_caption(clip, before, after);
  });
  connect(&link_, &BackendLink::connected, this, [this] {
    if (thumbnails_of_ != link_.endpoint()) thumbnails_.clear();  // clip ids belong to one server's catalog
    thumbnails_of_ = link_.endpoint();
    refresh();
    fetch_preset_choices(link_, "curation", [this](const std::vector<PresetChoice>& presets) {
      fill_preset_combo(*preset_, presets, false);
    });
  });
  connect(&link_, &BackendLink::event, this,
          [this](const QString& topic, const nlohmann::json& header, const QList<QByteArray>&) {
            on_event(topic, header);
          });
}

void DatasetsPage::refresh() {
  link_.call(
      MessageType::list_datasets, {},
      [this](const nlohmann::json& reply) {
        const QString current =
            datasets_->currentItem() ? datasets_->currentItem()->data(Qt::UserRole).toString() : QString();
        datasets_->clear();
        for (const auto& d : reply["datasets"]) {
          const QString name = QString::fromStdString(d["name"].get<std::string>());
          auto* item = new QListWidgetItem(QString("%1  (%2 clips)").arg(name).arg(d["clips"].get<int64_t>()),
                                           datasets_);
          item->setData(Qt::UserRole, name);
          if (name == current || (current.isEmpty() && datasets_->count() == 1))
            datasets_->setCurrentItem(item);
        }
      },
      [this](const QString& m) { emit message(m); });
}

void DatasetsPage::import_dataset(const QString& input, const QString& name) {
  submit_job(
      link_, import_job(input.toStdString(), name.toStdString()).header(),
      [this](int64_t id) { emit message(QString("import queued as job %1").arg(id)); },
      [this](const QString& m) { emit message("import refused: " + m); });
}

void DatasetsPage::create_starter_dataset(int clips) {
  const QString out = QDir(home_).filePath("datasets/shapes-src");
  submit_job(
      link_, make_starter_job(out.toStdString(), clips).header(),
      [this](int64_t id) {
        follow_up_[id] = kStarterDataset;
        emit message(QString("making the starter dataset (job %1)").arg(id));
      },
      [this](const QString& m) { emit message("starter dataset refused: " + m); });
}

void DatasetsPage::edit_caption(int64_t clip_id, const QString& old_text, const QString& new_text) {
  undo_->push(new CaptionEdit(*this, link_, clip_id, old_text, new_text));
}

void DatasetsPage::load_clips() {
  if (!datasets_->currentItem()) return;
  nlohmann::json h = {{"dataset", datasets_->currentItem()->data(Qt::UserRole).toString().toStdString()},
                      {"limit", 500}};
  if (decision_filter_->currentText() != "all") h["decision"] = decision_filter_->currentText().toStdString();
  if (!reason_filter_->text().trimmed().isEmpty())
    h["reason"] = reason_filter_->text().trimmed().toStdString();
  link_.call(
      MessageType::list_clips, h,
      [this](const nlohmann::json& reply) {
        clips_->setRowCount(0);
        grid_->clear();
        QPixmap blank(grid_->iconSize());
        blank.fill(QColor(40, 40, 40));
        const QIcon placeholder(blank);
        thumbnail_queue_.clear();
        thumbnail_wanted_.clear();
        for (const auto& c : reply["clips"]) {
          const int row = clips_->rowCount();
          clips_->insertRow(row);
          const auto& s = c["scores"];
          clips_->setItem(row, 0, read_only_cell(QString::number(c["id"].get<int64_t>())));
          clips_->setItem(row, 1, read_only_cell(QString::number(c["start_s"].get<double>(), 'f', 2)));
          clips_->setItem(row, 2, read_only_cell(QString::number(c["end_s"].get<double>(), 'f', 2)));
          clips_->setItem(row, 3, read_only_cell(QString::fromStdString(c["decision"].get<std::string>())));
          clips_->setItem(row, 4, read_only_cell(QString::fromStdString(c["reason"].get<std::string>())));
          clips_->setItem(row, 5, read_only_cell(number(s["sharpness"], 0)));
          clips_->setItem(row, 6, read_only_cell(number(s["motion"], 2)));
          clips_->setItem(row, 7, read_only_cell(number(s["aesthetic"], 2)));
          auto* caption = read_only_cell(QString::fromStdString(c["caption"].get<std::string>()));
          caption->setToolTip(
              QString("origin: %1").arg(QString::fromStdString(c["caption_origin"].get<std::string>())));
          clips_->setItem(row, 8, caption);
          const int64_t id = c["id"].get<int64_t>();
          auto* cell = new QListWidgetItem(
              QString("%1 · %2").arg(id).arg(QString::fromStdString(c["decision"].get<std::string>())),
              grid_);
          cell->setData(Qt::UserRole, QVariant::fromValue<qlonglong>(id));
          cell->setToolTip(caption->text());
          cell->setIcon(placeholder);  // the cell has its final size before the picture arrives
          if (thumbnails_.contains(id))
            show_thumbnail(id);
          else
            request_thumbnail(id);
        }
        pump_thumbnails();
      },
      [this](const QString& m) { emit message(m); });
}

void DatasetsPage::request_thumbnail(int64_t clip_id) {
  if (thumbnail_wanted_.insert(clip_id).second) thumbnail_queue_.push_back(clip_id);
}

// A few requests at a time: the network thread answers in order, so a page of 500 thumbnails must not make a
// caption edit wait behind all of them.
void DatasetsPage::pump_thumbnails() {
  while (thumbnails_in_flight_ < 4 && !thumbnail_queue_.empty()) {
    const int64_t id = thumbnail_queue_.front();
    thumbnail_queue_.pop_front();
    ++thumbnails_in_flight_;
    auto done = [this, id] {
      --thumbnails_in_flight_;
      thumbnail_wanted_.erase(id);
      pump_thumbnails();
    };
    link_.call_frames(
        MessageType::clip_frames, {{"clip", id}, {"count", 1}, {"max_side", 128}},
        [this, id, done](const nlohmann::json& reply, const QList<QByteArray>& frames) {
          const auto images = frames_from_rgb24(frames, reply.value("width", 0), reply.value("height", 0));
          if (!images.isEmpty()) {
            thumbnails_.insert(id, new QImage(images.front()));
            show_thumbnail(id);
          }
          done();
        },
        [done](const QString&) { done(); });  // the cell keeps its text
  }
}

void DatasetsPage::show_thumbnail(int64_t clip_id) {
  const QImage* image = thumbnails_.object(clip_id);
  if (!image) return;
  for (int i = 0; i < grid_->count(); ++i) {
    QListWidgetItem* item = grid_->item(i);
    if (item->data(Qt::UserRole).toLongLong() != clip_id) continue;
    // Tiny clips (the starter set is 32 px) are enlarged without smoothing so their shapes stay crisp. The
    // picture is centred on a canvas of the grid's icon size, so every cell's icon, and so its label, keeps
    // one place whatever the clip's aspect (a smaller icon moved the label and left the old one painted).
    const QImage fitted =
        image->scaled(grid_->iconSize(), Qt::KeepAspectRatio,
                      image->width() < 64 ? Qt::FastTransformation : Qt::SmoothTransformation);
    QPixmap canvas(grid_->iconSize());
    canvas.fill(QColor(40, 40, 40));
    QPainter painter(&canvas);
    painter.drawImage((canvas.width() - fitted.width()) / 2, (canvas.height() - fitted.height()) / 2, fitted);
    painter.end();
    item->setIcon(QIcon(canvas));
  }
}

void DatasetsPage::open_clip(int64_t clip_id) {
  if (!player_window_) {
    player_window_ = new QDialog(this);
    player_window_->resize(560, 520);
    player_ = new FramePlayer(player_window_);
    auto* layout = new QVBoxLayout(player_window_);
    layout->addWidget(player_);
  }
  player_window_->setWindowTitle(QString("Clip %1").arg(clip_id));
  player_->set_frames({}, 8.0, false);
  player_window_->show();  // not modal: the studio stays usable while it plays
  link_.call_frames(
      MessageType::clip_frames, {{"clip", clip_id}, {"count", 64}, {"max_side", 512}},
      [this, clip_id](const nlohmann::json& reply, const QList<QByteArray>& frames) {
        if (player_window_->windowTitle() != QString("Clip %1").arg(clip_id)) return;  // another clip since
        player_->set_frames(frames_from_rgb24(frames, reply.value("width", 0), reply.value("height", 0)),
                            reply.value("fps", 8.0), false);
        player_->setFocus();
      },
      [this, clip_id](const QString& m) {
        emit message(QString("clip %1 cannot be played: %2").arg(clip_id).arg(m));
      });
}

void DatasetsPage::on_event(const QString&, const nlohmann::json& header) {
  if (header.value("type", "") != "state") return;
  const auto& job = header["job_info"];
  const int64_t id = job.value("id", int64_t(0));
  const std::string state = header.value("state", "");
  if (state != "succeeded" && state != "failed" && state != "cancelled") return;
  auto follow = follow_up_.find(id);
  if (follow != follow_up_.end() && state == "succeeded") {
    const QString dataset = follow->second;
    const QString source = QDir(home_).filePath("datasets/shapes-src");
    submit_job(
        link_, import_job(source.toStdString(), dataset.toStdString()).header(),
        [this](int64_t job_id) {
          emit message(QString("importing the starter dataset (job %1)").arg(job_id));
        },
        [this](const QString& m) { emit message("import refused: " + m); });
  }
  if (follow != follow_up_.end()) follow_up_.erase(follow);
  const std::string kind = job.value("kind", "");
  if (kind == "import" || kind == "curate" || kind == "make_dataset") refresh();
}

}  // namespace mugv::studio
