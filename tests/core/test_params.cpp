#include "core/param_schema.h"
#include "core/params.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <functional>
#include <map>

using namespace mugv;
using mugv::test::expect_error;

namespace {

ParamRegistry make_registry() {
  ParamRegistry r;
  auto add = [&](std::string key, std::string flag, ParamType type, nlohmann::json def,
                 std::string env = {}) -> ParamSpec {
    ParamSpec s;
    s.key = std::move(key);
    s.flag = std::move(flag);
    s.type = type;
    s.default_value = std::move(def);
    s.env = std::move(env);
    s.group = "training";
    s.help = "help for " + s.key;
    return s;
  };
  ParamSpec lr = add("train.lr", "--lr", ParamType::real, 1e-5, "MUGV_LR");
  lr.min_value = 0.0;
  lr.max_value = 1.0;
  r.add(lr);
  ParamSpec steps = add("train.steps", "--steps", ParamType::integer, 1000, "MUGV_STEPS");
  steps.min_value = 1;
  r.add(steps);
  r.add(add("train.ema", "--ema", ParamType::boolean, true));
  r.add(add("train.name", "--name", ParamType::text, "run"));
  r.add(add("data.root", "--data", ParamType::path, nullptr));
  ParamSpec precision = add("train.precision", "--precision", ParamType::choice, "fp32", "MUGV_PRECISION");
  precision.choices = {"fp32", "bf16", "fp16"};
  r.add(precision);
  ParamSpec size = add("data.size", "--size", ParamType::size2d, "64x64");
  size.min_value = 8;
  size.group = "data";
  r.add(size);
  ParamSpec gpus = add("parallel.gpus", "--gpus", ParamType::list, nlohmann::json::array());
  gpus.item_type = ParamType::integer;
  gpus.min_value = 0;
  gpus.group = "parallel";
  r.add(gpus);
  ParamSpec tags = add("train.tags", "--tags", ParamType::list, nlohmann::json::array({"a"}));
  r.add(tags);
  r.add(add("model.hidden", "", ParamType::integer, 64));  // preset-only, no flag
  return r;
}

CommandLine parse(const ParamRegistry& r, std::vector<std::string> args) {
  return parse_command_line(r, args);
}

}  // namespace

TEST_CASE("param enums round-trip through their names", "[unit][core]") {
  for (int i = 0; i <= static_cast<int>(ParamType::list); ++i) {
    auto t = static_cast<ParamType>(i);
    CHECK(param_type_from_string(to_string(t)) == t);
  }
  for (int i = 0; i <= static_cast<int>(ParamSource::command_line); ++i) {
    auto s = static_cast<ParamSource>(i);
    CHECK(param_source_from_string(to_string(s)) == s);
  }
  CHECK_FALSE(param_type_from_string("float"));
  CHECK_FALSE(param_source_from_string("nowhere"));
}

TEST_CASE("registry rejects malformed specs and finds by key and flag", "[unit][core]") {
  ParamRegistry r = make_registry();
  REQUIRE(r.find_by_key("train.lr"));
  CHECK(r.find_by_flag("--lr")->key == "train.lr");
  CHECK(r.find_by_flag("--lr=0.1")->key == "train.lr");
  CHECK(r.find_by_key("train.nope") == nullptr);
  CHECK(r.find_by_flag("--nope") == nullptr);
  CHECK(display_label(*r.find_by_key("train.lr")) == "lr");

  ParamSpec dup;
  dup.key = "train.lr";
  dup.flag = "--lr2";
  dup.type = ParamType::real;
  CHECK(expect_error([&] { r.add(dup); }).code() == ErrorCode::internal);
  ParamSpec clash;
  clash.key = "train";
  clash.type = ParamType::text;
  CHECK(expect_error([&] { r.add(clash); }).code() == ErrorCode::internal);
  ParamSpec bad_default;
  bad_default.key = "x.y";
  bad_default.type = ParamType::integer;
  bad_default.default_value = "ten";
  CHECK(expect_error([&] { r.add(bad_default); }).code() == ErrorCode::internal);
  ParamSpec no_choices;
  no_choices.key = "x.z";
  no_choices.type = ParamType::choice;
  CHECK(expect_error([&] { r.add(no_choices); }).code() == ErrorCode::internal);
  ParamSpec bad_flag;
  bad_flag.key = "x.w";
  bad_flag.flag = "-w";
  bad_flag.type = ParamType::text;
  CHECK(expect_error([&] { r.add(bad_flag); }).code() == ErrorCode::internal);
}

TEST_CASE("command line parses every type and both flag spellings", "[unit][core]") {
  ParamRegistry r = make_registry();
  CommandLine cl =
      parse(r, {"input.mp4", "--lr", "0.001", "--steps=20", "--no-ema", "--name", "my run", "--data", "/d",
                "--precision=bf16", "--size", "320x240", "--gpus", "0,1, 3", "--tags=", "-", "--", "--lr"});
  ParamValues v(r);
  apply_command_line(v, cl);
  CHECK(v.get_real("train.lr") == Approx(0.001));
  CHECK(v.get_int("train.steps") == 20);
  CHECK(v.get_bool("train.ema") == false);
  CHECK(v.get_text("train.name") == "my run");
  CHECK(v.get_text("data.root") == "/d");
  CHECK(v.get_text("train.precision") == "bf16");
  CHECK(v.get_size2d("data.size") == Size2D{320, 240});
  CHECK(v.get_int_list("parallel.gpus") == std::vector<int64_t>{0, 1, 3});
  CHECK(v.get_text_list("train.tags").empty());
  CHECK(cl.positional == std::vector<std::string>{"input.mp4", "-", "--lr"});
  CHECK(v.entry("train.steps")->origin == "--steps");

  SECTION("boolean flag alone means true, =false means false, later flags win") {
    ParamValues w(r);
    apply_command_line(w, parse(r, {"--no-ema", "--ema"}));
    CHECK(w.get_bool("train.ema"));
    apply_command_line(w, parse(r, {"--ema=false"}));
    CHECK_FALSE(w.get_bool("train.ema"));
    apply_command_line(w, parse(r, {"--ema=yes"}));
    CHECK(w.get_bool("train.ema"));
  }
}

TEST_CASE("a list flag given more than once adds to the list", "[unit][core]") {
  const ParamRegistry r = make_registry();
  CommandLine cl = parse(r, {"--gpus", "0,1", "--steps", "5", "--gpus=3", "--tags", "x"});
  REQUIRE(cl.values.size() == 3);
  CHECK(cl.values[0].key == "parallel.gpus");
  CHECK(cl.values[0].value == nlohmann::json::array({0, 1, 3}));
  CHECK(cl.values[2].value == nlohmann::json::array({"x"}));
  CHECK_THROWS_AS(parse(r, {"--gpus", "0", "--gpus", "-1"}), Error);  // each repetition is checked
}

TEST_CASE("command line errors are usage errors naming the flag and the problem", "[unit][core]") {
  ParamRegistry r = make_registry();
  struct Case {
    std::vector<std::string> args;
    std::string subject;
    std::string problem_part;
  };
  std::vector<Case> cases = {
      {{"--lr", "abc"}, "--lr", "expected a number, got 'abc'"},
      {{"--lr=2"}, "--lr", "must be at most 1, got 2"},
      {{"--lr", "-0.5"}, "--lr", "must be at least 0"},
      {{"--steps", "1.5"}, "--steps", "expected an integer, got '1.5'"},
      {{"--steps", "0"}, "--steps", "must be at least 1"},
      {{"--precision", "int4"}, "--precision", "must be one of fp32, bf16, fp16; got 'int4'"},
      {{"--size", "64"}, "--size", "expected a size like 64x64"},
      {{"--size", "4x4"}, "--size", "each dimension must be at least 8"},
      {{"--gpus", "0,x"}, "--gpus", "item 2: expected an integer, got 'x'"},
      {{"--ema=maybe"}, "--ema", "expected true or false"},
      {{"--no-ema=1"}, "--no-ema", "takes no value"},
      {{"--lr"}, "--lr", "expects a value"},
      {{"--name", "--lr", "1"}, "--name", "expects a value"},
      {{"--data="}, "--data", "empty string"},
      {{"--name", "caf\xE9"}, "--name", "is not UTF-8 text: 'caf\xEF\xBF\xBD'"},
      {{"--data", "/videos/caf\xE9"}, "--data", "is not UTF-8 text"},
      {{"--tags", "ok,caf\xE9"}, "--tags", "item 2: is not UTF-8 text"},
      {{"--lrr", "1"}, "--lrr", "unknown option; did you mean --lr?"},
      {{"--no-name"}, "--no-name", "unknown option"},
      {{"--hidden", "3"}, "--hidden", "unknown option"},
  };
  for (const Case& c : cases) {
    INFO(c.args[0]);
    Error e = expect_error([&] { (void)parse(r, c.args); });
    CHECK(e.code() == ErrorCode::usage);
    CHECK(e.subject() == c.subject);
    CHECK_THAT(e.message(), Catch::Contains(c.problem_part));
  }
}

TEST_CASE("resolve applies defaults < preset < user file < environment < command line", "[unit][core]") {
  ParamRegistry r = make_registry();
  std::map<std::string, std::string> env{{"MUGV_LR", "0.004"}, {"MUGV_STEPS", "40"}, {"UNRELATED", "x"}};
  ParamLayers layers;
  layers.preset = {{"train", {{"lr", 0.001}, {"steps", 10}, {"name", "preset-run"}, {"precision", "bf16"}}},
                   {"model", {{"hidden", 128}}},
                   {"description", "a test preset"}};
  layers.preset_origin = "presets/train/test.toml";
  layers.user = {{"train.lr", 0.002}, {"train", {{"steps", 20}}}, {"data", {{"size", {32, 16}}}}};
  layers.user_origin = "/home/u/my.toml";
  layers.environment = [&](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  layers.command_line = parse(r, {"--lr", "0.005"});

  ParamValues v = resolve(r, layers);
  CHECK(v.get_real("train.lr") == Approx(0.005));
  CHECK(v.source_of("train.lr") == ParamSource::command_line);
  CHECK(v.get_int("train.steps") == 40);
  CHECK(v.source_of("train.steps") == ParamSource::environment);
  CHECK(v.entry("train.steps")->origin == "MUGV_STEPS");
  CHECK(v.get_size2d("data.size") == Size2D{32, 16});
  CHECK(v.source_of("data.size") == ParamSource::user_file);
  CHECK(v.entry("data.size")->origin == "/home/u/my.toml");
  CHECK(v.get_text("train.name") == "preset-run");
  CHECK(v.source_of("train.name") == ParamSource::preset);
  CHECK(v.get_int("model.hidden") == 128);
  CHECK(v.get_bool("train.ema"));
  CHECK(v.source_of("train.ema") == ParamSource::builtin_default);
  CHECK_FALSE(v.has("data.root"));
  CHECK(v.source_of("data.root") == ParamSource::unknown);

  nlohmann::json nested = v.to_json();
  CHECK(nested["train"]["lr"].get<double>() == Approx(0.005));
  CHECK(nested["data"]["size"] == "32x16");
  CHECK_THAT(v.explain(), Catch::Contains("train.steps = 40  (environment: MUGV_STEPS)"));

  SECTION("each layer alone overrides the one below") {
    ParamLayers only_user = layers;
    only_user.command_line = {};
    only_user.environment = nullptr;
    ParamValues u = resolve(r, only_user);
    CHECK(u.get_real("train.lr") == Approx(0.002));
    CHECK(u.source_of("train.lr") == ParamSource::user_file);
    only_user.user = nullptr;
    ParamValues p = resolve(r, only_user);
    CHECK(p.get_real("train.lr") == Approx(0.001));
    CHECK(p.source_of("train.lr") == ParamSource::preset);
    only_user.preset = nullptr;
    ParamValues d = resolve(r, only_user);
    CHECK(d.get_real("train.lr") == Approx(1e-5));
    CHECK(d.source_of("train.lr") == ParamSource::builtin_default);
  }

  SECTION("bad environment values name the variable") {
    env["MUGV_PRECISION"] = "fp8";
    Error e = expect_error([&] { (void)resolve(r, layers); });
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(e.subject() == "MUGV_PRECISION");
  }
}

TEST_CASE("preset layers reject unknown keys and wrong types naming file and key", "[unit][core]") {
  ParamRegistry r = make_registry();
  ParamValues v(r);
  Error unknown = expect_error([&] {
    apply_preset_layer(v, {{"train", {{"lrr", 0.1}}}}, ParamSource::preset, "presets/train/x.toml");
  });
  CHECK(unknown.code() == ErrorCode::invalid_argument);
  CHECK(unknown.subject() == "presets/train/x.toml");
  CHECK_THAT(unknown.message(), Catch::Contains("unknown key 'train.lrr'") && Catch::Contains("train.lr"));

  Error wrong_type = expect_error([&] {
    apply_preset_layer(v, {{"train", {{"steps", "ten"}}}}, ParamSource::user_file, "my.toml");
  });
  CHECK(wrong_type.code() == ErrorCode::invalid_argument);
  CHECK(wrong_type.subject() == "my.toml");
  CHECK_THAT(wrong_type.message(), Catch::Contains("train.steps: expected an integer"));

  // Reals accept integers from files; integers do not accept reals.
  apply_preset_layer(v, {{"train", {{"lr", 0}}}}, ParamSource::preset, "p.toml");
  CHECK(v.get_real("train.lr") == 0.0);
  CHECK(expect_error([&] {
          apply_preset_layer(v, {{"train", {{"steps", 2.5}}}}, ParamSource::preset);
        }).code() == ErrorCode::invalid_argument);
}

TEST_CASE("typed getters guard against unregistered keys and type mix-ups", "[unit][core]") {
  ParamRegistry r = make_registry();
  ParamValues v = resolve(r, ParamLayers{});
  CHECK(expect_error([&] { (void)v.get_int("train.missing"); }).code() == ErrorCode::internal);
  CHECK(expect_error([&] { (void)v.has("train.missing"); }).code() == ErrorCode::internal);
  CHECK(expect_error([&] { (void)v.get_int("train.lr"); }).code() == ErrorCode::internal);
  CHECK(expect_error([&] { (void)v.get_text_list("parallel.gpus"); }).code() == ErrorCode::internal);
  CHECK(expect_error([&] { v.set("nope", 1, ParamSource::preset); }).code() == ErrorCode::internal);
  Error unset = expect_error([&] { (void)v.get_text("data.root"); });
  CHECK(unset.code() == ErrorCode::invalid_argument);
  CHECK(unset.subject() == "--data");
}

TEST_CASE("help text lists every flag by group with defaults, choices and env vars", "[unit][core]") {
  ParamRegistry r = make_registry();
  std::string help = r.help_text();
  CHECK_THAT(help, Catch::StartsWith("training:\n"));
  CHECK_THAT(help, Catch::Contains("--lr X") &&
                       Catch::Contains("help for train.lr (default: 1e-05; range: 0..1; env: MUGV_LR)"));
  CHECK_THAT(help, Catch::Contains("--ema, --no-ema"));
  CHECK_THAT(help, Catch::Contains("--precision {fp32|bf16|fp16}"));
  CHECK_THAT(help, Catch::Contains("\ndata:\n  --size WxH"));
  CHECK(help.find("model.hidden") == std::string::npos);
  CHECK(r.groups() == std::vector<std::string>{"training", "data", "parallel"});
}

TEST_CASE("size2d parsing", "[unit][core]") {
  CHECK(parse_size2d("1280x720") == Size2D{1280, 720});
  CHECK(parse_size2d("64X32") == Size2D{64, 32});
  CHECK_FALSE(parse_size2d("0x10"));
  CHECK_FALSE(parse_size2d("-4x10"));
  CHECK_FALSE(parse_size2d("10x"));
  CHECK_FALSE(parse_size2d("10x10x3"));
  CHECK(to_string(Size2D{3, 4}) == "3x4");
}

TEST_CASE("a path parameter's bare names mean folders under MUGV_HOME where the spec says so",
          "[unit][core]") {
  mugv::test::TempDir home("mugv-names");
  const char* before = std::getenv("MUGV_HOME");
  const std::string saved = before ? before : "";
  ::setenv("MUGV_HOME", home.path().c_str(), 1);
  ParamSpec model;
  model.key = "generate.model";
  model.type = ParamType::path;
  model.names_under_home = "models";
  CHECK(resolve_path_value(model, "MUG-V-10B") == (home.path() / "models" / "MUG-V-10B").string());
  CHECK(resolve_path_value(model, "/data/MUG-V-10B") == "/data/MUG-V-10B");
  CHECK(resolve_path_value(model, "here/MUG-V") == "here/MUG-V");
  ParamSpec plain = model;
  plain.names_under_home.clear();
  CHECK(resolve_path_value(plain, "MUG-V-10B") == "MUG-V-10B");
  if (before)
    ::setenv("MUGV_HOME", saved.c_str(), 1);
  else
    ::unsetenv("MUGV_HOME");
}

TEST_CASE("the registry as JSON keeps every spec's type, default, bounds, choices and help", "[unit][core]") {
  const ParamRegistry r = make_registry();
  const nlohmann::json specs = param_registry_to_json(r);
  REQUIRE(specs.size() == r.specs().size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& original = r.specs()[i];
    const ParamSpec back = param_spec_from_json(specs[i]);
    CHECK(back.key == original.key);
    CHECK(back.flag == original.flag);
    CHECK(back.type == original.type);
    CHECK(back.default_value == original.default_value);
    CHECK(back.help == original.help);
    CHECK(back.group == original.group);
    CHECK(back.choices == original.choices);
    CHECK(back.min_value == original.min_value);
    CHECK(back.max_value == original.max_value);
    CHECK(back.item_type == original.item_type);
  }
  const nlohmann::json& lr = specs[0];
  CHECK(lr["min"] == 0.0);
  CHECK(lr["max"] == 1.0);
  CHECK(specs[1]["max"].is_null());  // unbounded above
  CHECK(!lr.contains("env"));        // the server's own environment is not a client's business
}

TEST_CASE("a spec read from JSON is refused naming its key and the problem", "[unit][core]") {
  nlohmann::json good = param_spec_to_json(make_registry().specs()[0]);
  auto problem = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json bad = good;
    edit(bad);
    return std::string(expect_error([&] { (void)param_spec_from_json(bad); }).what());
  };
  CHECK_THAT(problem([](nlohmann::json& j) { j["type"] = "decimal"; }),
             Catch::Contains("train.lr") && Catch::Contains("unknown type 'decimal'"));
  CHECK_THAT(problem([](nlohmann::json& j) { j["min"] = 2.0; }), Catch::Contains("min 2.0 is above max 1.0"));
  CHECK_THAT(problem([](nlohmann::json& j) { j["max"] = "big"; }), Catch::Contains("'max' must be a number"));
  CHECK_THAT(problem([](nlohmann::json& j) { j["type"] = "choice"; }),
             Catch::Contains("a choice without choices"));
  CHECK_THAT(problem([](nlohmann::json& j) { j["choices"] = {1, 2}; }), Catch::Contains("list of strings"));
  CHECK_THAT(problem([](nlohmann::json& j) { j.erase("key"); }), Catch::Contains("'key' is missing"));
  CHECK_THAT(std::string(expect_error([] { (void)param_spec_from_json(nlohmann::json::array()); }).what()),
             Catch::Contains("expected an object"));
}
