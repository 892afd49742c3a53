#!/usr/bin/env bash
# Runs every benchmark program that was built and prints its machine-readable result lines.
# Record the results (with the command and the machine) in docs/BENCHMARKS.md.
set -uo pipefail
BUILD=${1:-build}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(git rev-parse --short HEAD 2>/dev/null)"
status=0
for exe in $(find "$BUILD/bench" -maxdepth 2 -type f -name 'bench_*' -perm -u+x | sort); do
  echo "== $exe"
  "$exe" || { echo "FAILED: $exe"; status=1; }
done
exit $status
