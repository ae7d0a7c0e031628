#!/usr/bin/env python3
"""Benchmark `lookout watch` on 1080p H.264 with the full-size OWL-ViT B/32 (run by `make bench-watch`).

One invocation measures, on this machine, with the same ONNX Runtime threads everywhere (--threads, passed as
`--intra-threads`; 0 = ONNX Runtime's choice, one per physical core):

  1. clips        out/bench/ (gitignored), made once with gst-launch-1.0 and reused:
                    bikes-1080p-250f.mp4   tests/fixtures/bikes.mp4 (640x272, 25 fps) scaled to 1920x1080, x264
                                           veryfast 8 Mbit/s, keyframe every 50: 250 frames, 10 s
                    bikes-1080p-50f.mp4    its first 50 frames (2 s), encoded the same way
                    bikes-640x272-10min.mp4  the bundled clip looped 60 times (concat, re-encoded): 15000 frames, 10 min
  2-3. ratio      end to end against inference alone, in --rounds (4) interleaved rounds (bench_pairs.py: the
                  machine's speed drifts by more than 10 % within minutes, so each e2e run is compared only with the
                  "alone" run of its own round, and the order alternates from round to round: alone, plain,
                  annotate; then annotate, plain, alone; ...):
                  - alone: the model on preprocessed tensors, `locate --timings` infer_ms (image_embedder.onnx +
                    class head, the image already resized and normalised) on a 1080p frame, median of --alone-n (25)
                    after one warm-up;
                  - e2e: `watch --every 1` with 5 queries on the 1080p 250-frame clip (decode, scale to 768x768 RGB
                    in GStreamer, inference, tracking, events), with --annotate (adds drawing and H.264 encoding of
                    the annotated 1080p video) and without; timed from the run's own /metrics (`--http
                    127.0.0.1:0`) over a --window (30 s) that starts at the 3rd inferred frame, then stopped:
                    time per frame = window seconds / frames inferred in it. Beside it, watch's own inference time
                    per frame over the same window (from the inference histogram): if the two are equal the
                    inference thread never waits for frames.
                  The report gives each round's ratio, the median (compared with the target) and the spread.
  4. decode only  `watch --decode-only` (decode, scale, track; the model never runs) with 1, 2 and 4 parallel
                  sources of the 1080p clip; and 1 source with --annotate (adds the full-size I420 frame, drawing, encoding).
  5. queries      the end-to-end run (without --annotate, so only the queries differ) with 1 and with 20 queries.
  6. memory       VmRSS / VmHWM of the lookout process, read from /proc/<pid>/status every second, during a replay
                  of the 10-minute clip (`--every 50 --annotate`: 300 inferences, full model), 5 queries, with
                  event clips on (every other run has `--no-clips`: the random-weight model's storm of events would
                  measure the clip writer, not the pipeline).

  7. cameras      live RTSP cameras from models/rtsp_loop_server.py (gst-rtsp-server under /usr/bin/python3, on
                  127.0.0.1, a free port): --cam-size (1280x720) H.264 at 25 fps, no B-frames, a key frame every
                  2 s, a CCTV-like clip of 4 x [10 s of bikes.mp4, 30 s of its last frame held still]; each
                  camera its own stream. `watch --fps 1` (--cam-fps) with 5 queries on N cameras, N = 1, 2, ...
                  (up to --cam-max, 6) until a run does not keep every camera, for each of fp32 and int8, without
                  and with the motion gate; a variant whose option this build lacks (`--precision`, `--motion`, read
                  from `lookout watch --help`) is reported as not available in this build. Each run: wait until
                  every camera has been inferred once, --cam-warm (10 s), then --cam-seconds (40 s: one cycle of
                  the clip) sampled from /metrics every second. A camera is KEPT when, over that window:
                    - it was handled at least 0.9 times per second of wall time (handled = inferred, plus frames the
                      motion gate passed over as still, never more than --fps a second),
                    - and at least 8 times in each 10 s of it (no stretch of starvation),
                    - its frame age at inference (decode -> inference, the summary's frame_age) has p95 <= 1 s (no
                      lag: live queues drop the oldest frame, so lag cannot grow, but it would show here),
                    - it did not reconnect or fail.
                  Reported: frames inferred per second (all cameras), per camera the lowest rate, the fewest per
                  10 s, the frame age, and the largest N at which every camera was kept. The cameras all start
                  together, so their moving spans coincide: the worst case for the gate.

Steady state of the queries and decode parts, by differencing: each of their figures runs twice, on the 250-frame clip and on
its 50-frame prefix, and
    time per frame = (wall_250 - wall_50) / (frames_250 - frames_50)
where wall is the summary's `wall_seconds` (from just after model load to the end). Everything paid once per run
(query encoding, the warm-up inference, pipeline start-up and preroll, draining, closing the MP4) cancels, and
only the 200 extra frames remain. Frames/s = 1 / time per frame. The summary's own inference figures (one batch =
preprocess + model + class head + selection, timed inside `watch`) are shown beside it: if `watch`'s inference
time is close to the end-to-end time, the inference thread never waits for frames, and any overhead over
"alone" is other stages taking CPU from ONNX Runtime's threads.

Memory: "start" is the peak VmRSS over the --rss-span seconds (60) that follow a warm-up of --rss-warmup
seconds (120) after the source started streaming (the `streaming` log line), and "end" the peak over the last
--rss-span seconds before the `source ended` log line. Peaks over a minute, not single samples: RSS swings by tens
of MiB from second to second as clip pipelines open and close. The warm-up leaves model load, ONNX Runtime's arena
growth and the filling of the clip writer's slots behind (its curve is printed). "max" is the largest sampled
VmRSS, and VmHWM the kernel's peak (it includes the model-load peak). Slope: least squares over the samples from
the end of the warm-up to the end.

Targets (issue 3): end-to-end time per inferred frame <= 1.10 x inference alone; 20 queries <= 1.10 x 1 query;
memory flat over the 10-minute replay (here: end <= start + 5 %). The exit code is 0 whatever the verdict (2 if
something could not run). /proc/loadavg is recorded before and after every run; the machine may be shared. With
--wait-load L (the default outside --quick: 2.5) the benchmark first waits, polling every 20 s for at most
--wait-minutes, until the 1-minute load average is below L, and says whether it got there.

--parts ratio,queries,decode,memory,cameras picks what to measure (default: all; "ratio" is items 2 and 3,
"queries" 5, "decode" 4, "memory" 6, "cameras" 7), so that a run can be short, or measure one part again.

--quick: a smoke test of this script in about a minute: the tiny model, 50/25-frame 1080p clips, a 30 s loop for
memory, 5 timed inferences; its figures mean nothing.

    python3 models/bench_watch.py --lookout target/release/lookout --model models/full/owlvit-b32
    python3 models/bench_watch.py --quick

Only the standard library is needed (onnxruntime and numpy are used for the cross-check when present).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pairs as bp  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BIKES = REPO / "tests" / "fixtures" / "bikes.mp4"
BIKES_FRAMES = 250  # 10 s at 25 fps

QUERIES_20 = [
    "a person riding a bicycle",
    "a bicycle",
    "a person walking on the street",
    "a car",
    "a dog",
    "a person wearing a helmet",
    "a backpack",
    "a traffic light",
    "a bus",
    "a motorcycle",
    "a tree",
    "a person lying on the ground",
    "a person running",
    "a red jacket",
    "a street sign",
    "a parked van",
    "a child",
    "a shopping bag",
    "a person snatching a chain",
    "a crowd of people",
]
QUERIES_5 = QUERIES_20[:5]
QUERIES_1 = QUERIES_20[:1]

PARTS = ("ratio", "queries", "decode", "memory", "cameras")
TARGET_RATIO = 1.10
TARGET_QUERIES = 1.10
TARGET_RSS_GROWTH = 0.05
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log(*a):
    print(*a, flush=True)


def loadavg() -> tuple[float, float, float]:
    try:
        a = Path("/proc/loadavg").read_text().split()
        return float(a[0]), float(a[1]), float(a[2])
    except OSError:
        return (float("nan"),) * 3


def fmt_load(l) -> str:
    return " ".join(f"{x:.2f}" for x in l)


def p50(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# Clips


def gst(pipeline: str, what: str):
    cmd = ["gst-launch-1.0", "-q", "-e"] + pipeline.split()
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"could not make {what}: gst-launch-1.0 exited {r.returncode}\n{' '.join(cmd)}\n{r.stderr}")
    log(f"  made {what} in {time.monotonic() - t0:.1f} s")


def make_1080p(path: Path, frames: int):
    """The bundled clip scaled (stretched) to 1920x1080, its first `frames` frames."""
    if path.exists():
        return
    tmp = path.with_suffix(".part.mp4")
    # identity lets one more buffer through than eos-after says (it counts from 0).
    stop = f"identity eos-after={frames - 1} ! " if frames < BIKES_FRAMES else ""
    gst(
        f"filesrc location={BIKES} ! qtdemux ! h264parse ! avdec_h264 ! {stop}videoconvert ! "
        "videoscale add-borders=false ! video/x-raw,format=I420,width=1920,height=1080 ! "
        "x264enc speed-preset=veryfast bitrate=8000 key-int-max=50 ! h264parse ! mp4mux ! "
        f"filesink location={tmp}",
        path.name,
    )
    tmp.rename(path)


def make_loop(path: Path, copies: int):
    """The bundled clip played `copies` times in a row (640x272), re-encoded as one H.264 stream."""
    if path.exists():
        return
    tmp = path.with_suffix(".part.mp4")
    p = (
        "concat name=c ! videoconvert ! x264enc speed-preset=veryfast bitrate=1500 key-int-max=50 ! h264parse ! "
        f"mp4mux ! filesink location={tmp}"
    )
    for _ in range(copies):
        p += f" filesrc location={BIKES} ! qtdemux ! h264parse ! avdec_h264 ! c."
    gst(p, path.name)
    tmp.rename(path)


def make_still(video: Path, path: Path, index: int):
    """One decoded frame of `video` as PNG (full resolution), for `locate`."""
    if path.exists():
        return
    tmp = path.with_suffix(".part.png")
    gst(
        f"filesrc location={video} ! qtdemux ! h264parse ! avdec_h264 ! identity eos-after={index} ! videoconvert ! "
        f"video/x-raw,format=RGB ! pngenc ! multifilesink location={tmp} max-files=1",
        path.name,
    )
    tmp.rename(path)


# ---------------------------------------------------------------------------------------------------------------
# Running lookout


class Run:
    """One lookout process: its JSON summary, wall time, load average, and (optionally) memory samples."""

    def __init__(self, label: str):
        self.label = label
        self.summary: dict | None = None
        self.proc_wall = 0.0
        self.load_before = loadavg()
        self.load_after = self.load_before
        self.t_streaming: float | None = None
        self.t_ended: float | None = None
        self.rss: list[tuple[float, int, int]] = []  # (s since start, VmRSS kB, VmHWM kB)
        self.stderr_tail: list[str] = []
        self.returncode = 0

    @property
    def wall(self) -> float:
        return self.summary["wall_seconds"]

    def frames(self, key: str) -> int:
        return sum(s[key] for s in self.summary["sources"])


def read_status(pid: int):
    rss = hwm = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except (OSError, ValueError):
        return None
    return (rss, hwm) if rss is not None and hwm is not None else None


def run_lookout(label: str, argv: list[str], log_path: Path, sample_rss: bool = False) -> Run:
    run = Run(label)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    out_chunks: list[str] = []

    def read_stdout():
        out_chunks.append(proc.stdout.read())

    def read_stderr():
        with open(log_path, "w") as f:
            for line in proc.stderr:
                f.write(line)
                plain = ANSI.sub("", line)
                run.stderr_tail = (run.stderr_tail + [plain.rstrip()])[-20:]
                now = time.monotonic() - t0
                if run.t_streaming is None and " streaming" in plain:
                    run.t_streaming = now
                if " source ended" in plain:
                    run.t_ended = now

    threads = [threading.Thread(target=read_stdout), threading.Thread(target=read_stderr)]
    for t in threads:
        t.start()
    if sample_rss:
        next_t = time.monotonic()
        while proc.poll() is None:
            s = read_status(proc.pid)
            if s:
                run.rss.append((time.monotonic() - t0, s[0], s[1]))
            next_t += 1.0
            time.sleep(max(0.0, next_t - time.monotonic()))
    proc.wait()
    for t in threads:
        t.join()
    run.proc_wall = time.monotonic() - t0
    run.load_after = loadavg()
    run.returncode = proc.returncode
    out = "".join(out_chunks)
    try:
        run.summary = json.loads(out[out.index("{") :])
    except ValueError:
        raise SystemExit(
            f"{label}: lookout exited {proc.returncode} without a JSON summary\n  {' '.join(argv)}\n  "
            + "\n  ".join(run.stderr_tail)
        )
    errors = [s["error"] for s in run.summary["sources"] if s.get("error")]
    if errors:
        raise SystemExit(f"{label}: a source failed: {errors}\n  {' '.join(argv)}")
    log(
        f"  {label:<34} wall {run.wall:7.2f} s  decoded {run.frames('frames_decoded'):5d}  "
        f"inferred {run.frames('frames_inferred'):5d}  batch mean {run.summary['inference']['mean_ms']:7.1f} ms  "
        f"load {fmt_load(run.load_before)} -> {fmt_load(run.load_after)}"
    )
    RUNS.append(run)
    return run


def watch(label, sources, queries, model, out, every=1, annotate=False, decode_only=False, sample_rss=False,
          clips=False) -> Run:
    """One `lookout watch` run. Event clips are off (`--no-clips`) unless `clips`: a random-weight model matches
    everything, and its storm of events would measure the clip writer, not the pipeline; the memory replay turns
    them on, to show that memory stays bounded with clips being written."""
    out = WORK / "runs" / out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    argv = [str(LOOKOUT), "watch", *map(str, sources), "-m", str(model), "--out", str(out), "--every", str(every)]
    argv += ["--intra-threads", str(THREADS), "--json"]
    for q in queries:
        argv += ["-q", q]
    if annotate:
        argv.append("--annotate")
    if decode_only:
        argv.append("--decode-only")
    if not clips:
        argv.append("--no-clips")
    return run_lookout(label, argv, out / "stderr.log", sample_rss)


class Steady:
    """Steady-state figures from a long and a short run of the same configuration."""

    def __init__(self, long: Run, short: Run, key: str):
        self.long, self.short = long, short
        d_frames = long.frames(key) - short.frames(key)
        d_wall = long.wall - short.wall
        self.frames = d_frames
        self.ms_per_frame = 1e3 * d_wall / d_frames if d_frames > 0 else float("nan")
        self.fps = 1e3 / self.ms_per_frame if self.ms_per_frame > 0 else float("nan")
        n = len(long.summary["sources"])
        self.fps_per_source = self.fps / n
        # The inference thread's busy time per frame over the same 200 extra frames.
        li, si = long.summary["inference"], short.summary["inference"]
        busy = li["mean_ms"] * li["count"] - si["mean_ms"] * si["count"]
        self.busy_ms_per_frame = busy / d_frames if d_frames > 0 and li["count"] else float("nan")
        self.batch_p50 = li["p50_ms"]

    def as_dict(self) -> dict:
        return {"fps": self.fps, "fps_per_source": self.fps_per_source, "ms_per_frame": self.ms_per_frame,
                "watch_infer_ms_per_frame": self.busy_ms_per_frame, "batch_p50_ms": self.batch_p50}

    def loads(self) -> str:
        return f"{self.short.load_before[0]:.2f}->{self.short.load_after[0]:.2f}, {self.long.load_before[0]:.2f}->{self.long.load_after[0]:.2f}"


def pair(label, long_clip, short_clip, n_sources=1, **kw) -> Steady:
    key = "frames_decoded" if kw.get("decode_only") else "frames_inferred"
    tag = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    short = watch(f"{label} (short)", [short_clip] * n_sources, out=f"{tag}-short", **kw)
    long = watch(f"{label} (long)", [long_clip] * n_sources, out=f"{tag}-long", **kw)
    return Steady(long, short, key)


def e2e_window(label: str, clip: Path, model: Path, queries, warm: int, seconds: float, annotate: bool,
               extra: list[str] | None = None) -> dict:
    """One `watch --every 1` run on `clip`, timed over a steady window from its own /metrics (see bench_pairs),
    then stopped (drained)."""
    tag = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    out = WORK / "runs" / tag
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    argv = [str(LOOKOUT), "watch", str(clip), "-m", str(model), "--out", str(out), "--every", "1",
            "--intra-threads", str(THREADS), "--no-clips", *(extra or [])]
    for q in queries:
        argv += ["-q", q]
    if annotate:
        argv.append("--annotate")
    w = bp.Watch(argv, out / "stderr.log", ENV)
    try:
        win = w.window(warm, seconds, deadline_s=seconds + 600)
    finally:
        summary = w.stop()
    win |= {"load": [w.load_before, w.load_after], "summary_inference": (summary or {}).get("inference")}
    log(f"  {label:<34} {win['ms_per_frame']:7.1f} ms/frame over {win['seconds']:.1f} s ({win['frames']:.0f} frames); "
        f"watch's inference {win['infer_ms_per_frame']:7.1f} ms/frame  load {fmt_load(w.load_before)} -> "
        f"{fmt_load(w.load_after)}")
    return win


def ratio_pairs(model: Path, clip: Path, still: Path, rounds: int, kinds: list[str], alone_n: int, seconds: float,
                warm: int, extra: list[str] | None = None):
    """Interleaved rounds of "inference alone" and `watch` end to end (see bench_pairs): the order alternates from
    round to round, and each e2e run is compared with the "alone" run of its own round."""
    per = {k: [] for k in kinds}
    alone = []
    for i, order in enumerate(bp.alternate(["alone", *kinds], rounds)):
        log(f" round {i + 1}/{rounds}: {' -> '.join(order)}")
        got = {}
        for k in order:
            if k == "alone":
                got[k] = bp.locate_alone(LOOKOUT, model, still, QUERIES_5, alone_n, THREADS, ENV, extra)
                log(f"  {'inference alone (locate --timings)':<34} {got[k]['ms']:7.1f} ms p50 (n={got[k]['n']}, "
                    f"{got[k]['seconds']:.0f} s)  load {fmt_load(got[k]['load'][0])} -> {fmt_load(got[k]['load'][1])}")
            else:
                got[k] = e2e_window(f"e2e {k} r{i + 1}", clip, model, QUERIES_5, warm, seconds, k == "annotate", extra)
        alone.append(got["alone"])
        for k in kinds:
            per[k].append(got[k] | {"ratio": got[k]["ms_per_frame"] / got["alone"]["ms"],
                                    "cpu_ratio": got[k]["cpu_ms_per_frame"] / got["alone"]["cpu_ms_per_image"]})
        log("   ratios (wall): " + ", ".join(f"{k} {per[k][-1]['ratio']:.3f}" for k in kinds)
            + f"; CPU per frame / CPU per image alone ({got['alone']['cpu_ms_per_image']:.0f} ms): "
            + ", ".join(f"{k} {per[k][-1]['cpu_ratio']:.3f}" for k in kinds))
    return alone, per


# ---------------------------------------------------------------------------------------------------------------
# Many cameras (issue 17)

RTSP_SERVER = REPO / "models" / "rtsp_loop_server.py"
CAM_MOVING_S, CAM_STILL_S, CAM_CYCLES = 10, 30, 4
KEPT_RATE = 0.9  # handled frames per second of wall time, each source, over the window
KEPT_BIN_S, KEPT_BIN_MIN = 10.0, 8  # and at least this many in every 10 s of it: no stretch of starvation
KEPT_AGE_P95_MS = 1000.0  # frame age (decode -> inference) p95: no lag


def kept(handled_per_s: float, bins: list[float], age_p95_ms: float, reconnects: float, error) -> bool:
    """Whether one camera was kept over a window (see KEPT_*): handled often enough on the whole and in every
    10 s of it, frames inferred fresh, no reconnect, no error. A window too short for one bin keeps nothing."""
    return bool(handled_per_s >= KEPT_RATE and bins and min(bins) >= KEPT_BIN_MIN and age_p95_ms <= KEPT_AGE_P95_MS
                and not reconnects and not error)


def make_camera_clip(path: Path, width: int, height: int):
    """A CCTV-like clip for the RTSP cameras: CAM_CYCLES x [CAM_MOVING_S s of bikes.mp4 (all of it: 10 s), then
    CAM_STILL_S s of its last frame held still], scaled to width x height, 25 fps, x264 without B-frames (as
    cameras send), a key frame every 2 s."""
    if path.exists():
        return
    last = WORK / "bikes-last-frame.png"
    make_still(BIKES, last, BIKES_FRAMES - 1)
    tmp = path.with_suffix(".part.mp4")
    scale = f"videoconvert ! videoscale add-borders=false ! video/x-raw,format=I420,width={width},height={height}"
    p = (f"concat name=c ! x264enc speed-preset=veryfast bitrate={max(1000, width * height // 300)} key-int-max=50 "
         f"bframes=0 ! h264parse ! mp4mux ! filesink location={tmp}")
    for _ in range(CAM_CYCLES):
        p += f" filesrc location={BIKES} ! qtdemux ! h264parse ! avdec_h264 ! {scale} ! c."
        p += (f" filesrc location={last} ! pngdec ! imagefreeze num-buffers={CAM_STILL_S * 25} ! {scale},"
              "framerate=25/1 ! c.")
    gst(p, path.name)
    tmp.rename(path)


class RtspCameras:
    """models/rtsp_loop_server.py under /usr/bin/python3 (python3-gi): `n` cameras of `clip` at their own rate."""

    def __init__(self, clip: Path, n: int, max_seconds: float):
        self.proc = subprocess.Popen(["/usr/bin/python3", str(RTSP_SERVER), "--clip", str(clip), "--streams", str(n),
                                      "--max-seconds", str(max_seconds)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.close()
            raise SystemExit(f"{RTSP_SERVER} did not start: {line}{self.proc.stderr.read()[-2000:]}")
        self.urls = [f"rtsp://127.0.0.1:{int(line.split()[1])}/cam{k}" for k in range(n)]

    def close(self):
        if self.proc.stdin:
            self.proc.stdin.close()  # the server stops when its standard input closes
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def option_value(help_text: str, flag: str, on: bool) -> list[str]:
    """The argv that turns a boolean option on or off, whichever way this build spells it: `--motion` (a switch;
    off is `--no-motion` if listed, else leaving it out) or `--motion <VALUE>` with possible values."""
    line = next((l for l in help_text.splitlines() if re.search(rf"(^|\s){re.escape(flag)}(\s|$|[ =<])", l)), "")
    if re.search(rf"{re.escape(flag)}[ =]<", line):
        block = help_text[help_text.index(line):][:2000]
        m = re.search(r"possible values: ([^\]]+)\]", block)
        values = [v.strip() for v in m.group(1).split(",")] if m else []
        want = ("true", "on", "yes", "1") if on else ("false", "off", "no", "0")
        v = next((x for x in values if x in want), want[0])
        return [flag, v]
    if on:
        return [flag]
    neg = "--no-" + flag[2:]
    return [neg] if neg in help_text else []


def camera_run(model: Path, clip: Path, n: int, variant: dict, warm_s: float, seconds: float, fps: float) -> dict:
    """`watch --fps <fps>` on n live RTSP cameras for `seconds` of steady state, sampled from /metrics every
    second; whether every camera was kept (see KEPT_*)."""
    label = f"{variant['name']} x{n}"
    tag = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    out = WORK / "runs" / f"cameras-{tag}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cams = RtspCameras(clip, n, max_seconds=warm_s + seconds + 300)
    argv = [str(LOOKOUT), "watch", *cams.urls, "-m", str(model), "--out", str(out), "--fps", str(fps),
            "--intra-threads", str(THREADS), "--no-clips", *variant["argv"]]
    for q in QUERIES_5:
        argv += ["-q", q]
    samples = []
    try:
        w = bp.Watch(argv, out / "stderr.log", ENV)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and w.alive():  # every camera delivered and was inferred once
                m = w.metrics()
                inf = bp.per_source(m, "lookout_source_frames_inferred_total") if m else {}
                if len(inf) == n and min(inf.values()) >= 1:
                    break
                time.sleep(1.0)
            else:
                raise SystemExit(f"{label}: not every camera was inferred within 180 s\n  " + "\n  ".join(w.tail[-10:]))
            time.sleep(warm_s)
            t_end = time.monotonic() + seconds
            while w.alive():
                t = time.monotonic()
                m = w.metrics()
                if m:
                    skip = bp.skipped_names(m)
                    samples.append((t, bp.per_source(m, "lookout_source_frames_inferred_total"),
                                    {src: sum(bp.per_source(m, k).get(src, 0) for k in skip)
                                     for src in bp.per_source(m, "lookout_source_frames_inferred_total")},
                                    bp.per_source(m, "lookout_source_frames_decoded_total"),
                                    bp.per_source(m, "lookout_source_frames_dropped_total"),
                                    bp.per_source(m, "lookout_source_reconnects_total"), skip))
                if t >= t_end:
                    break
                time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
        finally:
            summary = w.stop()
    finally:
        cams.close()
    if len(samples) < 2:
        raise SystemExit(f"{label}: lookout ended before the window ({len(samples)} samples)\n  " + "\n  ".join(w.tail[-10:]))
    t0, tn = samples[0][0], samples[-1][0]
    dur = tn - t0
    srcs = sorted(samples[-1][1])
    per = {}
    for src in srcs:
        def handled(smp):
            return smp[1].get(src, 0) + smp[2].get(src, 0)

        bins, i = [], 0
        while True:  # consecutive KEPT_BIN_S bins, from the samples nearest their edges
            j = next((k for k in range(i, len(samples)) if samples[k][0] >= samples[i][0] + KEPT_BIN_S - 0.5), None)
            if j is None:
                break
            # A bin handles at most fps frames a second: the gate's skips count as handled, never more than due.
            got = min(handled(samples[j]) - handled(samples[i]), fps * (samples[j][0] - samples[i][0]) + 1)
            bins.append(got)
            i = j
        inferred = samples[-1][1].get(src, 0) - samples[0][1].get(src, 0)
        skipped = samples[-1][2].get(src, 0) - samples[0][2].get(src, 0)
        age = next((s["frame_age"] for s in (summary or {}).get("sources", []) if s.get("name") == src), None)
        err = next((s.get("error") for s in (summary or {}).get("sources", []) if s.get("name") == src), None)
        rate = min(inferred + skipped, fps * dur + 1) / dur
        per[src] = {
            "inferred_per_s": inferred / dur, "handled_per_s": rate, "skipped": skipped, "bins": bins,
            "decoded_per_s": (samples[-1][3].get(src, 0) - samples[0][3].get(src, 0)) / dur,
            "dropped": samples[-1][4].get(src, 0) - samples[0][4].get(src, 0),
            "reconnects": samples[-1][5].get(src, 0) - samples[0][5].get(src, 0),
            "frame_age_p95_ms": age["p95_ms"] if age else float("nan"), "error": err,
        }
        p = per[src]
        p["kept"] = kept(rate, bins, p["frame_age_p95_ms"], p["reconnects"], err)
    r = {
        "n": n, "variant": variant["name"], "seconds": dur, "sources": per,
        "inferred_per_s": sum(p["inferred_per_s"] for p in per.values()),
        "min_handled_per_s": min(p["handled_per_s"] for p in per.values()),
        "min_bin": min((min(p["bins"]) for p in per.values() if p["bins"]), default=0),
        "max_age_p95_ms": max(p["frame_age_p95_ms"] for p in per.values()),
        "decoded_per_s": statistics.mean(p["decoded_per_s"] for p in per.values()),
        "skip_metrics": samples[-1][6],
        "kept": len(per) == n and all(p["kept"] for p in per.values()),
        "load": [w.load_before, w.load_after],
        "summary_inference": (summary or {}).get("inference"),
    }
    log(f"  {label:<16} inferred {r['inferred_per_s']:.2f}/s in all; per camera handled >= {r['min_handled_per_s']:.2f}/s, "
        f"fewest in {KEPT_BIN_S:g} s {r['min_bin']:.0f}, frame age p95 <= {r['max_age_p95_ms']:.0f} ms, decoded "
        f"{r['decoded_per_s']:.1f}/s: {'KEPT' if r['kept'] else 'not kept'}  load {fmt_load(w.load_before)} -> "
        f"{fmt_load(w.load_after)}")
    return r


def camera_variants(model: Path, help_text: str, flags: set[str]) -> list[dict]:
    """fp32 and int8, without and with the motion gate: each with the argv that selects it, or why it cannot run."""
    out = []
    for prec in ("fp32", "int8"):
        for gate in (False, True):
            name = f"{prec}{' + gate' if gate else ''}"
            argv, missing = [], []
            if "--precision" in flags:
                argv += ["--precision", prec]
            elif prec != "fp32":
                missing.append("--precision")
            if "--motion" in flags:
                argv += option_value(help_text, "--motion", gate)
            elif gate:
                missing.append("--motion")
            out.append({"name": name, "argv": argv,
                        "unavailable": f"not available in this build (no {' or '.join(missing)} in `lookout watch "
                                       "--help`)" if missing else None})
    return out


def cameras(model: Path, clip: Path, variants: list[dict], max_n: int, warm_s: float, seconds: float, fps: float,
            budget_s: float) -> list[dict]:
    """For each variant: N = 1, 2, ... cameras until one is not kept (or max_n, or the time budget)."""
    res = []
    t_start = time.monotonic()
    for v in variants:
        if v["unavailable"]:
            log(f"  {v['name']:<16} {v['unavailable']}")
            res.append({"variant": v["name"], "unavailable": v["unavailable"], "runs": []})
            continue
        runs, best, note = [], 0, ""
        for n in range(1, max_n + 1):
            if time.monotonic() - t_start > budget_s:
                note = f"stopped at {n} cameras: the part's time budget ({budget_s:.0f} s) ran out"
                break
            try:
                r = camera_run(model, clip, n, v, warm_s, seconds, fps)
            except SystemExit as e:
                note = f"{n} cameras did not run: {str(e).splitlines()[0]}"
                log(f"  {v['name']} x{n}: {note}")
                break
            runs.append(r)
            if not r["kept"]:
                break
            best = n
        else:
            note = f"all {max_n} cameras kept: the largest tried (--cam-max)"
        res.append({"variant": v["name"], "runs": runs, "largest_kept": best, "note": note,
                    "max_inferred_per_s": max((r["inferred_per_s"] for r in runs), default=float("nan"))})
    return res


def infer_alone_locate(model: Path, still: Path, queries, n: int):
    argv = [str(LOOKOUT), "locate", *([str(still)] * (n + 1)), "-m", str(model), "--no-images", "--timings", "--json"]
    argv += ["--intra-threads", str(THREADS), "--quiet"]
    for q in queries:
        argv += ["-q", q]
    lb = loadavg()
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV)
    la = loadavg()
    line = next((l for l in reversed(r.stderr.splitlines()) if l.startswith("{") and "infer_ms" in l), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"locate --timings failed ({r.returncode}):\n  {' '.join(argv)}\n{r.stderr[-2000:]}")
    t = json.loads(line)
    timed = t["infer_ms"][1:]  # the first image also pays ONNX Runtime's first-run allocations
    log(
        f"  {'locate --timings':<34} infer p50 {p50(timed):7.1f} ms  mean {statistics.mean(timed):7.1f} ms  "
        f"min {min(timed):7.1f} ms  (n={len(timed)})  load {fmt_load(lb)} -> {fmt_load(la)}"
    )
    return {"p50_ms": p50(timed), "mean_ms": statistics.mean(timed), "min_ms": min(timed), "n": len(timed),
            "preprocess_p50_ms": p50(t["preprocess_ms"][1:]), "load": (lb, la)}


def infer_alone_ort(model: Path, n: int):
    """image_embedder.onnx in onnxruntime (Python) on a fixed tensor: a cross-check of `locate`'s figure."""
    onnx = model / "onnx" / "image_embedder.onnx"
    if not onnx.exists():
        return None
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        log("  onnxruntime (Python) not importable here: cross-check skipped")
        return None
    size = json.loads((model / "config.json").read_text())["vision_config"]["image_size"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    lb = loadavg()
    sess.run(None, {"pixel_values": x})
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(None, {"pixel_values": x})
        times.append(1e3 * (time.perf_counter() - t0))
    la = loadavg()
    del sess
    log(
        f"  {'onnxruntime ' + ort.__version__ + ' (Python)':<34} image_embedder p50 {p50(times):7.1f} ms  "
        f"min {min(times):7.1f} ms  (n={n})  load {fmt_load(lb)} -> {fmt_load(la)}"
    )
    return {"p50_ms": p50(times), "min_ms": min(times), "n": n, "version": ort.__version__, "load": (lb, la)}


def rss_figures(run: Run, warmup_s: float, span_s: float):
    """Start and end of the memory replay: the peak VmRSS of the first `span_s` seconds after the warm-up, and
    of the last `span_s` seconds before the source ended. Peaks over a span, not single samples: RSS swings by
    tens of MiB from one second to the next as clip pipelines open and close."""
    if not run.rss:
        return None
    t0 = run.t_streaming or 0.0
    t_end = run.t_ended if run.t_ended is not None else run.rss[-1][0]
    window = [s for s in run.rss if t0 + warmup_s <= s[0] <= t_end]
    if len(window) < 2:
        window = [s for s in run.rss if s[0] >= t0] or run.rss
    first = [s for s in window if s[0] <= window[0][0] + span_s]
    last = [s for s in window if s[0] >= window[-1][0] - span_s]
    start, end = max(first, key=lambda s: s[1]), max(last, key=lambda s: s[1])
    # Least-squares slope of RSS over the window, in MiB per minute.
    ts = [s[0] for s in window]
    rs = [s[1] / 1024 for s in window]
    mt, mr = statistics.mean(ts), statistics.mean(rs)
    var = sum((t - mt) ** 2 for t in ts)
    slope = 60 * sum((t - mt) * (r - mr) for t, r in zip(ts, rs)) / var if var > 0 else 0.0
    # The warm-up's curve, for the record: RSS at 30 s, 60 s, ... after streaming started.
    ramp = []
    for k in range(int(warmup_s // 30) + 1):
        t, r, _ = min(run.rss, key=lambda s: abs(s[0] - (t0 + 30 * k)))
        ramp.append((round(t - t0), round(r / 1024)))
    return {
        "start_mib": start[1] / 1024,
        "start_at_s": start[0],
        "end_mib": end[1] / 1024,
        "end_at_s": end[0],
        "span_s": span_s,
        "warmup_s": warmup_s,
        "warmup_ramp_mib": ramp,
        "max_mib": max(s[1] for s in run.rss) / 1024,
        "max_in_window_mib": max(rs),
        "hwm_mib": run.rss[-1][2] / 1024,
        "slope_mib_per_min": slope,
        "samples": len(run.rss),
        "window_samples": len(window),
        "stream_s": run.frames("frames_decoded") / 25.0,
    }


# ---------------------------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError):
        pass
    gstv = subprocess.run(["gst-launch-1.0", "--version"], capture_output=True, text=True).stdout.splitlines()
    ort_lib = Path(ENV.get("ORT_DYLIB_PATH", ""))
    ort_v = ort_lib.resolve().name.replace("libonnxruntime.so.", "") if ort_lib.exists() else "?"
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    # The binary may be older than the checkout (or a copy elsewhere): say when it was built.
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(LOOKOUT.stat().st_mtime))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "gstreamer": gstv[1].split()[-1] if len(gstv) > 1 else "?",
        "onnxruntime": ort_v,
        "lookout": f"{LOOKOUT} built {built}; checkout {rev.stdout.strip()}"
        + (" with uncommitted changes" if dirty else ""),
    }


def busy_processes(interval: float = 2.0, top: int = 5) -> str:
    """The processes that used the most CPU over `interval` seconds (from /proc/<pid>/stat), with their nice value:
    what else was running while the benchmark ran."""

    def snapshot():
        out = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                f = stat[stat.rindex(")") + 2 :].split()
                out[int(d.name)] = (comm, int(f[11]) + int(f[12]), int(f[16]))  # utime + stime, nice
            except (OSError, ValueError, IndexError):
                pass
        return out

    hz = os.sysconf("SC_CLK_TCK")
    a = snapshot()
    time.sleep(interval)
    b = snapshot()
    rows = []
    for pid, (comm, ticks, nice) in b.items():
        if pid in a and pid != os.getpid():
            cpu = 100.0 * (ticks - a[pid][1]) / hz / interval
            if cpu >= 5:
                rows.append((cpu, comm, nice))
    rows.sort(reverse=True)
    return ", ".join(f"{c} {cpu:.0f}%{f' (nice {n})' if n else ''}" for cpu, c, n in rows[:top]) or "none over 5%"


def wait_for_load(limit: float, minutes: float) -> str:
    deadline = time.monotonic() + 60 * minutes
    while True:
        l = loadavg()
        if l[0] < limit:
            return f"1-minute load {l[0]:.2f} < {limit} (load {fmt_load(l)})"
        if time.monotonic() >= deadline:
            return f"load never fell below {limit} within {minutes:g} min (load {fmt_load(l)}): ran anyway"
        log(f"  waiting for the 1-minute load to fall below {limit}: {fmt_load(l)}")
        time.sleep(20)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv=None) -> int:
    global LOOKOUT, WORK, THREADS, ENV, RUNS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lookout", type=Path, default=REPO / "target" / "release" / "lookout")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "full" / "owlvit-b32")
    ap.add_argument("--tiny-model", type=Path, default=REPO / "models" / "tiny" / "owlvit", help="--quick's model")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: one per core)")
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench", help="clips and run outputs")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny model, short clips; figures mean nothing")
    ap.add_argument("--alone-n", type=int, default=None, help="timed inferences for 'alone' (default 20; quick 5)")
    ap.add_argument("--rss-every", type=int, default=50, help="--every for the 10-minute memory replay (300 inferences)")
    ap.add_argument("--rss-warmup", type=float, default=None,
                    help="seconds after streaming starts before the start span (default 120; --quick 3)")
    ap.add_argument("--rss-span", type=float, default=None,
                    help="seconds of the start and end spans whose peaks are compared (default 60; --quick 5)")
    ap.add_argument("--wait-load", type=float, default=None, help="wait for the 1-min load below this (default 2.5)")
    ap.add_argument("--wait-minutes", type=float, default=25.0)
    ap.add_argument("--rounds", type=int, default=None, help="ratio: interleaved rounds (default 4; --quick 2)")
    ap.add_argument("--window", type=float, default=None,
                    help="ratio: seconds of each e2e run's timed window (default 30; --quick 3)")
    ap.add_argument("--e2e", default="plain,annotate",
                    help="ratio: the e2e runs of each round, from plain,annotate (default both)")
    ap.add_argument("--cam-size", default="1280x720", help="cameras: the RTSP cameras' picture size (default 1280x720)")
    ap.add_argument("--cam-max", type=int, default=None, help="cameras: the most cameras tried (default 6; --quick 2)")
    ap.add_argument("--cam-seconds", type=float, default=None,
                    help="cameras: seconds of each run's window (default 40: one cycle of the clip; --quick 12)")
    ap.add_argument("--cam-warm", type=float, default=None,
                    help="cameras: seconds after every camera's first inference before the window (default 10)")
    ap.add_argument("--cam-fps", type=float, default=1.0, help="cameras: watch --fps (default 1)")
    ap.add_argument("--cam-budget", type=float, default=1500, help="cameras: seconds for the whole part at most")
    ap.add_argument("--autogroup-nice", type=int, default=None,
                    help="set this session's scheduler autogroup nice for the run, e.g. -19 (see bench_pairs.py)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"what to measure, comma-separated from {','.join(PARTS)} (default: all)")
    a = ap.parse_args(argv)
    parts = {x.strip() for x in a.parts.split(",") if x.strip()}
    if not parts or parts - set(PARTS):
        ap.error(f"--parts: choose from {','.join(PARTS)}")

    LOOKOUT, WORK, THREADS, RUNS = a.lookout.resolve(), a.work.resolve(), a.threads, []
    ENV = dict(os.environ)
    lib = REPO / ".deps" / "onnxruntime" / "libonnxruntime.so"
    if not ENV.get("ORT_DYLIB_PATH") and lib.exists():
        ENV["ORT_DYLIB_PATH"] = str(lib)
    if not LOOKOUT.exists():
        raise SystemExit(f"{LOOKOUT}: no such binary; run `cargo build --release` (or `make build`) first")
    model = (a.tiny_model if a.quick else a.model).resolve()
    if not (model / "config.json").exists():
        raise SystemExit(f"{model}: no model there; `make export-full` writes models/full/owlvit-b32")
    if not BIKES.exists():
        raise SystemExit(f"{BIKES}: the bundled clip is missing")
    long_n, short_n = (50, 25) if a.quick else (BIKES_FRAMES, 50)
    loop_copies = 3 if a.quick else 60
    alone_n = a.alone_n or (5 if a.quick else 25)
    rss_warmup = a.rss_warmup if a.rss_warmup is not None else (3.0 if a.quick else 120.0)
    rss_span = a.rss_span if a.rss_span is not None else (5.0 if a.quick else 60.0)
    wait_load = a.wait_load if a.wait_load is not None else (0.0 if a.quick else 2.5)
    a.rounds = a.rounds or (2 if a.quick else 4)
    window_s = a.window or (3.0 if a.quick else 30.0)
    warm = 3
    e2e_kinds = [k.strip() for k in a.e2e.split(",") if k.strip()]
    if not e2e_kinds or set(e2e_kinds) - {"plain", "annotate"}:
        ap.error("--e2e: choose from plain,annotate")

    WORK.mkdir(parents=True, exist_ok=True)
    priority = bp.autogroup_nice(a.autogroup_nice)
    m = machine()
    log(f"bench-watch{' --quick (smoke test: figures mean nothing)' if a.quick else ''}")
    log(f"  machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}; GStreamer {m['gstreamer']}, "
        f"ONNX Runtime {m['onnxruntime']}; lookout {m['lookout']}")
    log(f"  model: {model}; ONNX Runtime intra-op threads: {THREADS or 'ORT default (one per core)'}; {priority}; "
        f"{Path('/proc/self/autogroup').read_text().strip()}")

    log("clips:")
    clip_long = WORK / f"bikes-1080p-{long_n}f.mp4"
    clip_short = WORK / f"bikes-1080p-{short_n}f.mp4"
    clip_loop = WORK / (f"bikes-640x272-{loop_copies * 10}s.mp4" if a.quick else "bikes-640x272-10min.mp4")
    still_index = min(100, long_n - 1)
    still = WORK / f"bikes-1080p-frame{still_index}.png"
    make_1080p(clip_long, long_n)
    make_1080p(clip_short, short_n)
    if "memory" in parts:
        make_loop(clip_loop, loop_copies)
    make_still(clip_long, still, still_index)
    # The ratio's e2e runs stop after their window: the 10 s clip is long enough for any model slower than 110 ms.
    ratio_clip = WORK / f"bikes-1080p-{BIKES_FRAMES}f.mp4"
    if "ratio" in parts:
        make_1080p(ratio_clip, BIKES_FRAMES)
    log(f"  {clip_long.name}, {clip_short.name}, {clip_loop.name} in {WORK}")

    load_note = "no wait for the load (--wait-load 0 or --quick)" if wait_load <= 0 else wait_for_load(wait_load, a.wait_minutes)
    log(f"load: {load_note}")
    load_start = loadavg()
    others_start = busy_processes()
    log(f"  busiest processes now: {others_start}")

    rows, result = [], {}
    if "ratio" in parts:
        log(f"ratio: {a.rounds} interleaved rounds of inference alone ({alone_n} images) and watch end to end "
            f"({', '.join(e2e_kinds)}; a {window_s:g} s window after {warm} frames):")
        alone, per = ratio_pairs(model, ratio_clip, still, a.rounds, e2e_kinds, alone_n, window_s, warm)
        rows.append(("inference alone p50 per round (locate --timings)",
                     ", ".join(f"{x['ms']:.1f}" for x in alone) + " ms", "",
                     f"n={alone[0]['n']} each; image embedder + class head; drift over the run: "
                     f"{(max(x['ms'] for x in alone) / min(x['ms'] for x in alone) - 1):.0%}"))
        for k in e2e_kinds:
            name = "--annotate" if k == "annotate" else "no --annotate"
            ratios = [r["ratio"] for r in per[k]]
            st = bp.spread(ratios)
            rows += [
                (f"e2e 5 queries, --every 1, {name}: ms/frame per round",
                 ", ".join(f"{r['ms_per_frame']:.1f}" for r in per[k]), "",
                 f"windows of {statistics.mean(r['seconds'] for r in per[k]):.0f} s"),
                ("  e2e per frame / watch's inference per frame",
                 ", ".join(f"{r['ms_per_frame'] / r['infer_ms_per_frame']:.3f}" for r in per[k]), "",
                 "1.00: the inference thread never waits for frames"),
                ("  ratio e2e / alone, per round", ", ".join(f"{x:.3f}" for x in ratios), "", ""),
                ("  ratio: median (spread min-max)", f"{st['median']:.3f} ({st['min']:.3f}-{st['max']:.3f})",
                 f"<= {TARGET_RATIO:.2f}  {verdict(st['median'] <= TARGET_RATIO)}",
                 "spread wider than the margin: not conclusive" if st['min'] <= TARGET_RATIO < st['max'] else ""),
            ]
            cpu = [r["cpu_ratio"] for r in per[k]]
            cst = bp.spread(cpu)
            rows += [
                ("  CPU per frame (ms), e2e / alone per image",
                 ", ".join(f"{r['cpu_ms_per_frame']:.0f}/{x['cpu_ms_per_image']:.0f}" for r, x in zip(per[k], alone)),
                 "", "process CPU time: the work done, whatever else runs"),
                ("  CPU ratio: per round; median (min-max)",
                 ", ".join(f"{x:.3f}" for x in cpu) + f"; {cst['median']:.3f} ({cst['min']:.3f}-{cst['max']:.3f})", "",
                 ""),
            ]
            result.setdefault("e2e_pairs", {})[k] = {"rounds": per[k], "ratios": ratios, **st, "cpu_ratios": cpu,
                                                     "cpu": cst}
        result["alone_rounds"] = alone

    if "queries" in parts:
        log("end to end without --annotate, 1 query and 20 queries:")
        e2e1 = pair("e2e 1 query", clip_long, clip_short, queries=QUERIES_1, model=model)
        e2e20 = pair("e2e 20 queries", clip_long, clip_short, queries=QUERIES_20, model=model)
        q_ratio = e2e20.ms_per_frame / e2e1.ms_per_frame
        rows += [
            ("e2e 1 query, no --annotate", f"{e2e1.fps:.3f} frames/s ({e2e1.ms_per_frame:.1f} ms/frame)", "",
             f"load {e2e1.loads()}"),
            ("e2e 20 queries, no --annotate", f"{e2e20.fps:.3f} frames/s ({e2e20.ms_per_frame:.1f} ms/frame)", "",
             f"load {e2e20.loads()}"),
            ("20 queries / 1 query (time per frame)", f"{q_ratio:.3f}",
             f"<= {TARGET_QUERIES:.2f}  {verdict(q_ratio <= TARGET_QUERIES)}", ""),
        ]
        result.setdefault("e2e", {}).update({"1q": e2e1.as_dict(), "20q": e2e20.as_dict()})
        result["ratio_20q_1q"] = q_ratio

    if "decode" in parts:
        log("decode only (--decode-only: decode + scale to the model size + track, no inference):")
        dec = {}
        for n in (1, 2, 4):
            dec[n] = pair(f"decode-only x{n}", clip_long, clip_short, n_sources=n, queries=QUERIES_5, model=model,
                          decode_only=True)
            rows.append((f"decode only, {n} x 1080p source{'s' if n > 1 else ''}",
                         f"{dec[n].fps_per_source:.1f} frames/s per source, {dec[n].fps:.1f} total", "",
                         f"load {dec[n].loads()}"))
        dec_ann = pair("decode-only x1 --annotate", clip_long, clip_short, queries=QUERIES_5, model=model,
                       decode_only=True, annotate=True)
        rows.append(("decode only, 1 x 1080p, --annotate", f"{dec_ann.fps:.1f} frames/s", "",
                     f"load {dec_ann.loads()}"))
        result["decode_only"] = {str(n): {"fps_per_source": d.fps_per_source, "fps_total": d.fps}
                                 for n, d in dec.items()}
        result["decode_only_annotate_fps"] = dec_ann.fps

    if "memory" in parts:
        log(f"memory: {clip_loop.name} (--every {a.rss_every} --annotate), VmRSS every second:")
        rss_run = watch("memory replay", [clip_loop], QUERIES_5, model, "memory", every=a.rss_every, annotate=True,
                        sample_rss=True, clips=True)
        rss = rss_figures(rss_run, rss_warmup, rss_span)
        if rss:
            growth = (rss["end_mib"] - rss["start_mib"]) / rss["start_mib"]
            rows += [
                (f"RSS, {rss['stream_s'] / 60:.1f} min replay (--every {a.rss_every})",
                 f"start {rss['start_mib']:.0f} MiB (t={rss['start_at_s']:.0f} s), end {rss['end_mib']:.0f} MiB "
                 f"(t={rss['end_at_s']:.0f} s), peaks of {rss['span_s']:.0f} s spans",
                 f"end <= start +{TARGET_RSS_GROWTH:.0%}  {verdict(growth <= TARGET_RSS_GROWTH)}",
                 f"{growth:+.1%}, slope {rss['slope_mib_per_min']:+.2f} MiB/min"),
                ("  RSS max / VmHWM", f"{rss['max_mib']:.0f} MiB / {rss['hwm_mib']:.0f} MiB", "",
                 f"{rss['samples']} samples; load {rss_run.load_before[0]:.2f}->{rss_run.load_after[0]:.2f}"),
                (f"  RSS during the {rss['warmup_s']:.0f} s warm-up (t s, MiB)",
                 " ".join(f"{t}:{m}" for t, m in rss["warmup_ramp_mib"]), "", "before the start span"),
            ]
        result |= {"rss": rss, "rss_samples": rss_run.rss}
    if "cameras" in parts:
        cw, ch = (int(x) for x in a.cam_size.lower().split("x"))
        cam_clip = WORK / f"camera-{cw}x{ch}-{CAM_CYCLES * (CAM_MOVING_S + CAM_STILL_S)}s.mp4"
        make_camera_clip(cam_clip, cw, ch)
        help_text = subprocess.run([str(LOOKOUT), "watch", "--help"], capture_output=True, text=True, env=ENV).stdout
        variants = camera_variants(model, help_text, bp.watch_flags(LOOKOUT, ENV))
        cam_max = a.cam_max or (2 if a.quick else 6)
        cam_seconds = a.cam_seconds or (12.0 if a.quick else 40.0)
        cam_warm = a.cam_warm if a.cam_warm is not None else (3.0 if a.quick else 10.0)
        log(f"cameras: RTSP {cw}x{ch} at 25 fps ({cam_clip.name}: {CAM_CYCLES} x [{CAM_MOVING_S} s moving, "
            f"{CAM_STILL_S} s still]), watch --fps {a.cam_fps:g}, {cam_seconds:g} s windows after {cam_warm:g} s:")
        cams = cameras(model, cam_clip, variants, cam_max, cam_warm, cam_seconds, a.cam_fps, a.cam_budget)
        for c in cams:
            if c.get("unavailable"):
                rows.append((f"cameras, {c['variant']}", c["unavailable"], "", ""))
                continue
            for r in c["runs"]:
                rows.append((f"cameras, {c['variant']}, {r['n']} x {cw}x{ch} RTSP, --fps {a.cam_fps:g}",
                             f"{r['inferred_per_s']:.2f} inferred/s in all; each camera >= {r['min_handled_per_s']:.2f}"
                             f" handled/s, >= {r['min_bin']:.0f} per {KEPT_BIN_S:g} s; age p95 <= "
                             f"{r['max_age_p95_ms']:.0f} ms", "kept" if r["kept"] else "not kept",
                             f"decoded {r['decoded_per_s']:.1f}/s per camera; load {r['load'][0][0]:.2f}->"
                             f"{r['load'][1][0]:.2f}"))
            rows.append((f"cameras, {c['variant']}: largest number kept at --fps {a.cam_fps:g}",
                         f"{c['largest_kept']}", "",
                         f"frames inferred per second, most seen: {c['max_inferred_per_s']:.2f}; {c['note']}"))
        result["cameras"] = {"size": [cw, ch], "fps": a.cam_fps, "window_s": cam_seconds, "warm_s": cam_warm,
                             "kept_rule": {"rate": KEPT_RATE, "bin_s": KEPT_BIN_S, "bin_min": KEPT_BIN_MIN,
                                           "age_p95_ms": KEPT_AGE_P95_MS}, "variants": cams}

    load_end = loadavg()
    others_end = busy_processes()

    w = [max(len(r[i]) for r in rows) for i in range(4)]
    log("")
    log(f"bench-watch results{' (--quick: tiny model, figures mean nothing)' if a.quick else ''}")
    log(f"  machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; GStreamer {m['gstreamer']}, "
        f"ONNX Runtime {m['onnxruntime']}, threads {THREADS or 'default'}; lookout {m['lookout']}")
    clips_note = []
    if "ratio" in parts:
        clips_note.append(f"ratio on {ratio_clip.name}")
    if parts & {"queries", "decode"}:
        clips_note.append(f"queries/decode on {clip_long.name} differenced against {clip_short.name}")
    if "cameras" in parts:
        clips_note.append(f"cameras: {cam_clip.name} over RTSP")
    log(f"  model {model.relative_to(REPO) if model.is_relative_to(REPO) else model}; {'; '.join(clips_note)}; "
        f"load at start {fmt_load(load_start)}, at end {fmt_load(load_end)}; {load_note}")
    log(f"  busiest processes at the start: {others_start}; at the end: {others_end}")
    head = ("figure", "value", "target", "notes")
    log("  " + "  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    log("  " + "  ".join("-" * w[i] for i in range(4)))
    for r in rows:
        log("  " + "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())

    result = {
        "machine": m, "model": str(model), "threads": THREADS, "quick": a.quick, "parts": sorted(parts),
        "load_note": load_note, "autogroup": priority, "load_start": load_start, "load_end": load_end, "busy_start": others_start,
        "busy_end": others_end, **result,
        "runs": [{"label": r.label, "wall_seconds": r.wall, "proc_wall_seconds": r.proc_wall,
                  "load_before": r.load_before, "load_after": r.load_after, "summary": r.summary} for r in RUNS],
    }
    out = WORK / ("bench_watch_quick.json" if a.quick else "bench_watch.json")
    out.write_text(json.dumps(result, indent=1))
    log(f"  all figures and every run's summary: {out}")
    return 0


LOOKOUT = WORK = ENV = None
THREADS = 0
RUNS: list = []

if __name__ == "__main__":
    sys.exit(main())
