// Prompts: a library with tags and search, negative prompts, the generations made from each prompt, and
// "generate again" / "use as sample prompt".
#include "pages.h"

#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QVBoxLayout>

namespace mugv::studio {

using protocol::MessageType;

PromptsPage::PromptsPage(BackendLink& link, QWidget* parent) : QWidget(parent), link_(link) {
  search_ = new QLineEdit(this);
  search_->setPlaceholderText("search prompts");
  search_->setToolTip("Prompts containing this text");
  prompts_ = new QTableWidget(0, 4, this);
  prompts_->setHorizontalHeaderLabels({"id", "prompt", "negative", "tags"});
  prompts_->horizontalHeader()->setSectionResizeMode(1, QHeaderView::Stretch);
  prompts_->setSelectionBehavior(QAbstractItemView::SelectRows);
  history_ = new QTableWidget(0, 4, this);
  history_->setHorizontalHeaderLabels({"generation", "seed", "steps", "output"});
  history_->horizontalHeader()->setStretchLastSection(true);
  history_->setToolTip("Videos generated from the selected prompt");
  text_ = new QLineEdit(this);
  text_->setToolTip("Prompt text");
  negative_ = new QLineEdit(this);
  negative_->setToolTip("Negative prompt kept with it");
  tags_ = new QLineEdit(this);
  tags_->setToolTip("Tags, comma-separated");
  auto* save = new QPushButton("Save prompt", this);
  auto* again = new QPushButton("Generate again", this);
  again->setToolTip("Open the selected prompt on the Generate page");
  auto* sample = new QPushButton("Use as sample prompt", this);
  sample->setToolTip("Render this prompt in the samples of new training runs");

  auto* form = new QFormLayout;
  form->addRow("Prompt", text_);
  form->addRow("Negative", negative_);
  form->addRow("Tags", tags_);
  auto* row = new QHBoxLayout;
  row->addWidget(save);
  row->addWidget(again);
  row->addWidget(sample);
  form->addRow(row);
  auto* layout = new QVBoxLayout(this);
  layout->addWidget(search_);
  layout->addWidget(prompts_, 2);
  layout->addLayout(form);
  layout->addWidget(history_, 1);

  connect(search_, &QLineEdit::textChanged, this, &PromptsPage::refresh);
  connect(save, &QPushButton::clicked, this, [this] {
    QStringList tags;
    for (const QString& t : tags_->text().split(',', Qt::SkipEmptyParts)) tags << t.trimmed();
    save_prompt(text_->text(), negative_->text(), tags);
  });
  auto selected = [this](int column) {
    const auto rows = prompts_->selectionModel()->selectedRows();
    return rows.isEmpty() ? QString() : prompts_->item(rows.first().row(), column)->text();
  };
  connect(again, &QPushButton::clicked, this, [this, selected] {
    if (!selected(1).isEmpty()) emit generate_again(selected(1), selected(2));
  });
  connect(sample, &QPushButton::clicked, this, [this, selected] {
    if (!selected(1).isEmpty()) emit use_as_sample_prompt(selected(1));
  });
  connect(prompts_, &QTableWidget::itemSelectionChanged, this, &PromptsPage::load_history);
  connect(&link_, &BackendLink::connected, this, &PromptsPage::refresh);
}

void PromptsPage::refresh() {
  nlohmann::json h = {{"limit", 500}};
  if (!search_->text().trimmed().isEmpty()) h["query"] = search_->text().trimmed().toStdString();
  link_.call(
      MessageType::list_prompts, h,
      [this](const nlohmann::json& reply) {
        prompts_->setRowCount(0);
        for (const auto& p : reply["prompts"]) {
          const int row = prompts_->rowCount();
          prompts_->insertRow(row);
          QStringList tags;
          for (const auto& t : p["tags"]) tags << QString::fromStdString(t.get<std::string>());
          prompts_->setItem(row, 0, read_only_cell(QString::number(p["id"].get<int64_t>())));
          prompts_->setItem(row, 1, read_only_cell(QString::fromStdString(p["text"].get<std::string>())));
          prompts_->setItem(row, 2, read_only_cell(QString::fromStdString(p["negative"].get<std::string>())));
          prompts_->setItem(row, 3, read_only_cell(tags.join(", ")));
        }
      },
      [this](const QString& m) { emit message(m); });
}

void PromptsPage::save_prompt(const QString& text, const QString& negative, const QStringList& tags) {
  if (text.trimmed().isEmpty()) {
    emit message("write a prompt first");
    return;
  }
  nlohmann::json list = nlohmann::json::array();
  for (const QString& t : tags) list.push_back(t.toStdString());
  link_.call(
      MessageType::save_prompt,
      {{"text", text.toStdString()}, {"negative", negative.toStdString()}, {"tags", list}},
      [this](const nlohmann::json&) { refresh(); },
      [this](const QString& m) { emit message("prompt not saved: " + m); });
}

void PromptsPage::load_history() {
  const auto rows = prompts_->selectionModel()->selectedRows();
  if (rows.isEmpty()) return;
  const int64_t id = prompts_->item(rows.first().row(), 0)->text().toLongLong();
  link_.call(MessageType::list_generations, {{"prompt", id}, {"limit", 200}},
             [this](const nlohmann::json& reply) {
               history_->setRowCount(0);
               for (const auto& g : reply["generations"]) {
                 const int row = history_->rowCount();
                 history_->insertRow(row);
                 history_->setItem(row, 0, read_only_cell(QString::number(g["id"].get<int64_t>())));
                 history_->setItem(row, 1, read_only_cell(QString::number(g["seed"].get<uint64_t>())));
                 history_->setItem(row, 2, read_only_cell(QString::number(g.value("steps", 0))));
                 history_->setItem(row, 3, read_only_cell(QString::fromStdString(g.value("output", ""))));
               }
             });
}

}  // namespace mugv::studio
