#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and running MUG-V Studio needs.
# Idempotent: packages already present are skipped. Needs root or sudo.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # LibTorch (CPU) + Gloo for c10d, and an optimised BLAS (the reference BLAS is ~13x slower)
  libtorch-dev libgloo-dev libopenblas0-openmp
  # Qt6 studio
  qt6-base-dev qt6-charts-dev qt6-svg-dev libqt6opengl6-dev libgl-dev
  # media
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev ffmpeg
  # curation
  libopencv-dev
  # catalog, service
  libsqlite3-dev sqlite3 libzmq3-dev cppzmq-dev libsodium-dev
  # captioners talk HTTP to local vision-language model servers
  libcurl4-openssl-dev
  # the protocol fuzzer (libFuzzer) is built with clang; `make test` checks formatting with clang-format
  clang libclang-rt-14-dev clang-format
  # config + json
  nlohmann-json3-dev libtomlplusplus-dev
  # tokenizer (trained on captions for small presets; T5 spiece.model for large ones)
  libsentencepiece-dev
  # tests
  catch2 xvfb xauth
  # monitor
  libimgui-dev libglfw3-dev
  # cluster tests
  slurm-wlm munge
  # packaging
  dpkg-dev fakeroot file
)

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: must run as root or with sudo available" >&2; exit 1
  fi
fi

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq; then
  echo "install-deps: apt-get update failed (no network to the Debian mirror?)" >&2; exit 1
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  echo "install-deps: apt-get install failed for: ${missing[*]}" >&2; exit 1
fi
echo "install-deps: done"
