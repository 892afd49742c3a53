#include "machine_check.h"

#include <QBrush>
#include <QDialogButtonBox>
#include <QHeaderView>
#include <QPushButton>
#include <QVBoxLayout>

namespace mugv::studio {

QString machine_check_notice(const nlohmann::json& report) {
  const int warnings = report.value("warnings", 0), failures = report.value("failures", 0);
  if (warnings == 0 && failures == 0) return {};
  return QString("⚠ the server's machine: %1 warning%2, %3 failure%4")
      .arg(warnings)
      .arg(warnings == 1 ? "" : "s")
      .arg(failures)
      .arg(failures == 1 ? "" : "s");
}

QString machine_check_details(const nlohmann::json& report) {
  QStringList lines;
  for (const auto& c : report.value("checks", nlohmann::json::array())) {
    const std::string status = c.value("status", "");
    if (status == "warn" || status == "fail")
      lines << QString::fromStdString(status + " " + c.value("check", "") + ": " + c.value("detail", ""));
  }
  return lines.join('\n');
}

MachineCheckDialog::MachineCheckDialog(BackendLink& link, QWidget* parent) : QDialog(parent), link_(link) {
  setWindowTitle("The server's machine");
  summary_ = new QLabel(this);
  summary_->setWordWrap(true);
  table_ = new QTableWidget(0, 4, this);
  table_->setHorizontalHeaderLabels({"status", "check", "found", "fix"});
  table_->horizontalHeader()->setStretchLastSection(true);
  table_->verticalHeader()->setVisible(false);
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setWordWrap(true);
  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Close, this);
  QPushButton* again = buttons->addButton("Check again", QDialogButtonBox::ActionRole);
  connect(again, &QPushButton::clicked, this, &MachineCheckDialog::run);
  connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::close);
  auto* layout = new QVBoxLayout(this);
  layout->addWidget(summary_);
  layout->addWidget(table_);
  layout->addWidget(buttons);
  resize(900, 420);
}

void MachineCheckDialog::run() {
  const uint64_t ticket = ++asked_;
  table_->setRowCount(0);
  summary_->setText("Checking the server's machine (a few seconds: it measures its matrix products)…");
  link_.call(
      protocol::MessageType::check_machine, nlohmann::json::object(),
      [this, ticket](const nlohmann::json& reply) {
        if (ticket == asked_) show_findings(reply);
      },
      [this, ticket](const QString& m) {
        if (ticket == asked_) summary_->setText("The server could not check its machine: " + m);
      });
}

void MachineCheckDialog::show_findings(const nlohmann::json& reply) {
  const auto checks = reply.value("checks", nlohmann::json::array());
  table_->setRowCount(0);
  for (const auto& c : checks) {
    const int row = table_->rowCount();
    table_->insertRow(row);
    const std::string status = c.value("status", "");
    const QColor colour = status == "fail"   ? QColor(0xd3, 0x33, 0x33)
                          : status == "warn" ? QColor(0xe0, 0x8a, 0x00)
                                             : QColor();
    int column = 0;
    for (const char* key : {"status", "check", "detail", "fix"}) {
      auto* cell = new QTableWidgetItem(QString::fromStdString(c.value(key, "")));
      cell->setToolTip(cell->text());
      if (colour.isValid()) cell->setForeground(QBrush(colour));
      table_->setItem(row, column++, cell);
    }
  }
  table_->resizeColumnsToContents();
  table_->resizeRowsToContents();
  summary_->setText(QString("%1 warning(s), %2 failure(s) on %3")
                        .arg(reply.value("warnings", 0))
                        .arg(reply.value("failures", 0))
                        .arg(link_.endpoint()));
}

}  // namespace mugv::studio
