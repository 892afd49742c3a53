#pragma once
// Help > Check the server's machine: `mugv doctor` run by the server on the machine its jobs run on
// (protocol check_machine), shown as a table of findings (status, check, what was found, the fix), failures
// and warnings coloured. A remote server is checked, not the studio's own machine.

#include "backend_link.h"

#include <QDialog>
#include <QLabel>
#include <QTableWidget>

namespace mugv::studio {

// For a check_machine reply: "⚠ the server's machine: 1 warning, 0 failures" when it has any, else "".
QString machine_check_notice(const nlohmann::json& report);
// Its warnings and failures, one line each ("warn blas: the reference BLAS: …"), for a tooltip.
QString machine_check_details(const nlohmann::json& report);

class MachineCheckDialog : public QDialog {
 public:
  explicit MachineCheckDialog(BackendLink& link, QWidget* parent = nullptr);
  // Asks the server again (a few seconds) and fills the table when it answers.
  void run();
  QTableWidget* findings() const { return table_; }
  // "Checking …", then "N warnings, M failures on ENDPOINT", or why the server could not answer.
  QString summary() const { return summary_->text(); }

 private:
  void show_findings(const nlohmann::json& reply);

  BackendLink& link_;
  QLabel* summary_;
  QTableWidget* table_;
  uint64_t asked_ = 0;  // the latest request: an earlier reply is dropped
};

}  // namespace mugv::studio
