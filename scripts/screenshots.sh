#!/usr/bin/env bash
# Retakes docs/screenshots from real work: a scratch home with a 24-clip starter dataset and a short
# VAE -> encode -> DiT chain run as jobs of a `mugv serve` (so the Runs page has jobs, stored metrics, a log and
# training samples, and the monitor a server with history), then the monitor under Xvfb while that server runs
# and the studio offscreen on its embedded server (`mugv-studio --screenshot-dir`). About 10 minutes on two cores.
#   scripts/screenshots.sh [BUILD] [OUT]     (defaults: build, docs/screenshots)
set -euo pipefail
BUILD=$(realpath "${1:-build}")
OUT=$(realpath -m "${2:-docs/screenshots}")
MUGV="$BUILD/bin/mugv"
for program in mugv mugv-studio mugv-monitor; do
  [ -x "$BUILD/bin/$program" ] || { echo "$BUILD/bin/$program: not built" >&2; exit 1; }
done
command -v xvfb-run >/dev/null || { echo "xvfb-run is needed for the monitor (apt-get install xvfb)" >&2; exit 1; }

export MUGV_HOME
MUGV_HOME=$(mktemp -d /tmp/mugv-shots.XXXXXX)
endpoint="ipc://$MUGV_HOME/shots.sock"
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$MUGV_HOME"
}
trap cleanup EXIT
mkdir -p "$OUT"

"$MUGV" make-dataset shapes --out "$MUGV_HOME/shapes" --count 24 --size 64 --frames 17 --fps 8 --seed 1 >/dev/null
"$MUGV" dataset import "$MUGV_HOME/shapes" --name shapes >/dev/null
"$MUGV" serve --listen "$endpoint" --home "$MUGV_HOME" >"$MUGV_HOME/serve.log" 2>&1 &
server_pid=$!
client() { "$MUGV" --server "$endpoint" "$@"; }
for _ in $(seq 50); do client jobs >/dev/null 2>&1 && break; sleep 0.2; done

# The job id is the first number `submit` prints.
submit() { client submit "$@" | grep -o '[0-9]\+' | head -n 1; }
vae=$(submit train-vae --preset tiny-vae --dataset shapes --run shots-vae --steps 400 --seed 0)
encode=$(submit --after "$vae" encode --dataset shapes --vae-run shots-vae)
dit=$(submit --after "$encode" train --preset tiny --dataset shapes --vae-run shots-vae --run shots-dit \
  --steps 600 --batch 16 --optimizer muon --lr 1.2e-3 --sample-every 200 --seed 0)
echo "jobs $vae -> $encode -> $dit on $endpoint (home $MUGV_HOME)"
client watch "$dit" >"$MUGV_HOME/watch.log" 2>&1 || { echo "the training job did not finish:" >&2; client logs "$dit" >&2; exit 1; }

xvfb-run -a -s "-screen 0 1280x800x24" "$BUILD/bin/mugv-monitor" --server "$endpoint" --window-size 1280x800 \
  --exit-after-ms 4000 --screenshot "$OUT/monitor.png"
kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
server_pid=

QT_QPA_PLATFORM=offscreen "$BUILD/bin/mugv-studio" --home "$MUGV_HOME" --screenshot-dir "$OUT"
echo "screenshots in $OUT"
