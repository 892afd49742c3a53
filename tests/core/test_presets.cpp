#include "core/json_io.h"
#include "core/params.h"
#include "core/path_confinement.h"
#include "core/paths.h"
#include "core/presets.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>

using namespace mugv;
using mugv::test::expect_error;

namespace {

// Points preset lookup at a scratch layout for the duration of a test:
//   <tmp>/builtin/<kind>/*.toml   ($MUGV_PRESETS)
//   <tmp>/home/presets/<kind>/    (the user's dir under $MUGV_HOME)
class PresetSandbox {
 public:
  PresetSandbox() {
    save("MUGV_PRESETS", old_presets_);
    save("MUGV_HOME", old_home_);
    ::setenv("MUGV_PRESETS", (dir_ / "builtin").c_str(), 1);
    ::setenv("MUGV_HOME", (dir_ / "home").c_str(), 1);
  }
  ~PresetSandbox() {
    restore("MUGV_PRESETS", old_presets_);
    restore("MUGV_HOME", old_home_);
  }
  fs::path write(const std::string& relative, const std::string& text) {
    fs::path p = dir_.path() / relative;
    fs::create_directories(p.parent_path());
    test::write_bytes(p, text);
    return p;
  }
  const test::TempDir& dir() const { return dir_; }

 private:
  static void save(const char* name, std::optional<std::string>& slot) {
    if (const char* v = std::getenv(name)) slot = v;
  }
  static void restore(const char* name, const std::optional<std::string>& slot) {
    if (slot)
      ::setenv(name, slot->c_str(), 1);
    else
      ::unsetenv(name);
  }
  test::TempDir dir_{"mugv-presets"};
  std::optional<std::string> old_presets_, old_home_;
};

}  // namespace

TEST_CASE("presets are listed across dirs with user presets overriding built-ins", "[unit][core]") {
  PresetSandbox box;
  box.write("builtin/train/tiny.toml", "[train]\nlr = 1e-4\n");
  box.write("builtin/train/base.toml", "[train]\nlr = 1e-5\n");
  box.write("builtin/train/notes.txt", "not a preset");
  box.write("home/presets/train/tiny.toml", "[train]\nlr = 3e-4\n");
  box.write("home/presets/train/mine.toml", "[train]\nsteps = 5\n");

  std::vector<PresetRef> presets = list_presets("train");
  REQUIRE(presets.size() == 3);
  CHECK(presets[0].name == "base");
  CHECK(presets[0].location == PresetLocation::builtin);
  CHECK(presets[1].name == "mine");
  CHECK(presets[1].location == PresetLocation::user);
  CHECK(presets[2].name == "tiny");
  CHECK(presets[2].location == PresetLocation::builtin);  // $MUGV_PRESETS is searched first
  CHECK(list_presets("models").empty());
  CHECK(preset_location_from_string(to_string(PresetLocation::user)) == PresetLocation::user);

  CHECK(load_preset("train", "tiny")["train"]["lr"].get<double>() == Approx(1e-4));
  CHECK(load_preset("train", "mine")["train"]["steps"] == 5);
  CHECK(expect_error([&] { (void)list_presets("../etc"); }).code() == ErrorCode::invalid_argument);
  CHECK(expect_error([&] { (void)load_preset("train", "../x"); }).code() == ErrorCode::invalid_argument);
}

TEST_CASE("user presets take precedence over installed ones when $MUGV_PRESETS is unset", "[unit][core]") {
  PresetSandbox box;
  ::unsetenv("MUGV_PRESETS");
  box.write("home/presets/curation/strict.toml", "description = \"mine\"\n");
  std::optional<PresetRef> ref = find_preset("curation", "strict");
  REQUIRE(ref);
  CHECK(ref->location == PresetLocation::user);
  CHECK(ref->path == box.dir().path() / "home/presets/curation/strict.toml");
}

TEST_CASE("inherits merges tables, child wins, and cycles are detected", "[unit][core]") {
  PresetSandbox box;
  box.write("builtin/models/base.toml",
            "description = \"base\"\n[model]\ndepth = 4\nhidden = 64\nheads = [1, 2]\n[train]\nlr = 1e-4\n");
  box.write("builtin/models/mid.toml", "inherits = \"base\"\n[model]\nhidden = 128\n");
  box.write("builtin/models/top.toml", "inherits = \"mid\"\ndescription = \"top\"\n[model]\nheads = [8]\n");

  nlohmann::json top = load_preset("models", "top");
  CHECK(top["model"]["depth"] == 4);
  CHECK(top["model"]["hidden"] == 128);
  CHECK(top["model"]["heads"] == nlohmann::json::array({8}));
  CHECK(top["train"]["lr"].get<double>() == Approx(1e-4));
  CHECK(top["description"] == "top");
  CHECK_FALSE(top.contains("inherits"));

  SECTION("a cycle names the chain") {
    box.write("builtin/models/a.toml", "inherits = \"b\"\n");
    box.write("builtin/models/b.toml", "inherits = \"c\"\n");
    box.write("builtin/models/c.toml", "inherits = \"a\"\n");
    Error e = expect_error([&] { (void)load_preset("models", "a"); });
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK_THAT(e.message(), Catch::Contains("cycle: a -> b -> c -> a"));
    Error self = expect_error([&] {
      box.write("builtin/models/self.toml", "inherits = \"self\"\n");
      (void)load_preset("models", "self");
    });
    CHECK_THAT(self.message(), Catch::Contains("cycle"));
  }

  SECTION("inheriting a missing preset lists what exists") {
    box.write("builtin/models/orphan.toml", "inherits = \"ghost\"\n");
    Error e = expect_error([&] { (void)load_preset("models", "orphan"); });
    CHECK(e.code() == ErrorCode::not_found);
    CHECK_THAT(e.message(), Catch::Contains("'ghost'") && Catch::Contains("base, mid, orphan, top"));
  }

  SECTION("inherits must be a string") {
    box.write("builtin/models/num.toml", "inherits = 3\n");
    CHECK(expect_error([&] { (void)load_preset("models", "num"); }).code() == ErrorCode::invalid_argument);
  }
}

TEST_CASE("preset errors: unknown name lists the available ones, syntax errors give line and column",
          "[unit][core]") {
  PresetSandbox box;
  box.write("builtin/train/tiny.toml", "[train]\nlr = 1e-4\n");
  box.write("builtin/train/small.toml", "[train]\nlr = 1e-4\n");
  Error unknown = expect_error([&] { (void)load_preset("train", "huge"); });
  CHECK(unknown.code() == ErrorCode::not_found);
  CHECK(unknown.subject() == "train/huge");
  CHECK_THAT(unknown.message(), Catch::Contains("available: small, tiny"));

  fs::path broken = box.write("builtin/train/broken.toml", "[train]\nlr = 1e-4\nsteps = = 3\n");
  Error syntax = expect_error([&] { (void)load_preset("train", "broken"); });
  CHECK(syntax.code() == ErrorCode::format);
  CHECK(syntax.subject() == broken.string());
  CHECK_THAT(syntax.message(), Catch::StartsWith("invalid TOML at line 3, column"));
}

TEST_CASE("a loaded preset applies through the registry, unknown keys name the file", "[unit][core]") {
  PresetSandbox box;
  ParamRegistry r;
  ParamSpec lr;
  lr.key = "train.lr";
  lr.flag = "--lr";
  lr.type = ParamType::real;
  lr.default_value = 1.0;
  r.add(lr);
  ParamSpec size;
  size.key = "data.size";
  size.type = ParamType::size2d;
  r.add(size);

  box.write("builtin/train/good.toml", "description = \"ok\"\n[train]\nlr = 0.5\n[data]\nsize = \"16x8\"\n");
  fs::path bad = box.write("builtin/train/bad.toml", "inherits = \"good\"\n[train]\nlearning_rate = 0.1\n");

  ParamValues v(r);
  apply_preset_layer(v, load_preset("train", "good"), ParamSource::preset,
                     find_preset("train", "good")->path.string());
  CHECK(v.get_real("train.lr") == 0.5);
  CHECK(v.get_size2d("data.size") == Size2D{16, 8});

  Error e = expect_error([&] {
    apply_preset_layer(v, load_preset("train", "bad"), ParamSource::preset,
                       find_preset("train", "bad")->path.string());
  });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK(e.subject() == bad.string());
  CHECK_THAT(e.message(), Catch::Contains("unknown key 'train.learning_rate'"));
}

TEST_CASE("saved user presets round-trip and replace atomically", "[unit][core]") {
  PresetSandbox box;
  nlohmann::json values = {{"train.lr", 2e-5},
                           {"train", {{"steps", 100}, {"tags", {"a", "b"}}}},
                           {"data", {{"size", "64x64"}, {"flip", true}}},
                           {"description", "saved from the studio"}};
  fs::path path = save_user_preset("train", "my-run", values);
  CHECK(path == user_preset_dir() / "train" / "my-run.toml");
  std::optional<PresetRef> ref = find_preset("train", "my-run");
  REQUIRE(ref);
  CHECK(ref->location == PresetLocation::user);

  nlohmann::json loaded = load_preset("train", "my-run");
  CHECK(loaded["train"]["lr"].get<double>() == Approx(2e-5));
  CHECK(loaded["train"]["steps"] == 100);
  CHECK(loaded["train"]["tags"] == nlohmann::json::array({"a", "b"}));
  CHECK(loaded["data"]["size"] == "64x64");
  CHECK(loaded["data"]["flip"] == true);
  CHECK(loaded["description"] == "saved from the studio");

  save_user_preset("train", "my-run", {{"train", {{"steps", 7}}}});
  CHECK(load_preset("train", "my-run") == nlohmann::json{{"train", {{"steps", 7}}}});
  CHECK(expect_error([&] {
          (void)save_user_preset("train", "x", {{"a", nullptr}});
        }).code() == ErrorCode::invalid_argument);
  CHECK(expect_error([&] {
          (void)save_user_preset("train", "a/b", {{"a", 1}});
        }).code() == ErrorCode::invalid_argument);
}

TEST_CASE("json files: errors give the position, writes are atomic", "[unit][core]") {
  test::TempDir dir;
  fs::path good = dir / "good.json";
  write_json_atomic(good, {{"a", 1}, {"b", {1, 2}}});
  CHECK(read_json_file(good) == nlohmann::json{{"a", 1}, {"b", {1, 2}}});

  fs::path bad = dir / "bad.json";
  test::write_bytes(bad, "{\n  \"a\": 1,\n  \"b\": ]\n}\n");
  Error e = expect_error([&] { (void)read_json_file(bad); });
  CHECK(e.code() == ErrorCode::format);
  CHECK(e.subject() == bad.string());
  CHECK_THAT(e.message(), Catch::StartsWith("invalid JSON at line 3, column 8"));
  CHECK(expect_error([&] { (void)read_json_file(dir / "missing.json"); }).code() == ErrorCode::not_found);
}

TEST_CASE("a server's job reads preset files only inside the server's roots", "[unit][core]") {
  test::TempDir root, elsewhere;
  std::ofstream(root / "inside.toml") << "[train]\nlr = 0.5\n";
  std::ofstream(elsewhere / "outside.toml") << "[train]\nlr = 0.5\n";
  set_job_confinement(PathConfinement({root.path()}, {}));
  CHECK(load_preset_file(root / "inside.toml", "train")["train"]["lr"] == 0.5);
  const Error outside =
      test::expect_error([&] { (void)load_preset_file(elsewhere / "outside.toml", "train"); });
  set_job_confinement(std::nullopt);  // a terminal again: every file
  CHECK(outside.code() == ErrorCode::forbidden);
  CHECK(std::string(outside.what()).find("outside.toml") != std::string::npos);
  CHECK(load_preset_file(elsewhere / "outside.toml", "train")["train"]["lr"] == 0.5);
}

TEST_CASE("a presets listing describes every kind in name order and names a broken file's problem",
          "[unit][core]") {
  PresetSandbox box;
  box.write("builtin/models/mugv-10b.toml", "description = \"ten\"\n[dit]\nhidden = 3456\n");
  box.write("builtin/models/mugv-1b.toml", "description = \"one\"\n[dit]\nhidden = 1536\n");
  box.write("builtin/models/mugv-4b.toml", "description = \"four\"\n[dit]\nhidden = 2560\n");
  box.write("builtin/curricula/short.toml", "[[stage]]\nuntil = 10\n");
  box.write("home/presets/models/wide.toml",
            "description = \"mine\"\ninherits = \"mugv-1b\"\n[dit]\ndepth = 2\n");
  const fs::path broken = box.write("home/presets/curricula/broken.toml", "[[stage]\nuntil = 10\n");
  box.write("builtin/not a kind/x.toml", "a = 1\n");  // a folder no kind can be named after: skipped

  // Digits compare as numbers: the sizes come in order.
  std::vector<PresetListing> models = describe_presets("models");
  REQUIRE(models.size() == 4);
  CHECK(models[0].ref.name == "mugv-1b");
  CHECK(models[1].ref.name == "mugv-4b");
  CHECK(models[2].ref.name == "mugv-10b");
  CHECK(models[2].description == "ten");
  const PresetListing& wide = models[3];
  CHECK(wide.ref.name == "wide");
  CHECK(wide.ref.location == PresetLocation::user);
  CHECK(wide.problem.empty());
  CHECK(wide.values["dit"]["hidden"] == 1536);  // inherited, resolved
  CHECK(wide.values["dit"]["depth"] == 2);
  const nlohmann::json record = to_json(wide);
  CHECK(record["kind"] == "models");
  CHECK(record["location"] == "user");
  CHECK(record["description"] == "mine");
  CHECK(record["values"] == wide.values);
  CHECK_FALSE(record.contains("problem"));

  // Every kind (sorted), the broken file listed with its problem instead of failing the listing.
  std::vector<PresetListing> all = describe_presets();
  REQUIRE(all.size() == 6);
  CHECK(all[0].ref.kind == "curricula");
  CHECK(all[0].ref.name == "broken");
  CHECK(all[0].problem.find(broken.string()) != std::string::npos);
  CHECK(all[0].values.is_null());
  CHECK(to_json(all[0]).contains("problem"));
  CHECK_FALSE(to_json(all[0]).contains("values"));
  CHECK(all[1].ref.name == "short");
  CHECK(all[2].ref.kind == "models");
  CHECK(describe_presets("vocabularies").empty());
  CHECK(expect_error([&] { (void)describe_presets("../etc"); }).code() == ErrorCode::invalid_argument);
}

TEST_CASE("a training preset's trainer mark: dit, vae or none, anything else unusable in listings",
          "[unit][core]") {
  PresetSandbox box;
  box.write("builtin/train/shared.toml", "[train]\nlr = 1e-3\n");
  box.write("builtin/train/vae.toml", "trainer = \"vae\"\n[train]\nsteps = 10\n");
  box.write("home/presets/train/child.toml", "inherits = \"vae\"\n");  // the mark is inherited
  const fs::path bad = box.write("home/presets/train/bad.toml", "trainer = \"gpu\"\n");
  box.write("home/presets/train/number.toml", "trainer = 3\n");

  CHECK(preset_trainer(load_preset("train", "shared"), "shared").empty());
  CHECK(preset_trainer(load_preset("train", "vae"), "vae") == "vae");
  CHECK(preset_trainer(load_preset("train", "child"), "child") == "vae");
  CHECK(preset_trainer(nlohmann::json{{"trainer", "dit"}}, "x") == "dit");
  const Error e = expect_error([&] { (void)preset_trainer(load_preset("train", "bad"), bad.string()); });
  CHECK(e.code() == ErrorCode::format);
  CHECK(e.subject() == bad.string());
  CHECK_THAT(e.message(), Catch::Contains("\"gpu\"") && Catch::Contains("\"dit\" or \"vae\""));

  for (const PresetListing& p : describe_presets("train")) {
    INFO(p.ref.name);
    const bool malformed = p.ref.name == "bad" || p.ref.name == "number";
    CHECK(p.problem.empty() != malformed);
    if (p.ref.name == "bad") CHECK_THAT(p.problem, Catch::Contains("bad.toml"));
  }
}

TEST_CASE(
    "TOML text: non-ASCII characters read back unchanged in every string form, and are refused elsewhere",
    "[unit][core]") {
  // toml++ 3.3 reaches undefined behaviour asking whether some of these characters are whitespace (after a
  // line-ending backslash, for one); parse_toml_text hands it only ASCII and must not change a value.
  const std::string text =
      "description = \"Café, Ωμέγα, Зебра, 𝄞 and a \\\"quote\\\"\"  # commentaire: déjà vu\n"
      "'clé' = 'littéral \\ Зебра'\n"
      "\"ключ\" = 1\n"
      "long = \"\"\"\nfirst line \\\n    Зебра after a line-ending backslash\n\"\"\"\n"
      "raw = '''\nΩ stays\n'''\n"
      "list = [\"é\", 'Ж']  # ñ\n"
      "quoted = 'say \"Ж\"'\n"
      "ends = '''Ω''''\n"
      "[table]\nkey = \"ü\"\n";
  const nlohmann::json j = parse_toml_text(text, "utf8.toml");
  CHECK(j["description"] == "Café, Ωμέγα, Зебра, 𝄞 and a \"quote\"");
  CHECK(j["clé"] == "littéral \\ Зебра");
  CHECK(j["ключ"] == 1);
  CHECK(j["long"] == "first line Зебра after a line-ending backslash\n");
  CHECK(j["raw"] == "Ω stays\n");
  CHECK(j["list"] == nlohmann::json{"é", "Ж"});
  CHECK(j["quoted"] == "say \"Ж\"");
  CHECK(j["ends"] == "Ω'");  // a multi-line literal's own quote before its delimiter
  CHECK(j["table"]["key"] == "ü");

  // Outside strings and comments, after a backslash or in a literal string left open, a non-ASCII character
  // is an error naming the place (the cases fuzzing found among them).
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c :
       {Case{"a = 1\nkey§ = 2\n", "line 2, column 4: a non-ASCII character outside"},
        Case{"a = 10h+r@s\"1Зes\"\n", "invalid TOML at line 1"},
        Case{"a = \"\\é\"\n", "line 1, column 6: a backslash before a non-ASCII character"},
        Case{"l = [1n'inﻹWWW\n", "line 1, column 8: a literal string that is not closed"},
        Case{"[\nx = 1\n", "invalid TOML at line 1"}, Case{"[[[1]]]\n", "invalid TOML at line 1"},
        // Positions after escaped characters are the file's, in characters: 'y' is the 12th of its line.
        Case{"x = \"café\" y\n", "invalid TOML at line 1, column 12"},
        Case{"a = 1\nx = 'café' y\n", "invalid TOML at line 2, column 12"},
        Case{"# Зебра Зебра\nx = \"\"\"Ω\nΩ\"\"\" y\n", "invalid TOML at line 3, column 6"}}) {
    INFO(c.text);
    const Error e = expect_error([&] { (void)parse_toml_text(c.text, "bad.toml"); });
    CHECK(e.code() == ErrorCode::format);
    CHECK(e.subject() == "bad.toml");
    CHECK_THAT(e.message(), Catch::Contains(c.message));
  }

  // Every preset this project ships still reads (its descriptions are plain text).
  for (const PresetListing& p : describe_presets()) {
    INFO(p.ref.path.string());
    if (p.ref.location == PresetLocation::builtin) CHECK(p.problem.empty());
  }
}
