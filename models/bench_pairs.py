"""Shared by the benchmark scripts: interleaved pairs, and a `lookout watch` measured from its own /metrics.

Why pairs. This machine is a shared VM whose speed drifts: inference alone went from 438 to 599 ms p50 within ten
minutes in one run (issue 17), more than the 10 % a target allows. A ratio taken between a measurement at minute 2
and one at minute 20 measures the drift. So each benchmark that states a ratio runs its two sides as short runs
(30-60 s), alternately and several times, and takes the ratio within each pair of runs that ran next to each other.
The order inside a pair alternates (A B, B A, A B, ...) so that a drift that goes one way for the whole run
favours neither side. The report gives every pair's ratio, their median (the figure compared with the target)
and their spread (max - min): a spread wider than the margin to the target says the machine moved more than the
effect measured, whatever the median says.

Why /metrics. One `watch` process serves `--http 127.0.0.1:0`; the harness reads the per-source counters
(`lookout_source_frames_inferred_total`) while it runs and times a window in the steady state: from the moment
the count reaches `warm` frames to the moment it next changes after `seconds` have passed. Time per inferred
frame = window seconds / frames inferred in the window, so model load, query encoding, the first (slow) inference,
pipeline start-up, draining and closing files are all outside it, without a second run to difference against.
The window's edges are found by polling every 50 ms only near them (every 1 s in between), so the poller itself
costs next to nothing; each edge is late by at most one poll (50 ms) and the two errors mostly cancel.

Standard library only.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

SERVING = re.compile(r"http: serving on http://127\.0\.0\.1:(\d+)/")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def loadavg() -> tuple[float, float, float]:
    try:
        a = Path("/proc/loadavg").read_text().split()
        return float(a[0]), float(a[1]), float(a[2])
    except OSError:
        return (float("nan"),) * 3


def fmt_load(l) -> str:
    return " ".join(f"{x:.2f}" for x in l)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        f = stat[stat.rindex(")") + 2:].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text format -> {(name, ((label, value), ...)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out


def per_source(metrics: dict, name: str) -> dict[str, float]:
    """{source: value} of one per-source metric."""
    return {dict(l).get("source", ""): v for (n, l), v in metrics.items() if n == name}


def total(metrics: dict, name: str) -> float:
    return sum(v for (n, _), v in metrics.items() if n == name)


def skipped_names(metrics: dict) -> list[str]:
    """Per-source counters of frames the motion gate (issue 17) let past the model, whatever the build names them:
    `lookout_source_frames_..._total` with "skip" or "motion" in the name."""
    return sorted({n for (n, _) in metrics if n.startswith("lookout_source_") and n.endswith("_total")
                   and ("skip" in n or "motion" in n)})


def alternate(kinds: list[str], rounds: int) -> list[list[str]]:
    """The order of the runs in each round: as given in even rounds, reversed in odd ones (A B, B A, A B, ...)."""
    return [list(kinds) if i % 2 == 0 else list(reversed(kinds)) for i in range(rounds)]


def spread(ratios: list[float]) -> dict:
    """Median, min, max and spread (max - min) of the pairs' ratios."""
    rs = [r for r in ratios if r == r]
    if not rs:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "spread": float("nan"), "n": 0}
    return {"median": statistics.median(rs), "min": min(rs), "max": max(rs), "spread": max(rs) - min(rs),
            "n": len(rs)}


def fmt_pairs(ratios: list[float]) -> str:
    s = spread(ratios)
    return (f"pairs {', '.join(f'{r:.3f}' for r in ratios)}; median {s['median']:.3f}, "
            f"spread {s['min']:.3f}-{s['max']:.3f} ({s['spread']:.3f})")


def _locate(argv: list[str], env: dict) -> tuple[list[float], float]:
    """Runs `locate --timings`; returns its infer_ms and the CPU seconds the process used (from its rusage)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
    t.start()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    t.join(10)
    line = next((l for l in reversed(err.splitlines()) if l.startswith("{") and "infer_ms" in l), None)
    if p.returncode != 0 or line is None:
        raise SystemExit(f"locate --timings failed ({p.returncode}):\n  {' '.join(argv)}\n{err[-2000:]}")
    return json.loads(line)["infer_ms"], ru.ru_utime + ru.ru_stime


def locate_alone(lookout: Path, model: Path, image: Path, queries: list[str], n: int, threads: int, env: dict,
                 extra: list[str] | None = None, cpu: bool = True) -> dict:
    """Inference alone: `locate --timings` on `n` + 1 copies of one image; its infer_ms (the image graph and the
    class head on a tensor already resized and normalised), the first dropped as warm-up.

    With `cpu`, also the CPU time per image: a second run on 3 images, and (CPU of the long run - CPU of the short
    one) / (n + 1 - 3): the CPU seconds one more image costs (PNG decode, preprocessing, the model), whatever else
    runs on the machine. Compared with watch's CPU per frame, it measures the work lookout adds per frame, which
    other processes' load does not change (they change how long the work waits, not how much there is)."""
    def argv_for(k: int) -> list[str]:
        a = [str(lookout), "locate", *([str(image)] * k), "-m", str(model), "--no-images", "--timings",
             "--json", "--intra-threads", str(threads), "--quiet", *(extra or [])]
        for q in queries:
            a += ["-q", q]
        return a

    lb, t0 = loadavg(), time.monotonic()
    infer_ms, cpu_long = _locate(argv_for(n + 1), env)
    seconds = time.monotonic() - t0
    cpu_ms = float("nan")
    if cpu and n + 1 > 3:
        _, cpu_short = _locate(argv_for(3), env)
        cpu_ms = 1e3 * (cpu_long - cpu_short) / (n + 1 - 3)
    la = loadavg()
    timed = infer_ms[1:]
    return {"ms": statistics.median(timed), "mean_ms": statistics.mean(timed), "min_ms": min(timed), "n": len(timed),
            "cpu_ms_per_image": cpu_ms, "seconds": seconds, "load": [lb, la]}


class Watch:
    """One `lookout watch` process with `--http 127.0.0.1:0` (added here): its port, its /metrics, its stderr in a
    file, and its JSON summary (`--json` is added) once it ended."""

    def __init__(self, argv: list[str], log_path: Path, env: dict, start_timeout_s: float = 300):
        self.argv = list(argv) + ["--http", "127.0.0.1:0", "--json"]
        self.log_path = log_path
        self.load_before = loadavg()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.tail: list[str] = []
        self.port: int | None = None
        self._stdout: list[str] = []
        got_port = threading.Event()

        def read_stderr():
            with open(log_path, "w") as f:
                for line in self.proc.stderr:
                    f.write(line)
                    plain = ANSI.sub("", line).rstrip()
                    self.tail = (self.tail + [plain])[-30:]
                    m = SERVING.search(plain)
                    if m and self.port is None:
                        self.port = int(m.group(1))
                        got_port.set()
            got_port.set()

        self._threads = [threading.Thread(target=read_stderr, daemon=True),
                         threading.Thread(target=lambda: self._stdout.append(self.proc.stdout.read()), daemon=True)]
        for t in self._threads:
            t.start()
        got_port.wait(start_timeout_s)
        if self.port is None:
            self.kill()
            raise SystemExit(f"lookout watch never served /metrics ({self.proc.poll()}):\n  {' '.join(self.argv)}\n  "
                             + "\n  ".join(self.tail))

    def metrics(self) -> dict | None:
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            c.request("GET", "/metrics")
            r = c.getresponse()
            body = r.read().decode()
            c.close()
            return parse_metrics(body) if r.status == 200 else None
        except (OSError, http.client.HTTPException):
            return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def inferred(self) -> float | None:
        m = self.metrics()
        return None if m is None else total(m, "lookout_source_frames_inferred_total")

    def window(self, warm: int, seconds: float, deadline_s: float) -> dict:
        """Time per inferred frame over a window of the steady state (see the module's doc). Returns seconds,
        frames, ms_per_frame, and the inference histogram's sum and count over the same window (watch's own
        inference time per batch)."""
        end_by = time.monotonic() + deadline_s

        def edge():
            """Waits for the inferred count to change; returns (time, count, metrics) just after the change."""
            before = None
            while time.monotonic() < end_by and self.alive():
                m = self.metrics()
                n = None if m is None else total(m, "lookout_source_frames_inferred_total")
                if n is not None:
                    if before is not None and n > before:
                        return time.monotonic(), n, m, cpu_seconds(self.proc.pid)
                    before = n
                time.sleep(0.05)
            raise TimeoutError

        def wait_until(count: float):
            while time.monotonic() < end_by and self.alive():
                n = self.inferred()
                if n is not None and n >= count:
                    return
                time.sleep(1.0)
            raise TimeoutError

        try:
            wait_until(warm - 1)
            ta, na, ma, ca = edge()
            while time.monotonic() < ta + seconds - 1.5 and time.monotonic() < end_by and self.alive():
                time.sleep(1.0)
            tb, nb, mb, cb = edge()
        except TimeoutError:
            raise SystemExit(f"lookout watch: no steady window of {seconds:g} s after {warm} frames within "
                             f"{deadline_s:g} s (ended: {self.proc.poll()}):\n  {' '.join(self.argv)}\n  "
                             + "\n  ".join(self.tail[-10:]))
        frames = nb - na
        busy = total(mb, "lookout_inference_seconds_sum") - total(ma, "lookout_inference_seconds_sum")
        batches = total(mb, "lookout_inference_seconds_count") - total(ma, "lookout_inference_seconds_count")
        return {"seconds": tb - ta, "frames": frames, "ms_per_frame": 1e3 * (tb - ta) / frames,
                "infer_ms_per_batch": 1e3 * busy / batches if batches else float("nan"),
                "infer_ms_per_frame": 1e3 * busy / frames, "batches": batches,
                "cpu_ms_per_frame": 1e3 * (cb - ca) / frames if ca is not None and cb is not None else float("nan")}

    def stop(self, timeout_s: float = 120) -> dict | None:
        """Asks the run to drain (SIGINT, as Ctrl-C), waits, kills it past `timeout_s`; returns its summary."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        for t in self._threads:
            t.join(10)
        self.load_after = loadavg()
        out = "".join(self._stdout)
        try:
            return json.loads(out[out.index("{"):])
        except ValueError:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def autogroup_nice(nice: int | None) -> str:
    """Sets the scheduler autogroup's nice of this process's session (and so of every lookout it starts) for the
    rest of the run, and puts the old value back at exit; None leaves it alone. Why: with
    kernel.sched_autogroup_enabled = 1, a task's nice only weighs within its own session, so other sessions'
    `nice -n 19` builds share the CPU evenly with the benchmark (see BENCHMARKS.md, "Running benchmarks on this
    machine"). Needs root for a negative value. Returns what was done, for the report."""
    if nice is None:
        return "autogroup left as it is"
    path = Path("/proc/self/autogroup")
    try:
        old = int(path.read_text().split("nice")[-1])
        path.write_text(str(nice))
    except (OSError, ValueError) as e:
        return f"autogroup nice not set ({e})"
    import atexit

    def restore():
        try:
            path.write_text(str(old))
        except OSError:
            pass

    atexit.register(restore)
    return f"autogroup nice {old} -> {nice} for the run (restored at exit)"


def lookout_env(repo: Path) -> dict:
    env = dict(os.environ)
    lib = repo / ".deps" / "onnxruntime" / "libonnxruntime.so"
    if not env.get("ORT_DYLIB_PATH") and lib.exists():
        env["ORT_DYLIB_PATH"] = str(lib)
    env.setdefault("RUST_LOG", "warn")
    return env


def watch_flags_from_help(text: str) -> set[str]:
    """The long options a `--help` text lists."""
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", text))


def watch_flags(lookout: Path, env: dict) -> set[str]:
    """The long options `lookout watch --help` lists: what this build can do (`--precision`, `--motion`, ...)."""
    r = subprocess.run([str(lookout), "watch", "--help"], capture_output=True, text=True, env=env)
    return watch_flags_from_help(r.stdout)
