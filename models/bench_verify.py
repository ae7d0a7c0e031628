#!/usr/bin/env python3
"""Benchmark the verifier, full-size X-CLIP B/32 with 8 frames (run by `make bench-verify`; issue 13).

One invocation measures, on this machine, with the same threads everywhere (--threads: ONNX Runtime's intra-op
threads for lookout, torch.set_num_threads for transformers):

  1. ms per event   the 8 frames of one event: frames 100 + floor(i * 50 / 8) of tests/fixtures/bikes.mp4 (as
                    watch spreads them over 2 s), cropped to one region (x 150..470, y 20..272: a crop as the
                    verifier gets it), written as PNG to out/bench/verify/.
                    - lookout: `examples/verify_timing` (release), the library calls watch's verify thread makes:
                      the prompts encoded once, then per event Verifier::logits = XCLIPProcessor's preprocessing
                      in Rust + onnx/video.onnx;
                    - transformers: the pipeline on the same frames, per event XCLIPProcessor(text, images)
                      + XCLIPModel.forward (the text model runs every time, as the pipeline does), and, beside
                      it, XCLIPModel.forward alone on inputs prepared once.
                    Beside them, lookout in each precision (fp32, int8), on --threads as watch runs it (in its
                    turn on the cores, with the detector's threads: src/watch/turn.rs).
                    Median over --events events after one warm-up event each. The weights are random (the
                    export does not keep them; transformers builds its own from the same config): the timing of
                    a forward pass does not depend on the values.
  2. watch          `watch --every 10 --no-clips` with the full-size OWL-ViT B/32 detector on a clip made to fire
                    a verifying event every 4 s: 10 times [2 s of bikes.mp4, 2 s of black] (40 s, 1000 frames,
                    100 inferences; --every sets the cadence). The query's threshold lies between the detector's
                    best score on a black frame and on the bikes frames (measured first from watch's own scores on
                    one segment of each, threshold 0: above every frame's second-best box and every box of the
                    other kind, below the best boxes of the kind that fires), with min_frames 1 of 1 and
                    end_after_s 1.9, so each segment of that kind is one event (the run reports the events it got).
                    Three kinds of run (four with I), interleaved in --rounds rounds (4), the order reversed every
                    other round (A B C, C B A, ...: see bench_pairs.py), so that the drift of a shared machine falls
                    alike on all:
                      A  the query verifies (`[verify] model = models/full/xclip-b32`, 8 frames over 1.5 s);
                      I  the same with `[verify] precision = "int8"` (when the directory has onnx/video_int8.onnx,
                         made by models/quantize_int8.py);
                      B  the same query without verify;
                      C  inference alone: `locate --timings` infer_ms (image graph and class head on a prepared
                         tensor) on a 640x272 frame, median of --alone-n (20) after one warm-up;
                    time per inferred frame for A and B: a --window (30 s) of the steady state timed from the run's
                    own /metrics (`--http 127.0.0.1:0`): window seconds / frames inferred in it, so loading the
                    detector and the verifier, encoding the prompts and draining are outside it. Beside it, watch's
                    own inference time per frame over the same window (the histogram of /metrics): the wall time per
                    frame cannot be below it, which checks the arithmetic. Ratios are taken within each round, and
                    their median and spread reported. Target: A / C <= 1.10 (and I / C).

                    The previous version divided the whole run's wall_seconds by the summary's frames_inferred:
                    frames inferred (not decoded: --every 10 infers 1 in 10; verifier runs are not counted), so the
                    division was right, but wall_seconds starts before the queries are encoded and the verifier is
                    loaded (which inflates A, not B), and "alone" ran a minute or more from the watch runs it was
                    compared with, while this machine's inference alone moves between about 440 and 2300 ms with
                    the load of other sessions. A B of 431 ms per frame against a C of 1098 ms is most likely that drift (the
                    machine was fast during B), not a count of the wrong frames; the cross-check above (wall per
                    frame >= watch's own inference per frame, in the same window) now shows it in every round.

/proc/loadavg is recorded before and after every run; the machine may be shared. The exit code is 0 whatever the
verdict (2 if something could not run).

    python3 models/bench_verify.py --lookout target/release/lookout --xclip models/full/xclip-b32 \\
        --detector models/full/owlvit-b32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import shutil
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pairs as bp  # noqa: E402
from bench_pairs import fmt_load  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BIKES = REPO / "tests" / "fixtures" / "bikes.mp4"
BENCH = REPO / "out" / "bench" / "verify"
PROMPTS = [
    "a person riding a bicycle",
    "people walking past each other",
    "a person standing still",
    "an empty street with nothing happening",
]
EVENT_START, EVENT_FRAMES, NUM_FRAMES = 100, 50, 8
CROP = (150, 20, 470, 272)  # x0, y0, x1, y1 in the 640x272 frame
SEGMENTS, SEGMENT_FRAMES = 10, 50
QUERY = "a person riding a bicycle"


def log(*a):
    print(*a, flush=True)


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def gst(pipeline: str, what: str):
    cmd = ["gst-launch-1.0", "-q", "-e"] + pipeline.split()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"could not make {what}: {r.stderr}")


def event_frames() -> list[Path]:
    """The event's 8 crops as PNG (made once)."""
    from PIL import Image

    BENCH.mkdir(parents=True, exist_ok=True)
    indices = [EVENT_START + i * EVENT_FRAMES // NUM_FRAMES for i in range(NUM_FRAMES)]
    paths = [BENCH / f"crop-{i:03d}.png" for i in indices]
    if all(p.exists() for p in paths):
        return paths
    with tempfile.TemporaryDirectory() as td:
        gst(f"filesrc location={BIKES} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! pngenc "
            f"compression-level=1 ! multifilesink location={td}/f%05d.png", "frames")
        for i, p in zip(indices, paths):
            Image.open(f"{td}/f{i:05d}.png").convert("RGB").crop(CROP).save(p)
    return paths


def alternating_clip(every: int) -> tuple[Path, Path, list[Path]]:
    """The 20 s clip of bikes and black segments, a black frame and the bikes frames watch infers on (every
    `every`-th of a segment) as PNG (made once)."""
    from PIL import Image

    BENCH.mkdir(parents=True, exist_ok=True)
    clip, black = BENCH / f"bikes-black-{SEGMENTS * 4}s.mp4", BENCH / "black.png"
    bikes = [BENCH / f"bikes-{i:03d}.png" for i in range(0, SEGMENT_FRAMES, every)]
    if not clip.exists():
        tmp = clip.with_suffix(".part.mp4")
        p = ("concat name=c ! videoconvert ! x264enc speed-preset=veryfast bitrate=1500 key-int-max=50 ! h264parse "
             f"! mp4mux ! filesink location={tmp}")
        for _ in range(SEGMENTS):
            p += (f" filesrc location={BIKES} ! qtdemux ! h264parse ! avdec_h264 ! identity eos-after="
                  f"{SEGMENT_FRAMES - 1} ! videoconvert ! video/x-raw,format=I420 ! c.")
            p += (f" videotestsrc pattern=black num-buffers={SEGMENT_FRAMES} ! "
                  "video/x-raw,format=I420,width=640,height=272,framerate=25/1 ! c.")
        gst(p, clip.name)
        tmp.rename(clip)
    if not black.exists():
        gst(f"videotestsrc pattern=black num-buffers=1 ! video/x-raw,width=640,height=272 ! videoconvert ! "
            f"video/x-raw,format=RGB ! pngenc ! filesink location={black}", "black.png")
    if not all(b.exists() for b in bikes):
        with tempfile.TemporaryDirectory() as td:
            gst(f"filesrc location={BIKES} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! pngenc "
                f"compression-level=1 ! multifilesink location={td}/f%05d.png", "frames")
            for b in bikes:
                Image.open(f"{td}/f{int(b.stem.split('-')[1]):05d}.png").convert("RGB").save(b)
    return clip, black, bikes


def env() -> dict:
    e = dict(os.environ)
    e.setdefault("RUST_LOG", "warn")
    return e


def part1(a) -> dict:
    frames = event_frames()
    timing = Path(a.lookout).parent / "examples" / "verify_timing"
    log(f"part 1: {NUM_FRAMES} frames {CROP}, {len(PROMPTS)} prompts, {a.events} events, {a.threads} threads; "
        f"load {load()}")
    r = subprocess.run([str(timing), a.xclip, str(a.threads), str(a.events + 1), json.dumps(PROMPTS)]
                       + [str(p) for p in frames], capture_output=True, text=True, env=env())
    if r.returncode != 0:
        raise SystemExit(f"verify_timing failed: {r.stderr}")
    lk = json.loads(r.stdout)
    lookout_ms = statistics.median(lk["event_ms"][1:])
    log(f"  lookout: {lookout_ms:.0f} ms per event (median of {a.events}; load {lk['load_ms']:.0f} ms, prompts "
        f"{lk['encode_ms']:.0f} ms once); load {load()}")
    # The verifier in each precision the model directory has, on the threads watch gives it (the detector's).
    per_precision = {}
    for precision in precisions(a):
        r = subprocess.run([str(timing), a.xclip, str(a.threads), str(a.events + 1), json.dumps(PROMPTS)]
                           + [str(p) for p in frames], capture_output=True, text=True, env=env() | {"PRECISION": precision})
        if r.returncode != 0:
            raise SystemExit(f"verify_timing ({precision}) failed: {r.stderr}")
        got = json.loads(r.stdout)
        per_precision[precision] = {"ms_per_event": statistics.median(got["event_ms"][1:]),
                                    "event_ms": got["event_ms"][1:], "logits": got["logits"]}
        log(f"  lookout, {a.threads} threads, {precision}: {per_precision[precision]['ms_per_event']:.0f} ms "
            f"per event; logits {[round(x, 3) for x in got['logits']]}; load {load()}")

    import torch
    from PIL import Image
    from transformers import CLIPTokenizerFast, VideoMAEImageProcessor, XCLIPConfig, XCLIPModel, XCLIPProcessor

    torch.set_num_threads(a.threads)
    cfg = XCLIPConfig.from_pretrained(a.xclip)
    model = XCLIPModel(cfg).eval()
    proc = XCLIPProcessor(image_processor=VideoMAEImageProcessor.from_pretrained(a.xclip),
                          tokenizer=CLIPTokenizerFast.from_pretrained(a.xclip))
    images = [Image.open(p).convert("RGB") for p in frames]

    def pipeline():
        inputs = proc(text=PROMPTS, images=images, padding="max_length", truncation=True,
                      max_length=proc.tokenizer.model_max_length, return_tensors="pt")
        with torch.no_grad():
            return model(**inputs).logits_per_video.softmax(dim=1)

    pipe_ms = []
    for _ in range(a.events + 1):
        t = time.perf_counter()
        pipeline()
        pipe_ms.append((time.perf_counter() - t) * 1e3)
    inputs = proc(text=PROMPTS, images=images, padding="max_length", truncation=True,
                  max_length=proc.tokenizer.model_max_length, return_tensors="pt")
    fwd_ms = []
    for _ in range(a.events + 1):
        t = time.perf_counter()
        with torch.no_grad():
            model(**inputs)
        fwd_ms.append((time.perf_counter() - t) * 1e3)
    out = {
        "lookout_ms_per_event": lookout_ms,
        "lookout_event_ms": lk["event_ms"][1:],
        "lookout_encode_prompts_ms": lk["encode_ms"],
        "transformers_pipeline_ms_per_event": statistics.median(pipe_ms[1:]),
        "transformers_forward_ms_per_event": statistics.median(fwd_ms[1:]),
        "threads": a.threads,
        "per_precision": per_precision,
    }
    log(f"  transformers: pipeline {out['transformers_pipeline_ms_per_event']:.0f} ms per event, forward alone "
        f"{out['transformers_forward_ms_per_event']:.0f} ms; lookout / pipeline "
        f"{lookout_ms / out['transformers_pipeline_ms_per_event']:.2f}; load {load()}")
    return out


def calibrate(a) -> tuple[float, dict]:
    """The query's threshold: watch's own scores on one bikes and one black segment (threshold 0, every match
    logged); then, for the kind of segment whose best box stands above every second-best box and every box of the
    other kind, a threshold 30 % of the way from those up to that best box: a few frames of each segment of that
    kind have one box above it, and nothing else does."""
    from collections import defaultdict

    part = BENCH / "calibration.mp4"
    if not part.exists():
        tmp = part.with_suffix(".part.mp4")
        gst("concat name=c ! videoconvert ! x264enc speed-preset=veryfast bitrate=1500 key-int-max=50 ! h264parse ! "
            f"mp4mux ! filesink location={tmp} filesrc location={BIKES} ! qtdemux ! h264parse ! avdec_h264 ! "
            f"identity eos-after={SEGMENT_FRAMES - 1} ! videoconvert ! video/x-raw,format=I420 ! c. "
            f"videotestsrc pattern=black num-buffers={SEGMENT_FRAMES} ! "
            "video/x-raw,format=I420,width=640,height=272,framerate=25/1 ! c.", part.name)
        tmp.rename(part)
    with tempfile.TemporaryDirectory() as td:
        cfg = Path(td) / "lookout.toml"
        cfg.write_text(f'[[query]]\ntext = "{QUERY}"\nthreshold = 0.0\nmin_frames = 1\nwindow = 1\n'
                       "update_interval_s = 0\nend_after_s = 0.1\ncooldown_s = 0\n")
        r = subprocess.run([a.lookout, "watch", str(part), "--config", str(cfg), "--out", f"{td}/run", "-m",
                            a.detector, "--every", str(a.every), "--no-clips", "--json", "--intra-threads",
                            str(a.threads)], capture_output=True, text=True, env=env())
        if r.returncode != 0:
            raise SystemExit(f"watch (calibration) failed: {r.stderr}")
        per_frame = defaultdict(list)
        for line in (Path(td) / "run" / "events.jsonl").read_text().splitlines():
            l = json.loads(line)
            if l["type"] in ("start", "update"):
                per_frame[l["frame"]].append(l["score"])
    frames = {f: sorted(v, reverse=True) for f, v in per_frame.items()}
    kinds = {"bikes": {f: v for f, v in frames.items() if f < SEGMENT_FRAMES},
             "black": {f: v for f, v in frames.items() if f >= SEGMENT_FRAMES}}
    # Fire on the kind of segment whose best box stands above every other box (the random weights decide which).
    options = []
    for kind, other in (("bikes", "black"), ("black", "bikes")):
        best = max(v[0] for v in kinds[kind].values())
        low = max([v[1] for v in kinds[kind].values() if len(v) > 1] + [x for v in kinds[other].values() for x in v])
        options.append((best - low, kind, best, low))
    margin, kind, best, low = max(options)
    threshold = round(low + 0.3 * margin, 6) if margin > 0 else round(best, 6)
    firing = sorted(f for f, v in kinds[kind].items() if v[0] > threshold)
    log(f"part 2: calibration on watch's scores: fires on the {kind} segments: best box {best:.4f}, every other box "
        f"at most {low:.4f}: threshold {threshold}; frames above it: {firing}")
    return threshold, {"kind": kind, "best": best, "others_max": low, "firing_frames": firing}


def precisions(a) -> list[str]:
    """fp32, and int8 when the X-CLIP directory has its int8 graph (models/quantize_int8.py)."""
    return ["fp32"] + (["int8"] if (Path(a.xclip) / "onnx" / "video_int8.onnx").is_file() else [])


def watch(a, clip: Path, threshold: float, verify: str | None, label: str) -> dict:
    """One watch run (A with verification, B without), timed over a steady window from its /metrics (see
    bench_pairs): window seconds / frames inferred in the window; and watch's own inference time per frame over the
    same window, which the wall time per frame can never be below (a check of the arithmetic)."""
    run = BENCH / "runs" / label
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    cfg = run / "lookout.toml"
    text = ""
    if verify:
        text += f'[verify]\nmodel = "{a.xclip}"\nframes = 8\nseconds = 1.5\nqueue = 16\nprecision = "{verify}"\n'
    text += (f'[[query]]\ntext = "{QUERY}"\nthreshold = {threshold}\nmin_frames = 1\nwindow = 1\n'
             "end_after_s = 1.9\ncooldown_s = 0\n")
    if verify:
        text += f'verify = "{QUERY}"\n'
    cfg.write_text(text)
    argv = [a.lookout, "watch", str(clip), "--config", str(cfg), "--out", str(run / "out"), "-m", a.detector,
            "--every", str(a.every), "--no-clips", "--intra-threads", str(a.threads)]
    w = bp.Watch(argv, run / "stderr.log", env())
    try:
        win = w.window(3, a.window, deadline_s=a.window + 600)
    finally:
        s = w.stop()
    lines = [json.loads(l) for l in (run / "out" / "events.jsonl").read_text().splitlines()]
    starts = [l for l in lines if l["type"] == "start"]
    verdicts = [l for l in lines if l["type"] == "verification"]
    src = (s or {}).get("sources", [{}])[0]
    return win | {
        "events": len(starts), "event_frames": [l["frame"] for l in starts],
        "verified": len([v for v in verdicts if v["verdict"] != "error"]),
        "overloaded": len([v for v in verdicts if v.get("reason") == "overloaded"]),
        # The whole run's figures, for the record: wall_seconds starts before the queries are encoded and the
        # verifier loaded, so wall / inferred over a whole run counts those too (the window does not).
        "run_wall_s": (s or {}).get("wall_seconds"), "run_inferred": src.get("frames_inferred"),
        "run_decoded": src.get("frames_decoded"), "run_batches": ((s or {}).get("inference") or {}).get("count"),
        # Within the run, immune to the machine's drift between runs: the inference thread's time (its batches,
        # waits for the verifier's turns included) against the same less those waits (watch/turn.rs).
        "run_infer_ms": (((s or {}).get("inference") or {}).get("mean_ms") or 0)
        * (((s or {}).get("inference") or {}).get("count") or 0),
        "run_waited_ms": ((s or {}).get("verification") or {}).get("inference_waited_ms"),
        "run_verifier_ms": ((s or {}).get("verification") or {}).get("verifier_ms"),
        "load_before": fmt_load(w.load_before), "load_after": fmt_load(w.load_after),
    }


def part2(a) -> dict:
    clip, black, bikes = alternating_clip(a.every)
    threshold, calib = calibrate(a)
    rounds = []
    # A = verifying with the fp32 graph, I = with the int8 graph (when there is one), B = not verifying, C = alone.
    kinds = ["A"] + (["I"] if "int8" in precisions(a) else []) + ["B", "C"]
    log(f"part 2: {a.rounds} interleaved rounds of {' '.join(kinds)} (the order reversed every other round); watch "
        f"timed over a {a.window:g} s window after 3 inferred frames; alone = locate --timings, {a.alone_n} images")
    verify_with = {"A": "fp32", "I": "int8", "B": None}
    for i, order in enumerate(bp.alternate(kinds, a.rounds)):
        got = {}
        for k in order:
            if k == "C":
                got[k] = bp.locate_alone(Path(a.lookout), Path(a.detector), bikes[0], [QUERY], a.alone_n, a.threads,
                                         env())
            else:
                got[k] = watch(a, clip, threshold, verify_with[k], f"{k}-r{i + 1}")
        c, cc = got["C"]["ms"], got["C"]["cpu_ms_per_image"]
        rnd = {"order": order, "C": got["C"], "C_ms": c}
        for k in kinds[:-1]:
            rnd[k] = got[k]
            rnd[f"{k}/C"] = got[k]["ms_per_frame"] / c
            rnd[f"cpu {k}/C"] = got[k]["cpu_ms_per_frame"] / cc
            if k != "B":
                rnd[f"{k}/B"] = got[k]["ms_per_frame"] / got["B"]["ms_per_frame"]
                rnd[f"cpu {k}/B"] = got[k]["cpu_ms_per_frame"] / got["B"]["cpu_ms_per_frame"]
                total, waited = got[k]["run_infer_ms"], got[k]["run_waited_ms"]
                if waited is not None and total > waited:
                    rnd[f"within {k}/(itself less the waits)"] = total / (total - waited)
        rounds.append(rnd)
        parts = []
        for k in kinds[:-1]:
            r = got[k]
            what = {"A": "verifying fp32", "I": "verifying int8", "B": "not verifying"}[k]
            within = rnd.get(f"within {k}/(itself less the waits)")
            parts.append(f"{k} ({what}) {r['ms_per_frame']:.0f} ms/frame (watch's inference {r['infer_ms_per_frame']:.0f}; "
                         + (f"verifier {r['run_verifier_ms']} ms, inference waited {r['run_waited_ms']} ms over the run: "
                            f"x{within:.3f}; " if within else "")
                         + f"{r['events']} events, {r['verified']} verified, {r['overloaded']} overloaded; CPU "
                         f"{r['cpu_ms_per_frame']:.0f} ms) {k}/C {rnd[f'{k}/C']:.3f}")
        log(f"  round {i + 1} ({' '.join(order)}): " + "; ".join(parts) + f"; C {c:.0f} ms (CPU {cc:.0f}); load "
            f"{got[kinds[0]]['load_before']} -> {fmt_load(bp.loadavg())}")
    keys = [k for k in rounds[0] if "/" in k]
    stats = {k: bp.spread([r[k] for r in rounds]) for k in keys}
    for k, st in stats.items():
        log(f"  {k}: {bp.fmt_pairs([r[k] for r in rounds])}")
    for k in kinds[:-2]:
        log(f"  target {k}/C <= 1.10 ({verify_with[k]}): {'met' if stats[f'{k}/C']['median'] <= 1.10 else 'NOT met'} "
            "(median)")
    return {"threshold": threshold, "calibration": calib, "rounds": rounds, "stats": stats,
            "median": {k: st["median"] for k, st in stats.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lookout", default=str(REPO / "target" / "release" / "lookout"))
    p.add_argument("--xclip", default=str(REPO / "models" / "full" / "xclip-b32"))
    p.add_argument("--detector", default=str(REPO / "models" / "full" / "owlvit-b32"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--events", type=int, default=5)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--window", type=float, default=30, help="seconds of each watch run's timed window")
    p.add_argument("--alone-n", type=int, default=20, help="images timed by each 'alone' run")
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--parts", default="event,watch")
    p.add_argument("--json-out", default=str(BENCH / "result.json"))
    p.add_argument("--autogroup-nice", type=int, default=None,
                   help="set this session's scheduler autogroup nice for the run, e.g. -19 (see bench_pairs.py)")
    a = p.parse_args()
    log(bp.autogroup_nice(a.autogroup_nice))
    log(f"bench-verify: {a.xclip}, detector {a.detector}, {a.threads} threads, {os.cpu_count()} cpus; "
        f"load {open('/proc/loadavg').read().strip()}")
    result = {}
    out = Path(a.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written after each part: a part that fails later keeps what was measured.
    for part, run in (("event", part1), ("watch", part2)):
        if part in a.parts:
            result[part] = run(a)
            out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
