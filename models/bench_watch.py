#!/usr/bin/env python3
"""Benchmark `lookout watch` on 1080p H.264 with the full-size OWL-ViT B/32 (run by `make bench-watch`).

One invocation measures, on this machine, with the same ONNX Runtime threads everywhere (--threads, passed as
`--intra-threads`; 0 = ONNX Runtime's choice, one per physical core):

  1. clips        out/bench/ (gitignored), made once with gst-launch-1.0 and reused:
                    bikes-1080p-250f.mp4   tests/fixtures/bikes.mp4 (640x272, 25 fps) scaled to 1920x1080, x264
                                           veryfast 8 Mbit/s, keyframe every 50: 250 frames, 10 s
                    bikes-1080p-50f.mp4    its first 50 frames (2 s), encoded the same way
                    bikes-640x272-10min.mp4  the bundled clip looped 60 times (concat, re-encoded): 15000 frames, 10 min
  2. end to end   `watch --every 1 --annotate` with 5 queries on the 1080p clip (decode, scale to 768x768 RGB in
                  GStreamer, inference, tracking, events, drawing and H.264 encoding of the annotated 1080p video),
                  and the same without --annotate (no full-size frames, no drawing, no encoding).
  3. alone        the same model on preprocessed tensors: `locate --timings` infer_ms (image_embedder.onnx + class
                  head, the image already resized and normalised), first image dropped as warm-up, measured before
                  and again after the two 5-query end-to-end runs (the ratio uses the mean of the two medians: the
                  load of a shared machine drifts); plus, as a cross-check when onnxruntime imports here,
                  image_embedder.onnx in Python on a fixed tensor.
  4. decode only  `watch --decode-only` (decode, scale, track; the model never runs) with 1, 2 and 4 parallel
                  sources of the 1080p clip; and 1 source with --annotate (adds the full-size I420 frame, drawing, encoding).
  5. queries      the end-to-end run (without --annotate, so only the queries differ) with 1 and with 20 queries.
  6. memory       VmRSS / VmHWM of the lookout process, read from /proc/<pid>/status every second, during a replay
                  of the 10-minute clip (`--every 50 --annotate`: 300 inferences, full model), 5 queries, with
                  event clips on (every other run has `--no-clips`: the random-weight model's storm of events would
                  measure the clip writer, not the pipeline).

Steady state, by differencing: every end-to-end and decode-only figure runs twice, on the 250-frame clip and on
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

--parts ratio,queries,decode,memory picks what to measure (default: all; "ratio" is items 2 and 3, "queries" 5,
"decode" 4, "memory" 6), e.g. to measure one part again when the machine is quieter.

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

PARTS = ("ratio", "queries", "decode", "memory")
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
    alone_n = a.alone_n or (5 if a.quick else 20)
    rss_warmup = a.rss_warmup if a.rss_warmup is not None else (3.0 if a.quick else 120.0)
    rss_span = a.rss_span if a.rss_span is not None else (5.0 if a.quick else 60.0)
    wait_load = a.wait_load if a.wait_load is not None else (0.0 if a.quick else 2.5)

    WORK.mkdir(parents=True, exist_ok=True)
    m = machine()
    log(f"bench-watch{' --quick (smoke test: figures mean nothing)' if a.quick else ''}")
    log(f"  machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}; GStreamer {m['gstreamer']}, "
        f"ONNX Runtime {m['onnxruntime']}; lookout {m['lookout']}")
    log(f"  model: {model}; ONNX Runtime intra-op threads: {THREADS or 'ORT default (one per core)'}")

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
    log(f"  {clip_long.name}, {clip_short.name}, {clip_loop.name} in {WORK}")

    load_note = "no wait (--quick)" if wait_load <= 0 else wait_for_load(wait_load, a.wait_minutes)
    log(f"load: {load_note}")
    load_start = loadavg()
    others_start = busy_processes()
    log(f"  busiest processes now: {others_start}")

    rows, result = [], {}
    if "ratio" in parts:
        log("inference alone (preprocessed tensors), before the end-to-end runs:")
        alone_before = infer_alone_locate(model, still, QUERIES_5, alone_n)
        ort_py = infer_alone_ort(model, alone_n)
        log(f"end to end (--every 1), steady state = difference of the {long_n}- and {short_n}-frame runs:")
        e2e5 = pair("e2e 5 queries --annotate", clip_long, clip_short, queries=QUERIES_5, model=model, annotate=True)
        e2e5n = pair("e2e 5 queries", clip_long, clip_short, queries=QUERIES_5, model=model)
        # Again after them: on a shared machine the load drifts, and the two 5-query runs are compared with the mean.
        log("inference alone, after the 5-query end-to-end runs:")
        alone_after = infer_alone_locate(model, still, QUERIES_5, alone_n)
        alone_p50 = (alone_before["p50_ms"] + alone_after["p50_ms"]) / 2
        for when, al in (("before", alone_before), ("after", alone_after)):
            rows.append((f"inference alone, {when} (locate --timings)",
                         f"p50 {al['p50_ms']:.1f} ms (min {al['min_ms']:.1f})", "",
                         f"n={al['n']}, load {al['load'][0][0]:.2f}->{al['load'][1][0]:.2f}"))
        rows.append(("inference alone, mean of the two p50s", f"{alone_p50:.1f} ms", "", "image_embedder + class head"))
        if ort_py:
            rows.append(("  cross-check: onnxruntime (Python), image_embedder",
                         f"p50 {ort_py['p50_ms']:.1f} ms (min {ort_py['min_ms']:.1f})", "",
                         f"n={ort_py['n']}, load {ort_py['load'][0][0]:.2f}->{ort_py['load'][1][0]:.2f}"))
        for name, key, e in (("--annotate", "5q_annotate", e2e5), ("no --annotate", "5q", e2e5n)):
            r = e.ms_per_frame / alone_p50
            rows += [
                (f"e2e 5 queries, --every 1, {name}", f"{e.fps:.3f} frames/s ({e.ms_per_frame:.1f} ms/frame)", "",
                 f"load {e.loads()}"),
                ("  watch's inference per frame (mean, p50)", f"{e.busy_ms_per_frame:.1f} ms, {e.batch_p50:.1f} ms", "",
                 f"{e.busy_ms_per_frame / alone_p50:.3f} x alone; preprocess+model+head+select"),
                ("  e2e per frame / watch's inference per frame", f"{e.ms_per_frame / e.busy_ms_per_frame:.3f}", "",
                 "1.00: the inference thread never waits for frames"),
                ("  ratio e2e per frame / inference alone", f"{r:.3f}",
                 f"<= {TARGET_RATIO:.2f}  {verdict(r <= TARGET_RATIO)}", ""),
            ]
            result.setdefault("e2e", {})[key] = e.as_dict() | {"ratio_to_alone": r}
        result |= {"alone_before": alone_before, "alone_after": alone_after, "alone_p50_ms": alone_p50,
                   "ort_python": ort_py}

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
    load_end = loadavg()
    others_end = busy_processes()

    w = [max(len(r[i]) for r in rows) for i in range(4)]
    log("")
    log(f"bench-watch results{' (--quick: tiny model, figures mean nothing)' if a.quick else ''}")
    log(f"  machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; GStreamer {m['gstreamer']}, "
        f"ONNX Runtime {m['onnxruntime']}, threads {THREADS or 'default'}; lookout {m['lookout']}")
    log(f"  model {model.relative_to(REPO) if model.is_relative_to(REPO) else model}; clip {clip_long.name} "
        f"(differenced against {clip_short.name}); load at start {fmt_load(load_start)}, at end {fmt_load(load_end)}; "
        f"{load_note}")
    log(f"  busiest processes at the start: {others_start}; at the end: {others_end}")
    head = ("figure", "value", "target", "notes")
    log("  " + "  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    log("  " + "  ".join("-" * w[i] for i in range(4)))
    for r in rows:
        log("  " + "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())

    result = {
        "machine": m, "model": str(model), "threads": THREADS, "quick": a.quick, "parts": sorted(parts),
        "load_note": load_note, "load_start": load_start, "load_end": load_end, "busy_start": others_start,
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
