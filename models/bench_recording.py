#!/usr/bin/env python3
"""Benchmark the recording (issue 14) against the per-event clip design (run by `make bench-recording`).

Two parts, each run with this branch's lookout (`--new`) and, where given, a build of the per-event design
(`--old`, e.g. main before issue 14), on the same clips, with the tiny random-weight OWL-ViT (it matches nearly
every box: a storm of events) and `[output] evidence = false` (the full-frame clips only: the crop clips and
snapshots are the same work in both designs):

  storm   one source, a --storm-minutes loop of the bundled bikes clip (640x272, 25 fps, a keyframe every 50
          frames), `--every 5` (--storm-every), threshold 0, pre-roll and post-roll 1 s, run to its end. Reports events, clips
          written / failed (and why), the clips that are not whole spans (each clip's span is checked against
          its event: at least pre + event + post, at most one GOP (2 s) + 0.2 s more, read from the MP4's own
          header), the clips that do not decode to the end (every --decode-every-th, `gst-launch-1.0 filesrc !
          decodebin ! fakesink`), RSS (start / end / max over the run, 1 s samples) and the recording's disk use
          (largest size of rec/ sampled each second). Each clip is checked as its `clips` line appears and then
          deleted: a storm's clips fill a disk (15 000 clips of 0.5 MB).
  four    four sources of a 1080p clip (8 Mbit/s x264, keyframe every 50) looped --four-minutes, `--every 25`,
          the same storm query, for --four-seconds of wall time each: CPU seconds (utime + stime of lookout, from
          /proc) per decoded frame, and RSS (mean and max).

File sources run as fast as they decode, so CPU is compared per decoded frame, not per second.
Every timed run should be under `flock /work/notes/bench.lock` (the Makefile target does it); the load average
before and after each run is printed with its figures.

    python3 models/bench_recording.py --new target/release/lookout --old /path/to/per-event/lookout
"""

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIKES = REPO / "tests" / "fixtures" / "bikes.mp4"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_watch import gst, log, make_1080p  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
STORM_QUERY = """[[query]]
text = "a person riding a bicycle"
threshold = 0.0
min_frames = 1
window = 1
pre_roll_s = 1.0
post_roll_s = 1.0
"""


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def make_loop(src: Path, path: Path, copies: int, bitrate: int, size: str = ""):
    """`src` played `copies` times in a row, re-encoded as one H.264 stream (keyframe every 50 frames)."""
    if path.exists():
        return
    tmp = path.with_suffix(".part.mp4")
    scale = f"videoscale ! {size} ! " if size else ""
    p = (
        f"concat name=c ! videoconvert ! {scale}x264enc speed-preset=ultrafast bitrate={bitrate} key-int-max=50 ! "
        f"h264parse ! mp4mux ! filesink location={tmp}"
    )
    for _ in range(copies):
        p += f" filesrc location={src} ! qtdemux ! h264parse ! avdec_h264 ! c."
    gst(p, path.name)
    tmp.rename(path)


class Sampler:
    """VmRSS, CPU and the size of some directories of a running process, every second."""

    def __init__(self, pid: int, dirs: list):
        self.pid, self.dirs = pid, dirs
        self.rss, self.cpu, self.disk = [], [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                status = open(f"/proc/{self.pid}/status").read()
                m = re.search(r"VmRSS:\s+(\d+) kB", status)
                if m:
                    self.rss.append(int(m.group(1)) / 1024)
                stat = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
                self.cpu.append((int(stat[11]) + int(stat[12])) / CLK_TCK)
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
            total = 0
            for d in self.dirs:
                for root, _, files in os.walk(d):
                    for f in files:
                        try:
                            total += os.path.getsize(os.path.join(root, f))
                        except OSError:
                            pass
            self.disk.append(total / 1e6)
            self.stop.wait(1.0)

    def done(self):
        self.stop.set()
        self.thread.join()


class Consumer:
    """Checks each clip as its `clips` line appears in events.jsonl (its span from the MP4 header against its
    event's; every --decode-every-th decoded to the end) and deletes it: a storm's clips would fill the disk."""

    def __init__(self, run: Path, pre_s: float, post_s: float, last_s: float, decode_every: int):
        self.run, self.pre_s, self.post_s, self.last_s, self.decode_every = run, pre_s, post_s, last_s, decode_every
        self.ends, self.written, self.failed, self.reasons = {}, 0, 0, {}
        self.short, self.over, self.decoded, self.not_decoding, self.checked = 0, 0, 0, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        path = self.run / "events.jsonl"
        pos, partial = 0, ""
        while True:
            stopping = self.stop.is_set()
            if path.exists():
                with open(path) as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
                text = partial + chunk
                lines = text.split("\n")
                partial = lines.pop()
                for l in lines:
                    if l.strip():
                        self.line(json.loads(l))
            if stopping:
                return
            self.stop.wait(0.5)

    def line(self, l: dict):
        if l["type"] == "end":
            self.ends[l["event_id"]] = (l["start"]["pts_s"], l["end"]["pts_s"])
        if l["type"] != "clips":
            return
        c = l["clips"]
        if c["status"] != "written":
            self.failed += 1
            r = re.sub(r"[0-9.]+", "N", (c.get("error") or "")[:90])
            self.reasons[r] = self.reasons.get(r, 0) + 1
            return
        self.written += 1
        clip = self.run / c["clip"]
        e = self.ends.pop(l["event_id"], None)
        if e and clip.exists():
            want = min(e[1] + self.post_s, self.last_s) - max(e[0] - self.pre_s, 0.08)
            got = mp4_duration_s(clip)
            self.checked += 1
            self.short += got + 0.05 < want
            self.over += got > want + 2.0 + 0.2
            if self.written % self.decode_every == 0:
                self.decoded += 1
                self.not_decoding += not decodes(clip)
        try:
            clip.unlink()
        except OSError:
            pass

    def done(self):
        self.stop.set()
        self.thread.join()


def run_watch(binary: Path, sources: list, out: Path, config: str, extra: list, model: Path, consume=None):
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "lookout.toml"
    cfg.write_text(config)
    argv = [str(binary), "watch", *map(str, sources), "--config", str(cfg), "--out", str(out / "run"), "-m",
            str(model), "--intra-threads", "1", "--no-wall-time", "--json", *extra]
    load_before = loadavg()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "RUST_LOG": "warn"})
    names = [Path(s).stem for s in sources]
    sampler = Sampler(p.pid, [out / "run" / n / "rec" for n in names])
    consumer = consume(out / "run") if consume else None
    stdout, stderr = p.communicate()
    sampler.done()
    if consumer:
        consumer.done()
        sampler.consumer = consumer
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{binary} exited {p.returncode}:\n{stderr[-3000:]}")
    return json.loads(stdout), sampler, wall, load_before, loadavg(), out / "run"


def mp4_duration_s(path: Path) -> float:
    """The movie's duration from its `mvhd` box (timescale and duration), without decoding."""
    data = path.read_bytes()
    i = data.find(b"mvhd")
    if i < 0:
        return -1.0
    version = data[i + 4]
    if version == 1:
        scale, duration = struct.unpack(">IQ", data[i + 4 + 4 + 16 : i + 4 + 4 + 16 + 12])
    else:
        scale, duration = struct.unpack(">II", data[i + 4 + 4 + 8 : i + 4 + 4 + 8 + 8])
    return duration / scale if scale else -1.0


def decodes(path: Path) -> bool:
    r = subprocess.run(["gst-launch-1.0", "-q", "filesrc", f"location={path}", "!", "decodebin", "!", "fakesink"],
                       capture_output=True, text=True, timeout=120)
    return r.returncode == 0 and "ERROR" not in r.stderr


def storm_report(label: str, summary: dict, sampler: Sampler, wall: float, loads):
    c = sampler.consumer
    rss = sampler.rss
    n = max(1, len(rss) // 10)
    return {
        "design": label,
        "wall_s": round(wall, 1),
        "load_before_after": loads,
        "frames": summary["sources"][0].get("frames_decoded"),
        "events": summary["sources"][0].get("events"),
        "clips_written": c.written,
        "clips_failed": c.failed,
        "failed_because": c.reasons,
        "clips_span_checked": c.checked,
        "clips_short_of_span": c.short,
        "clips_over_span_plus_gop": c.over,
        "clips_decoded_to_the_end": c.decoded,
        "clips_not_decoding": c.not_decoding,
        "rss_first_tenth_max_mib": round(max(rss[:n]), 1) if rss else None,
        "rss_last_tenth_max_mib": round(max(rss[-n:]), 1) if rss else None,
        "rss_max_mib": round(max(rss), 1) if rss else None,
        "rec_disk_max_mb": round(max(sampler.disk), 1) if sampler.disk else 0.0,
        "cpu_s": sampler.cpu[-1] if sampler.cpu else None,
        "clips_summary": summary.get("clips"),
    }


def four_report(label: str, summary: dict, sampler: Sampler, wall: float, loads):
    frames = sum(s.get("frames_decoded") or 0 for s in summary["sources"])
    cpu = sampler.cpu[-1] if sampler.cpu else 0.0
    rss = sampler.rss
    return {
        "design": label,
        "wall_s": round(wall, 1),
        "load_before_after": loads,
        "frames_decoded": frames,
        "cpu_s": round(cpu, 1),
        "cpu_ms_per_frame": round(1000 * cpu / frames, 2) if frames else None,
        "rss_mean_mib": round(sum(rss) / len(rss), 1) if rss else None,
        "rss_max_mib": round(max(rss), 1) if rss else None,
        "rec_disk_max_mb": round(max(sampler.disk), 1) if sampler.disk else 0.0,
        "clips": summary.get("clips"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new", type=Path, default=REPO / "target" / "release" / "lookout")
    ap.add_argument("--old", type=Path, default=None, help="a build of the per-event clip design, to compare")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "tiny" / "owlvit")
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench-recording")
    ap.add_argument("--storm-minutes", type=float, default=30.0)
    ap.add_argument("--four-minutes", type=float, default=2.0, help="length of the 1080p loop")
    ap.add_argument("--four-seconds", type=float, default=60.0, help="wall seconds of each 4-source run")
    ap.add_argument("--decode-every", type=int, default=100, help="decode every Nth clip of the storm to the end")
    ap.add_argument("--parts", default="storm,four")
    ap.add_argument("--storm-every", type=int, default=5, help="--every of the storm (a storm's clips fill a disk fast)")
    ap.add_argument("--max-disk-gb", type=float, default=2.0, help="[retention] of each run")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    parts = a.parts.split(",")
    designs = [("recording", a.new)] + ([("per-event", a.old)] if a.old else [])
    # Retention keeps the storm's clips within --max-disk-gb (the disk of a shared machine fills up otherwise);
    # clips it deleted are counted as written by their `clips` line and left out of the span and decode checks.
    config = (
        f"[output]\nevidence = false\n\n[retention]\nmax_disk_gb = {a.max_disk_gb}\ninterval_s = 5\n\n" + STORM_QUERY
    )
    results = {"machine": {"cores": os.cpu_count()}, "storm": [], "four": []}
    if "storm" in parts:
        copies = max(1, round(a.storm_minutes * 60 / 10))
        loop = a.work / f"bikes-loop-{copies}x.mp4"
        make_loop(BIKES, loop, copies, 1500)
        last_s = copies * 10.0
        for label, binary in designs:
            log(f"storm: {label} ({binary}) on {loop.name}")
            out = a.work / f"storm-{label}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            extra = ["--every", str(a.storm_every)]
            consume = lambda run: Consumer(run, 1.0, 1.0, last_s, a.decode_every)  # noqa: E731
            s, sampler, wall, lb, la, _ = run_watch(binary, [loop], out, config, extra, a.model, consume)
            r = storm_report(label, s, sampler, wall, [lb, la])
            log(json.dumps(r, indent=1))
            results["storm"].append(r)
    if "four" in parts:
        clip = a.work / "bikes-1080p-250f.mp4"
        make_1080p(clip, 250)
        copies = max(1, round(a.four_minutes * 60 / 10))
        loop = a.work / f"bikes-1080p-loop-{copies}x.mp4"
        make_loop(clip, loop, copies, 8000)
        sources = []
        for i in range(4):
            # Four names (a source's name is its file's), one encoding.
            p = a.work / f"cam{i}-1080p.mp4"
            if not p.exists():
                os.link(loop, p)
            sources.append(p)
        for label, binary in designs:
            log(f"four 1080p sources: {label} ({binary})")
            out = a.work / f"four-{label}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            extra = ["--every", "25", "--max-seconds", str(a.four_seconds)]
            s, sampler, wall, lb, la, _ = run_watch(binary, sources, out, config, extra, a.model)
            r = four_report(label, s, sampler, wall, [lb, la])
            log(json.dumps(r, indent=1))
            results["four"].append(r)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
