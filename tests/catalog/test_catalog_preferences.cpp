// Preference labels (catalog/preferences.h): pairs stored pending, labelled, undone; single labels replaced;
// the refusals; counts and filters; labels go with their generations. And the text clip filter of
// catalog/clips.h that --clip-filter uses.
#include "catalog/clips.h"
#include "catalog/generations.h"
#include "catalog/preferences.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

using namespace mugv;
using mugv::test::TempDir;

namespace {

int64_t generation(Catalog& catalog, uint64_t seed) {
  Generation g;
  g.prompt_text = "a red circle moving left on a black background";
  g.seed = seed;
  g.steps = 25;
  g.cfg_scale = 4;
  g.width = g.height = 64;
  g.frames = 17;
  g.output_path = "/tmp/v.mp4";
  return add_generation(catalog, g).id;
}

ErrorCode code_of(const std::function<void()>& fn) {
  return test::expect_error(fn).code();
}

}  // namespace

TEST_CASE("a preference pair is stored pending, labelled, undone, and goes with its generations",
          "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const int64_t a = generation(catalog, 1), b = generation(catalog, 2), c = generation(catalog, 3);
  const Preference p = add_preference_pair(catalog, a, b);
  CHECK(p.choice == PreferenceChoice::pending);
  CHECK(p.is_pair());
  CHECK(code_of([&] { (void)add_preference_pair(catalog, b, a); }) == ErrorCode::conflict);  // either order
  CHECK(code_of([&] { (void)add_preference_pair(catalog, a, a); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { (void)add_preference_pair(catalog, a, 999); }) == ErrorCode::not_found);
  const Preference q = add_preference_pair(catalog, a, c);

  PreferenceFilter pending;
  pending.pending = true;
  CHECK(list_preferences(catalog, pending).size() == 2);
  label_preference(catalog, p.id, PreferenceChoice::b, "human");
  label_preference(catalog, q.id, PreferenceChoice::skip, "auto:shapes");
  CHECK(list_preferences(catalog, pending).empty());
  const auto labelled = *get_preference(catalog, p.id);
  CHECK(labelled.choice == PreferenceChoice::b);
  CHECK(labelled.labeller == "human");
  CHECK(labelled.labelled_at_ms > 0);
  CHECK(labelled.winner_loser() == std::make_pair(b, a));
  CHECK_FALSE(get_preference(catalog, q.id)->winner_loser());  // skipped: no winner

  // A pair takes a, b or skip; a label needs its labeller.
  CHECK(code_of([&] { label_preference(catalog, p.id, PreferenceChoice::good, "human"); }) ==
        ErrorCode::invalid_argument);
  CHECK(code_of([&] { label_preference(catalog, p.id, PreferenceChoice::a, ""); }) ==
        ErrorCode::invalid_argument);
  CHECK(code_of([&] { label_preference(catalog, 999, PreferenceChoice::a, "human"); }) ==
        ErrorCode::not_found);

  // Filters by labeller: exactly, or by prefix.
  PreferenceFilter automatic;
  automatic.labeller = "auto:";
  REQUIRE(list_preferences(catalog, automatic).size() == 1);
  CHECK(list_preferences(catalog, automatic)[0].id == q.id);
  PreferenceFilter human;
  human.labeller = "human";
  // Undo: the last label of a person is cleared back to pending.
  const auto last = last_labelled(catalog, human);
  REQUIRE(last);
  CHECK(last->id == p.id);
  label_preference(catalog, last->id, PreferenceChoice::pending, "");
  CHECK(get_preference(catalog, p.id)->choice == PreferenceChoice::pending);
  CHECK(get_preference(catalog, p.id)->labeller.empty());
  CHECK_FALSE(last_labelled(catalog, human));

  // Single labels: good or bad, a new one replaces the old.
  CHECK(code_of([&] { (void)set_single_label(catalog, c, PreferenceChoice::a, "human"); }) ==
        ErrorCode::invalid_argument);
  (void)set_single_label(catalog, c, PreferenceChoice::good, "human");
  (void)set_single_label(catalog, c, PreferenceChoice::bad, "human");
  PreferenceFilter singles;
  singles.pairs = false;
  REQUIRE(list_preferences(catalog, singles).size() == 1);
  CHECK(list_preferences(catalog, singles)[0].choice == PreferenceChoice::bad);
  const PreferenceCounts counts = count_preferences(catalog);
  CHECK(counts.pending == 1);
  CHECK(counts.skipped == 1);
  CHECK(counts.bad == 1);
  CHECK(counts.good == 0);

  // Deleting a generation deletes the labels that use it.
  CHECK(delete_generation(catalog, a));
  CHECK(list_preferences(catalog, {}).size() == 1);  // c's single label stays
  CHECK(preference_choice_from_string("skip") == PreferenceChoice::skip);
  CHECK(std::string(to_string(PreferenceChoice::pending)) == "pending");
}

TEST_CASE("a clip filter written as text selects by decision, tag, reason and score ranges",
          "[catalog][unit]") {
  const ClipFilter f = parse_clip_filter("decision=keep, aesthetic>=5 ,tag=hq,motion<=2.5,reason~sharp");
  CHECK(f.decision == ClipDecision::keep);
  CHECK(f.aesthetic.min == 5.0);
  CHECK_FALSE(f.aesthetic.max);
  CHECK(f.motion.max == 2.5);
  CHECK(f.tag == "hq");
  CHECK(f.reason == "sharp");
  CHECK_FALSE(parse_clip_filter("").decision);
  for (const char* bad :
       {"colour=red", "aesthetic>5", "aesthetic>=x", "decision=maybe", "speed<=1", "tag="}) {
    INFO(bad);
    const Error e = test::expect_error([&] { (void)parse_clip_filter(bad); });
    CHECK(e.code() == ErrorCode::usage);
    CHECK_THAT(std::string(e.what()), Catch::Contains("--clip-filter"));
  }
}
