#!/usr/bin/env bash
# Gathers what a GPU machine may lack for the compute-only build (README "Building for a GPU machine") from this
# machine's Debian packages into .device-deps/ (include/, lib/): toml++ and nlohmann/json (header-only),
# libsodium and SentencePiece (headers and shared libraries, whose only dependencies are the C and C++ runtimes).
# Carry the folder with the tree; CMake searches it when pkg-config does not find a package
# (cmake/MugvDependencies.cmake). About 5 MB.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/.device-deps"
libdir=/usr/lib/x86_64-linux-gnu
rm -rf "$out"
mkdir -p "$out/include" "$out/lib"
for header in toml++ nlohmann sodium sodium.h sentencepiece_processor.h sentencepiece_trainer.h; do
  [ -e "/usr/include/$header" ] || { echo "device-deps: /usr/include/$header missing (bash scripts/install-deps.sh)" >&2; exit 1; }
  cp -r "/usr/include/$header" "$out/include/"
done
for lib in libsodium libsentencepiece libsentencepiece_train; do
  # The versioned file under its SONAME and the unversioned link name the linker looks for.
  real="$(readlink -f "$libdir/$lib.so")"
  soname="$(objdump -p "$real" | awk '/SONAME/ { print $2 }')"
  cp "$real" "$out/lib/$soname"
  ln -sf "$soname" "$out/lib/$lib.so"
done
du -sh "$out" | awk '{ print "device-deps: " $1 " in .device-deps/" }'
