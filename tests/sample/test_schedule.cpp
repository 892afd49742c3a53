#include "sample/schedule.h"

#include "core/error.h"
#include "model/timestep_shift.h"

#include <catch2/catch.hpp>

#include <cmath>

using namespace mugv;

TEST_CASE("the Euler schedule runs from 1 to 0, strictly decreasing", "[unit][sample]") {
  for (double ratio : {0.5, 1.0, 2.236, 7.0}) {
    auto t = euler_timesteps(25, ratio);
    REQUIRE(t.size() == 26);
    CHECK(t.front() == 1.0);
    CHECK(t.back() == 0.0);
    for (size_t i = 1; i < t.size(); ++i) CHECK(t[i] < t[i - 1]);
  }
}

TEST_CASE("the shift warps uniform steps like the trainer's t' = r·t / (1 + (r − 1)·t)", "[unit][sample]") {
  auto flat = euler_timesteps(4, 1.0);
  CHECK(flat[1] == Approx(0.75));
  CHECK(flat[2] == Approx(0.5));
  auto shifted = euler_timesteps(4, 3.0);
  CHECK(shifted[2] == Approx(0.75));        // 3·0.5 / (1 + 2·0.5)
  CHECK(shifted[1] == Approx(2.25 / 2.5));  // 3·0.75 / (1 + 2·0.75)
  // r > 1 spends more steps at high noise: every inner time is later than the unshifted one.
  for (size_t i = 1; i + 1 < flat.size(); ++i) CHECK(shifted[i] > flat[i]);
  CHECK(shift_timestep(0.0, 7.0) == 0.0);
  CHECK(shift_timestep(1.0, 7.0) == Approx(1.0));
}

TEST_CASE("the shift ratio follows resolution and length", "[unit][sample]") {
  CHECK(timestep_shift_ratio(1, 512, 512, 512) == Approx(1.0));
  // The tiny starter clips: 64x64, 17 frames -> 5 latent frames, base 64.
  CHECK(timestep_shift_ratio(5, 64, 64, 64) == Approx(std::sqrt(5.0)));
  // MUG-V at 720p, 5 s: 14 latent frames, base 512 -> r ≈ 7 (docs/MUGV.md §4).
  CHECK(timestep_shift_ratio(14, 720, 1280, 512) == Approx(7.0).epsilon(0.05));
  CHECK_THROWS_AS(timestep_shift_ratio(0, 64, 64, 64), Error);
  CHECK_THROWS_AS(timestep_shift_ratio(5, 64, 64, 0), Error);
}

TEST_CASE("refine schedules start at the requested noise level", "[unit][sample]") {
  auto t = refine_timesteps(1, 0.3, 2.0);
  REQUIRE(t.size() == 2);
  CHECK(t[0] == 0.3);
  CHECK(t[1] == 0.0);
  auto t3 = refine_timesteps(3, 0.3, 2.0);
  REQUIRE(t3.size() == 4);
  for (size_t i = 1; i < t3.size(); ++i) CHECK(t3[i] < t3[i - 1]);
  CHECK_THROWS_AS(refine_timesteps(1, 0.0, 2.0), Error);
  CHECK_THROWS_AS(euler_timesteps(0, 1.0), Error);
  CHECK_THROWS_AS(euler_timesteps(5, -1.0), Error);
}
