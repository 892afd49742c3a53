#!/usr/bin/env bash
# Opens the studio on its embedded backend (`mugv serve` on an ipc socket under $MUGV_HOME, default
# ~/.local/share/mugv). On first launch it offers to create the starter dataset. Without a display it runs
# under Xvfb when xvfb-run is installed.
set -euo pipefail
BUILD=${1:-build}
STUDIO="$BUILD/bin/mugv-studio"
[ -x "$STUDIO" ] || { echo "$STUDIO: not built (configure with -DMUGV_BUILD_UI=ON)" >&2; exit 1; }
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ "${QT_QPA_PLATFORM:-}" != "offscreen" ]; then
  if command -v xvfb-run >/dev/null; then
    echo "no display: running the studio under Xvfb (set DISPLAY to see it)"
    exec xvfb-run -a "$STUDIO" "${@:2}"
  fi
  echo "no display (DISPLAY is not set) and no xvfb-run" >&2
  exit 1
fi
exec "$STUDIO" "${@:2}"
