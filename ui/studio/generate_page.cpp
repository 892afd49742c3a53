// Generate: prompt, negative prompt, seed, steps, CFG, size, frames and an optional first-frame image; a live
// animated preview of the denoising while the job runs; a player with scrubbing for the result; export with
// the prompt, seed and model kept in the file.
#include "command_specs.h"
#include "job_params.h"
#include "pages.h"

#include "core/error.h"
#include "core/strings.h"
#include "media/encoder.h"

#include <QDateTime>
#include <QDir>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QRandomGenerator>
#include <QStandardItemModel>
#include <QVBoxLayout>

namespace mugv::studio {

using protocol::MessageType;

GeneratePage::GeneratePage(BackendLink& link, QString home, QWidget* parent)
    : QWidget(parent), link_(link), home_(std::move(home)) {
  run_ = new QComboBox(this);
  run_->setToolTip(
      "A trained DiT run, or a released model installed on the server ($MUGV_HOME/models), with its "
      "size");
  prompt_ = new QLineEdit(this);
  prompt_->setPlaceholderText("a red circle moving right on a black background");
  prompt_->setToolTip("What the video should show");
  negative_ = new QLineEdit(this);
  negative_->setToolTip("What to steer away from (empty: the learned null caption)");
  seed_ = new QSpinBox(this);
  seed_->setToolTip("Noise seed: the same seed gives the same video");
  seed_lock_ = new QCheckBox("lock", this);
  seed_lock_->setToolTip(
      "Keep this seed for the next generation; unlocked, each generation draws a new random seed (shown "
      "here)");
  // Steps, CFG, frames, seed and size take their bounds and defaults from the server's `generate` command
  // (apply_command_specs); until it has answered, Generate stays disabled.
  steps_ = new QSpinBox(this);
  steps_->setToolTip("Euler steps on the shifted schedule");
  cfg_ = new QDoubleSpinBox(this);
  cfg_->setToolTip("Classifier-free guidance scale (1: off)");
  frames_ = new QSpinBox(this);
  frames_->setToolTip("Frames to generate (the VAE takes multiples of its chunk, or a multiple plus one)");
  size_ = new QLineEdit(this);
  size_->setToolTip("Width x height in pixels (multiples of 16)");
  image_ = new QLineEdit(this);
  image_->setPlaceholderText("optional first-frame image (I2V / TI2V)");
  image_->setToolTip("An image the video starts from; it is scaled and centre-cropped to the size");
  auto* browse = new QPushButton("…", this);
  adapters_ = new QTableWidget(0, 2, this);
  adapters_->setHorizontalHeaderLabels({"adapter file (LoRA)", "scale"});
  adapters_->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
  adapters_->setToolTip(
      "LoRA adapters applied to the model, each with its scale: PEFT / diffusers safetensors, kohya files or "
      "torch files (paths on the server). A LoRA run chosen as the model brings its own adapter.");
  adapters_->setMaximumHeight(110);
  auto* add_adapter_button = new QPushButton("Add adapter…", this);
  auto* remove_adapter_button = new QPushButton("Remove", this);
  adapters_merge_ = new QCheckBox("merge", this);
  adapters_merge_->setToolTip(
      "Fold the adapters into the weights before sampling (same result, faster steps)");
  generate_ = new QPushButton("Generate", this);
  generate_->setToolTip("Queue the generation (Ctrl+Enter)");
  generate_->setShortcut(QKeySequence("Ctrl+Return"));
  cancel_ = new QPushButton("Cancel", this);
  cancel_->setToolTip("Stop the running generation");
  cancel_->setEnabled(false);
  export_ = new QPushButton("Export…", this);
  export_->setToolTip("Write the result as mp4, webm, gif or PNG frames with its prompt and seed");
  export_->setEnabled(false);
  problem_ = new QLabel(this);
  preview_ = new FramePlayer(this);
  preview_->setToolTip("Live preview: the predicted clean video at each denoising step");
  player_ = new FramePlayer(this);
  player_->setToolTip("The result: scrub with the slider, step with Left/Right");

  auto* form = new QFormLayout;
  form->addRow("Model", run_);
  form->addRow("Prompt", prompt_);
  form->addRow("Negative", negative_);
  auto* seed_row = new QHBoxLayout;
  seed_row->addWidget(seed_, 1);
  seed_row->addWidget(seed_lock_);
  form->addRow("Seed", seed_row);
  form->addRow("Steps", steps_);
  form->addRow("CFG", cfg_);
  form->addRow("Frames", frames_);
  form->addRow("Size", size_);
  auto* image_row = new QHBoxLayout;
  image_row->addWidget(image_, 1);
  image_row->addWidget(browse);
  form->addRow("First frame", image_row);
  form->addRow("Adapters", adapters_);
  auto* adapter_row = new QHBoxLayout;
  adapter_row->addWidget(add_adapter_button);
  adapter_row->addWidget(remove_adapter_button);
  adapter_row->addStretch(1);
  adapter_row->addWidget(adapters_merge_);
  form->addRow("", adapter_row);
  form->addRow(problem_);
  auto* actions = new QHBoxLayout;
  actions->addWidget(generate_);
  actions->addWidget(cancel_);
  actions->addWidget(export_);
  form->addRow(actions);
  auto* views = new QHBoxLayout;
  auto* preview_box = new QVBoxLayout;
  preview_box->addWidget(new QLabel("Denoising preview", this));
  preview_box->addWidget(preview_, 1);
  auto* player_box = new QVBoxLayout;
  player_box->addWidget(new QLabel("Result", this));
  player_box->addWidget(player_, 1);
  views->addLayout(preview_box, 1);
  views->addLayout(player_box, 1);
  auto* layout = new QHBoxLayout(this);
  layout->addLayout(form, 1);
  layout->addLayout(views, 2);

  connect(browse, &QPushButton::clicked, this, [this] {
    const QString f =
        QFileDialog::getOpenFileName(this, "First-frame image", {}, "Images (*.png *.jpg *.jpeg)");
    if (!f.isEmpty()) image_->setText(f);
  });
  connect(add_adapter_button, &QPushButton::clicked, this, [this] {
    const QString f = QFileDialog::getOpenFileName(this, "LoRA adapter", home_,
                                                   "Adapters (*.safetensors *.bin *.pt *.pth *.ckpt)");
    if (!f.isEmpty()) add_adapter(f);
  });
  connect(remove_adapter_button, &QPushButton::clicked, this, [this] {
    const int row = adapters_->currentRow();
    if (row >= 0) adapters_->removeRow(row);
  });
  for (QLineEdit* e : {prompt_, size_, image_})
    connect(e, &QLineEdit::textChanged, this, &GeneratePage::validate_form);
  connect(run_, &QComboBox::currentTextChanged, this, &GeneratePage::validate_form);
  connect(generate_, &QPushButton::clicked, this, &GeneratePage::generate);
  connect(cancel_, &QPushButton::clicked, this, [this] {
    if (job_ == 0) return;
    link_.call(
        MessageType::cancel_job, {{"job", job_}},
        [this](const nlohmann::json&) { emit message("cancelling"); },
        [this](const QString& m) { emit message(m); });
  });
  connect(export_, &QPushButton::clicked, this, [this] {
    const QString path = QFileDialog::getSaveFileName(this, "Export", QDir(home_).filePath("export.mp4"),
                                                      "Video (*.mp4 *.webm *.gif)");
    if (path.isEmpty()) return;
    QString error;
    emit message(export_to(path, &error) ? "exported " + path : error);
  });
  connect(&link_, &BackendLink::connected, this, &GeneratePage::refresh);
  connect(&link_, &BackendLink::event, this, &GeneratePage::on_event);
  validate_form();
}

void GeneratePage::apply_command_specs(const CommandSpecs& specs) {
  const std::vector<std::string> generate = {"generate"};
  int applied = 0;
  auto apply = [&](auto& field, const char* flag) {
    if (const ParamSpec* spec = specs.find(generate, flag)) {
      apply_spec(field, *spec);
      ++applied;
    }
  };
  apply(*steps_, "--steps");
  apply(*cfg_, "--cfg");
  apply(*frames_, "--frames");
  apply(*seed_, "--seed");
  apply(*size_, "--size");
  specs_applied_ = applied == 5;
  validate_form();
}

void GeneratePage::refresh() {
  // A server's commands do not change while it runs: asked until they are known, not on every refresh.
  if (!specs_applied_)
    fetch_command_specs(link_, [this](const CommandSpecs& specs) { apply_command_specs(specs); });
  // Runs first (their names as they are), then the released models the server has (their folder as item
  // data).
  link_.call(
      MessageType::list_runs, {},
      [this](const nlohmann::json& reply) {
        const QString current = run_->currentText();
        run_->clear();
        for (const auto& r : reply["runs"])
          if (r.value("kind", "") == "dit")
            run_->addItem(QString::fromStdString(r["name"].get<std::string>()));
        link_.call(
            MessageType::list_models, {},
            [this, current](const nlohmann::json& models) {
              for (const auto& m : models.value("models", nlohmann::json::array())) {
                run_->addItem(QString::fromStdString(released_model_label(m)),
                              QString::fromStdString(m["path"].get<std::string>()));
                if (!m.value("complete", false)) {
                  // Listed so the user sees what is there and what is missing, but not selectable.
                  if (auto* model = qobject_cast<QStandardItemModel*>(run_->model()))
                    model->item(run_->count() - 1)->setEnabled(false);
                }
              }
              if (!current.isEmpty()) run_->setCurrentText(current);
              validate_form();
            },
            [this](const QString& m) { emit message(m); });
      },
      [this](const QString& m) { emit message(m); });
}

void GeneratePage::fill_model(GenerateForm& f) const {
  const QVariant path = run_->currentData();
  if (path.isValid() && !path.toString().isEmpty())
    f.model = path.toString().toStdString();
  else
    f.run = run_->currentText().toStdString();
}

void GeneratePage::add_adapter(const QString& file, double scale) {
  const int row = adapters_->rowCount();
  adapters_->insertRow(row);
  adapters_->setItem(row, 0, read_only_cell(file));
  auto* spin = new QDoubleSpinBox(adapters_);
  spin->setRange(-4, 4);
  spin->setSingleStep(0.1);
  spin->setDecimals(2);
  spin->setValue(scale);
  spin->setToolTip("Multiplies the adapter's alpha / rank (0: off, negative: away from it)");
  adapters_->setCellWidget(row, 1, spin);
}

void GeneratePage::set_prompt(const QString& prompt, const QString& negative) {
  prompt_->setText(prompt);
  negative_->setText(negative);
}

bool GeneratePage::can_generate() const {
  return generate_->isEnabled();
}

void GeneratePage::validate_form() {
  GenerateForm f;
  fill_model(f);
  f.prompt = prompt_->text().toStdString();
  f.out = "preview.mp4";
  const QStringList wh = size_->text().split('x');
  f.width = wh.size() == 2 ? wh[0].toInt() : 0;
  f.height = wh.size() == 2 ? wh[1].toInt() : 0;
  std::string why = validate(f);
  if (why.empty() && !specs_applied_)
    why = "the server has not described its generate command (it may run without LibTorch)";
  problem_->setText(QString::fromStdString(why));
  // Red for a value that is wrong, the window's muted text for one not yet given.
  problem_->setStyleSheet(awaiting_input(f) ? "color: #888;" : "color: #d33;");
  generate_->setEnabled(why.empty() && job_ == 0);
  cancel_->setEnabled(job_ != 0);
}

void GeneratePage::generate() {
  if (!can_generate()) return;
  GenerateForm f;
  fill_model(f);
  f.prompt = prompt_->text().toStdString();
  f.negative = negative_->text().toStdString();
  f.image = image_->text().toStdString();
  // Unlocked, every generation is a new draw; the seed it used stays visible, so "lock" keeps a good one.
  if (!seed_lock_->isChecked()) seed_->setValue(QRandomGenerator::global()->bounded(seed_->maximum()));
  f.seed = seed_->value();
  f.steps = steps_->value();
  f.cfg = cfg_->value();
  f.frames = frames_->value();
  for (int row = 0; row < adapters_->rowCount(); ++row) {
    const auto* spin = qobject_cast<QDoubleSpinBox*>(adapters_->cellWidget(row, 1));
    f.lora.push_back(cat(adapters_->item(row, 0)->text().toStdString(), ":", spin ? spin->value() : 1.0));
  }
  f.lora_merge = adapters_merge_->isChecked();
  const QStringList wh = size_->text().split('x');
  f.width = wh[0].toInt();
  f.height = wh[1].toInt();
  QDir().mkpath(QDir(home_).filePath("generations"));
  pending_out_ = QDir(home_).filePath(
      QString("generations/gen-%1.mp4").arg(QDateTime::currentDateTime().toString("yyyyMMdd-hhmmss-zzz")));
  f.out = pending_out_.toStdString();
  // Everything needed to make the same video again goes into the exported file's metadata.
  result_settings_ = {{"prompt", f.prompt},
                      {"negative_prompt", f.negative},
                      {"seed", f.seed},
                      {"steps", f.steps},
                      {"cfg", f.cfg},
                      {"frames", f.frames},
                      {"size", cat(f.width, "x", f.height)},
                      {"model", f.model.empty() ? f.run : f.model}};
  if (!f.image.empty()) result_settings_["first_frame"] = f.image;
  if (!f.lora.empty()) {
    std::string adapters;
    for (const auto& a : f.lora) adapters += (adapters.empty() ? "" : ", ") + a;
    result_settings_["lora"] = adapters + (f.lora_merge ? " (merged)" : "");
  }
  preview_events_ = 0;
  generate_->setEnabled(false);
  submit_job(
      link_, generate_job(f).header(),
      [this](int64_t id) {
        job_ = id;
        cancel_->setEnabled(true);
        emit message(QString("generating (job %1)").arg(id));
      },
      [this](const QString& m) {
        problem_->setText(m);
        validate_form();
      });
}

void GeneratePage::on_event(const QString& topic, const nlohmann::json& header,
                            const QList<QByteArray>& blobs) {
  const std::string type = header.value("type", "");
  if (type == "state" && header.value("job_info", nlohmann::json::object()).value("kind", "") == "train" &&
      header.value("state", "") != "queued") {
    refresh();  // a run appears, gains checkpoints or ends: the model list follows without F5
  }
  if (job_ == 0 || topic.section('/', 1, 1).toLongLong() != job_) return;
  if (type == "preview") {
    ++preview_events_;
    preview_->set_frames(frames_from_rgb24(blobs, header.value("width", 0), header.value("height", 0)), 8.0,
                         true);
  } else if (type == "state") {
    const std::string state = header.value("state", "");
    if (state != "succeeded" && state != "failed" && state != "cancelled") return;
    job_ = 0;
    validate_form();
    if (state != "succeeded") {
      problem_->setText(QString("generation %1: %2")
                            .arg(QString::fromStdString(state),
                                 QString::fromStdString(header["job_info"].value("error_message", ""))));
      emit finished(false);
      return;
    }
    try {
      double fps = 8;
      player_->set_frames(load_video_frames(pending_out_, &fps), fps, false);
      result_ = pending_out_;
      export_->setEnabled(true);
      emit message("generated " + result_);
      emit finished(true);
    } catch (const Error& e) {
      problem_->setText(QString::fromStdString(e.what()));
      emit finished(false);
    }
  }
}

bool GeneratePage::export_to(const QString& path, QString* error) {
  if (result_.isEmpty()) {
    if (error) *error = "nothing to export yet: generate a video first";
    return false;
  }
  try {
    double fps = 8;
    const QList<QImage> frames = load_video_frames(result_, &fps);
    std::vector<RgbFrame> out;
    for (const QImage& image : frames) {
      const QImage rgb = image.convertToFormat(QImage::Format_RGB888);
      RgbFrame f(rgb.width(), rgb.height());
      for (int y = 0; y < rgb.height(); ++y)
        std::memcpy(f.rgb.data() + size_t(y) * rgb.width() * 3, rgb.constScanLine(y),
                    size_t(rgb.width()) * 3);
      out.push_back(std::move(f));
    }
    EncodeOptions options;
    options.fps = fps;
    for (auto it = result_settings_.begin(); it != result_settings_.end(); ++it)
      options.metadata[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
    encode_video(path.toStdString(), out, options);
    return true;
  } catch (const Error& e) {
    if (error) *error = QString("export failed: %1").arg(QString::fromStdString(e.what()));
    return false;
  }
}

}  // namespace mugv::studio
