#!/usr/bin/env python3
"""Load benchmark of the HTTP control plane (issue 15): does serving many clients slow inference, does RSS grow?

`lookout watch` runs a 70 s clip (bikes.mp4 seven times, made once with GStreamer) in real time for --seconds,
with --http on 127.0.0.1, three times: without clients, with --clients clients, and without clients again (the
two runs without clients bracket the one with them, so that a drift of the machine shows). Each client holds one
Server-Sent Events stream (/api/v1/events/stream) open and fetches /api/v1/sources/<name>/latest.jpg every
--poll-ms. The figures: inference per frame (the run's summary: mean and p50 of the batch latency, one frame
per batch), the RSS of the process sampled every 5 s, and the requests served.

Standard library only. Run it under the benchmark lock: `flock /work/notes/bench.lock make bench-http`.
"""

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_clip(out: Path) -> Path:
    clip = out / "bikes-70s.mp4"
    if clip.exists():
        return clip
    out.mkdir(parents=True, exist_ok=True)
    bikes = ROOT / "tests/fixtures/bikes.mp4"
    branch = f"filesrc location={bikes} ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! c. "
    desc = (
        "concat name=c ! videoconvert ! x264enc speed-preset=ultrafast key-int-max=50 ! h264parse ! mp4mux ! "
        f"filesink location={clip}.part " + branch * 7
    )
    subprocess.run(["gst-launch-1.0", "-q", *desc.split()], check=True)
    os.rename(f"{clip}.part", clip)
    return clip


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Client(threading.Thread):
    """One SSE stream held open and latest.jpg polled, until `stop` is set."""

    def __init__(self, port: int, source: str, poll_s: float, stop: threading.Event, server):
        super().__init__(daemon=True)
        self.port, self.source, self.poll_s, self.stop, self.server = port, source, poll_s, stop, server
        self.jpegs = 0
        self.sse_bytes = 0
        self.errors = 0
        self.first_error = None

    def sse(self):
        try:
            # No timeout: the server sends a keep-alive comment every 15 s, and ends the stream when it stops.
            c = http.client.HTTPConnection("127.0.0.1", self.port)
            c.request("GET", "/api/v1/events/stream")
            r = c.getresponse()
            while not self.stop.is_set():
                chunk = r.read1(65536)
                if not chunk:
                    break
                self.sse_bytes += len(chunk)
        except OSError as e:
            if self.server.poll() is not None:
                return
            self.errors += 1
            self.first_error = self.first_error or f"sse: {e!r}"

    def run(self):
        threading.Thread(target=self.sse, daemon=True).start()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            try:
                c.request("GET", f"/api/v1/sources/{self.source}/latest.jpg")
                r = c.getresponse()
                body = r.read()
                if r.status == 200 and body[:2] == b"\xff\xd8":
                    self.jpegs += 1
                elif r.status != 503:  # 503: no frame yet
                    self.errors += 1
                    self.first_error = self.first_error or f"latest.jpg: status {r.status}"
            except (OSError, http.client.HTTPException) as e:
                if self.server.poll() is not None or isinstance(e, ConnectionRefusedError):
                    break  # the run ended (the server stops first): not an error of the server
                self.errors += 1
                self.first_error = self.first_error or f"latest.jpg: {e!r}"
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.stop.wait(self.poll_s)


def run_once(args, clip: Path, clients: int) -> dict:
    out = Path(args.out) / f"run-{clients}-{time.time_ns()}"
    cmd = [
        args.lookout, "watch", str(clip), "-q", "a person riding a bicycle", "-q", "a car", "-m", args.model,
        "--out", str(out), "--http", "127.0.0.1:0", "--realtime", "--max-seconds", str(args.seconds),
        "--fps", str(args.fps), "--no-clips", "--json",
    ]
    env = dict(os.environ, RUST_LOG="warn")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    port = None
    deadline = time.time() + 300
    while port is None:
        line = p.stderr.readline()
        if not line:
            sys.exit(f"lookout ended before serving: {p.wait()}")
        m = re.match(r"http: serving on http://127\.0\.0\.1:(\d+)/", line)
        if m:
            port = int(m.group(1))
        if time.time() > deadline:
            p.kill()
            sys.exit("no 'http: serving on' line in 300 s")
    threading.Thread(target=p.stderr.read, daemon=True).start()
    # The clients come once the source delivers frames (before, its routes answer 404 or 503).
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if time.time() > deadline or p.poll() is not None:
            p.kill()
            sys.exit("the run never became ready")
        time.sleep(0.2)
    stop = threading.Event()
    threads = [Client(port, "bikes-70s", args.poll_ms / 1000, stop, p) for _ in range(clients)]
    for t in threads:
        t.start()
    rss = []
    start = time.time()
    next_sample = start
    while p.poll() is None:
        if time.time() >= next_sample:
            try:
                rss.append((round(time.time() - start, 1), rss_kib(p.pid)))
            except OSError:
                break
            next_sample += 5
        time.sleep(0.2)
    stop.set()
    summary = json.loads(p.stdout.read())
    inf = summary["inference"]
    return {
        "clients": clients,
        "inferred": summary["sources"][0]["frames_inferred"],
        "infer_mean_ms": inf["mean_ms"],
        "infer_p50_ms": inf["p50_ms"],
        "infer_p95_ms": inf["p95_ms"],
        "rss_kib": rss,
        "jpegs": sum(t.jpegs for t in threads),
        "sse_bytes": sum(t.sse_bytes for t in threads),
        "client_errors": sum(t.errors for t in threads),
        "first_errors": sorted({t.first_error for t in threads if t.first_error}),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lookout", default=str(ROOT / "target/release/lookout"))
    ap.add_argument("--model", default=str(ROOT / "models/full/owlvit-b32"))
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--poll-ms", type=float, default=200, help="each client's pause between two latest.jpg")
    ap.add_argument("--fps", type=float, default=2, help="inferences per second of the source (--fps of watch)")
    ap.add_argument("--out", default=str(ROOT / "target/bench-http"))
    args = ap.parse_args()
    clip = make_clip(Path(args.out))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    runs = [run_once(args, clip, n) for n in (0, args.clients, 0)]
    base = (runs[0]["infer_mean_ms"] + runs[2]["infer_mean_ms"]) / 2
    base_p50 = (runs[0]["infer_p50_ms"] + runs[2]["infer_p50_ms"]) / 2
    loaded = runs[1]
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    result = {
        "model": args.model,
        "seconds": args.seconds,
        "clients": args.clients,
        "poll_ms": args.poll_ms,
        "load_before": load,
        "load_after": load_after,
        "runs": runs,
        "ratio_mean": loaded["infer_mean_ms"] / base,
        "ratio_p50": loaded["infer_p50_ms"] / base_p50,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print()
    print("| run | clients | frames inferred | inference mean / p50 / p95 (ms) | RSS first → last sample (MiB) | latest.jpg served | SSE bytes | client errors |")
    print("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(runs):
        rss = r["rss_kib"]
        steady = [k for t, k in rss if t >= 10] or [k for _, k in rss]
        print(
            f"| {i + 1} | {r['clients']} | {r['inferred']} | {r['infer_mean_ms']:.1f} / {r['infer_p50_ms']:.1f} / "
            f"{r['infer_p95_ms']:.1f} | {steady[0] / 1024:.0f} → {steady[-1] / 1024:.0f} (max {max(steady) / 1024:.0f}) | "
            f"{r['jpegs']} | {r['sse_bytes']} | {r['client_errors']} |"
        )
    print(f"\ninference per frame with clients / without: mean {result['ratio_mean']:.3f}x, p50 {result['ratio_p50']:.3f}x")
    print(f"load average before {' '.join(load)}, after {' '.join(load_after)}")


if __name__ == "__main__":
    main()
