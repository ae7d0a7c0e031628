#!/usr/bin/env bash
# `make demo`: the main job on bundled real footage, then `locate` on bundled photos.
#
#   deploy/demo.sh [MODEL] [OUT]
#
# MODEL is fetched with `lookout models fetch`. Where the network cannot reach the model hub, the demo falls back
# to the bundled tiny test model (random weights) and says so loudly: its boxes are not meaningful.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL="${1:-owlvit-base-patch32}"
OUT="${2:-out/demo}"
BIN=target/release/lookout
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.deps/onnxruntime/libonnxruntime.so}"

# The test model's random scores pass the default threshold almost everywhere (hundreds of events on this clip);
# with it the demo asks for a higher one, so that its events and clips stay few enough to look at.
THRESHOLD=()
if "$BIN" models fetch "$MODEL"; then
  M="$MODEL"
else
  M=models/tiny/owlvit
  THRESHOLD=(--threshold 0.65)
  cat >&2 <<'BANNER'

  ######################################################################################
  #  Could not download the real model (no network to the model hub?).                #
  #  Falling back to the bundled TEST MODEL: random weights, boxes are not meaningful. #
  #  Everything else (decode, tracking, events, video) runs for real.                  #
  ######################################################################################

BANNER
fi

mkdir -p "$OUT"
if "$BIN" watch --help >/dev/null 2>&1; then
  "$BIN" watch tests/fixtures/bikes.mp4 -m "$M" \
    -q "a person riding a bicycle" -q "a car" \
    --out "$OUT/watch" --annotate "${THRESHOLD[@]}"
  echo "watch: annotated video and events in $OUT/watch/" >&2
fi
"$BIN" locate tests/fixtures/astronaut.png tests/fixtures/coffee.png tests/fixtures/grace_hopper.png -m "$M" \
  -q "an astronaut" -q "a cup of coffee" -q "a man in a uniform" --out "$OUT/locate"
echo "locate: crops and annotated images in $OUT/locate/" >&2
