#!/usr/bin/env bash
# The headless pipeline that exists so far, on the starter dataset:
# make the shapes dataset -> import it into a catalog -> probe a clip -> export a contact sheet and a gif.
set -euo pipefail
BUILD=${1:-build}
MUGV="$BUILD/bin/mugv"
DEMO=${MUGV_DEMO_DIR:-$PWD/out/demo}
export MUGV_HOME=${MUGV_HOME:-$DEMO/home}
rm -rf "$DEMO"
mkdir -p "$DEMO"

echo "== make the starter dataset"
"$MUGV" make-dataset shapes --out "$DEMO/shapes" --count 64 --size 64 --frames 17 --fps 8 --seed 1
echo "== import it into the catalog at $MUGV_HOME"
"$MUGV" dataset import "$DEMO/shapes" --name shapes
"$MUGV" dataset list
first=$(ls "$DEMO"/shapes/train/*.mp4 | head -1)
echo "== probe $first"
"$MUGV" probe "$first"
echo "== export"
"$MUGV" export "$first" --contact-sheet "$DEMO/contact_sheet.png" --tiles 8
"$MUGV" export "$first" --out "$DEMO/clip.gif" --size 128x128
"$MUGV" export "$first" --out "$DEMO/clip.webm"
echo
echo "demo outputs in $DEMO:"
ls -la "$DEMO"
