#pragma once
// The studio's window: pages Datasets, Prompts, Runs, Generate and Label (Ctrl+1..5) beside a sidebar, the
// connection and job progress in the status bar, File / View / Help menus, remembered geometry and theme.
// With no --server it runs on its embedded backend (embedded_server.h) under $MUGV_HOME. File > Connect to
// server… switches to another server; tcp:// ones take the server's public key (remote_keys.h).
//
// A backend that dies is reported at once (the embedded server's exit, or a remote server's missed pings:
// backend_link.h): the status bar says so, jobs are no longer shown as running, and a notice above the pages
// says what happened. For the embedded server the notice and File > Restart backend start it again on the
// same home (or reuse a server another program started there since) and reattach; the new server requeues
// the jobs the dead one left interrupted, and the pages list them again.

#include "backend_link.h"
#include "embedded_server.h"
#include "pages.h"

#include <QLabel>
#include <QListWidget>
#include <QMainWindow>
#include <QProgressBar>
#include <QPushButton>
#include <QStackedWidget>

#include <memory>

namespace mugv::studio {

class MachineCheckDialog;

struct StudioOptions {
  QString server;  // empty: embedded
  QString
      server_key;  // tcp:// servers: their CURVE public key (Z85 or a .pub file); empty: the remembered one
  QString home;    // $MUGV_HOME
  QString mugv_binary;        // for the embedded server
  bool offer_starter = true;  // first launch: offer to create the starter dataset
};

enum class Page { datasets = 0, prompts, runs, generate, label };

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(StudioOptions options);
  ~MainWindow() override;

  void show_page(Page page);
  BackendLink& link() { return link_; }
  DatasetsPage* datasets_page() const { return datasets_; }
  PromptsPage* prompts_page() const { return prompts_; }
  RunsPage* runs_page() const { return runs_; }
  GeneratePage* generate_page() const { return generate_; }
  LabelPage* label_page() const { return label_; }
  QString status_text() const;
  // Saves a PNG of every page, and of the new-run dialog planning a large run, into `dir` (docs/screenshots).
  void save_screenshots(const QString& dir);
  void set_dark_theme(bool dark);
  // Connects to `endpoint` (what File > Connect to server… does). tcp:// needs `server_key`, or the one
  // remembered for that endpoint; a missing or malformed key, or a server that refuses this studio's key,
  // is shown in the status bar (the window never waits for the network).
  void connect_to(const QString& endpoint, const QString& server_key = {});
  // File > Connect to server…: endpoint, the server's key (for tcp://, prefilled with the remembered one) and
  // this studio's own public key to hand to the server's owner. Modal; accepting calls connect_to().
  void open_connect_dialog();
  // File > Restart backend: starts the embedded server again and reattaches (a no-op on a --server studio).
  void restart_backend();
  EmbeddedServer* embedded_server() const { return embedded_.get(); }
  QAction* restart_action() const { return restart_action_; }
  // The notice shown while the backend is gone, and its restart button (hidden for a remote server).
  QWidget* backend_notice() const { return notice_; }
  QPushButton* restart_button() const { return restart_button_; }
  // Help > Check the server's machine…: opens the dialog (made once) and asks the server.
  MachineCheckDialog* check_machine();
  // The status bar's "⚠ the server's machine: …" button, shown when the quick check made at each connection
  // found warnings or failures.
  QPushButton* machine_warning() const { return machine_warning_; }

 protected:
  void closeEvent(QCloseEvent* event) override;

 private:
  void build_menus();
  void show_about();
  // The embedded server exited: drop the connection and show the notice.
  void on_backend_exited(const QString& message);
  void show_notice(const QString& text);

  StudioOptions options_;
  BackendLink link_;
  std::unique_ptr<EmbeddedServer> embedded_;
  QListWidget* sidebar_;
  QStackedWidget* stack_;
  DatasetsPage* datasets_;
  PromptsPage* prompts_;
  RunsPage* runs_;
  GeneratePage* generate_;
  LabelPage* label_;
  QLabel* connection_;
  QLabel* activity_;
  QProgressBar* progress_;
  QWidget* notice_;
  QLabel* notice_text_;
  QPushButton* restart_button_;
  QAction* restart_action_ = nullptr;
  MachineCheckDialog* machine_check_ = nullptr;
  QPushButton* machine_warning_ = nullptr;
  bool backend_exited_ = false;  // the embedded server is gone until restart_backend()
  bool starter_offered_ = false;
  QString pending_endpoint_, pending_key_;  // remembered once the connection succeeds
};

}  // namespace mugv::studio
