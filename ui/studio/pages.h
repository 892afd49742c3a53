#pragma once
// The studio's pages. Each is a client of the server through BackendLink (requests on the network thread,
// replies and events on the UI thread) and refreshes itself on `connected` and on job events.

#include "backend_link.h"
#include "command_specs.h"
#include "job_params.h"
#include "widgets.h"

#include <QCache>
#include <QCheckBox>
#include <QComboBox>
#include <QDialog>
#include <QDoubleSpinBox>
#include <QGridLayout>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QTabWidget>
#include <QTableWidget>
#include <QUndoStack>
#include <QWidget>

#include <deque>
#include <functional>
#include <map>
#include <set>

namespace mugv::studio {

// Submits a job; `done` gets its id (or the error shown by the caller).
void submit_job(BackendLink& link, const nlohmann::json& header, std::function<void(int64_t)> done,
                std::function<void(const QString&)> failed);
// Submits `jobs` in order, each depending on the one before it (besides its own depends_on), so the server
// runs them one after the other; `done` gets their ids. When the server refuses one, the jobs already queued
// are cancelled (cancelling the first cancels the rest) and `failed` gets the reason with the step.
void submit_chain(BackendLink& link, std::vector<JobRequest> jobs,
                  std::function<void(const std::vector<int64_t>&)> done,
                  std::function<void(const QString&)> failed);

// Clips are shown as a grid of thumbnails and as a table of scores. Thumbnails and the player's frames come
// from the server (clip_frames), so a remote server's clips show too; they are fetched a few at a time on the
// network thread and cached by clip id. Double-clicking a clip (a grid cell, or a table cell other than the
// caption) plays its frames; double-clicking a caption edits it.
class DatasetsPage : public QWidget {
  Q_OBJECT
 public:
  DatasetsPage(BackendLink& link, QString home, QWidget* parent = nullptr);
  void refresh();
  // Makes the starter dataset (generate, then import as "shapes").
  void create_starter_dataset(int clips = 64);
  // Imports `input` on the server as dataset `name`: a folder of clips (or its manifest) or a JSONL / JSON /
  // CSV manifest file (the Import menu's actions, after asking for them).
  void import_dataset(const QString& input, const QString& name);
  QListWidget* datasets() const { return datasets_; }
  QTableWidget* clips() const { return clips_; }
  QListWidget* grid() const { return grid_; }
  QComboBox* curation_preset() const { return preset_; }
  QUndoStack* undo_stack() const { return undo_; }
  // Saves a caption through the server (undoable).
  void edit_caption(int64_t clip_id, const QString& old_text, const QString& new_text);
  // Opens the player on a clip's frames (fetched from the server).
  void open_clip(int64_t clip_id);
  FramePlayer* clip_player() const { return player_; }
  QDialog* clip_player_window() const { return player_window_; }
  int thumbnails_loaded() const { return static_cast<int>(thumbnails_.size()); }

 signals:
  void message(const QString& text);

 private:
  void load_clips();
  void on_event(const QString& topic, const nlohmann::json& header);
  void request_thumbnail(int64_t clip_id);
  void pump_thumbnails();
  void show_thumbnail(int64_t clip_id);

  BackendLink& link_;
  QString home_;
  QListWidget* datasets_;
  QTableWidget* clips_;
  QListWidget* grid_;
  QComboBox* decision_filter_;
  QLineEdit* reason_filter_;
  QComboBox* preset_;  // curation presets: the server's (preset_choices.h)
  QUndoStack* undo_;
  QDialog* player_window_ = nullptr;
  FramePlayer* player_ = nullptr;
  std::map<int64_t, QString> follow_up_;  // job id -> dataset to import when it succeeds
  QCache<int64_t, QImage> thumbnails_{2000};
  std::deque<int64_t> thumbnail_queue_;
  std::set<int64_t> thumbnail_wanted_;
  int thumbnails_in_flight_ = 0;
  QString thumbnails_of_;  // the endpoint the cache belongs to
};

class RunsPage : public QWidget {
  Q_OBJECT
 public:
  RunsPage(BackendLink& link, QWidget* parent = nullptr);
  void refresh();
  QTableWidget* jobs() const { return jobs_; }
  // The runs on the server: name, kind, what a fine-tune starts from, its LoRA settings, checkpoint steps
  // (a LoRA run's checkpoints are its adapters).
  QTableWidget* runs() const { return runs_; }
  MetricChart* loss_chart() const { return loss_; }
  // The shown job's error ("failed: …"), empty when it has none.
  QString error_text() const { return error_->text(); }
  int64_t selected_job() const;
  void select_job(int64_t id);
  void open_new_run_dialog();
  // What the job buttons do, on the selected job (Pause, Resume, Cancel, Retry, Move up, Sample now, Save
  // now).
  void act(protocol::MessageType type);
  // Submits a training run directly (tests call it).
  void start_training(const struct TrainForm& form);
  // Submits jobs as a chain (submit_chain), selecting the last: the new-run dialog's Start.
  void start_chain(std::vector<JobRequest> jobs);
  // The dialog's "Grow first": grows `form.from` `width` times into "<form.run>-grown" and queues the
  // training run from the grown run after it.
  void grow_then_train(const TrainForm& form, int width = 2);
  // Submits `mugv grow` of `run` into a new run `out` (the Grow button's action, after asking for the name).
  void grow_run(const QString& run, const QString& out, int width = 2);
  // The run selected in the runs table ("" when none).
  QString selected_run() const;

  // The sample gallery (its own tab): the videos `run` rendered while training, fetched from the server
  // (list_run_samples), one row per step, newest first, with its prompts. Selecting a step plays its videos
  // side by side, looped (run_sample_frames). Follows the runs table's selection; new samples (a training
  // job's preview event) refresh it.
  void show_samples(const QString& run);
  QString samples_run() const { return samples_run_; }
  QListWidget* sample_steps() const { return sample_steps_; }
  // The players of the selected step, one per video, in file order.
  QList<FramePlayer*> sample_players() const;
  QString sample_prompt(int index) const;
  QTabWidget* details() const { return details_; }
  // The Training tab's sample pane: the shown job's live previews while it runs, else the newest sample its
  // run rendered (empty for a job that is not training, or whose run has none).
  FramePlayer* training_samples() const { return samples_; }

 signals:
  void message(const QString& text);

 private:
  void on_event(const QString& topic, const nlohmann::json& header, const QList<QByteArray>& blobs);
  void show_job(int64_t id);
  void load_stored_metrics(int64_t id, int64_t after);
  // Plays the first video of `run`'s newest sample step in the Training tab's pane, unless job `id` is no
  // longer shown or a live preview arrived first.
  void show_newest_sample(int64_t id, const QString& run);
  // Fetches video `file` of `run`'s sample `step` and plays it looped in `player`, if `wanted()` still holds
  // when it arrives (else the reply, or its error, is dropped).
  void play_run_sample(FramePlayer* player, const QString& run, int64_t step, const QString& file,
                       std::function<bool()> wanted);
  void refresh_runs();
  void list_samples();
  void play_sample_step(int64_t step);
  // The server is gone: jobs it was running or queueing are no longer known to run.
  void mark_jobs_unknown();

  BackendLink& link_;
  QTableWidget* jobs_;
  QTableWidget* runs_;
  MetricChart *loss_, *lr_, *throughput_, *mfu_;
  QPlainTextEdit* log_;
  QLabel* error_;
  FramePlayer* samples_;
  QTabWidget* details_;
  QLabel* samples_title_;
  QListWidget* sample_steps_;
  QGridLayout* sample_grid_;
  std::vector<std::pair<FramePlayer*, QLabel*>> sample_players_;  // shown: the first `sample_count_`
  int sample_count_ = 0;
  QString samples_run_;
  nlohmann::json sample_list_ = nlohmann::json::array();  // the latest listing of samples_run_
  int64_t playing_step_ = -1;
  uint64_t sample_listings_ = 0;  // the latest listing request: earlier replies are stale
  uint64_t sample_plays_ = 0;     // the latest step shown: frames for earlier ones are dropped
  QTimer sample_refresh_;         // preview events come in bursts: one listing after them
  int64_t shown_job_ = 0;
  uint64_t live_previews_ = 0;  // preview events of the shown job so far
  int64_t failed_ = 0;          // a job that just failed, to select once the list is refreshed
};

class GeneratePage : public QWidget {
  Q_OBJECT
 public:
  GeneratePage(BackendLink& link, QString home, QWidget* parent = nullptr);
  void refresh();
  void set_prompt(const QString& prompt, const QString& negative);
  void generate();
  bool can_generate() const;
  QPushButton* generate_button() const { return generate_; }
  QPushButton* cancel_button() const { return cancel_; }
  QComboBox* run() const { return run_; }
  QLineEdit* prompt() const { return prompt_; }
  QSpinBox* steps() const { return steps_; }
  QDoubleSpinBox* cfg() const { return cfg_; }
  QSpinBox* seed() const { return seed_; }
  QCheckBox* seed_lock() const { return seed_lock_; }
  QSpinBox* frames() const { return frames_; }
  QLineEdit* size() const { return size_; }
  // What the form lacks or gets wrong: a muted hint while it waits for input, red for a wrong value.
  QLabel* problem() const { return problem_; }
  // Adapter files (LoRA) applied to the model: file, scale; "merge" folds them into the weights.
  QTableWidget* adapters() const { return adapters_; }
  void add_adapter(const QString& file, double scale = 1.0);
  FramePlayer* preview() const { return preview_; }
  FramePlayer* player() const { return player_; }
  int preview_events() const { return preview_events_; }
  QString result_path() const { return result_; }
  // Writes the shown result to `path` (mp4 / webm / gif / PNG folder by extension) with its prompt and seed.
  bool export_to(const QString& path, QString* error);

 signals:
  void message(const QString& text);
  void finished(bool ok);

 private:
  void validate_form();
  // Bounds and defaults of the form's fields from the server's `generate` command.
  void apply_command_specs(const CommandSpecs& specs);
  // The chosen run (its name) or released model (its folder on the server) into the form.
  void fill_model(GenerateForm& form) const;
  void on_event(const QString& topic, const nlohmann::json& header, const QList<QByteArray>& blobs);

  BackendLink& link_;
  QString home_;
  QComboBox* run_;  // DiT runs by name, then released models with their folder as item data
  QLineEdit *prompt_, *negative_, *image_, *size_;
  QSpinBox *seed_, *steps_, *frames_;
  QCheckBox* seed_lock_;
  QDoubleSpinBox* cfg_;
  bool specs_applied_ = false;  // the fields have the server's bounds: Generate may be pressed
  QTableWidget* adapters_;
  QCheckBox* adapters_merge_;
  QPushButton *generate_, *cancel_, *export_;
  QLabel* problem_;
  FramePlayer* preview_;
  FramePlayer* player_;
  int64_t job_ = 0;
  int preview_events_ = 0;
  QString result_, pending_out_;
  nlohmann::json result_settings_;
};

class PromptsPage : public QWidget {
  Q_OBJECT
 public:
  PromptsPage(BackendLink& link, QWidget* parent = nullptr);
  void refresh();
  void save_prompt(const QString& text, const QString& negative, const QStringList& tags);
  QTableWidget* prompts() const { return prompts_; }

 signals:
  void generate_again(const QString& prompt, const QString& negative);
  void use_as_sample_prompt(const QString& prompt);
  void message(const QString& text);

 private:
  void load_history();
  BackendLink& link_;
  QLineEdit *search_, *text_, *negative_, *tags_;
  QTableWidget *prompts_, *history_;
};

// Label: the labelling queue of preference pairs. The oldest pending pair's two generations of one prompt
// play side by side, looped (left = a, right = b); a person picks the better one (1 / 2), skips the pair (S)
// or takes their last label back (Ctrl+Z), and the next pending pair follows. Pairs are made with `mugv
// pairs` (a DiT run, a prompt file) and labelled automatically with `mugv label --auto shapes`; the labels
// train DPO / KTO runs (the new-run dialog's stage).
class LabelPage : public QWidget {
  Q_OBJECT
 public:
  LabelPage(BackendLink& link, QWidget* parent = nullptr);
  // The queue, its counts and the DiT runs offered for making pairs. The shown pair stays while it is
  // pending.
  void refresh();
  // Labels the shown pair: "a" (left is better), "b" (right is better) or "skip".
  void pick(const QString& choice);
  // Clears the person's most recent label and shows that pair again.
  void undo();
  // Submits `mugv pairs` with the chosen run, prompt file and count.
  void make_pairs();
  // Submits `mugv label --auto shapes --criterion C` with the chosen criterion (the server's default until
  // its choices are known).
  void auto_label();
  // The shown pair (0: none).
  int64_t current_pair() const { return pair_; }
  QString prompt_text() const { return prompt_->text(); }
  // "12 pending · 30 preferred · 4 skipped".
  QString counts_text() const { return counts_->text(); }
  FramePlayer* left() const { return left_; }
  FramePlayer* right() const { return right_; }
  QPushButton* left_button() const { return left_button_; }
  QPushButton* right_button() const { return right_button_; }
  QPushButton* skip_button() const { return skip_button_; }
  QPushButton* undo_button() const { return undo_button_; }
  QComboBox* run() const { return run_; }
  QLineEdit* prompts_file() const { return prompts_file_; }
  QSpinBox* count() const { return count_; }
  // What the automatic labeller compares: all, or one of colour, shape, direction.
  QComboBox* criterion() const { return criterion_; }

 signals:
  void message(const QString& text);

 private:
  // Asks for the queue and shows `keep` when it is listed, else `fallback` (a pair the caller has, e.g. the
  // one an undo brought back beyond the listed part), else the oldest pending pair.
  void load(int64_t keep, const nlohmann::json& fallback = nlohmann::json());
  void show_pair(const nlohmann::json& pair);  // {"id", "prompt", "a", "b"}, or null: none pending
  void load_frames(int64_t pair, int64_t generation, FramePlayer* player);
  void refresh_runs();
  void on_event(const nlohmann::json& header);

  BackendLink& link_;
  QLabel *prompt_, *counts_;
  FramePlayer *left_, *right_;
  QPushButton *left_button_, *right_button_, *skip_button_, *undo_button_;
  QComboBox *run_, *criterion_;
  QLineEdit* prompts_file_;
  QSpinBox* count_;
  int64_t pair_ = 0;
  uint64_t loads_ = 0;  // the latest queue request: earlier replies are stale
  bool busy_ = false;   // a label or undo is on its way: further keys wait for its answer
};

}  // namespace mugv::studio
