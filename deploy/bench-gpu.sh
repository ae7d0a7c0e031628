#!/usr/bin/env bash
# Measures lookout on this machine's GPU (a Jetson, or a desktop NVIDIA GPU) and prints BENCHMARKS.md rows:
#   - model-only latency: the image embedder and the class head on one image (`lookout locate --timings`),
#     median and p90 over RUNS images after WARMUP discarded ones;
#   - end to end: frames per second through decode, scaling, inference, tracking and events (`lookout watch`)
#     for 1, 2 and 4 streams of the same H.264 video, read as files (as fast as the box goes: capacity, not
#     camera rate; divide by your cameras' fps to get how many cameras one box keeps up with);
#   - each for fp16 and fp32 when the device is TensorRT; engine build time once per precision.
#
#   deploy/bench-gpu.sh                                   # TensorRT, OWL-ViT B/32, a generated 1080p30 clip
#   deploy/bench-gpu.sh --device cuda --model owlv2-base-patch16 --video footage.mp4 --out rows.md
#
# Before measuring on a Jetson: `sudo nvpmodel -m 0` (the MAXN mode of your module) and `sudo jetson_clocks`;
# the mode is recorded in each row. Nothing else should run. The first run builds TensorRT engines (minutes per
# precision); the timings exclude it. Rows are appended to --out (default: printed only).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOOKOUT="${LOOKOUT:-}"
MODEL="owlvit-base-patch32"
DEVICE="tensorrt"
VIDEO=""
IMAGE="$ROOT/tests/fixtures/astronaut.png"
QUERY="a person"
RUNS=30
WARMUP=3
SECONDS_PER_RUN=60
STREAMS="1 2 4"
OUT=""

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF

options:
  --lookout PATH   the lookout binary (default: \$LOOKOUT, target/release/lookout, or lookout on PATH)
  --model NAME|DIR model (default $MODEL)
  --device DEV     tensorrt[:N], cuda[:N] or cpu (default $DEVICE)
  --video FILE     H.264/H.265 video for the end-to-end runs (default: a generated 60 s 1080p30 clip)
  --image FILE     image for the latency runs (default tests/fixtures/astronaut.png)
  --runs N         images timed per latency run (default $RUNS)
  --seconds S      longest end-to-end run (default $SECONDS_PER_RUN)
  --streams "1 2 4" stream counts (default "$STREAMS")
  --out FILE       append the rows to FILE (e.g. BENCHMARKS.md)
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --lookout) LOOKOUT="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --video) VIDEO="$2"; shift 2 ;;
    --image) IMAGE="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --streams) STREAMS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-gpu: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[bench-gpu] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if [ -z "$LOOKOUT" ]; then
  if [ -x "$ROOT/target/release/lookout" ]; then LOOKOUT="$ROOT/target/release/lookout"
  elif command -v lookout >/dev/null; then LOOKOUT="$(command -v lookout)"
  else die "no lookout binary: run 'make build' or pass --lookout PATH"; fi
fi
command -v python3 >/dev/null || die "python3 is needed to read lookout's JSON output"
[ -f "$IMAGE" ] || die "no image $IMAGE (--image FILE)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# What this machine is, for the rows.
machine() {
  if [ -r /proc/device-tree/model ]; then tr -d '\0' </proc/device-tree/model
  elif command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1
  else uname -m; fi
}
platform() {
  if [ -r /etc/nv_tegra_release ]; then
    head -n 1 /etc/nv_tegra_release | sed -E 's/^# (R[0-9]+) \(release\), REVISION: ([0-9.]+).*/L4T \1.\2/'
  else uname -r; fi
}
power_mode() {
  if command -v nvpmodel >/dev/null; then nvpmodel -q 2>/dev/null | head -n 1 | sed 's/NV Power Mode: //'
  else echo "-"; fi
}
MACHINE="$(machine)"
PLATFORM="$(platform)"
POWER="$(power_mode)"
VERSION="$("$LOOKOUT" --version | awk '{print $2}')"
DATE="$(date -u +%Y-%m-%d)"
say "machine: $MACHINE, $PLATFORM, power mode $POWER, lookout $VERSION, model $MODEL, device $DEVICE"

# A 60 s 1080p30 H.264 clip, encoded with the hardware encoder where there is one.
if [ -z "$VIDEO" ]; then
  VIDEO="$WORK/bench-1080p30.mp4"
  if gst-inspect-1.0 nvv4l2h264enc >/dev/null 2>&1; then
    enc="nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc bitrate=8000000 iframeinterval=60 ! h264parse"
  else
    enc="videoconvert ! x264enc speed-preset=ultrafast bitrate=8000 key-int-max=60 ! h264parse"
  fi
  say "generating a 60 s 1080p30 test clip ($VIDEO)"
  # shellcheck disable=SC2086 # $enc is a pipeline fragment: word splitting is intended
  gst-launch-1.0 -q videotestsrc num-buffers=1800 pattern=ball \
    ! video/x-raw,width=1920,height=1080,framerate=30/1 ! $enc ! mp4mux ! filesink location="$VIDEO" >/dev/null
fi
[ -f "$VIDEO" ] || die "no video $VIDEO (--video FILE)"

ROWS="$WORK/rows.md"
row() {
  # | date | machine | platform | power | lookout | model | device | precision | measure | streams | result |
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
    "$DATE" "$MACHINE" "$PLATFORM" "$POWER" "$VERSION" "$MODEL" "$DEVICE" "$1" "$2" "$3" "$4" | tee -a "$ROWS"
}

# The engine's batch range must hold one frame of each stream.
MAX_BATCH=1
for n in $STREAMS; do [ "$n" -gt "$MAX_BATCH" ] && MAX_BATCH="$n"; done

case "$DEVICE" in
  tensorrt*|trt*) PRECISIONS="fp16 fp32" ;;
  *) PRECISIONS="fp32" ;;
esac

for precision in $PRECISIONS; do
  fp16=false
  [ "$precision" = fp16 ] && fp16=true
  flags=(--device "$DEVICE" --trt-fp16 "$fp16" --trt-max-batch "$MAX_BATCH" -m "$MODEL")

  say "$precision: preparing (builds TensorRT engines the first time)"
  start=$(date +%s)
  "$LOOKOUT" models prepare "$MODEL" "${flags[@]}" >"$WORK/prepare.log" 2>&1 \
    || { cat "$WORK/prepare.log" >&2; die "lookout models prepare failed (output above)"; }
  row "$precision" "prepare (engine build or load)" "-" "$(( $(date +%s) - start )) s"

  say "$precision: model-only latency over $RUNS images"
  images=()
  for _ in $(seq 1 $((RUNS + WARMUP))); do images+=("$IMAGE"); done
  "$LOOKOUT" locate "${images[@]}" -q "$QUERY" --no-images --json --timings "${flags[@]}" \
    >/dev/null 2>"$WORK/locate.err" || { cat "$WORK/locate.err" >&2; die "lookout locate failed (output above)"; }
  latency="$(tail -n 1 "$WORK/locate.err" | python3 -c '
import json, statistics, sys
t = json.load(sys.stdin)
ms = sorted(t["infer_ms"][int(sys.argv[1]):])
p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
print(f"median {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms (n={len(ms)})")
' "$WARMUP")"
  row "$precision" "model-only latency, batch 1" "-" "$latency"

  for n in $STREAMS; do
    say "$precision: end to end, $n stream(s), up to $SECONDS_PER_RUN s"
    sources=()
    for _ in $(seq 1 "$n"); do sources+=("$VIDEO"); done
    "$LOOKOUT" watch "${sources[@]}" -q "$QUERY" --json --max-seconds "$SECONDS_PER_RUN" --no-wall-time \
      --out "$WORK/watch-$precision-$n" "${flags[@]}" >"$WORK/summary.json" 2>"$WORK/watch.err" \
      || { tail -n 20 "$WORK/watch.err" >&2; die "lookout watch failed (output above)"; }
    fps="$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
frames = sum(x["frames_processed"] for x in s["sources"])
wall = max(s["wall_seconds"], 1e-9)
streams = len(s["sources"])
p50 = s["inference"]["p50_ms"]
print(f"{frames / wall:.1f} fps in all, {frames / wall / streams:.1f} per stream; batch p50 {p50:.0f} ms ({frames} frames, {wall:.0f} s)")
' "$WORK/summary.json")"
    row "$precision" "end to end (decode to events)" "$n" "$fps"
  done
done

say "done; the rows:"
{
  echo "| date | machine | platform | power mode | lookout | model | device | precision | measure | streams | result |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  cat "$ROWS"
} | if [ -n "$OUT" ]; then tee -a "$OUT"; else cat; fi
