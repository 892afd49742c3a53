// The studio, offscreen, against a real embedded server (`mugv serve` from this build) and real workers:
// the starter dataset's clips and captions, thumbnails and the clip player, a short training run whose
// metrics reach the charts, a generation whose denoising previews arrive live, the player, export, and the
// bad-input paths; the labelling queue with both videos of a pair playing; the new-run dialog's planner and
// post-training stages; a real tcp:// server with CURVE keys, authorised and not.
#include "catalog/catalog.h"
#include "catalog/generations.h"
#include "catalog/preferences.h"
#include "core/presets.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "embedded_server.h"
#include "job_params.h"
#include "main_window.h"
#include "media/probe.h"
#include "model/mugv_vae_config.h"
#include "new_run_dialog.h"
#include "remote_keys.h"
#include "service/client.h"
#include "service/curve_keys.h"
#include "studio_app.h"
#include "support/serve_process.h"
#include "support/test_support.h"
#include "train/run_layout.h"

#include <catch2/catch.hpp>

#include <functional>

#include <QApplication>
#include <QDir>
#include <QFileInfo>
#include <QProcess>
#include <QSettings>
#include <QTemporaryDir>
#include <QTest>
#include <QTimer>
#include <QUndoCommand>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <random>

namespace mugv::studio {
namespace {

// Runs `mugv ARGS` with MUGV_HOME=home; true when it exits 0.
bool run_mugv(const QString& home, const QStringList& args) {
  QProcess p;
  QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
  env.insert("MUGV_HOME", home);
  p.setProcessEnvironment(env);
  p.start(mugv_binary(), args);
  if (!p.waitForFinished(120000)) return false;
  if (p.exitCode() != 0)
    WARN("mugv " << args.join(' ').toStdString() << ": " << p.readAllStandardError().toStdString());
  return p.exitCode() == 0;
}

bool has_torch_commands() {
  QProcess p;
  p.start(mugv_binary(), {"generate", "--help"});
  return p.waitForFinished(30000) && p.exitCode() == 0;
}

// A home with the starter dataset (8 clips, 32x32, 9 frames) and, with LibTorch, a VAE run and a DiT run.
void prepare_home(const QString& home, bool with_models) {
  REQUIRE(run_mugv(home, {"make-dataset", "shapes", "--out", home + "/shapes", "--count", "8", "--size", "32",
                          "--frames", "9"}));
  REQUIRE(run_mugv(home, {"dataset", "import", home + "/shapes", "--name", "shapes"}));
  if (!with_models) return;
  REQUIRE(run_mugv(home, {"train-vae", "--preset", "tiny", "--dataset", "shapes", "--run", "vae0", "--steps",
                          "2", "--batch", "2", "--size", "32x32", "--frames", "9", "--heldout-clips", "1"}));
  REQUIRE(run_mugv(home, {"encode", "--dataset", "shapes", "--vae-run", "vae0"}));
  REQUIRE(run_mugv(home, {"train", "--preset", "tiny", "--dataset", "shapes", "--vae-run", "vae0", "--run",
                          "dit0", "--steps", "2", "--batch", "2"}));
  // A LoRA fine-tune of dit0 and its adapter as a PEFT file, for the Runs and Generate pages.
  REQUIRE(run_mugv(home, {"train", "--preset", "tiny", "--from", "dit0", "--lora", "rank=2,targets=attn",
                          "--dataset", "shapes", "--run", "lora0", "--steps", "2", "--batch", "2",
                          "--sample-every", "2", "--sample-steps", "2"}));
  // Samples during a LoRA run render with the adapter on its base.
  REQUIRE(!QDir(home + "/runs/lora0/samples/step-2").entryList(QDir::Files).isEmpty());
  REQUIRE(run_mugv(home, {"lora", "extract", "--run", "lora0", "--out", home + "/lora0.safetensors"}));
}

// The studio on `home` (its embedded server, no starter offer), connected and showing the Runs page; `said`
// collects the page's messages.
struct StudioOnRunsPage {
  explicit StudioOnRunsPage(const QString& home) : window(options_for(home)) {
    window.show();
    REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
    runs = window.runs_page();
    window.show_page(Page::runs);
    QObject::connect(runs, &RunsPage::message, [this](const QString& m) { said << m; });
  }
  static StudioOptions options_for(const QString& home) {
    StudioOptions options;
    options.home = home;
    options.mugv_binary = mugv_binary();
    options.offer_starter = false;
    return options;
  }
  MainWindow window;
  RunsPage* runs = nullptr;
  QStringList said;
};

// An installed released model at DIR that the server lists as complete, written without LibTorch: the golden
// tiny DiT (4 latent channels, text width 32), a VAE of the release's layout with zero weights and unit scale
// (a codec that encodes every clip to zeros, 8x8x8), and a T5 folder whose config fits the DiT (its weights
// are not written: listing and encoding never read them).
void install_release_model(const std::filesystem::path& golden_dit, const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir / "t5");
  fs::copy_file(golden_dit, dir / "dit.safetensors");
  MugvVAEConfig vae;
  vae.spatial_channels = {32, 32, 32, 32};
  vae.spatial_layers_per_block = 1;
  vae.temporal_filters = 32;
  vae.temporal_multipliers = {1, 1, 1, 1};
  vae.temporal_res_blocks = 1;
  vae.latent_channels = 4;
  vae.latent_mean.clear();
  vae.latent_std.clear();
  SafetensorsWriter writer;
  for (const auto& [name, shape] : mugv_vae_tensor_shapes(vae)) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    const std::vector<float> values(size_t(n), name == "scale" ? 1.0f : 0.0f);
    writer.add(name, DType::f32, shape, values.data(), values.size() * sizeof(float));
  }
  writer.write(dir / "vae.safetensors");
  std::ofstream(dir / "t5" / "config.json") << nlohmann::json{
      {"model_type", "t5"},
      {"d_model", 32},
      {"d_kv", 16},
      {"d_ff", 64},
      {"num_layers", 1},
      {"num_heads", 2},
      {"vocab_size", 64},
      {"relative_attention_num_buckets", 8},
      {"feed_forward_proj", "gated-gelu"}}.dump();
  std::ofstream(dir / "t5" / "spiece.model") << "not read by listing or encoding\n";
}

}  // namespace

TEST_CASE("the studio drives datasets, training and generation on its embedded server", "[studio][slow]") {
  app();
  test::TempDir tmp("mugv-studio");
  const QString home = QString::fromStdString(tmp.path().string());
  const bool torch = has_torch_commands();
  if (!torch) WARN("this build has no LibTorch commands: training and generation are not exercised");
  prepare_home(home, torch);

  MainWindow window(StudioOnRunsPage::options_for(home));
  window.show();
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));

  // Datasets: the imported dataset, its clips and an undoable caption edit.
  DatasetsPage* datasets = window.datasets_page();
  REQUIRE(QTest::qWaitFor([&] { return datasets->datasets()->count() == 1; }, 10000));
  datasets->datasets()->setCurrentRow(0);
  REQUIRE(QTest::qWaitFor([&] { return datasets->clips()->rowCount() > 0; }, 10000));
  const int64_t clip = datasets->clips()->item(0, 0)->text().toLongLong();
  const QString before = datasets->clips()->item(0, 8)->text();
  datasets->edit_caption(clip, before, "a hand-written caption");
  auto caption_of_first = [&] {
    return datasets->clips()->rowCount() ? datasets->clips()->item(0, 8)->text() : QString();
  };
  CHECK(QTest::qWaitFor([&] { return caption_of_first() == "a hand-written caption"; }, 10000));
  datasets->undo_stack()->undo();
  CHECK(QTest::qWaitFor([&] { return caption_of_first() == before; }, 10000));

  // The grid shows every clip with a thumbnail from the server; double-clicking one plays its 9 frames.
  const int clip_count = datasets->clips()->rowCount();
  CHECK(datasets->grid()->count() == clip_count);
  CHECK(QTest::qWaitFor([&] { return datasets->thumbnails_loaded() == clip_count; }, 20000));
  CHECK_FALSE(datasets->grid()->item(0)->icon().isNull());
  // Every icon has the grid's icon size whatever the clip's aspect, so labels keep their place.
  for (int i = 0; i < datasets->grid()->count(); ++i)
    CHECK(datasets->grid()->item(i)->icon().availableSizes().value(0) == datasets->grid()->iconSize());
  QListWidgetItem* cell = datasets->grid()->item(0);
  emit datasets->grid()->itemDoubleClicked(cell);
  REQUIRE(datasets->clip_player() != nullptr);
  CHECK(QTest::qWaitFor([&] { return datasets->clip_player()->frame_count() == 9; }, 10000));
  CHECK(datasets->clip_player_window()->isVisible());
  QTest::keyClick(datasets->clip_player(), Qt::Key_Right);
  CHECK(datasets->clip_player()->current_frame() == 1);
  datasets->clip_player_window()->close();
  QString said;
  QObject::connect(datasets, &DatasetsPage::message, [&](const QString& m) { said = m; });
  datasets->open_clip(999999);
  CHECK(QTest::qWaitFor([&] { return said.contains("no such clip"); }, 10000));
  datasets->clip_player_window()->close();

  // A manifest file imports as a dataset of its own: the starter set's clips listed as one JSON array.
  {
    std::ifstream lines(home.toStdString() + "/shapes/manifest.jsonl");
    nlohmann::json listed = nlohmann::json::array();
    for (std::string line; std::getline(lines, line);)
      if (!line.empty()) listed.push_back(nlohmann::json::parse(line));
    REQUIRE(listed.size() == size_t(clip_count));
    std::ofstream(home.toStdString() + "/shapes/listed.json") << listed.dump(2);
  }
  datasets->import_dataset(home + "/shapes/listed.json", "listed");
  CHECK(QTest::qWaitFor(
      [&] {
        const QString row = QString("listed  (%1 clips)").arg(clip_count);
        return !datasets->datasets()->findItems(row, Qt::MatchExactly).isEmpty();
      },
      30000));

  if (!torch) return;

  // Runs: a short training run; its metrics arrive in the charts while it runs.
  RunsPage* runs = window.runs_page();
  window.show_page(Page::runs);
  TrainForm form;
  form.run = "studio-run";
  form.dataset = "shapes";
  form.vae_run = "vae0";
  form.steps = 6;
  form.batch = 2;
  form.sample_every = 3;
  REQUIRE(validate(form).empty());
  runs->start_training(form);
  CHECK(QTest::qWaitFor([&] { return runs->loss_chart()->point_count() >= 1; }, 90000));

  // A run that fails (no latents for that VAE) is announced in the status bar with its whole error, and
  // selected with the error above its log.
  TrainForm doomed = form;
  doomed.run = "doomed-run";
  doomed.vae_run = "no-such-vae";
  runs->start_training(doomed);
  CHECK(QTest::qWaitFor([&] { return window.status_text().contains("failed"); }, 60000));
  CHECK(window.status_text().contains("no-such-vae"));
  CHECK(QTest::qWaitFor([&] { return runs->error_text().startsWith("failed: "); }, 10000));
  CHECK(runs->error_text().contains("no-such-vae"));
  const int selected = runs->jobs()->currentRow();
  REQUIRE(selected >= 0);
  CHECK(runs->jobs()->item(selected, 4)->text().contains("run=doomed-run"));  // the command with its values
  // The failed run rendered nothing: its sample pane is empty. The finished run, selected again, shows the
  // newest sample it rendered (its live previews are over).
  CHECK(runs->training_samples()->frame_count() == 0);
  auto studio_run_row = [&] {
    for (int r = 0; r < runs->jobs()->rowCount(); ++r)
      if (runs->jobs()->item(r, 4)->text().contains("run=studio-run")) return r;
    return -1;
  };
  CHECK(QTest::qWaitFor(
      [&] { return studio_run_row() >= 0 && runs->jobs()->item(studio_run_row(), 2)->text() == "succeeded"; },
      90000));
  REQUIRE(studio_run_row() >= 0);
  runs->select_job(runs->jobs()->item(studio_run_row(), 0)->text().toLongLong());
  CHECK(QTest::qWaitFor([&] { return runs->training_samples()->frame_count() > 0; }, 20000));

  // Generate: the finished run is offered without a refresh by hand; the button is disabled without a
  // prompt; previews arrive during denoising; the result plays.
  GeneratePage* generate = window.generate_page();
  CHECK(QTest::qWaitFor([&] { return generate->run()->findText("studio-run") >= 0; }, 60000));
  window.show_page(Page::generate);
  // A released model folder on the server is offered with its size; one that lacks its VAE and T5 is shown
  // as incomplete and cannot be chosen.
  const auto golden = test::golden_data_file("mugv_dit_tiny.safetensors");
  if (golden) {
    std::filesystem::create_directories(tmp.path() / "models" / "tiny-release");
    std::filesystem::copy_file(*golden, tmp.path() / "models" / "tiny-release" / "dit.safetensors");
  }
  generate->refresh();
  REQUIRE(QTest::qWaitFor([&] { return generate->run()->findText("dit0") >= 0; }, 10000));
  if (golden) {
    REQUIRE(QTest::qWaitFor(
        [&] { return generate->run()->findText("tiny-release", Qt::MatchStartsWith) >= 0; }, 10000));
    const int index = generate->run()->findText("tiny-release", Qt::MatchStartsWith);
    const QString label = generate->run()->itemText(index);
    CHECK(label.contains("released"));
    CHECK(label.contains("MiB"));
    CHECK(label.contains("incomplete"));
    CHECK(generate->run()->itemData(index).toString().endsWith("models/tiny-release"));
  }
  generate->run()->setCurrentText("dit0");
  generate->prompt()->clear();
  CHECK_FALSE(generate->generate_button()->isEnabled());
  generate->prompt()->setText("a red circle moving right on a black background");
  generate->steps()->setValue(4);
  generate->frames()->setValue(9);
  generate->size()->setText("32x32");
  REQUIRE(generate->generate_button()->isEnabled());
  generate->seed()->setValue(0);
  CHECK_FALSE(generate->seed_lock()->isChecked());  // unlocked by default: each generation draws a seed
  bool finished = false, ok = false;
  QObject::connect(generate, &GeneratePage::finished, [&](bool success) {
    finished = true;
    ok = success;
  });
  QTest::mouseClick(generate->generate_button(), Qt::LeftButton);
  REQUIRE(QTest::qWaitFor([&] { return finished; }, 120000));
  CHECK(ok);
  CHECK(generate->preview_events() >= 1);
  CHECK(generate->player()->frame_count() == 9);
  const int drawn = generate->seed()->value();
  CHECK(drawn != 0);  // a random draw, shown in the field (1 in 2^31 to be 0)
  QTest::keyClick(generate->player(), Qt::Key_Right);
  CHECK(generate->player()->current_frame() == 1);

  const QString gif = home + "/exported.gif";
  QString error;
  CHECK(generate->export_to(gif, &error));
  CHECK(QFileInfo(gif).size() > 0);
  const QString mp4 = home + "/exported.mp4";
  REQUIRE(generate->export_to(mp4, &error));
  const auto metadata = probe(mp4.toStdString(), ProbeDepth::headers).metadata;
  CHECK(metadata.at("seed") == std::to_string(drawn));
  CHECK(metadata.at("steps") == "4");
  CHECK(metadata.count("cfg") == 1);
  CHECK(metadata.at("size") == "32x32");
  CHECK_FALSE(generate->export_to("/proc/not-writable/out.mp4", &error));
  CHECK(error.contains("not-writable"));

  // The Runs page lists the LoRA run with its base and adapter checkpoints.
  const auto runs_row = [&](const QString& name) {
    for (int r = 0; r < runs->runs()->rowCount(); ++r)
      if (runs->runs()->item(r, 0)->text() == name) return r;
    return -1;
  };
  runs->refresh();
  REQUIRE(QTest::qWaitFor([&] { return runs_row("lora0") >= 0; }, 10000));
  const int lora_row = runs_row("lora0");
  CHECK(runs->runs()->item(lora_row, 2)->text().startsWith("dit0 @ step 2"));
  CHECK(runs->runs()->item(lora_row, 3)->text().contains("rank=2"));
  CHECK(runs->runs()->item(lora_row, 5)->text() == "2");

  // An adapter file with its scale: the generation uses it and the export says so.
  generate->add_adapter(home + "/lora0.safetensors", 0.8);
  finished = false;
  QTest::mouseClick(generate->generate_button(), Qt::LeftButton);
  REQUIRE(QTest::qWaitFor([&] { return finished; }, 120000));
  CHECK(ok);
  const QString with_adapter = home + "/adapter.mp4";
  QString adapter_error;
  REQUIRE(generate->export_to(with_adapter, &adapter_error));
  CHECK(probe(with_adapter.toStdString(), ProbeDepth::headers).metadata.at("lora") ==
        (home + "/lora0.safetensors:0.8").toStdString());
  generate->adapters()->removeRow(0);

  // "Use as sample prompt" on the Prompts page reaches the next run's sample prompts.
  QSettings().remove("sample_prompts");
  emit window.prompts_page()->use_as_sample_prompt("a blue square moving up on a white background");

  // The new-run dialog fine-tunes: starting from dit0 takes its model and VAE run; LoRA settings go along.
  NewRunDialog dialog(window.link());
  CHECK(dialog.sample_prompts()->text() == "a blue square moving up on a white background");
  CHECK(train_job(dialog.form()).params["values"]["train.sample_prompts"] ==
        "a blue square moving up on a white background");
  QSettings().remove("sample_prompts");
  REQUIRE(QTest::qWaitFor([&] { return dialog.from()->findData("dit0") >= 0; }, 10000));
  CHECK(dialog.from()->findData("lora0") < 0);  // a LoRA run is no base until merged
  CHECK_FALSE(dialog.lora()->isEnabled());
  dialog.name()->setText("lora-studio");
  dialog.dataset()->setCurrentText("shapes");
  dialog.from()->setCurrentIndex(dialog.from()->findData("dit0"));
  CHECK_FALSE(dialog.model()->isEnabled());
  CHECK(dialog.model()->currentText() == "tiny");
  dialog.lora()->setText("rank=2,targets=attn");
  dialog.update();
  REQUIRE(dialog.can_start());
  CHECK(dialog.plan_form().lora == "rank=2,targets=attn");  // the planner's rows count the adapters
  REQUIRE(dialog.layouts()->rowCount() >= 1);
  dialog.lora()->setText("rank=0");
  dialog.update();
  CHECK_FALSE(dialog.can_start());
  CHECK(dialog.problem_field() == dialog.lora());
  dialog.lora()->setText("rank=2,targets=attn");
  dialog.update();
  REQUIRE(dialog.can_start());
  TrainForm tune = dialog.form();
  CHECK(tune.from == "dit0");
  CHECK(tune.vae_run.empty());
  const auto tune_values = train_job(tune).params["values"];
  CHECK(tune_values["train.lora"] == "rank=2,targets=attn");
  CHECK_FALSE(tune_values.contains("train.vae_run"));
  tune.steps = 2;
  tune.batch = 2;
  tune.sample_every = 0;
  runs->start_training(tune);
  REQUIRE(QTest::qWaitFor(
      [&] {
        runs->refresh();
        QTest::qWait(200);
        const int row = runs_row("lora-studio");
        return row >= 0 && runs->runs()->item(row, 5)->text() == "2";
      },
      120000));
  CHECK(runs->runs()->item(runs_row("lora-studio"), 2)->text().startsWith("dit0"));

  // The optimizer is the dialog's choice; Grow makes a twice-as-wide run that names what it was made from.
  dialog.optimizer()->setCurrentText("muon");
  dialog.parametrization()->setCurrentText("mup");
  CHECK(train_job(dialog.form()).params["values"]["train.optimizer"] == "muon");
  CHECK(train_job(dialog.form()).params["values"]["train.parametrization"] == "mup");
  QString grow_said;
  QObject::connect(runs, &RunsPage::message, [&](const QString& m) { grow_said = m; });
  runs->grow_run("dit0", "dit0");
  CHECK(grow_said.contains("name of its own"));
  runs->grow_run("dit0", "dit0-wide");
  REQUIRE(QTest::qWaitFor(
      [&] {
        runs->refresh();
        QTest::qWait(200);
        const int row = runs_row("dit0-wide");
        return row >= 0 && runs->runs()->item(row, 4)->text().startsWith("grown 2x from dit0");
      },
      120000));

  // "Grow ×2 first" in the dialog: dit0 grows into "<run>-grown", and the run trains from that once it
  // exists.
  TrainForm wider;
  wider.run = "wide-tune";
  wider.dataset = "shapes";
  wider.from = "dit0";
  wider.steps = 2;
  wider.batch = 2;
  REQUIRE(validate(wider).empty());
  QStringList runs_said;
  QObject::connect(runs, &RunsPage::message, [&](const QString& m) { runs_said << m; });
  runs->grow_then_train(wider);
  const bool grown_and_trained = QTest::qWaitFor(
      [&] {
        runs->refresh();
        QTest::qWait(200);
        const int row = runs_row("wide-tune");
        return row >= 0 && runs->runs()->item(row, 5)->text() == "2";
      },
      180000);
  INFO(runs_said.join('\n').toStdString());
  REQUIRE(grown_and_trained);
  CHECK(runs->runs()->item(runs_row("wide-tune"), 2)->text().startsWith("wide-tune-grown"));
  CHECK(runs->runs()->item(runs_row("wide-tune-grown"), 4)->text().startsWith("grown 2x from dit0"));

  // The labelling queue end to end: a pair of dit0's videos arrives on the Label page when `mugv pairs`
  // succeeds, a person prefers one, and DPO post-trains dit0 on that label.
  const QString prompt_file = home + "/prompts.txt";
  {
    std::ofstream file(prompt_file.toStdString());
    file << "a red circle moving right on a black background\n";
  }
  LabelPage* label = window.label_page();
  window.show_page(Page::label);
  PairsForm pairs;
  pairs.run = "dit0";
  pairs.prompts = prompt_file.toStdString();
  pairs.count = 1;
  pairs.steps = 2;
  pairs.frames = 9;
  pairs.width = pairs.height = 32;
  REQUIRE(validate(pairs).empty());
  QString pairs_refused;
  submit_job(
      window.link(), pairs_job(pairs).header(), [](int64_t) {}, [&](const QString& m) { pairs_refused = m; });
  REQUIRE(QTest::qWaitFor([&] { return label->current_pair() != 0 || !pairs_refused.isEmpty(); }, 120000));
  REQUIRE(pairs_refused.isEmpty());
  CHECK(label->prompt_text() == "a red circle moving right on a black background");
  CHECK(QTest::qWaitFor(
      [&] { return label->left()->frame_count() == 9 && label->right()->frame_count() == 9; }, 10000));
  label->pick("a");
  REQUIRE(QTest::qWaitFor([&] { return label->counts_text().startsWith("0 pending · 1 preferred"); }, 10000));
  TrainForm dpo;
  dpo.run = "dpo-studio";
  dpo.objective = "dpo";
  dpo.from = "dit0";
  dpo.preference_labels = "human";
  dpo.steps = 2;
  dpo.batch = 1;
  REQUIRE(validate(dpo).empty());
  runs->start_training(dpo);
  REQUIRE(QTest::qWaitFor(
      [&] {
        runs->refresh();
        QTest::qWait(200);
        const int row = runs_row("dpo-studio");
        return row >= 0 && runs->runs()->item(row, 5)->text() == "2";
      },
      120000));
  CHECK(runs->runs()->item(runs_row("dpo-studio"), 4)->text() == "dpo of dit0 @ step 2");

  // Generate can be cancelled while it runs; the page says so and is ready again.
  window.show_page(Page::generate);
  generate->steps()->setValue(1000);
  CHECK_FALSE(generate->cancel_button()->isEnabled());
  finished = false;
  QTest::mouseClick(generate->generate_button(), Qt::LeftButton);
  REQUIRE(QTest::qWaitFor([&] { return generate->cancel_button()->isEnabled(); }, 20000));
  QTest::mouseClick(generate->cancel_button(), Qt::LeftButton);
  REQUIRE(QTest::qWaitFor([&] { return finished; }, 60000));
  CHECK_FALSE(ok);
  CHECK_FALSE(generate->cancel_button()->isEnabled());
  CHECK(generate->generate_button()->isEnabled());

  // Resume on a cancelled training job continues its run (the server retries it from its checkpoint).
  window.show_page(Page::runs);
  TrainForm longer = form;
  longer.run = "resumable";
  longer.steps = 100000;
  longer.sample_every = 0;
  runs->start_training(longer);
  auto job_row = [&](const QString& run) {
    for (int r = 0; r < runs->jobs()->rowCount(); ++r)
      if (runs->jobs()->item(r, 4)->text().contains("run=" + run + " ")) return r;
    return -1;
  };
  auto state_of = [&](const QString& run) {
    runs->refresh();
    QTest::qWait(300);
    const int row = job_row(run);
    return row >= 0 ? runs->jobs()->item(row, 2)->text() : QString();
  };
  REQUIRE(QTest::qWaitFor([&] { return state_of("resumable") == "running"; }, 60000));
  // Its progress shows steps, the rate and the time left.
  CHECK(QTest::qWaitFor(
      [&] {
        runs->refresh();
        QTest::qWait(300);
        const int row = job_row("resumable");
        return row >= 0 && runs->jobs()->item(row, 3)->text().contains("ETA");
      },
      60000));
  runs->jobs()->selectRow(job_row("resumable"));
  runs->act(protocol::MessageType::cancel_job);
  REQUIRE(QTest::qWaitFor([&] { return state_of("resumable") == "cancelled"; }, 60000));
  runs->jobs()->selectRow(job_row("resumable"));
  runs->act(protocol::MessageType::resume_job);
  REQUIRE(QTest::qWaitFor(
      [&] {
        const QString state = state_of("resumable");
        return state == "queued" || state == "running";
      },
      30000));
  runs->jobs()->selectRow(job_row("resumable"));
  runs->act(protocol::MessageType::cancel_job);
  CHECK(QTest::qWaitFor([&] { return state_of("resumable") == "cancelled"; }, 60000));
}

TEST_CASE(
    "the label page plays both videos of the oldest pending pair, labels it, takes the label back and counts",
    "[studio]") {
  app();
  test::TempDir tmp("mugv-studio-label");
  const QString home = QString::fromStdString(tmp.path().string());
  prepare_home(home, false);
  // Three generations (the starter set's clips, their captions as prompts) and two pending pairs; two runs
  // post-trained from "demo" for the Runs page.
  int64_t first = 0, second = 0;
  std::vector<int64_t> generations;
  std::string first_prompt;
  {
    Catalog catalog = Catalog::open(tmp.path() / "catalog.sqlite");
    for (int i = 0; i < 3; ++i) {
      const fs::path clip = tmp.path() / "shapes" / "train" / cat("shape_0000", i, ".mp4");
      std::ifstream caption(fs::path(clip).replace_extension(".txt"));
      Generation g;
      std::getline(caption, g.prompt_text);
      g.seed = uint64_t(i);
      g.steps = 2;
      g.cfg_scale = 4;
      g.width = g.height = 32;
      g.frames = 9;
      g.output_path = clip;
      g.settings = {{"fps", 8.0}};
      if (i == 0) first_prompt = g.prompt_text;
      generations.push_back(add_generation(catalog, g).id);
    }
    first = add_preference_pair(catalog, generations[0], generations[1]).id;
    second = add_preference_pair(catalog, generations[0], generations[2]).id;
  }
  REQUIRE_FALSE(first_prompt.empty());
  for (const auto& [name, train] :
       {std::pair{"dpo-demo", nlohmann::json{{"objective", "dpo"}, {"from", "demo"}}},
        std::pair{"sft-demo", nlohmann::json{{"objective", "flow"}, {"clip_filter", "decision=keep"}}}})
    write_run_manifest(RunPaths{tmp.path() / "runs" / name},
                       {name,
                        RunLayoutKind::dit,
                        "tiny",
                        "shapes",
                        "vae",
                        {{"base", {{"run", "demo"}, {"step", 400}, {"weights", "ema"}}}, {"train", train}}});
  write_run_manifest(RunPaths{tmp.path() / "runs" / "demo-wide"},
                     {"demo-wide",
                      RunLayoutKind::dit,
                      "tiny-w2",
                      "shapes",
                      "vae",
                      {{"grown_from", {{"run", "demo"}, {"step", 400}, {"width", 2}}}}});

  MainWindow window(StudioOnRunsPage::options_for(home));
  window.show();
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  window.show_page(Page::label);
  LabelPage* label = window.label_page();
  QString said;
  QObject::connect(label, &LabelPage::message, [&](const QString& m) { said = m; });

  // The oldest pending pair, its prompt and both generations' frames, looping.
  REQUIRE(QTest::qWaitFor([&] { return label->current_pair() == first; }, 10000));
  CHECK(label->prompt_text().toStdString() == first_prompt);
  CHECK(label->counts_text() == "2 pending · 0 preferred · 0 skipped");
  auto both_play = [&] { return label->left()->frame_count() == 9 && label->right()->frame_count() == 9; };
  CHECK(QTest::qWaitFor(both_play, 10000));
  CHECK(label->left_button()->isEnabled());
  CHECK(label->left_button()->shortcut() == QKeySequence(Qt::Key_1));
  CHECK(label->right_button()->shortcut() == QKeySequence(Qt::Key_2));
  CHECK(label->skip_button()->shortcut() == QKeySequence(Qt::Key_S));
  CHECK(label->undo_button()->shortcut() == QKeySequence(QKeySequence::Undo));

  // Right is better: the next pair follows; skipping it empties the queue and the buttons wait.
  label->pick("b");
  REQUIRE(QTest::qWaitFor([&] { return label->current_pair() == second; }, 10000));
  CHECK(label->counts_text() == "1 pending · 1 preferred · 0 skipped");
  CHECK(QTest::qWaitFor(both_play, 10000));
  label->pick("skip");
  REQUIRE(QTest::qWaitFor([&] { return label->current_pair() == 0; }, 10000));
  CHECK(label->counts_text() == "0 pending · 1 preferred · 1 skipped");
  CHECK_FALSE(label->left_button()->isEnabled());
  CHECK_FALSE(label->right_button()->isEnabled());
  CHECK_FALSE(label->skip_button()->isEnabled());
  CHECK(label->prompt_text().contains("Nothing to label"));
  CHECK(label->left()->frame_count() == 0);

  // Undo (Ctrl+Z on this page, where it is no caption edit's) brings the skipped pair back with its videos.
  QUndoStack* captions = window.datasets_page()->undo_stack();
  captions->push(new QUndoCommand("an edit the Datasets page could undo"));
  window.activateWindow();
  REQUIRE(QTest::qWaitForWindowActive(&window));
  QTest::keyClick(&window, Qt::Key_Z, Qt::ControlModifier);
  REQUIRE(QTest::qWaitFor([&] { return label->current_pair() == second; }, 10000));
  CHECK(label->counts_text() == "1 pending · 1 preferred · 0 skipped");
  CHECK(QTest::qWaitFor(both_play, 10000));
  CHECK(label->left_button()->isEnabled());
  CHECK(captions->canUndo());

  // The first pair's label is cleared elsewhere: the shown pair stays until it is labelled, then the oldest
  // follows; undo shows the pair it cleared even though an older one is pending.
  {
    Catalog catalog = Catalog::open(tmp.path() / "catalog.sqlite");
    label_preference(catalog, first, PreferenceChoice::pending, "");
  }
  label->refresh();
  CHECK(QTest::qWaitFor([&] { return label->counts_text().startsWith("2 pending"); }, 10000));
  CHECK(label->current_pair() == second);
  label->pick("a");
  REQUIRE(QTest::qWaitFor([&] { return label->current_pair() == first; }, 10000));
  label->undo();
  REQUIRE(QTest::qWaitFor([&] { return label->current_pair() == second; }, 10000));
  CHECK(label->counts_text() == "2 pending · 0 preferred · 0 skipped");
  CHECK(said.contains(QString("pair %1 is pending again").arg(second)));

  // The automatic labeller's criteria are the server's `mugv label --criterion` choices, its default first.
  REQUIRE(QTest::qWaitFor([&] { return label->criterion()->findText("direction") >= 0; }, 10000));
  CHECK(label->criterion()->currentText() == "all");
  CHECK(label->criterion()->count() == 4);

  // Making pairs needs a prompt file; the DiT runs on the server are offered.
  CHECK(QTest::qWaitFor([&] { return label->run()->findText("dpo-demo") >= 0; }, 10000));
  label->prompts_file()->clear();
  label->make_pairs();
  CHECK(said.startsWith("prompts:"));

  // The Runs page names the stage that post-trained each run.
  RunsPage* runs = window.runs_page();
  const auto made_from = [&](const QString& name) {
    for (int r = 0; r < runs->runs()->rowCount(); ++r)
      if (runs->runs()->item(r, 0)->text() == name) return runs->runs()->item(r, 4)->text();
    return QString();
  };
  runs->refresh();
  CHECK(QTest::qWaitFor([&] { return made_from("dpo-demo") == "dpo of demo @ step 400"; }, 10000));
  CHECK(made_from("sft-demo") == "sft (decision=keep) of demo @ step 400");

  // A grown run holds model weights only: a run started from it in the dialog starts from those.
  NewRunDialog dialog(window.link());
  REQUIRE(QTest::qWaitFor([&] { return dialog.from()->findData("demo-wide") >= 0; }, 10000));
  dialog.from()->setCurrentIndex(dialog.from()->findData("dpo-demo"));
  CHECK(dialog.form().from_weights.empty());
  dialog.from()->setCurrentIndex(dialog.from()->findData("demo-wide"));
  CHECK(dialog.form().from_weights == "model");
  CHECK(dialog.grow_first()->isEnabled());

  // The automatic labeller judges every pending pair; the page follows when its job succeeds.
  if (!has_torch_commands()) return;
  label->auto_label();
  CHECK(QTest::qWaitFor([&] { return label->counts_text().startsWith("0 pending"); }, 60000));
  CHECK(label->current_pair() == 0);
}

TEST_CASE("jobs show progress with rate and time left; the dark theme greys out disabled controls",
          "[studio]") {
  CHECK(progress_text({{"stage", "train"},
                       {"done", 120},
                       {"total", 400},
                       {"unit", "steps"},
                       {"rate", 3.21},
                       {"eta_s", 90}}) == "train 120/400 steps, 3.2/s, ETA " + human_duration(90));
  CHECK(progress_text({{"stage", "encode"}, {"done", 4}, {"total", 4}, {"rate", 12.0}, {"eta_s", 0}}) ==
        "encode 4/4, 12/s");
  CHECK(progress_text({{"stage", "import"}}) == "import");
  const QPalette dark = dark_palette();
  for (auto role : {QPalette::ButtonText, QPalette::Text, QPalette::WindowText})
    CHECK(dark.color(QPalette::Disabled, role) != dark.color(QPalette::Active, role));
}

TEST_CASE("the new-run dialog offers the planner's layouts and the chosen one becomes the job's options",
          "[studio]") {
  app();
  BackendLink link;  // not connected: the dialog's dataset and VAE lists stay empty, planning needs no server
  NewRunDialog dialog(link);
  dialog.dataset()->setCurrentText("shapes");
  dialog.vae()->setCurrentText("vae0");
  dialog.update();

  // This machine: one CPU rank, so every layout is tp1.cp1.dp1.
  REQUIRE(dialog.layouts()->rowCount() >= 1);
  CHECK(dialog.can_start());
  TrainForm mine = dialog.form();
  CHECK(mine.tp == 1);
  CHECK(mine.cp == 1);
  CHECK(mine.slurm_nodes == 0);
  CHECK(train_job(mine).params["values"]["train.recompute"] == mine.recompute);

  // Curricula: none by default, the shipped presets offered; DPO / KTO take none.
  CHECK(mine.curriculum.empty());
  CHECK_FALSE(train_job(mine).params["values"].contains("train.curriculum"));
  REQUIRE(dialog.curriculum()->findText("tiny") >= 0);
  CHECK(dialog.curriculum()->findText("mugv") >= 0);
  dialog.curriculum()->setCurrentText("tiny");
  CHECK(train_job(dialog.form()).params["values"]["train.curriculum"] == "tiny");
  TrainForm preference = dialog.form();
  preference.objective = "dpo";
  preference.from = "base";
  preference.dataset.clear();
  CHECK(validate(preference).rfind("curriculum:", 0) == 0);
  dialog.curriculum()->setCurrentText("");

  // A size the model cannot patch: the size field carries the problem and Start is disabled.
  dialog.size()->setText("70x64");
  CHECK_FALSE(dialog.can_start());
  CHECK(dialog.problem_field() == dialog.size());
  CHECK(dialog.problem().contains("multiple of"));
  CHECK(dialog.size()->toolTip().contains("multiple of"));
  dialog.size()->setText("64x64");
  CHECK(dialog.can_start());
  CHECK(dialog.problem_field() == nullptr);

  // A GPU cluster: layouts with tensor / context parallel appear; choosing one fills
  // --tp/--cp/--zero/--recompute and the job goes to the server's Slurm executor on the cluster's nodes.
  dialog.where()->setCurrentIndex(dialog.where()->findData(static_cast<int>(TrainWhere::cluster)));
  dialog.model()->setCurrentText("mugv-1b");
  dialog.size()->setText("256x256");
  dialog.batch()->setValue(8);
  dialog.gpus()->setValue(16);
  dialog.gpus_per_node()->setValue(8);
  dialog.memory()->setValue(80);
  // No server has listed its cluster profiles: nothing to submit with, and the Slurm box says so.
  CHECK_FALSE(dialog.can_start());
  CHECK(dialog.problem_field() == dialog.cluster());
  CHECK(dialog.problem().contains("cluster profiles"));
  dialog.cluster()->addItem("this server's Slurm (profile default)", "default");  // as list_clusters fills it
  REQUIRE(dialog.can_start());
  REQUIRE(dialog.layouts()->rowCount() >= 2);
  int chosen = -1;
  for (int r = 0; r < dialog.layouts()->rowCount() && chosen < 0; ++r)
    if (dialog.layouts()->item(r, 0)->text().toInt() * dialog.layouts()->item(r, 1)->text().toInt() > 1)
      chosen = r;
  REQUIRE(chosen >= 0);
  dialog.layouts()->selectRow(chosen);
  const TrainForm cluster = dialog.form();
  CHECK(cluster.tp == dialog.layouts()->item(chosen, 0)->text().toInt());
  CHECK(cluster.cp == dialog.layouts()->item(chosen, 1)->text().toInt());
  CHECK(cluster.zero == dialog.layouts()->item(chosen, 3)->text().toInt());
  CHECK(cluster.recompute == dialog.layouts()->item(chosen, 4)->text().toStdString());
  CHECK(cluster.slurm_nodes == 2);
  CHECK(cluster.tasks_per_node == 8);
  const JobRequest cluster_job = train_job(cluster);
  const auto values = cluster_job.params["values"];
  CHECK(values["train.tp"] == cluster.tp);
  CHECK(values["train.cp"] == cluster.cp);
  CHECK_FALSE(values.contains("slurm.submit"));  // the executor submits it, not the worker
  CHECK(cluster_job.params["executor"] == "slurm");
  CHECK(cluster_job.params["cluster"] == "default");
  CHECK(cluster_job.params["nodes"] == 2);
  CHECK(cluster_job.params["tasks_per_node"] == 8);
  CHECK(cluster_job.params["gpus_per_node"] == 8);  // one GPU per rank
  CHECK(validate(cluster).empty());

  // More than a node's GPUs must fill whole nodes: 12 over nodes of 8 do not.
  dialog.gpus()->setValue(12);
  CHECK_FALSE(dialog.can_start());
  CHECK(dialog.problem_field() == dialog.gpus());
  dialog.gpus()->setValue(16);

  // A model that fits nowhere: the memory field says by how much.
  dialog.model()->setCurrentText("mugv-18b");
  dialog.memory()->setValue(1);
  CHECK_FALSE(dialog.can_start());
  CHECK(dialog.problem_field() == dialog.memory());
  CHECK(dialog.problem().contains("no layout"));
  CHECK(dialog.layouts()->rowCount() == 0);

  // A tensor-parallel layout cannot run in the server's single worker.
  TrainForm single = mine;
  single.tp = 2;
  CHECK(validate(single).find("several ranks") != std::string::npos);
}

TEST_CASE(
    "the new-run dialog offers the server's cluster profiles and a run on one goes to its Slurm executor",
    "[studio]") {
  app();
  test::TempDir tmp("mugv-studio");
  std::filesystem::create_directories(tmp.path() / "clusters");
  std::ofstream(tmp.path() / "clusters" / "gpu.toml") << "partition = \"a100\"\ngpus_per_node = 4\n";
  MainWindow window(StudioOnRunsPage::options_for(QString::fromStdString(tmp.path().string())));
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  NewRunDialog dialog(window.link());
  REQUIRE(QTest::qWaitFor([&] { return dialog.cluster()->count() == 2; }, 10000));
  CHECK(dialog.cluster()->itemData(0).toString() == "default");  // built in: the server's own Slurm
  CHECK(dialog.cluster()->itemText(0).contains("this server's Slurm"));
  CHECK(dialog.cluster()->itemText(1).contains("gpu"));
  CHECK(dialog.cluster()->itemText(1).contains("a100"));
  CHECK_FALSE(dialog.cluster()->isEnabled());  // this machine: no Slurm
  dialog.where()->setCurrentIndex(dialog.where()->findData(static_cast<int>(TrainWhere::cluster)));
  CHECK(dialog.cluster()->isEnabled());
  dialog.cluster()->setCurrentIndex(1);
  CHECK(dialog.gpus_per_node()->value() == 4);  // the profile's nodes plan the layouts
  dialog.where()->setCurrentIndex(dialog.where()->findData(static_cast<int>(TrainWhere::this_machine)));
  dialog.where()->setCurrentIndex(dialog.where()->findData(static_cast<int>(TrainWhere::cluster)));
  CHECK(dialog.gpus_per_node()->value() == 4);  // and keep doing so when the place changes back
  dialog.gpus()->setValue(8);
  const TrainForm form = dialog.form();
  CHECK(form.cluster == "gpu");
  CHECK(form.slurm_nodes == 2);
  CHECK(form.tasks_per_node == 4);
  const JobRequest job = train_job(form);
  CHECK(job.params["executor"] == "slurm");
  CHECK(job.params["cluster"] == "gpu");
  CHECK(job.params["nodes"] == 2);
  CHECK(job.params["tasks_per_node"] == 4);
  CHECK(job.params["gpus_per_node"] == 4);
  CHECK_FALSE(job.params["values"].contains("slurm.submit"));  // the executor submits it, not the worker
  // The built-in profile sends the run to the server's own Slurm, followed the same way.
  dialog.cluster()->setCurrentIndex(0);
  CHECK(dialog.form().cluster == "default");
  CHECK(train_job(dialog.form()).params["executor"] == "slurm");
  // A profile without cluster nodes is a form that cannot be.
  TrainForm stray;
  stray.run = "r";
  stray.dataset = "shapes";
  stray.vae_run = "vae0";
  REQUIRE(validate(stray).empty());
  stray.cluster = "gpu";
  CHECK(validate(stray).rfind("Slurm:", 0) == 0);
  // Nor are cluster nodes without a profile to submit them with.
  stray.cluster.clear();
  stray.slurm_nodes = 2;
  stray.tasks_per_node = 4;
  CHECK(validate(stray).rfind("Slurm:", 0) == 0);
}

TEST_CASE(
    "pipeline layouts in the new-run dialog: the chosen one fills --pp, --pp-schedule, --pp-virtual and "
    "--micro-batches",
    "[studio]") {
  app();
  BackendLink link;
  NewRunDialog dialog(link);
  dialog.dataset()->setCurrentText("shapes");
  dialog.vae()->setCurrentText("vae0");
  // mugv-10b at 720p, 121 frames on 16 GPUs of 32 GB: only pipeline layouts fit (docs/PARALLEL.md).
  dialog.where()->setCurrentIndex(dialog.where()->findData(static_cast<int>(TrainWhere::cluster)));
  dialog.cluster()->addItem("this server's Slurm (profile default)", "default");  // as list_clusters fills it
  dialog.model()->setCurrentText("mugv-10b");
  dialog.size()->setText("1280x720");
  dialog.frames()->setValue(121);
  dialog.batch()->setValue(16);
  dialog.gpus()->setValue(16);
  dialog.gpus_per_node()->setValue(8);
  dialog.memory()->setValue(32);
  INFO(dialog.problem().toStdString());
  REQUIRE(dialog.can_start());
  REQUIRE(dialog.layouts()->rowCount() >= 2);
  int interleaved = -1, one_f_one_b = -1;
  for (int r = 0; r < dialog.layouts()->rowCount(); ++r) {
    CHECK(dialog.layouts()->item(r, 5)->text().toInt() > 1);  // the pp column
    const QString schedule = dialog.layouts()->item(r, 6)->text();
    if (schedule.startsWith("interleaved x2") && interleaved < 0) interleaved = r;
    if (schedule.startsWith("1f1b") && one_f_one_b < 0) one_f_one_b = r;
    CHECK(schedule.contains("micro-batches"));
  }
  REQUIRE(interleaved >= 0);
  REQUIRE(one_f_one_b >= 0);

  dialog.layouts()->selectRow(interleaved);
  const TrainForm chosen = dialog.form();
  CHECK(chosen.pp == dialog.layouts()->item(interleaved, 5)->text().toInt());
  CHECK(chosen.pp_schedule == "interleaved");
  CHECK(chosen.pp_virtual == 2);
  // The micro-batches per replica: the batch over dp, in micro-batches of the row's size, "… N
  // micro-batches".
  const QString cell = dialog.layouts()->item(interleaved, 6)->text();
  CHECK(chosen.micro_batches == cell.section(", ", 1).section(' ', 0, 0).toInt());
  CHECK(chosen.micro_batches % chosen.pp == 0);
  CHECK(chosen.tp * chosen.cp * chosen.pp * (16 / (chosen.tp * chosen.cp * chosen.pp)) == 16);
  CHECK(validate(chosen).empty());
  const auto values = train_job(chosen).params["values"];
  CHECK(values["train.pp"] == chosen.pp);
  CHECK(values["train.pp_schedule"] == "interleaved");
  CHECK(values["train.pp_virtual"] == 2);
  CHECK(values["train.micro_batches"] == chosen.micro_batches);

  dialog.layouts()->selectRow(one_f_one_b);
  const TrainForm plain = dialog.form();
  CHECK(plain.pp_schedule == "1f1b");
  CHECK(plain.pp_virtual == 2);  // the command's default, which 1F1B ignores (--pp-virtual is at least 2)
  CHECK(train_job(plain).params["values"]["train.pp_schedule"] == "1f1b");

  // A pipeline needs ranks: the server's single worker cannot run one.
  TrainForm single = plain;
  single.slurm_nodes = 0;
  single.cluster.clear();
  single.tp = 1;
  single.cp = 1;
  CHECK(validate(single).find("pipeline stages need several ranks") != std::string::npos);
  single.slurm_nodes = 1;
  single.cluster = "default";
  single.tasks_per_node = 6;  // 6 ranks do not split into tp x cp x pp
  single.pp = 4;
  CHECK(validate(single).find("tp x cp x pp") != std::string::npos);
}

TEST_CASE("post-training stages: SFT needs a clip filter, DPO and KTO a run to start from and no dataset",
          "[studio]") {
  TrainForm plain;
  plain.run = "r1";
  plain.dataset = "shapes";
  plain.vae_run = "vae0";
  REQUIRE(validate(plain).empty());
  const auto flow = train_job(plain).params["values"];
  CHECK(flow["train.dataset"] == "shapes");
  CHECK(flow["train.vae_run"] == "vae0");
  for (const char* key :
       {"train.objective", "train.clip_filter", "train.preference_labels", "train.preference_beta"})
    CHECK_FALSE(flow.contains(key));

  // SFT: flow matching on the clips matching the filter.
  TrainForm sft = plain;
  sft.objective = "sft";
  CHECK(validate(sft).rfind("SFT:", 0) == 0);
  sft.clip_filter = "decision=keep,aesthetic>=5";
  REQUIRE(validate(sft).empty());
  const auto sft_values = train_job(sft).params["values"];
  CHECK(sft_values["train.clip_filter"] == "decision=keep,aesthetic>=5");
  CHECK(sft_values["train.dataset"] == "shapes");
  CHECK_FALSE(sft_values.contains("train.objective"));  // SFT is the flow objective on a subset

  // DPO: a run to post-train; no dataset, no VAE run; labels and beta only when not the defaults.
  TrainForm dpo = plain;
  dpo.objective = "dpo";
  dpo.dataset.clear();
  CHECK(validate(dpo) == "DPO: choose the run to post-train");
  dpo.from = "dit0";
  REQUIRE(validate(dpo).empty());
  auto dpo_values = train_job(dpo).params["values"];
  CHECK(dpo_values["train.objective"] == "dpo");
  CHECK(dpo_values["train.from"] == "dit0");
  for (const char* key : {"train.dataset", "train.vae_run", "train.clip_filter", "train.preference_labels",
                          "train.preference_beta", "train.preference_sft_weight"})
    CHECK_FALSE(dpo_values.contains(key));
  dpo.preference_labels = "human";
  dpo.preference_beta = 250;
  dpo.preference_sft_weight = 100;
  dpo_values = train_job(dpo).params["values"];
  CHECK(dpo_values["train.preference_labels"] == "human");
  CHECK(dpo_values["train.preference_beta"] == 250.0);
  CHECK(dpo_values["train.preference_sft_weight"] == 100.0);
  dpo.preference_sft_weight = -1;
  CHECK(validate(dpo).rfind("anchor:", 0) == 0);
  dpo.preference_sft_weight = 0;
  dpo.preference_labels = "mine";
  CHECK(validate(dpo).rfind("labels:", 0) == 0);
  dpo.preference_labels = "auto";
  dpo.preference_beta = 0;
  CHECK(validate(dpo).rfind("beta:", 0) == 0);
  dpo.preference_beta = 1000;
  dpo.clip_filter = "decision=keep";
  CHECK(validate(dpo).find("clip") != std::string::npos);
  dpo.clip_filter.clear();
  // On a cluster DPO splits the batch over the ranks, with ZeRO-1 if asked; splitting the model is refused.
  dpo.slurm_nodes = 2;
  dpo.tasks_per_node = 4;
  dpo.cluster = "default";
  dpo.zero = 1;
  CHECK(validate(dpo).empty());
  dpo.tp = 2;
  CHECK(validate(dpo).rfind("layout: DPO and KTO", 0) == 0);
  TrainForm kto = plain;
  kto.objective = "kto";
  CHECK(validate(kto) == "KTO: choose the run to post-train");
  kto.from = "dit0";
  REQUIRE(validate(kto).empty());
  CHECK(train_job(kto).params["values"]["train.objective"] == "kto");
  CHECK_FALSE(train_job(kto).params["values"].contains("train.from_weights"));
  kto.from_weights = "model";  // a grown run has no EMA weights
  CHECK(train_job(kto).params["values"]["train.from_weights"] == "model");
  kto.from_weights = "best";
  CHECK(validate(kto).rfind("start from:", 0) == 0);
  kto.from_weights.clear();
  kto.objective = "rlhf";
  CHECK(validate(kto).rfind("stage:", 0) == 0);

  // The labelling queue's jobs: `mugv pairs` and `mugv label --auto shapes`.
  PairsForm pairs;
  CHECK(validate(pairs).rfind("run:", 0) == 0);
  pairs.run = "dit0";
  CHECK(validate(pairs).rfind("prompts:", 0) == 0);
  pairs.prompts = "/data/prompts.txt";
  pairs.count = 3;
  pairs.width = 32;
  pairs.height = 32;
  REQUIRE(validate(pairs).empty());
  const JobRequest made = pairs_job(pairs);
  CHECK(made.kind == "generate");
  CHECK(made.params["command"] == nlohmann::json{"pairs"});
  CHECK(made.params["values"]["pairs.run"] == "dit0");
  CHECK(made.params["values"]["pairs.prompts"] == "/data/prompts.txt");
  CHECK(made.params["values"]["pairs.count"] == 3);
  CHECK(made.params["values"]["pairs.size"] == "32x32");
  const JobRequest automatic = auto_label_job("shapes");
  CHECK(automatic.kind == "model");
  CHECK(automatic.params["command"] == nlohmann::json{"label"});
  CHECK(automatic.params["values"]["label.auto"] == "shapes");
  CHECK_FALSE(automatic.params["values"].contains("label.criterion"));
  CHECK(auto_label_job("shapes", "direction").params["values"]["label.criterion"] == "direction");

  // The dialog: the stage enables its own fields and marks what is missing.
  app();
  BackendLink link;  // not connected
  NewRunDialog dialog(link);
  dialog.dataset()->setCurrentText("shapes");
  dialog.vae()->setCurrentText("vae0");
  dialog.update();
  REQUIRE(dialog.can_start());
  CHECK(dialog.form().objective == "flow");
  CHECK_FALSE(dialog.clip_filter()->isEnabled());
  CHECK_FALSE(dialog.preference_labels()->isEnabled());
  CHECK_FALSE(dialog.grow_first()->isEnabled());
  dialog.stage()->setCurrentIndex(dialog.stage()->findData("sft"));
  CHECK(dialog.clip_filter()->isEnabled());
  CHECK_FALSE(dialog.can_start());
  CHECK(dialog.problem_field() == dialog.clip_filter());
  dialog.clip_filter()->setText("decision=keep");
  REQUIRE(dialog.can_start());
  CHECK(train_job(dialog.form()).params["values"]["train.clip_filter"] == "decision=keep");

  dialog.stage()->setCurrentIndex(dialog.stage()->findData("dpo"));
  CHECK_FALSE(dialog.clip_filter()->isEnabled());
  CHECK(dialog.preference_labels()->isEnabled());
  CHECK(dialog.preference_beta()->isEnabled());
  CHECK(dialog.preference_anchor()->isEnabled());
  CHECK_FALSE(dialog.dataset()->isEnabled());
  CHECK_FALSE(dialog.can_start());
  CHECK(dialog.problem_field() == dialog.from());
  CHECK(dialog.problem() == "DPO: choose the run to post-train");
  dialog.from()->addItem("dit0", "dit0");  // what a connected dialog lists from list_runs
  dialog.from()->setCurrentIndex(dialog.from()->findData("dit0"));
  CHECK(dialog.grow_first()->isEnabled());
  dialog.preference_labels()->setCurrentText("human");
  dialog.preference_beta()->setValue(500);
  dialog.preference_anchor()->setValue(100);
  REQUIRE(dialog.can_start());
  const TrainForm post = dialog.form();
  CHECK(post.objective == "dpo");
  CHECK(post.from == "dit0");
  CHECK(post.clip_filter.empty());
  const auto post_values = train_job(post).params["values"];
  CHECK_FALSE(post_values.contains("train.dataset"));
  CHECK_FALSE(post_values.contains("train.vae_run"));
  CHECK(post_values["train.preference_labels"] == "human");
  CHECK(post_values["train.preference_beta"] == 500.0);
  CHECK(post_values["train.preference_sft_weight"] == 100.0);
  dialog.from()->setCurrentIndex(0);  // a new model: nothing to grow
  CHECK_FALSE(dialog.grow_first()->isEnabled());
  CHECK_FALSE(dialog.can_start());
}

TEST_CASE("a tcp:// server with CURVE: an authorised key connects and lists jobs, a refused one is explained",
          "[studio][security]") {
  app();
  test::TempDir tmp("mugv-studio-curve");
  const QString server_home = QString::fromStdString((tmp.path() / "server").string());
  const QString studio_home = QString::fromStdString((tmp.path() / "studio").string());
  const QString stranger_home = QString::fromStdString((tmp.path() / "stranger").string());
  REQUIRE(run_mugv(server_home, {"keys", "generate"}));
  QFile pub_file(server_home + "/keys/server.pub");
  REQUIRE(pub_file.open(QIODevice::ReadOnly));
  const QString server_key = QString::fromUtf8(pub_file.readAll()).trimmed();
  const QString mine = client_public_key(studio_home);
  REQUIRE(mine.size() == 40);
  REQUIRE(run_mugv(server_home, {"keys", "authorize", mine, "--name", "studio"}));

  const int port = test::free_tcp_port_pair();
  const QString endpoint = QString("tcp://127.0.0.1:%1").arg(port);
  QProcess serve;
  QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
  env.insert("MUGV_HOME", server_home);
  serve.setProcessEnvironment(env);
  serve.setProcessChannelMode(QProcess::ForwardedErrorChannel);
  serve.start(mugv_binary(), {"serve", "--listen", endpoint, "--home", server_home, "--heartbeat-ms", "200"});
  REQUIRE(serve.waitForStarted(10000));
  struct Stop {
    QProcess& p;
    ~Stop() {
      p.terminate();
      if (!p.waitForFinished(5000)) p.kill();
      p.waitForFinished(2000);
    }
  } stop{serve};
  // One job in the queue for the studio to list (submitted with the studio's own credentials).
  const auto keys = curve_keys_for(endpoint, server_key, studio_home);
  REQUIRE(keys);
  std::optional<Client> client;
  for (int i = 0; i < 100 && !client; ++i) {
    try {
      client.emplace(endpoint.toStdString(), std::chrono::milliseconds(500), keys);
    } catch (const Error&) {
      QTest::qWait(100);
    }
  }
  REQUIRE(client);
  (void)client->request(protocol::MessageType::submit_job,
                        make_starter_job((server_home + "/shapes").toStdString(), 2).header());

  {
    StudioOptions options;
    options.server = endpoint;
    options.server_key = server_key;
    options.home = studio_home;
    options.offer_starter = false;
    MainWindow window(options);
    window.show();
    REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
    CHECK(QTest::qWaitFor([&] { return window.runs_page()->jobs()->rowCount() >= 1; }, 10000));
    CHECK(remembered_server_key(endpoint) == server_key);

    // The connect dialog offers the remembered key for this tcp:// server and shows this studio's own key.
    QString shown_key, shown_client;
    bool key_enabled = false;
    QTimer::singleShot(200, [&] {
      auto* dialog = qobject_cast<QDialog*>(QApplication::activeModalWidget());
      if (!dialog) return;
      shown_key = dialog->findChild<QLineEdit*>("server_key")->text();
      key_enabled = dialog->findChild<QLineEdit*>("server_key")->isEnabled();
      shown_client = dialog->findChild<QLabel*>("client_key")->text();
      dialog->accept();
    });
    window.open_connect_dialog();
    CHECK(shown_key == server_key);
    CHECK(key_enabled);
    CHECK(shown_client.contains("mugv keys authorize " + mine));
    CHECK(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  }
  {
    // The key was remembered for this server: no key given this time.
    StudioOptions options;
    options.server = endpoint;
    options.home = studio_home;
    options.offer_starter = false;
    MainWindow window(options);
    window.show();
    CHECK(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  }
  {
    // Another user's studio whose key the server does not list: the status bar says what to run, and the
    // event loop keeps running meanwhile.
    StudioOptions options;
    options.server = endpoint;
    options.server_key = server_key;
    options.home = stranger_home;
    options.offer_starter = false;
    MainWindow window(options);
    window.show();
    QElapsedTimer timer;
    timer.start();
    int ticks = 0;
    QTimer heartbeat;
    QObject::connect(&heartbeat, &QTimer::timeout, [&] { ++ticks; });
    heartbeat.start(20);
    const QString theirs = client_public_key(stranger_home);
    CHECK(QTest::qWaitFor([&] { return window.status_text().contains("mugv keys authorize " + theirs); },
                          15000));
    CHECK_FALSE(window.link().is_connected());
    CHECK(ticks >= timer.elapsed() / 20 / 4);
    // A malformed key is refused before any connection.
    window.connect_to(endpoint, "not-a-key");
    CHECK(window.status_text().contains("server key"));
  }
}

TEST_CASE("the Generate page takes its bounds and defaults from the server's generate command", "[studio]") {
  app();
  if (!has_torch_commands()) {
    WARN("this build has no LibTorch commands: the server describes no generate command");
    return;
  }
  test::TempDir tmp("mugv-studio");
  MainWindow window(StudioOnRunsPage::options_for(QString::fromStdString(tmp.path().string())));
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  GeneratePage* generate = window.generate_page();
  // What `mugv generate --help` states: steps 1..1000 (default 25), CFG from 0 with no upper bound (the page
  // once stopped at 30), frames from 1 (default 17), size 64x64.
  REQUIRE(QTest::qWaitFor([&] { return generate->steps()->value() == 25; }, 10000));
  CHECK(generate->steps()->minimum() == 1);
  CHECK(generate->steps()->maximum() == 1000);
  CHECK(generate->cfg()->value() == 4.0);
  CHECK(generate->cfg()->minimum() == 0.0);
  CHECK(generate->cfg()->maximum() > 1000.0);
  CHECK(generate->frames()->value() == 17);
  CHECK(generate->frames()->minimum() == 1);
  CHECK(generate->size()->text() == "64x64");
  CHECK(generate->seed()->minimum() == 0);
  // A form that waits for a model or a prompt says so as a muted hint; a wrong value is an error in red.
  generate->prompt()->setText("");
  CHECK(generate->problem()->text().startsWith("model:"));  // this home has no runs yet
  CHECK_FALSE(generate->problem()->styleSheet().contains("#d33"));
  GenerateForm form;
  form.run = "r";
  form.width = form.height = 64;
  form.out = "out.mp4";
  CHECK(awaiting_input(form));
  CHECK(validate(form).rfind("prompt:", 0) == 0);
  form.prompt = "a red ball";
  CHECK(validate(form).empty());
  form.width = 65;
  CHECK_FALSE(awaiting_input(form));
  CHECK(validate(form).rfind("size:", 0) == 0);
  // Taking a spec again (a reconnect) keeps what the user set; bounds still follow the spec.
  generate->steps()->setValue(7);
  ParamSpec steps;
  steps.key = "generate.steps";
  steps.type = ParamType::integer;
  steps.default_value = 25;
  steps.min_value = 1;
  steps.max_value = 500;
  apply_spec(*generate->steps(), steps);
  CHECK(generate->steps()->value() == 7);
  CHECK(generate->steps()->maximum() == 500);
  QSpinBox fresh;
  apply_spec(fresh, steps);
  CHECK(fresh.value() == 25);  // a field's first spec gives it the default

  // The new-run dialog takes the train command's bounds and choices (its starting values stay its own).
  NewRunDialog dialog(window.link());
  dialog.optimizer()->clear();  // what the server lists replaces whatever the dialog started with
  REQUIRE(QTest::qWaitFor([&] { return dialog.optimizer()->count() > 0; }, 10000));
  CHECK(dialog.optimizer()->findText("adamw") >= 0);
  CHECK(dialog.optimizer()->findText("muon") >= 0);
  CHECK(dialog.parametrization()->findText("mup") >= 0);
  CHECK(dialog.steps()->minimum() == 1);
  CHECK(dialog.steps()->value() == 200);
  CHECK(dialog.batch()->minimum() == 1);
}

TEST_CASE("the preset pickers offer the server's presets: a user's model size plans with the server's values",
          "[studio]") {
  app();
  test::TempDir tmp("mugv-studio");
  namespace fs = std::filesystem;
  // Presets made on the server (under its home), which this installation does not have.
  const fs::path presets = tmp.path() / "presets";
  for (const char* kind : {"models", "curricula", "curation", "train"})
    fs::create_directories(presets / kind);
  test::write_bytes(presets / "models" / "wide.toml",
                    "description = \"tiny, twice as wide\"\ninherits = \"tiny\"\n[dit]\nhidden = 384\n");
  test::write_bytes(presets / "curricula" / "quick.toml", "[[stage]]\nuntil = 10\nimage_share = 0.5\n");
  test::write_bytes(presets / "curation" / "mine.toml", "inherits = \"lenient\"\n");
  // The server's own tiny-vae (a user's override): a new VAE's "0 steps" means its steps.
  test::write_bytes(presets / "train" / "tiny-vae.toml", "trainer = \"vae\"\n[train]\nsteps = 123\n");
  test::write_bytes(presets / "train" / "long-vae.toml",
                    "trainer = \"vae\"\ninherits = \"tiny-vae\"\n[train]\nsteps = 4000\n");
  // A training preset as `mugv sweep` writes one: the tuned rate with what it was tuned with.
  test::write_bytes(presets / "train" / "swept.toml",
                    "description = \"learning rate 0.002 from mugv sweep\"\ninherits = \"tiny\"\n[train]\n"
                    "lr = 2e-3\noptimizer = \"muon\"\nparametrization = \"mup\"\nbatch = 6\n");
  REQUIRE_FALSE(find_preset("models", "wide"));

  MainWindow window(StudioOnRunsPage::options_for(QString::fromStdString(tmp.path().string())));
  REQUIRE(QTest::qWaitFor([&] { return window.link().is_connected(); }, 15000));
  QComboBox* curation = window.datasets_page()->curation_preset();
  REQUIRE(QTest::qWaitFor([&] { return curation->findText("mine") >= 0; }, 10000));
  CHECK(curation->currentText() == "mugv");  // the choice stays
  CHECK(curation->findText("lenient") >= 0);
  CHECK(curation->findText("tags") < 0);  // a tag vocabulary is no curation preset

  NewRunDialog dialog(window.link());
  REQUIRE(QTest::qWaitFor([&] { return dialog.model()->findText("wide") >= 0; }, 10000));
  REQUIRE(QTest::qWaitFor([&] { return dialog.curriculum()->findText("quick") >= 0; }, 10000));
  CHECK(dialog.model()->currentText() == "tiny");
  CHECK(dialog.model()->findText("mugv-1b") < dialog.model()->findText("mugv-10b"));
  REQUIRE(QTest::qWaitFor([&] { return dialog.vae_steps()->specialValueText() == "preset's (123)"; }, 10000));
  // The new VAE's preset: the server's presets marked trainer = "vae" (tiny-vae stays the choice); a DiT's or
  // a shared preset is not offered. Choosing one shows its steps and puts it into the VAE's job.
  CHECK(dialog.vae_preset()->currentText() == "tiny-vae");
  CHECK(dialog.vae_preset()->findText("long-vae") >= 0);
  CHECK(dialog.vae_preset()->findText("tiny") < 0);
  CHECK(dialog.vae_preset()->findText("swept") < 0);
  dialog.vae_preset()->setCurrentText("long-vae");
  CHECK(dialog.vae_steps()->specialValueText() == "preset's (4000)");
  CHECK(dialog.latent_steps().vae_preset == "long-vae");
  dialog.vae_preset()->setCurrentText("tiny-vae");
  CHECK(dialog.curriculum()->itemText(0).isEmpty());  // none stays the first choice
  CHECK(dialog.model()->itemData(dialog.model()->findText("wide"), Qt::ToolTipRole).toString() ==
        "tiny, twice as wide");

  // Planned with the server's definition: this installation alone could not (no such preset here).
  dialog.dataset()->setCurrentText("shapes");
  dialog.model()->setCurrentText("tiny");
  dialog.update();
  REQUIRE(dialog.layouts()->rowCount() >= 1);
  const QString tiny_memory = dialog.layouts()->item(0, 7)->text();
  dialog.model()->setCurrentText("wide");
  dialog.update();
  CHECK(dialog.problem_field() != dialog.model());
  REQUIRE(dialog.layouts()->rowCount() >= 1);
  CHECK(dialog.layouts()->item(0, 7)->text() != tiny_memory);  // a wider model needs more memory
  dialog.curriculum()->setCurrentText("quick");
  auto values = train_job(dialog.form()).params["values"];
  CHECK(values["train.preset"] == "wide");
  CHECK(values["train.curriculum"] == "quick");

  // A training preset fills the form's fields from its values; the job names it beside the model.
  REQUIRE(dialog.training_preset()->findText("swept") >= 0);
  CHECK(dialog.training_preset()->itemText(0).isEmpty());  // the model's own preset stays the default
  CHECK(dialog.training_preset()->findText("tiny") >= 0);
  CHECK(dialog.training_preset()->findText("tiny-vae") < 0);  // trainer = "vae": for mugv train-vae only
  CHECK(dialog.optimizer()->currentText() == "adamw");
  dialog.training_preset()->setCurrentText("swept");
  dialog.apply_training_preset();
  CHECK(dialog.optimizer()->currentText() == "muon");
  CHECK(dialog.parametrization()->currentText() == "mup");
  CHECK(dialog.batch()->value() == 6);
  CHECK(dialog.steps()->value() == 2000);          // inherited from tiny
  CHECK(dialog.model()->currentText() == "tiny");  // the preset's model
  values = train_job(dialog.form()).params["values"];
  CHECK(values["train.preset"] == "swept");
  CHECK(values["train.model"] == "tiny");
  CHECK(values["train.optimizer"] == "muon");
  CHECK(values["train.parametrization"] == "mup");
}

TEST_CASE("a server already running for the home is reused, not started twice", "[studio]") {
  app();
  test::TempDir home;
  const std::string endpoint = "ipc://" + (home / "ipc" / "left-behind.sock").string();
  test::ServeProcess left_behind(home.path(), {"--listen", endpoint});
  EmbeddedServer embedded(QString::fromStdString((test::binary_dir() / "bin" / "mugv").string()),
                          QString::fromStdString(home.path().string()));
  CHECK(embedded.start().toStdString() == endpoint);
  CHECK(embedded.reused_pid() > 0);
  embedded.stop();  // leaves the reused server alone
  Client client(endpoint, std::chrono::milliseconds(3000));
  CHECK(client.request(protocol::MessageType::list_jobs)["jobs"].empty());
}

TEST_CASE("an unreachable server is reported and the window stays responsive", "[studio]") {
  app();
  test::TempDir tmp("mugv-studio");
  StudioOptions options;
  options.server = "ipc://" + QString::fromStdString((tmp.path() / "nobody.sock").string());
  options.home = QString::fromStdString(tmp.path().string());
  options.offer_starter = false;
  MainWindow window(options);
  window.show();
  QElapsedTimer timer;
  timer.start();
  int ticks = 0;
  QTimer heartbeat;
  QObject::connect(&heartbeat, &QTimer::timeout, [&] { ++ticks; });
  heartbeat.start(20);
  CHECK(QTest::qWaitFor([&] { return window.status_text().contains("not connected"); }, 15000));
  CHECK_FALSE(window.link().is_connected());
  // The event loop kept running while the network thread waited for the server.
  CHECK(ticks >= timer.elapsed() / 20 / 4);
}

TEST_CASE("a run's latent steps chain train_vae, encode and train; the queue says what a job waits on",
          "[studio]") {
  TrainForm form;
  form.run = "dit";
  form.dataset = "shapes";
  form.vae_run = "shapes-vae";
  LatentSteps steps;
  steps.train_vae = true;
  steps.vae_run = "shapes-vae";
  steps.vae_steps = 50;
  CHECK(validate(steps, form).find("encode: the new VAE's latents") == 0);
  steps.encode = true;
  REQUIRE(validate(steps, form).empty());
  const auto jobs = training_jobs(form, steps);
  REQUIRE(jobs.size() == 3);
  CHECK(jobs[0].kind == "train_vae");
  CHECK(jobs[0].params["command"] == nlohmann::json{"train-vae"});
  CHECK(jobs[0].params["values"] == nlohmann::json{{"train.preset", "tiny-vae"},
                                                   {"train.dataset", "shapes"},
                                                   {"train.run", "shapes-vae"},
                                                   {"train.steps", 50}});
  CHECK(jobs[1].kind == "encode");
  CHECK(jobs[1].params["values"] ==
        nlohmann::json{{"encode.dataset", "shapes"}, {"encode.vae_run", "shapes-vae"}});
  CHECK(jobs[2].kind == "train");
  CHECK(jobs[2].params["values"]["train.vae_run"] == "shapes-vae");
  CHECK(jobs[2].depends_on.empty());  // the chain's links are the server's ids, added as it is submitted
  CHECK(jobs[0].header().count("depends_on") == 0);

  // The preset's steps unless given; a VAE other than the run's, or steps for a fine-tune, are refused.
  steps.vae_steps = 0;
  CHECK_FALSE(training_jobs(form, steps)[0].params["values"].contains("train.steps"));
  steps.vae_preset = "long-vae";
  CHECK(training_jobs(form, steps)[0].params["values"]["train.preset"] == "long-vae");
  steps.vae_preset = "";
  CHECK(validate(steps, form) == "new VAE: choose its training preset");
  steps.vae_preset = "tiny-vae";
  steps.vae_run = "other";
  CHECK(validate(steps, form).find("new VAE:") == 0);
  steps.vae_run = "bad/name";
  CHECK(validate(steps, form).find("new VAE: a run name") == 0);
  LatentSteps encode_only;
  encode_only.encode = true;
  CHECK(validate(encode_only, form).empty());
  CHECK(training_jobs(form, encode_only).size() == 2);
  TrainForm tune = form;
  tune.from = "dit0";
  tune.vae_run.clear();  // a fine-tune learns its base's latents
  CHECK(validate(encode_only, tune).find("encode: the run it starts from") == 0);
  // A fine-tune encodes in its base's latent space: a run's VAE run, or a released model's VAE at the clip
  // geometry; it trains no VAE of its own.
  LatentSteps base_encode = encode_only;
  base_encode.encode_with.vae_run = "shapes-vae";
  REQUIRE(validate(base_encode, tune).empty());
  const auto tune_jobs = training_jobs(tune, base_encode);
  REQUIRE(tune_jobs.size() == 2);
  CHECK(tune_jobs[0].params["values"] ==
        nlohmann::json{{"encode.dataset", "shapes"}, {"encode.vae_run", "shapes-vae"}});
  LatentSteps release_encode = encode_only;
  release_encode.encode_with.model = "/models/MUG-V-10B";
  CHECK(validate(release_encode, tune).find("encode: a released model's VAE") == 0);  // no geometry yet
  release_encode.encode_with.width = 64;
  release_encode.encode_with.height = 48;
  release_encode.encode_with.frames = 17;
  REQUIRE(validate(release_encode, tune).empty());
  CHECK(training_jobs(tune, release_encode)[0].params["values"] ==
        nlohmann::json{{"encode.dataset", "shapes"},
                       {"encode.model", "/models/MUG-V-10B"},
                       {"encode.size", "64x48"},
                       {"encode.frames", 17}});
  LatentSteps tune_vae = base_encode;
  tune_vae.train_vae = true;
  CHECK(validate(tune_vae, tune).find("new VAE: a fine-tune") == 0);
  CHECK(training_jobs(form, LatentSteps{}).size() == 1);
  const auto grow = grow_then_train_jobs(tune, 2);
  REQUIRE(grow.size() == 2);
  CHECK(grow[0].params["values"]["grow.out"] == "dit-grown");
  CHECK(grow[1].params["values"]["train.from"] == "dit-grown");
  CHECK(grow[1].params["values"]["train.from_weights"] == "model");

  const std::map<int64_t, std::string> states = {{12, "running"}, {13, "failed"}};
  CHECK(waiting_text({{"waiting_on", {12}}, {"blocked_by", nlohmann::json::array()}}, states) == "after #12");
  CHECK(waiting_text({{"waiting_on", {12, 14}}}, states) == "after #12, #14");
  CHECK(waiting_text({{"waiting_on", {12, 13}}, {"blocked_by", {13}}}, states) == "blocked by #13 (failed)");
  CHECK(waiting_text({{"waiting_on", nlohmann::json::array()}}, states).empty());
  CHECK(waiting_text({{"id", 3}}, states).empty());
}

namespace {

// The row of job `id` in the Runs page's jobs table (-1: not listed).
int job_row(RunsPage* runs, int64_t id) {
  for (int r = 0; r < runs->jobs()->rowCount(); ++r)
    if (runs->jobs()->item(r, 0)->text().toLongLong() == id) return r;
  return -1;
}

// The jobs table's cell of job `id` as shown now ("" when the job is not listed).
QString job_cell(RunsPage* runs, int64_t id, int column) {
  const int row = job_row(runs, id);
  return row >= 0 ? runs->jobs()->item(row, column)->text() : QString();
}

// True once a refresh of the jobs table shows `ready` of the cell of job `id` (polled, at most 10 s).
bool job_cell_becomes(RunsPage* runs, int64_t id, int column,
                      const std::function<bool(const QString&)>& ready) {
  return QTest::qWaitFor(
      [&] {
        runs->refresh();
        QTest::qWait(50);  // the refresh's reply, then the check (qWaitFor repeats both)
        return ready(job_cell(runs, id, column));
      },
      10000);
}
bool job_cell_becomes(RunsPage* runs, int64_t id, int column, const QString& text) {
  return job_cell_becomes(runs, id, column, [&](const QString& cell) { return cell == text; });
}

}  // namespace

TEST_CASE("a chain from the Runs page waits on the server: its rows say after which job, or which blocks it",
          "[studio]") {
  app();
  test::TempDir tmp("mugv-studio-chain");
  const QString home = QString::fromStdString(tmp.path().string());
  StudioOnRunsPage studio(home);
  MainWindow& window = studio.window;
  RunsPage* runs = studio.runs;
  QStringList& said = studio.said;
  Client client(window.link().endpoint().toStdString(), std::chrono::milliseconds(5000));
  auto job = [&](int64_t id) { return client.request(protocol::MessageType::get_job, {{"job", id}})["job"]; };
  auto ids_queued = [&](int count) {
    const auto jobs = client.request(protocol::MessageType::list_jobs)["jobs"];
    std::vector<int64_t> ids;
    for (const auto& j : jobs) ids.push_back(j["id"].get<int64_t>());
    std::sort(ids.begin(), ids.end());
    return static_cast<int>(ids.size()) >= count ? ids : std::vector<int64_t>{};
  };

  // A dataset made into a plain file's place fails; the import chained after it is blocked, not cancelled.
  const QString file = home + "/not-a-folder";
  std::ofstream(file.toStdString()) << "a file";
  runs->start_chain({make_starter_job(file.toStdString(), 2), import_job(file.toStdString(), "blocked")});
  std::vector<int64_t> first;
  REQUIRE(QTest::qWaitFor([&] { return !(first = ids_queued(2)).empty(); }, 10000));
  CHECK(job(first[1])["depends_on"] == nlohmann::json{first[0]});
  REQUIRE(QTest::qWaitFor([&] { return job(first[0])["state"] == "failed"; }, 30000));
  CHECK(job(first[1])["state"] == "queued");
  CHECK(job_cell_becomes(runs, first[1], 3, QString("blocked by #%1 (failed)").arg(first[0])));

  // A long chain of three: each row says after which job it runs; cancelling the first cancels the rest.
  runs->start_chain({make_starter_job((home + "/big").toStdString(), 20000),
                     import_job((home + "/big").toStdString(), "big"), redecide_job("big", "lenient")});
  std::vector<int64_t> second;
  REQUIRE(QTest::qWaitFor([&] { return (second = ids_queued(5)).size() == 5; }, 10000));
  const int64_t make = second[2], import = second[3], redecide = second[4];
  CHECK(job(import)["waiting_on"] == nlohmann::json{make});
  CHECK(job(redecide)["depends_on"] == nlohmann::json{import});
  CHECK(job_cell_becomes(runs, import, 3, QString("after #%1").arg(make)));
  CHECK(job_cell(runs, redecide, 3) == QString("after #%1").arg(import));  // the same table
  CHECK(said.join('\n').contains(QString("import as job %1, curate as job %2").arg(import).arg(redecide)));
  REQUIRE(QTest::qWaitFor([&] { return job(make)["state"] == "running"; }, 30000));
  client.request(protocol::MessageType::cancel_job, {{"job", make}});
  REQUIRE(QTest::qWaitFor([&] { return job(make)["state"] == "cancelled"; }, 30000));
  for (int64_t dependent : {import, redecide}) {
    CHECK(job(dependent)["state"] == "cancelled");
    CHECK(job(dependent)["error_message"].get<std::string>().find(cat("job ", make, " was cancelled")) !=
          std::string::npos);
    CHECK(job_cell_becomes(runs, dependent, 2, "cancelled"));
    CHECK(job_cell(runs, dependent, 3).isEmpty());
  }
}

TEST_CASE("with only the starter dataset the new-run dialog offers a VAE and encoding, and Start chains them",
          "[studio]") {
  app();
  test::TempDir tmp("mugv-studio-latents");
  const QString home = QString::fromStdString(tmp.path().string());
  prepare_home(home, false);  // the starter dataset "shapes", no VAE run, no latents
  const bool torch = has_torch_commands();
  StudioOnRunsPage studio(home);
  MainWindow& window = studio.window;
  RunsPage* runs = studio.runs;
  QStringList& said = studio.said;

  // The dialog Start submits from (Runs page, New run…), filled in while it is open.
  struct Seen {
    bool offered = false, vae_field_off = false, encode_forced = false, started = false;
    QString dataset, vae_name, latents, problem;
    std::vector<std::string> kinds;
  } seen;
  QTimer::singleShot(0, [&] {
    auto* dialog = qobject_cast<NewRunDialog*>(QApplication::activeModalWidget());
    if (!dialog) return;
    seen.offered = QTest::qWaitFor([&] { return dialog->train_vae()->isChecked(); }, 10000);
    seen.dataset = dialog->dataset()->currentText();
    seen.vae_name = dialog->vae_name()->text();
    seen.latents = dialog->latents_text();
    seen.vae_field_off = !dialog->vae()->isEnabled();
    seen.encode_forced = dialog->encode()->isChecked() && !dialog->encode()->isEnabled();
    dialog->name()->setText("chained");
    dialog->steps()->setValue(2);
    dialog->batch()->setValue(2);
    dialog->update();
    seen.problem = dialog->problem();
    for (const auto& j : dialog->jobs()) seen.kinds.push_back(j.kind);
    seen.started = dialog->can_start();
    if (seen.started)
      QTest::mouseClick(dialog->start_button(), Qt::LeftButton);
    else
      dialog->reject();
  });
  runs->open_new_run_dialog();
  INFO(seen.problem.toStdString());
  REQUIRE(seen.offered);
  CHECK(seen.dataset == kStarterDataset);
  CHECK(seen.vae_name == "shapes-vae");
  CHECK(seen.latents.contains("No VAE run yet"));
  CHECK(seen.vae_field_off);
  CHECK(seen.encode_forced);
  CHECK(seen.kinds == std::vector<std::string>{"train_vae", "encode", "train"});
  REQUIRE(seen.started);

  Client client(window.link().endpoint().toStdString(), std::chrono::milliseconds(5000));
  auto jobs = [&] { return client.request(protocol::MessageType::list_jobs)["jobs"]; };
  if (!torch) {
    // This build's server has no train-vae: the first step is refused with the server's reason, and nothing
    // of the chain stays queued.
    REQUIRE(QTest::qWaitFor([&] { return !said.isEmpty(); }, 10000));
    CHECK(said.last().startsWith("train_vae (step 1 of 3) refused"));
    CHECK(said.last().contains("train-vae"));
    CHECK(jobs().empty());
    WARN("this build has no LibTorch commands: the queued VAE → encode → train chain is not exercised");
    return;
  }
  REQUIRE(QTest::qWaitFor([&] { return jobs().size() == 3; }, 10000));
  std::map<std::string, nlohmann::json> by_kind;
  for (const auto& j : jobs()) by_kind[j["kind"].get<std::string>()] = j;
  const int64_t vae = by_kind["train_vae"]["id"], encode = by_kind["encode"]["id"],
                train = by_kind["train"]["id"];
  CHECK(by_kind["train_vae"]["depends_on"].empty());
  CHECK(by_kind["encode"]["depends_on"] == nlohmann::json{vae});
  CHECK(by_kind["train"]["depends_on"] == nlohmann::json{encode});
  CHECK(by_kind["encode"]["params"]["values"]["encode.vae_run"] == "shapes-vae");
  CHECK(by_kind["train"]["params"]["values"]["train.vae_run"] == "shapes-vae");
  // The dependents wait (the VAE trains, or failed on these short clips and blocks them) and say so.
  CHECK(by_kind["encode"]["state"] == "queued");
  CHECK(by_kind["train"]["waiting_on"] == nlohmann::json{encode});
  CHECK(job_cell_becomes(runs, encode, 3, [&](const QString& note) {
    return note == QString("after #%1").arg(vae) || note.startsWith(QString("blocked by #%1").arg(vae));
  }));
  CHECK(job_cell_becomes(runs, train, 3, QString("after #%1").arg(encode)));
  // Cancelling the encode step takes the training with it; the VAE job is stopped too.
  client.request(protocol::MessageType::cancel_job, {{"job", encode}});
  auto state = [&](int64_t id) {
    return client.request(protocol::MessageType::get_job, {{"job", id}})["job"]["state"].get<std::string>();
  };
  CHECK(state(train) == "cancelled");
  if (state(vae) == "running" || state(vae) == "starting" || state(vae) == "queued")
    client.request(protocol::MessageType::cancel_job, {{"job", vae}});
  CHECK(QTest::qWaitFor(
      [&] {
        const std::string s = state(vae);
        return s == "cancelled" || s == "failed" || s == "succeeded";
      },
      60000));
}

TEST_CASE(
    "a released model installed on the server is a base in the new-run dialog: planned, encoded, chained",
    "[studio]") {
  const auto golden = test::golden_data_file("mugv_dit_tiny.safetensors");
  if (!golden) {
    WARN("skipped: the golden data (../shared/data/golden) is not on this machine");
    return;
  }
  app();
  test::TempDir tmp("mugv-studio-release");
  const QString home = QString::fromStdString(tmp.path().string());
  prepare_home(home, false);  // the starter dataset: 8 clips of 9 frames at 32x32
  const std::filesystem::path model_dir = tmp.path() / "models" / "tiny-release";
  install_release_model(*golden, model_dir);
  const QString model_path = QString::fromStdString(model_dir.string());
  const bool torch = has_torch_commands();
  StudioOnRunsPage studio(home);
  MainWindow& window = studio.window;
  RunsPage* runs = studio.runs;
  QStringList& said = studio.said;

  // What the dialog shows and would submit once the released model is chosen as the base.
  struct Seen {
    bool listed = false, model_fixed = false, grow_off = false, vae_off = false, encode_offered = false;
    bool planned = false, bad_frames_refused = false, started = false;
    QString model, latents, problem, frames_problem;
    std::vector<JobRequest> jobs;
  };
  auto fill = [&](Seen& seen, bool start) {
    auto* dialog = qobject_cast<NewRunDialog*>(QApplication::activeModalWidget());
    if (!dialog) return;
    seen.listed = QTest::qWaitFor([&] { return dialog->from()->findData(model_path) >= 0; }, 10000);
    if (!seen.listed) return dialog->reject();
    dialog->from()->setCurrentIndex(dialog->from()->findData(model_path));
    (void)QTest::qWaitFor([&] { return !dialog->latents_text().isEmpty(); }, 10000);
    seen.model = dialog->model()->currentText();
    seen.model_fixed = !dialog->model()->isEnabled();
    seen.grow_off = !dialog->grow_first()->isEnabled();
    seen.vae_off = !dialog->train_vae()->isEnabled() && !dialog->vae()->isEnabled();
    seen.encode_offered = dialog->encode()->isEnabled() && dialog->encode()->isChecked();
    seen.latents = dialog->latents_text();
    dialog->name()->setText("tuned");
    dialog->lora()->setText("rank=2,targets=attn");
    dialog->steps()->setValue(2);
    dialog->batch()->setValue(2);
    dialog->size()->setText("32x32");
    dialog->frames()->setValue(10);  // the release's VAE takes 8k or 8k + 1 frames
    dialog->update();
    seen.bad_frames_refused = !dialog->can_start() && dialog->problem_field() == dialog->frames();
    seen.frames_problem = dialog->problem();
    dialog->frames()->setValue(9);
    dialog->update();
    seen.planned = dialog->layouts()->rowCount() >= 1;
    seen.problem = dialog->problem();
    seen.jobs = dialog->jobs();
    seen.started = dialog->can_start() && start;
    if (seen.started)
      QTest::mouseClick(dialog->start_button(), Qt::LeftButton);
    else
      dialog->reject();
  };
  Seen first;
  QTimer::singleShot(0, [&] { fill(first, true); });
  runs->open_new_run_dialog();
  INFO(first.problem.toStdString());
  REQUIRE(first.listed);
  CHECK(first.model == "tiny-release");
  CHECK(first.model_fixed);
  CHECK(first.grow_off);
  CHECK(first.vae_off);
  CHECK(first.encode_offered);
  CHECK(first.latents.contains("no latents of tiny-release's VAE"));
  CHECK(first.bad_frames_refused);
  CHECK(first.frames_problem.contains("frames"));
  CHECK(first.planned);
  REQUIRE(first.jobs.size() == 2);
  CHECK(first.jobs[0].kind == "encode");
  CHECK(first.jobs[0].params["values"] == nlohmann::json{{"encode.dataset", "shapes"},
                                                         {"encode.model", model_dir.string()},
                                                         {"encode.size", "32x32"},
                                                         {"encode.frames", 9}});
  const auto train_values = first.jobs[1].params["values"];
  CHECK(train_values["train.from"] == model_dir.string());
  CHECK(train_values["train.preset"] == "mugv-finetune");
  CHECK(train_values["train.lora"] == "rank=2,targets=attn");
  CHECK_FALSE(train_values.contains("train.model"));
  CHECK_FALSE(train_values.contains("train.vae_run"));
  REQUIRE(first.started);

  Client client(window.link().endpoint().toStdString(), std::chrono::milliseconds(5000));
  auto jobs = [&] { return client.request(protocol::MessageType::list_jobs)["jobs"]; };
  if (!torch) {
    REQUIRE(QTest::qWaitFor([&] { return !said.isEmpty(); }, 10000));
    CHECK(said.last().startsWith("encode (step 1 of 2) refused"));
    CHECK(jobs().empty());
    WARN("this build has no LibTorch commands: the released model's encode → train chain is not exercised");
    return;
  }
  REQUIRE(QTest::qWaitFor([&] { return jobs().size() == 2; }, 10000));
  std::map<std::string, int64_t> id;
  for (const auto& j : jobs()) id[j["kind"].get<std::string>()] = j["id"].get<int64_t>();
  // The training is not run here (this folder's T5 has no weights; the CLI test fine-tunes a whole released
  // model): cancelled while it waits, which leaves the encode step running.
  client.request(protocol::MessageType::cancel_job, {{"job", id["train"]}});
  auto state = [&](int64_t job) {
    return client.request(protocol::MessageType::get_job, {{"job", job}})["job"]["state"].get<std::string>();
  };
  REQUIRE(QTest::qWaitFor(
      [&] {
        const std::string s = state(id["encode"]);
        return s == "succeeded" || s == "failed" || s == "cancelled";
      },
      120000));
  REQUIRE(state(id["encode"]) == "succeeded");
  CHECK(state(id["train"]) == "cancelled");

  // The dataset now has the model's latents: the dialog says so and the run trains on them without encoding.
  Seen second;
  QTimer::singleShot(0, [&] { fill(second, false); });
  runs->open_new_run_dialog();
  REQUIRE(second.listed);
  CHECK(second.latents.contains("has latents of tiny-release's VAE (8 clips)"));
  CHECK_FALSE(second.encode_offered);
  REQUIRE(second.jobs.size() == 1);
  CHECK(second.jobs[0].kind == "train");
}

}  // namespace mugv::studio
