#!/usr/bin/env python3
"""Load benchmark of the HTTP control plane (issue 15): does serving many clients slow inference, does RSS grow?

One `lookout watch` runs a clip long enough for the whole run (bikes.mp4 looped, made once with GStreamer) in
real time, with --http on 127.0.0.1, in alternating phases: --quiet seconds (30) without clients, --seconds (60)
with --clients (50) clients, quiet again, and so on for --pairs (4) loaded phases, quiet first and last. Each
loaded phase is compared with the two quiet phases on either side of it, which ran next to it in the same process
(the method of bench_pairs.py: this machine's speed drifts by more than 10 % within minutes, so a loaded phase is
only ever compared with its neighbours; the model's loading is in no phase). The report gives each pair's ratio,
their median (the figure the target 1.10 applies to) and their spread. Each client holds one Server-Sent Events
stream (/api/v1/events/stream) open and fetches /api/v1/sources/<name>/latest.jpg every --poll-ms. The figures:
inference per frame in each phase (from the lookout_inference_seconds histogram of /metrics: its sum and count at
the phase's ends; a batch is one frame, there is one source), the RSS of the process sampled every 5 s (flat: the
peak of the last loaded phase within 5 % of the first's), and the requests served.

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
sys.path.insert(0, str(ROOT / "models"))
import bench_pairs as bp  # noqa: E402


def make_clip(out: Path, loops: int) -> Path:
    clip = out / f"bikes-{10 * loops}s.mp4"
    if clip.exists():
        return clip
    out.mkdir(parents=True, exist_ok=True)
    bikes = ROOT / "tests/fixtures/bikes.mp4"
    branch = f"filesrc location={bikes} ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! c. "
    desc = (
        "concat name=c ! videoconvert ! x264enc speed-preset=ultrafast key-int-max=50 ! h264parse ! mp4mux ! "
        f"filesink location={clip}.part " + branch * loops
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
        self.sse_conn = None

    def sse(self):
        try:
            # No timeout: the server sends a keep-alive comment every 15 s, and ends the stream when it stops.
            c = http.client.HTTPConnection("127.0.0.1", self.port)
            self.sse_conn = c
            c.request("GET", "/api/v1/events/stream")
            r = c.getresponse()
            while not self.stop.is_set():
                chunk = r.read1(65536)
                if not chunk:
                    break
                self.sse_bytes += len(chunk)
        except (OSError, http.client.HTTPException) as e:
            if self.server.poll() is not None or self.stop.is_set():
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
                if self.server.poll() is not None or self.stop.is_set() or isinstance(e, ConnectionRefusedError):
                    break  # the run ended (the server stops first): not an error of the server
                self.errors += 1
                self.first_error = self.first_error or f"latest.jpg: {e!r}"
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.stop.wait(self.poll_s)


def get(port: int, path: str) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read()


def inference_totals(port: int) -> tuple[float, int]:
    """The inference histogram's sum (s) and count, from /metrics."""
    _, body = get(port, "/metrics")
    text = body.decode()
    total = float(re.search(r"^lookout_inference_seconds_sum\{[^}]*\} (\S+)$", text, re.M).group(1))
    count = int(re.search(r"^lookout_inference_seconds_count\{[^}]*\} (\S+)$", text, re.M).group(1))
    return total, count


def run(args, clip: Path) -> dict:
    out = Path(args.out) / f"run-{time.time_ns()}"
    total_s = (args.pairs + 1) * args.quiet + args.pairs * args.seconds + 30
    cmd = [
        args.lookout, "watch", str(clip), "-q", "a person riding a bicycle", "-q", "a car", "-m", args.model,
        "--out", str(out), "--http", "127.0.0.1:0", "--realtime", "--max-seconds", str(total_s),
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
    if args.clients_nice:
        # This thread's niceness, inherited by the client threads started after it (Linux: per thread); lookout,
        # started before, keeps its own. Within one scheduler autogroup (this session), it gives lookout's threads
        # the CPU first, as when the browsers run on other machines; the requests served show what the clients got.
        os.nice(args.clients_nice)
    # The phases start once the source delivers frames and the model ran once.
    while True:
        try:
            if get(port, "/readyz")[0] == 200 and inference_totals(port)[1] > 0:
                break
        except OSError:
            pass
        if time.time() > deadline or p.poll() is not None:
            p.kill()
            sys.exit("the run never became ready")
        time.sleep(0.2)

    rss = []

    def phase(name: str, seconds: float, clients: int) -> dict:
        stop = threading.Event()
        threads = [Client(port, clip.stem, args.poll_ms / 1000, stop, p) for _ in range(clients)]
        s0, n0 = inference_totals(port)
        c0 = bp.cpu_seconds(p.pid)
        own0 = time.process_time()  # this process's CPU: the clients' threads (and this loop's few requests)
        start = time.time()
        for t in threads:
            t.start()
        next_sample = start
        while time.time() < start + seconds and p.poll() is None:
            if time.time() >= next_sample:
                rss.append((name, round(time.time() - start, 1), rss_kib(p.pid)))
                next_sample += 5
            time.sleep(0.1)
        s1, n1 = inference_totals(port)
        c1 = bp.cpu_seconds(p.pid)
        own1 = time.process_time()
        stop.set()
        for t in threads:
            t.join(timeout=5)
            # The event streams are closed too: the next phase has no clients at all.
            if t.sse_conn is not None and t.sse_conn.sock is not None:
                try:
                    t.sse_conn.sock.shutdown(2)
                except OSError:
                    pass
        n = n1 - n0
        return {
            "phase": name,
            "clients": clients,
            "seconds": round(time.time() - start, 1),
            "inferred": n,
            "infer_mean_ms": 1000 * (s1 - s0) / n if n else float("nan"),
            # lookout's own CPU time per inferred frame: the serving's work, not the clients' (another process)
            "cpu_ms_per_frame": 1000 * (c1 - c0) / n if n and c0 is not None and c1 is not None else float("nan"),
            "jpegs": sum(t.jpegs for t in threads),
            "clients_cpu_s": round(own1 - own0, 2),
            "sse_bytes": sum(t.sse_bytes for t in threads),
            "client_errors": sum(t.errors for t in threads),
            "first_errors": sorted({t.first_error for t in threads if t.first_error}),
        }

    # Quiet and loaded phases alternate, quiet first and last: each loaded phase is compared with the quiet
    # phases on either side of it (adjacent in time), so that a drift of the machine cancels to first order.
    phases = [phase("quiet 1", args.quiet, 0)]
    for k in range(args.pairs):
        phases.append(phase(f"clients {k + 1}", args.seconds, args.clients))
        phases.append(phase(f"quiet {k + 2}", args.quiet, 0))
    p.send_signal(2)  # SIGINT: drain and print the summary
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    out_text = p.stdout.read()
    summary = json.loads(out_text[out_text.index("{"):]) if "{" in out_text else {}
    return {"phases": phases, "rss_kib": rss, "summary_inference": summary.get("inference")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lookout", default=str(ROOT / "target/release/lookout"))
    ap.add_argument("--model", default=str(ROOT / "models/full/owlvit-b32"))
    ap.add_argument("--seconds", type=float, default=60, help="seconds of each phase with clients")
    ap.add_argument("--quiet", type=float, default=30, help="seconds of each phase without clients")
    ap.add_argument("--pairs", type=int, default=4, help="phases with clients (each between two quiet ones)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--poll-ms", type=float, default=200, help="each client's pause between two latest.jpg")
    ap.add_argument("--fps", type=float, default=1, help="inferences per second of the source (--fps of watch; "
                    "default 1: below what this 2-core machine infers, as a deployment sized for its cameras)")
    ap.add_argument("--clients-nice", type=int, default=19,
                    help="run the clients at this niceness (lookout keeps its own): 19 (the default) models clients "
                         "on other machines; 0 makes them compete with lookout for the cores")
    ap.add_argument("--out", default=str(ROOT / "target/bench-http"))
    ap.add_argument("--autogroup-nice", type=int, default=None,
                    help="set this session's scheduler autogroup nice for the run, e.g. -19 (see bench_pairs.py)")
    args = ap.parse_args()
    print(bp.autogroup_nice(args.autogroup_nice))
    need_s = (args.pairs + 1) * args.quiet + args.pairs * args.seconds + 60
    clip = make_clip(Path(args.out), loops=max(7, int(need_s // 10) + 1))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    r = run(args, clip)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    ph = r["phases"]
    pairs = []
    for k in range(1, len(ph) - 1, 2):
        before, loaded, after = ph[k - 1], ph[k], ph[k + 1]
        quiet_ms = (before["infer_mean_ms"] * before["inferred"] + after["infer_mean_ms"] * after["inferred"]) / max(
            1, before["inferred"] + after["inferred"])
        quiet_cpu = (before["cpu_ms_per_frame"] * before["inferred"] + after["cpu_ms_per_frame"] * after["inferred"]) / max(
            1, before["inferred"] + after["inferred"])
        pairs.append({"phase": loaded["phase"], "quiet_ms": quiet_ms, "clients_ms": loaded["infer_mean_ms"],
                      "ratio": loaded["infer_mean_ms"] / quiet_ms, "quiet_cpu_ms": quiet_cpu,
                      "clients_cpu_ms": loaded["cpu_ms_per_frame"], "cpu_ratio": loaded["cpu_ms_per_frame"] / quiet_cpu})
    ratios = [x["ratio"] for x in pairs]
    st = bp.spread(ratios)
    # RSS: the peak of each loaded phase; flat if the last is within 5 % of the first.
    peaks = [max((k for name, _, k in r["rss_kib"] if name == x["phase"]), default=0) for x in ph[1::2]]
    rss_growth = (peaks[-1] - peaks[0]) / peaks[0] if peaks and peaks[0] else float("nan")
    result = dict(r, model=args.model, clients=args.clients, poll_ms=args.poll_ms, clients_nice=args.clients_nice,
                  fps=args.fps, load_before=load,
                  load_after=load_after, pairs=pairs, ratio=st, rss_peaks_kib=peaks, rss_growth=rss_growth)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print()
    print(f"clients at nice {args.clients_nice}, each polling latest.jpg every {args.poll_ms:g} ms; watch --fps {args.fps:g}")
    print("| phase | clients | seconds | frames inferred | inference per frame (ms) | lookout CPU per frame (ms) | RSS first → last (MiB) | latest.jpg served | SSE bytes | clients' CPU (s) | client errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for x in ph:
        rss = [k for name, _, k in r["rss_kib"] if name == x["phase"]] or [0]
        print(
            f"| {x['phase']} | {x['clients']} | {x['seconds']} | {x['inferred']} | {x['infer_mean_ms']:.1f} | "
            f"{x['cpu_ms_per_frame']:.0f} | "
            f"{rss[0] / 1024:.0f} → {rss[-1] / 1024:.0f} (max {max(rss) / 1024:.0f}) | {x['jpegs']} | "
            f"{x['sse_bytes']} | {x['clients_cpu_s']} | {x['client_errors']} |"
        )
    print(f"\ninference per frame with clients / the quiet phases on either side: {bp.fmt_pairs(ratios)}")
    print(f"target <= 1.10 (median): {'met' if st['median'] <= 1.10 else 'NOT met'}")
    print(f"lookout's CPU per frame with clients / quiet: {bp.fmt_pairs([x['cpu_ratio'] for x in pairs])}")
    print(f"RSS peak of the first and last loaded phase: {peaks[0] / 1024:.0f} → {peaks[-1] / 1024:.0f} MiB "
          f"({rss_growth:+.1%}; flat if within 5 %: {'met' if abs(rss_growth) <= 0.05 else 'NOT met'})")
    print(f"load average before {' '.join(load)}, after {' '.join(load_after)}")


if __name__ == "__main__":
    main()
