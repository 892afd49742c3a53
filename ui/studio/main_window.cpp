#include "main_window.h"

#include "core/error.h"
#include "machine_check.h"
#include "new_run_dialog.h"
#include "remote_keys.h"

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QElapsedTimer>
#include <QFormLayout>
#include <QFrame>
#include <QHBoxLayout>
#include <QLineEdit>
#include <QMenuBar>
#include <QMessageBox>
#include <QPalette>
#include <QPushButton>
#include <QSettings>
#include <QShortcut>
#include <QStatusBar>
#include <QStyleFactory>
#include <QTableWidget>
#include <QVBoxLayout>

extern "C" {
#include <libavcodec/avcodec.h>
}

namespace mugv::studio {

using protocol::MessageType;

MainWindow::MainWindow(StudioOptions options) : options_(std::move(options)) {
  setWindowTitle("MUG-V Studio");
  sidebar_ = new QListWidget(this);
  sidebar_->addItems({"Datasets", "Prompts", "Runs", "Generate", "Label"});
  sidebar_->setMaximumWidth(140);
  stack_ = new QStackedWidget(this);
  datasets_ = new DatasetsPage(link_, options_.home, stack_);
  prompts_ = new PromptsPage(link_, stack_);
  runs_ = new RunsPage(link_, stack_);
  generate_ = new GeneratePage(link_, options_.home, stack_);
  label_ = new LabelPage(link_, stack_);
  for (QWidget* page : std::initializer_list<QWidget*>{datasets_, prompts_, runs_, generate_, label_})
    stack_->addWidget(page);
  // The notice shown while the backend is gone, above the pages.
  notice_ = new QFrame(this);
  notice_->setObjectName("backend_notice");
  notice_->setStyleSheet(
      "#backend_notice { background: #5a1d1d; border: 1px solid #a33; } QLabel { color: #fff; }");
  notice_text_ = new QLabel(notice_);
  notice_text_->setWordWrap(true);
  notice_text_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  restart_button_ = new QPushButton("Restart backend", notice_);
  restart_button_->setToolTip("Start the embedded server again on the same data folder and reattach");
  auto* notice_row = new QHBoxLayout(notice_);
  notice_row->addWidget(notice_text_, 1);
  notice_row->addWidget(restart_button_);
  notice_->hide();
  connect(restart_button_, &QPushButton::clicked, this, &MainWindow::restart_backend);

  auto* central = new QWidget(this);
  auto* column = new QVBoxLayout(central);
  column->setContentsMargins(0, 0, 0, 0);
  column->addWidget(notice_);
  auto* row = new QHBoxLayout;
  row->addWidget(sidebar_);
  row->addWidget(stack_, 1);
  column->addLayout(row, 1);
  setCentralWidget(central);
  connect(sidebar_, &QListWidget::currentRowChanged, stack_, &QStackedWidget::setCurrentIndex);

  connection_ = new QLabel(this);
  activity_ = new QLabel(this);
  progress_ = new QProgressBar(this);
  progress_->setMaximumWidth(200);
  progress_->hide();
  statusBar()->addWidget(connection_);
  statusBar()->addWidget(activity_, 1);
  statusBar()->addPermanentWidget(progress_);
  // What the server's machine lacks (the reference BLAS, little room, no CURVE, a model folder missing a
  // part) stays in view until the next connection; a click opens the full check.
  machine_warning_ = new QPushButton(this);
  machine_warning_->setFlat(true);
  machine_warning_->setStyleSheet("color: #e08a00;");
  machine_warning_->hide();
  connect(machine_warning_, &QPushButton::clicked, this, [this] { (void)check_machine(); });
  statusBar()->addPermanentWidget(machine_warning_);

  auto show_message = [this](const QString& text) { activity_->setText(text); };
  connect(datasets_, &DatasetsPage::message, this, show_message);
  connect(prompts_, &PromptsPage::message, this, show_message);
  connect(runs_, &RunsPage::message, this, show_message);
  connect(generate_, &GeneratePage::message, this, show_message);
  connect(label_, &LabelPage::message, this, show_message);
  connect(prompts_, &PromptsPage::generate_again, this,
          [this](const QString& prompt, const QString& negative) {
            generate_->set_prompt(prompt, negative);
            show_page(Page::generate);
          });
  connect(prompts_, &PromptsPage::use_as_sample_prompt, this, [this](const QString& prompt) {
    QSettings settings;
    QStringList prompts = settings.value("sample_prompts").toStringList();
    prompts << prompt;
    settings.setValue("sample_prompts", prompts);
    activity_->setText("added to the sample prompts of new runs");
  });

  connect(&link_, &BackendLink::connected, this, [this] {
    connection_->setText("● " + link_.endpoint());
    connection_->setToolTip("connected");
    notice_->hide();
    if (!pending_key_.isEmpty() && pending_endpoint_ == link_.endpoint())
      remember_server_key(pending_endpoint_, pending_key_);
    pending_key_.clear();
    machine_warning_->hide();
    link_.call(MessageType::check_machine, {{"quick", true}}, [this](const nlohmann::json& reply) {
      const QString notice = machine_check_notice(reply);
      machine_warning_->setText(notice);
      machine_warning_->setToolTip(machine_check_details(reply) + "\n\nClick for the full check.");
      machine_warning_->setVisible(!notice.isEmpty());
    });
    if (options_.offer_starter && !starter_offered_) {
      starter_offered_ = true;
      link_.call(MessageType::list_datasets, {}, [this](const nlohmann::json& reply) {
        if (!reply["datasets"].empty()) return;
        if (QMessageBox::question(
                this, "Starter dataset",
                "The catalog has no datasets yet. Create the starter dataset (colored shapes, "
                "about a minute) to try curation, training and generation?") == QMessageBox::Yes)
          datasets_->create_starter_dataset();
      });
    }
  });
  connect(&link_, &BackendLink::disconnected, this, [this](const QString& message) {
    progress_->hide();
    if (backend_exited_) return;  // the notice says why; reconnecting is the restart's business
    connection_->setText("○ not connected");
    connection_->setToolTip(message);
    activity_->setText(message);
    // A server that was answering is gone (not one that never answered: the status bar says that).
    if (!link_.server_info().empty())
      show_notice(QString("The server at %1 does not answer: %2. The studio reconnects when it is back.")
                      .arg(link_.endpoint(), message));
  });
  connect(
      &link_, &BackendLink::event, this,
      [this](const QString&, const nlohmann::json& header, const QList<QByteArray>&) {
        if (header.value("type", "") != "progress") return;
        const int64_t total = header.value("total", int64_t(0));
        progress_->setVisible(total > 0);
        progress_->setRange(0, static_cast<int>(std::min<int64_t>(total, 1 << 30)));
        progress_->setValue(static_cast<int>(std::min<int64_t>(header.value("done", int64_t(0)), 1 << 30)));
        progress_->setFormat(QString::fromStdString(header.value("stage", "")) + " %p%");
      });

  build_menus();
  QSettings settings;
  restoreGeometry(settings.value("window/geometry").toByteArray());
  restoreState(settings.value("window/state").toByteArray());
  set_dark_theme(settings.value("view/dark", true).toBool());
  show_page(Page::datasets);

  QString endpoint = options_.server;
  if (endpoint.isEmpty()) {
    embedded_ = std::make_unique<EmbeddedServer>(options_.mugv_binary, options_.home);
    connect(embedded_.get(), &EmbeddedServer::exited, this, &MainWindow::on_backend_exited);
    endpoint = embedded_->start();
    if (endpoint.isEmpty()) {
      connection_->setText("○ no server");
      activity_->setText(embedded_->error());
      return;
    }
  }
  connect_to(endpoint, options_.server_key);
}

MainWindow::~MainWindow() = default;

void MainWindow::show_notice(const QString& text) {
  notice_text_->setText(text);
  restart_button_->setVisible(embedded_ != nullptr && backend_exited_);
  notice_->show();
}

void MainWindow::on_backend_exited(const QString& message) {
  backend_exited_ = true;
  link_.close(message);
  connection_->setText("○ backend stopped");
  connection_->setToolTip(message);
  activity_->setText(message);
  show_notice(QString("The backend stopped: %1. Jobs it ran are shown as unknown until a server runs "
                      "again; restarting it requeues them.")
                  .arg(message));
}

void MainWindow::restart_backend() {
  if (!embedded_) {
    activity_->setText("this studio uses the server at " + link_.endpoint() + ", which it cannot restart");
    return;
  }
  activity_->setText("restarting the embedded server…");
  embedded_->stop();  // one that hangs without having exited is replaced too
  const QString endpoint = embedded_->start();
  if (endpoint.isEmpty()) {
    show_notice(QString("The backend could not be restarted: %1").arg(embedded_->error()));
    activity_->setText(embedded_->error());
    return;
  }
  backend_exited_ = false;
  notice_->hide();
  activity_->setText(
      embedded_->reused_pid()
          ? QString("reusing the server of %1 (pid %2)").arg(options_.home).arg(embedded_->reused_pid())
          : QString("the embedded server is running again"));
  connect_to(endpoint, options_.server_key);
}

void MainWindow::connect_to(const QString& endpoint, const QString& server_key) {
  const QString key = server_key.isEmpty() ? remembered_server_key(endpoint) : server_key;
  std::optional<CurveClientKeys> curve;
  try {
    bool made = false;
    curve = curve_keys_for(endpoint, key, options_.home, &made);
    if (made)
      activity_->setText(
          QString(
              "made this studio's client key; the server's owner authorises it with: mugv keys authorize %1")
              .arg(QString::fromStdString(curve->client.public_key)));
  } catch (const Error& e) {
    connection_->setText("○ not connected");
    connection_->setToolTip(QString::fromStdString(e.what()));
    activity_->setText(QString::fromStdString(e.what()));
    return;
  }
  pending_endpoint_ = endpoint;
  pending_key_ = curve ? key : QString();
  connection_->setText("… connecting to " + endpoint);
  link_.open(endpoint, std::move(curve));
}

void MainWindow::open_connect_dialog() {
  QDialog dialog(this);
  dialog.setWindowTitle("Connect to server");
  auto* form = new QFormLayout(&dialog);
  dialog.setObjectName("connect_dialog");
  auto* endpoint = new QLineEdit(link_.endpoint(), &dialog);
  endpoint->setObjectName("endpoint");
  endpoint->setPlaceholderText("tcp://gpu-box:5555 or ipc:///path/to/socket");
  endpoint->setToolTip("A MUG-V server (`mugv serve --listen ...`)");
  auto* key = new QLineEdit(&dialog);
  key->setObjectName("server_key");
  key->setPlaceholderText("the server's public key (40 characters) or its .pub file");
  key->setToolTip(
      "tcp:// servers use CURVE: the server prints its public key when it starts (`mugv keys list` shows "
      "it)");
  QString key_error;
  const QString mine = client_public_key(options_.home, &key_error);
  auto* client =
      new QLabel(mine.isEmpty() ? key_error
                                : QString("This studio's key: %1\nThe server's owner lets it in with: "
                                          "mugv keys authorize %1")
                                      .arg(mine),
                 &dialog);
  client->setObjectName("client_key");
  client->setTextFormat(Qt::PlainText);  // Z85 keys contain '<', '>' and '&'
  client->setTextInteractionFlags(Qt::TextSelectableByMouse);
  client->setWordWrap(true);
  auto sync = [endpoint, key] {
    const bool tcp = endpoint->text().trimmed().startsWith("tcp://");
    key->setEnabled(tcp);
    if (tcp && key->text().isEmpty()) key->setText(remembered_server_key(endpoint->text().trimmed()));
  };
  connect(endpoint, &QLineEdit::textChanged, &dialog, sync);
  sync();
  auto* box = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &dialog);
  box->button(QDialogButtonBox::Ok)->setText("Connect");
  form->addRow("Endpoint", endpoint);
  form->addRow("Server key", key);
  form->addRow(client);
  form->addRow(box);
  connect(box, &QDialogButtonBox::accepted, &dialog, &QDialog::accept);
  connect(box, &QDialogButtonBox::rejected, &dialog, &QDialog::reject);
  if (dialog.exec() == QDialog::Accepted && !endpoint->text().trimmed().isEmpty())
    connect_to(endpoint->text().trimmed(), key->isEnabled() ? key->text().trimmed() : QString());
}

void MainWindow::show_page(Page page) {
  sidebar_->setCurrentRow(static_cast<int>(page));
  stack_->setCurrentIndex(static_cast<int>(page));
}

QString MainWindow::status_text() const {
  return connection_->text() + " | " + activity_->text();
}

void MainWindow::build_menus() {
  QMenu* file = menuBar()->addMenu("&File");
  QAction* remote = file->addAction("Connect to server…");
  remote->setToolTip("Use a remote MUG-V server (tcp:// or ipc:// endpoint) instead of the embedded one");
  connect(remote, &QAction::triggered, this, &MainWindow::open_connect_dialog);
  restart_action_ = file->addAction("Restart backend");
  restart_action_->setObjectName("restart_backend");
  restart_action_->setToolTip("Start the embedded server again on the same data folder and reattach");
  restart_action_->setEnabled(options_.server.isEmpty());
  connect(restart_action_, &QAction::triggered, this, &MainWindow::restart_backend);
  file->addSeparator();
  QAction* quit = file->addAction("Quit");
  quit->setShortcut(QKeySequence::Quit);
  connect(quit, &QAction::triggered, this, &QWidget::close);

  QMenu* view = menuBar()->addMenu("&View");
  const char* names[] = {"Datasets", "Prompts", "Runs", "Generate", "Label"};
  for (int i = 0; i < 5; ++i) {
    QAction* a = view->addAction(names[i]);
    a->setShortcut(QKeySequence(QString("Ctrl+%1").arg(i + 1)));
    connect(a, &QAction::triggered, this, [this, i] { show_page(static_cast<Page>(i)); });
  }
  view->addSeparator();
  QAction* dark = view->addAction("Dark theme");
  dark->setCheckable(true);
  dark->setChecked(QSettings().value("view/dark", true).toBool());
  connect(dark, &QAction::toggled, this, &MainWindow::set_dark_theme);
  QAction* refresh = view->addAction("Refresh");
  refresh->setShortcut(QKeySequence("F5"));
  connect(refresh, &QAction::triggered, this, [this] {
    datasets_->refresh();
    prompts_->refresh();
    runs_->refresh();
    generate_->refresh();
    label_->refresh();
  });
  QAction* new_run = view->addAction("New run…");
  new_run->setShortcut(QKeySequence("Ctrl+N"));
  connect(new_run, &QAction::triggered, this, [this] {
    show_page(Page::runs);
    runs_->open_new_run_dialog();
  });
  QAction* undo = datasets_->undo_stack()->createUndoAction(this, "Undo caption edit");
  undo->setShortcut(QKeySequence::Undo);
  view->addAction(undo);
  QAction* redo = datasets_->undo_stack()->createRedoAction(this, "Redo caption edit");
  redo->setShortcut(QKeySequence::Redo);
  view->addAction(redo);
  // On the Label page Ctrl+Z takes the last label back (its Undo button's shortcut), elsewhere the last
  // caption edit.
  connect(stack_, &QStackedWidget::currentChanged, this, [this, undo](int index) {
    undo->setShortcut(stack_->widget(index) == label_ ? QKeySequence() : QKeySequence(QKeySequence::Undo));
  });

  QMenu* help = menuBar()->addMenu("&Help");
  connect(help->addAction("Check the server's machine…"), &QAction::triggered, this,
          [this] { (void)check_machine(); });
  connect(help->addAction("About MUG-V Studio"), &QAction::triggered, this, &MainWindow::show_about);
}

MachineCheckDialog* MainWindow::check_machine() {
  if (!machine_check_) machine_check_ = new MachineCheckDialog(link_, this);
  machine_check_->show();
  machine_check_->raise();
  machine_check_->run();
  return machine_check_;
}

void MainWindow::show_about() {
  const QString server =
      link_.is_connected()
          ? QString("%1 (mugv serve %2)")
                .arg(link_.endpoint(), QString::fromStdString(link_.server_info().value("server", "?")))
          : QString("not connected");
  QMessageBox::about(this, "About MUG-V Studio",
                     QString("<b>MUG-V Studio %1</b><br>Qt %2<br>FFmpeg libavcodec %3<br>Server: %4<br><br>"
                             "Help &gt; Check the server's machine lists its LibTorch, BLAS, GPUs and more.")
                         .arg(MUGV_VERSION, qVersion(), AV_STRINGIFY(LIBAVCODEC_VERSION), server));
}

void MainWindow::set_dark_theme(bool dark) {
  QSettings().setValue("view/dark", dark);
  qApp->setStyle(QStyleFactory::create("Fusion"));
  qApp->setPalette(dark ? dark_palette() : qApp->style()->standardPalette());
}

void MainWindow::save_screenshots(const QString& dir) {
  QDir().mkpath(dir);
  // Lets the server's replies (a job's stored metrics and log) arrive and be drawn.
  const auto settle = [](int ms) {
    QElapsedTimer timer;
    timer.start();
    while (timer.elapsed() < ms) QApplication::processEvents(QEventLoop::AllEvents, 50);
  };
  const char* names[] = {"datasets", "prompts", "runs", "generate", "label"};
  for (int i = 0; i < 5; ++i) {
    show_page(static_cast<Page>(i));
    if (static_cast<Page>(i) == Page::runs) {
      // The last training job in queue order, with its loss, learning rate, throughput and log.
      QTableWidget* jobs = runs_->jobs();
      for (int row = jobs->rowCount() - 1; row >= 0; --row)
        if (jobs->item(row, 1)->text() == "train") {
          runs_->select_job(jobs->item(row, 0)->text().toLongLong());
          break;
        }
      settle(1500);
    }
    QApplication::processEvents();
    grab().save(QDir(dir).filePath(QString("%1.png").arg(names[i])));
  }
  // The new-run dialog planning a mugv-10b run on 64 GPUs (docs/MUGV.md's geometry).
  NewRunDialog dialog(link_, this);
  dialog.where()->setCurrentIndex(dialog.where()->findData(static_cast<int>(TrainWhere::cluster)));
  dialog.model()->setCurrentText("mugv-10b");
  dialog.gpus()->setValue(64);
  dialog.frames()->setValue(121);
  dialog.size()->setText("1280x720");
  dialog.batch()->setValue(64);
  dialog.vae()->setCurrentText("vae-1");
  dialog.resize(720, 1180);  // every field and the layouts table without squeezing
  dialog.show();
  QApplication::processEvents();
  dialog.grab().save(QDir(dir).filePath("new-run.png"));
}

void MainWindow::closeEvent(QCloseEvent* event) {
  QSettings settings;
  settings.setValue("window/geometry", saveGeometry());
  settings.setValue("window/state", saveState());
  if (embedded_) embedded_->stop();
  event->accept();
}

}  // namespace mugv::studio
