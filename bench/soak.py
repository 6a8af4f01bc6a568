"""The soak: the seed's scale (500K genes over 40 shards) compressed in time, with faults.

    .venv/bin/python bench/soak.py                       # 500K genes, 40 shards, ~20 min
    .venv/bin/python bench/soak.py --short               # CI's variant, ~2 min
    .venv/bin/python bench/soak.py --duration 480 --genes 500000 --shards 40 --seed 18

A real ``crawlguard up`` (a subprocess, its own state dir) on the real Prometheus
path (``--alert-path prometheus``: Prometheus and Alertmanager from deploy/) with the
simulated GPU rebuilds the reference rebuild (crawlguard.refbuild) of ``--genes``
genes over ``--shards`` shards, run one after the other as a rebuild does. Each
shard's spill profile is drawn from ``--seed``: healthy, incident 1 (a crawl: decays
to 2.3/15.3 of its rate) or incident 2 (a stall: collapses to 0.02/15.3, and again
after its restart). The worker is the reference rebuild's (bench/soakworker.py adds
an OOM death on demand).

Time is compressed, nothing else: the simulated GPU runs ``--time-scale`` times the
incidents' pace (default: chosen so the rebuild fits ``--duration``), and the
scrape/evaluation interval is 1 s (``up --interval 1``: Alertmanager group_wait /
group_interval / repeat_interval 1 s / 2 s / 20 s). Detection knobs are the shipped
ones (HELIX_BFM_CRAWL_WINDOW and the baseline count in batches, so they need no
scaling); so are the grace, GPU-release and OOM waits.

From the same seed, faults at random moments of ``--duration``:

- worker SIGKILLs (the shard's current worker, once it has made progress);
- OOM deaths (``oom.trigger``, bench/soakworker.py);
- SIGKILL of the sidecar, Prometheus and Alertmanager (``up`` brings them back);
- SIGKILL of an exporter: ``up``'s own exporter is a thread of ``up`` (it dies only
  with ``up``), so the killed one is a standalone ``crawlguard exporter`` on the same
  state dir, scraped by this script throughout, restarted after each kill (what a
  fleet's rig exporter or a second reader of the state dir lives through).

Sampled every ``--sample`` seconds: RSS and open fds of up (its exporter included),
the sidecar, the standalone exporter, Prometheus and Alertmanager; the state dir's
files and bytes (Prometheus' and Alertmanager's data apart: "tsdb"), the metrics
files, the log bytes (run/logs and up's own output); the scrape time of up's
exporter (this script's GET) and as Prometheus measures it (scrape_duration_seconds).

At the end: each fault and what it hit, each episode (a spill, an OOM death) with
seconds from its onset to the alert's startsAt and to the sidecar's rung, the growth
of every sampled figure (first half against second half of the run) and the
lossless verdict over every gene (crawlguard.refbuild.verify). ``--json FILE`` writes
all of it for tests/e2e/test_soak_short.py. Exit status 0 when the rebuild finished,
is lossless and every episode whose worker lived was acted on; 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from bench_rebuild import of_worker

from crawlguard.kernel.statedir import StateDir
from crawlguard.refbuild.corpus import ShardSpec, generate, shard_root
from crawlguard.refbuild.profiles import Timing
from crawlguard.refbuild.verify import verify_shard
from crawlguard.rig.demo import clean_env

BENCH = Path(__file__).resolve().parent
WORKER = BENCH / "soakworker.py"
INTERVAL = 1.0
BATCH = 64
GENES_PER_FILE = 500
FINISHED_FIRST_BATCHES = 24
"""A spilled worker that completes its shard within this many batches of the spill ended
its crawl by finishing: the signature needs the decay (about 4 batches), then
HELIX_BFM_CRAWL_WINDOW (8) slow batches, then scrape, evaluation and delivery."""
PROFILES = ("healthy", "incident1", "incident2")
WEIGHTS = (2, 1, 1)
SERVERS = ("sidecar", "prometheus", "alertmanager")

FULL = {"duration": 1200.0, "genes": 500_000, "shards": 40, "sample": 10.0,
        "faults": {"worker-kill": 8, "oom": 4, "sidecar-kill": 2, "exporter-kill": 3,
                   "prometheus-kill": 2, "alertmanager-kill": 2}}
SHORT = {"duration": 60.0, "genes": 12_000, "shards": 4, "sample": 3.0,
         "faults": {"worker-kill": 2, "oom": 1, "sidecar-kill": 1, "exporter-kill": 1,
                    "prometheus-kill": 1, "alertmanager-kill": 1}}


@dataclass
class Fault:
    at: float
    """Seconds after up started (scheduled)."""
    kind: str
    fired_at: float | None = None
    target: str = ""
    result: str = "not fired (the rebuild ended first)"
    back_after: float | None = None
    """Server kills: seconds until up ran a new one (its pid in up.json, alive)."""


@dataclass
class Sample:
    t: float
    rss: dict[str, int] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    state_files: int = 0
    state_bytes: int = 0
    metrics_files: int = 0
    tsdb_bytes: int = 0
    log_bytes: int = 0
    scrape_ms: float | None = None
    prom_scrape_ms: dict[str, float] = field(default_factory=dict)
    prom_samples: dict[str, float] = field(default_factory=dict)
    """scrape_samples_scraped per job: what a scrape carries."""


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.data = root / "data"
        self.state = root / "state"
        self.rng = random.Random(args.seed)
        self.t0 = 0.0
        self.up: subprocess.Popen[bytes] | None = None
        self.up_log = root / "up.out"
        self.exporter: subprocess.Popen[bytes] | None = None
        self.exporter_url: str | None = None
        self.exporter_kills = 0
        self.samples: list[Sample] = []
        self.faults: list[Fault] = []
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.killed_pids: set[int] = set()
        self.errors: list[str] = []

    # -- setup -----------------------------------------------------------------
    def corpus(self) -> list[ShardSpec]:
        a = self.args
        per_shard = max(1, a.genes // a.shards)
        files = max(1, round(per_shard / GENES_PER_FILE))
        per_file = max(1, math.ceil(per_shard / files))
        # Every kind of episode at least once, then the seed's draw.
        drawn = list(PROFILES[1:]) + self.rng.choices(PROFILES, WEIGHTS, k=a.shards)
        specs = [ShardSpec(f"s{i:02d}", files, per_file, drawn[i], BATCH)
                 for i in range(a.shards)]
        for spec in specs:
            generate(self.data, spec)
        return specs

    def schedule(self, counts: dict[str, int]) -> None:
        d = self.args.duration
        for kind, n in counts.items():
            for _ in range(n):
                self.faults.append(Fault(round(self.rng.uniform(0.08, 0.8) * d, 1), kind))
        self.faults.sort(key=lambda f: f.at)

    def start_up(self, specs: list[ShardSpec], time_scale: float) -> None:
        argv = [sys.executable, "-m", "crawlguard", "up", "--state-dir", str(self.state),
                "--alert-path", "prometheus", "--interval", f"{INTERVAL:g}", "--simulate-gpu",
                "--progress", "lines"]
        for spec in specs:
            argv += ["--shard", spec.shard]
        argv += ["--", sys.executable, str(WORKER), "work", "--data", str(self.data),
                 "--shard", "{shard}", "--time-scale", f"{time_scale:g}"]
        with open(self.up_log, "wb") as out:
            self.up = subprocess.Popen(argv, env=clean_env(dict(os.environ)), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.t0 = time.monotonic()

    def up_json(self) -> dict[str, Any]:
        try:
            data = json.loads((self.state / "run" / "up.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- the standalone exporter ------------------------------------------------
    def exporter_loop(self) -> None:
        """A `crawlguard exporter` on the state dir, scraped every second; restarted
        whenever the schedule kills it."""
        with httpx.Client(timeout=10, trust_env=False) as client:
            while not self.done.is_set():
                if self.exporter is None or self.exporter.poll() is not None:
                    self.start_exporter()
                if self.exporter_url:
                    with contextlib.suppress(httpx.HTTPError):
                        client.get(f"{self.exporter_url}/metrics")
                self.done.wait(1.0)
        if self.exporter is not None and self.exporter.poll() is None:
            self.exporter.terminate()
            self.exporter.wait(30)

    def start_exporter(self) -> None:
        if self.exporter is not None:
            self.exporter.wait(30)
        log = open(self.root / "exporter.out", "ab")  # noqa: SIM115
        self.exporter = subprocess.Popen(
            [sys.executable, "-m", "crawlguard", "exporter", "--host", "127.0.0.1",
             "--port", "0"],
            env={**clean_env(dict(os.environ)), "HELIX_BFM_STATE_DIR": str(self.state)},
            stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        log.close()
        self.exporter_url = None
        assert self.exporter.stdout is not None
        for raw in self.exporter.stdout:
            line = raw.decode(errors="replace")
            if "listening on " in line:
                self.exporter_url = line.split("listening on ", 1)[1].split("/metrics")[0]
                break
        # Keep draining its stdout so a full pipe never blocks it.
        threading.Thread(target=lambda p=self.exporter: p.stdout and p.stdout.read(),
                         daemon=True).start()

    # -- faults ------------------------------------------------------------------
    def fault_loop(self) -> None:
        for fault in self.faults:
            while self.now() < fault.at:
                if self.done.wait(min(1.0, fault.at - self.now())):
                    return
            fault.fired_at = round(self.now(), 1)
            try:
                self.inject(fault)
            except (psutil.Error, OSError) as exc:
                fault.result = f"failed: {exc}"

    def worker(self, min_age: float = 2.0, wait: float = 30.0, gpu: bool = False
               ) -> psutil.Process | None:
        """The live worker, once it is ``min_age`` seconds old (so it made progress: a
        kill of a worker that has not would count toward the futile-restart limit);
        with ``gpu``, only one that runs on the GPU (a CPU worker has no VRAM to lose)."""
        assert self.up is not None
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not self.done.is_set():
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.up.pid).children():
                    cmd = child.cmdline()
                    if str(WORKER) in cmd and child.pid not in self.killed_pids \
                            and child.status() != psutil.STATUS_ZOMBIE \
                            and time.time() - child.create_time() >= min_age \
                            and not (gpu and child.environ().get("BGEM3_DEVICE") == "cpu"):
                        return child
            self.done.wait(0.2)
        return None

    @staticmethod
    def shard_of(proc: psutil.Process) -> str:
        with contextlib.suppress(psutil.Error):
            cmd = proc.cmdline()
            if "--shard" in cmd:
                return cmd[cmd.index("--shard") + 1]
        return "?"  # it ended just now

    def inject(self, fault: Fault) -> None:
        kind = fault.kind
        if kind == "worker-kill":
            w = self.worker()
            if w is None:
                fault.result = "skipped: no worker"
                return
            shard = self.shard_of(w)
            self.killed_pids.add(w.pid)
            os.kill(w.pid, signal.SIGKILL)  # psutil refuses a worker dying right now
            fault.target, fault.result = f"{shard} pid {w.pid}", "killed"
        elif kind == "oom":
            fault.result = "skipped: no GPU worker took it"
            for _ in range(3):
                w = self.worker(gpu=True)
                if w is None:
                    return
                shard = self.shard_of(w)
                trigger = shard_root(self.data, shard) / "oom.trigger"
                trigger.write_text("soak\n")
                # Its next batch takes it; a worker that ends first leaves it: try again.
                deadline = time.monotonic() + 15
                while trigger.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not trigger.exists():
                    fault.target, fault.result = shard, "triggered"
                    return
                with contextlib.suppress(OSError):
                    trigger.unlink()
        elif kind == "exporter-kill":
            proc = self.exporter
            if proc is None or proc.poll() is not None:
                fault.result = "skipped: exporter not running"
                return
            proc.send_signal(signal.SIGKILL)
            self.exporter_kills += 1
            fault.target, fault.result = f"pid {proc.pid}", "killed"
        else:
            name = kind.removesuffix("-kill")
            old = self.up_json().get("servers", {}).get(name)
            if not old:
                fault.result = f"skipped: no {name} in up.json"
                return
            os.kill(int(old), signal.SIGKILL)
            fault.target, fault.result = f"pid {old}", "killed"
            threading.Thread(target=self.watch_restart, args=(fault, name, int(old)),
                             daemon=True).start()

    def watch_restart(self, fault: Fault, name: str, old: int) -> None:
        killed = time.monotonic()
        while not self.done.is_set() and time.monotonic() - killed < 300:
            new = self.up_json().get("servers", {}).get(name)
            if new and int(new) != old and psutil.pid_exists(int(new)):
                fault.back_after = round(time.monotonic() - killed, 2)
                return
            time.sleep(0.1)

    # -- sampling ----------------------------------------------------------------
    def processes(self) -> dict[str, int]:
        assert self.up is not None
        pids = {"up": self.up.pid}
        for name, pid in self.up_json().get("servers", {}).items():
            if pid:
                pids[name] = int(pid)
        if self.exporter is not None and self.exporter.poll() is None:
            pids["exporter"] = self.exporter.pid
        return pids

    def sample(self, client: httpx.Client) -> Sample:
        s = Sample(t=round(self.now(), 1))
        for name, pid in self.processes().items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                s.rss[name] = p.memory_info().rss
                s.fds[name] = p.num_fds()
        tsdb = {self.state / "run" / "prometheus-data", self.state / "run" / "alertmanager-data"}
        logs = self.state / "run" / "logs"
        for dirpath, _dirnames, filenames in os.walk(self.state):
            here = Path(dirpath)
            in_tsdb = any(here == t or t in here.parents for t in tsdb)
            for name in filenames:
                with contextlib.suppress(OSError):
                    size = (here / name).stat().st_size
                    if in_tsdb:
                        s.tsdb_bytes += size
                        continue
                    s.state_files += 1
                    s.state_bytes += size
                    if here == logs:
                        s.log_bytes += size
                    if here.name == "metrics":
                        s.metrics_files += 1
        with contextlib.suppress(OSError):
            s.log_bytes += self.up_log.stat().st_size
        urls = self.up_json().get("urls", {})
        if "exporter" in urls:
            with contextlib.suppress(httpx.HTTPError):
                t = time.perf_counter()
                if client.get(f"{urls['exporter']}/metrics").status_code == 200:
                    s.scrape_ms = round((time.perf_counter() - t) * 1000, 1)
        if "prometheus" in urls:
            for query, into, factor in (("scrape_duration_seconds", s.prom_scrape_ms, 1000),
                                        ("scrape_samples_scraped", s.prom_samples, 1)):
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError, TypeError):
                    r = client.get(f"{urls['prometheus']}/api/v1/query",
                                   params={"query": query})
                    for row in r.json()["data"]["result"]:
                        into[row["metric"].get("job", "?")] = round(
                            float(row["value"][1]) * factor, 1)
        return s

    def sample_loop(self) -> None:
        with httpx.Client(timeout=10, trust_env=False) as client:
            while not self.done.is_set():
                s = self.sample(client)
                with self.lock:
                    self.samples.append(s)
                print(line_of(s), flush=True)
                self.done.wait(self.args.sample)

    # -- the run -----------------------------------------------------------------
    def run(self, time_scale: float, specs: list[ShardSpec]) -> int:
        self.start_up(specs, time_scale)
        assert self.up is not None
        threads = [threading.Thread(target=f, daemon=True)
                   for f in (self.exporter_loop, self.fault_loop, self.sample_loop)]
        for t in threads:
            t.start()
        limit = self.args.duration * 3 + 120
        try:
            rc = self.up.wait(limit)
        except subprocess.TimeoutExpired:
            self.errors.append(f"the rebuild did not finish within {limit:.0f}s: stopped")
            self.up.send_signal(signal.SIGINT)
            rc = self.up.wait(120)
        self.done.set()
        for t in threads:
            t.join(60)
        return rc


def line_of(s: Sample) -> str:
    mib = {k: f"{v / 2**20:.0f}" for k, v in s.rss.items()}
    procs = " ".join(f"{k}={mib[k]}M/{s.fds.get(k, '?')}fd" for k in mib)
    prom = ",".join(f"{k}={v:g}" for k, v in sorted(s.prom_scrape_ms.items()))
    return (f"[{s.t:7.1f}s] {procs} | state {s.state_files} files {s.state_bytes / 1e6:.2f}MB "
            f"(metrics {s.metrics_files}) tsdb {s.tsdb_bytes / 1e6:.1f}MB logs "
            f"{s.log_bytes / 1e3:.0f}kB | scrape {s.scrape_ms}ms prom[{prom}]ms")


def choose_time_scale(genes: int, shards: int, duration: float) -> float:
    """Simulated speed so the rebuild fits ``duration``: the healthy GPU time, half
    again for crawls, restarts and CPU-demoted shards, and ~3 s a launch."""
    budget = max(duration - 3.0 * shards * 1.5, duration * 0.3)
    return round(max(Timing.time_scale, genes * 1.5 / (15.3 * budget)), 1)


def episodes(data: Path, state: StateDir, shard: str, killed: set[int]) -> list[dict[str, Any]]:
    """Every spill and OOM death of the shard: seconds from its onset to the alert's
    startsAt and to the sidecar's rung decision (None: did not happen); ``preempted``
    when the soak killed that worker (SIGKILL) before any rung."""
    path = shard_root(data, shard) / "sim.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []
    try:
        history = json.loads(state.ladder_file(shard).read_text()).get("history", [])
    except (OSError, ValueError):
        history = []
    out = []
    for ev in (e for e in events if e["event"] in ("spill", "oom")):
        pid, t0 = ev["pid"], ev["t"]
        crawl, rung, end = of_worker(events, history, pid)
        after = end["batch"] - ev["batch"] if end and ev["event"] == "spill" else None
        out.append({"shard": shard, "pid": pid, "kind": ev["event"],
                    "batches_after": after,
                    # The shard was complete before a crawl signature of
                    # HELIX_BFM_CRAWL_WINDOW slow batches could form and be delivered.
                    "finished_first": rung is None and end is not None
                    and end["event"] == "done" and after is not None
                    and after <= FINISHED_FIRST_BATCHES,
                    "alert": round(crawl["starts_at"] - t0, 2) if crawl else None,
                    "acted": round(rung["decided_at"] - t0, 2) if rung else None,
                    "rung": rung.get("rung") if rung else None,
                    "alertname": crawl.get("alertname") if crawl else None,
                    "preempted": rung is None and pid in killed})
    return out


GROWTH_KEYS = ("rss", "fds")


def growth(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Per figure: max over the first half of the run, max over the second half, last."""
    if len(samples) < 4:
        return {}
    half = len(samples) // 2
    series: dict[str, list[tuple[int, float]]] = {}
    for i, s in enumerate(samples):
        for key in GROWTH_KEYS:
            for name, value in getattr(s, key).items():
                series.setdefault(f"{key}:{name}", []).append((i, float(value)))
        for key in ("state_files", "state_bytes", "metrics_files", "tsdb_bytes", "log_bytes"):
            series.setdefault(key, []).append((i, float(getattr(s, key))))
        if s.scrape_ms is not None:
            series.setdefault("scrape_ms", []).append((i, s.scrape_ms))
        for job, ms in s.prom_scrape_ms.items():
            series.setdefault(f"prom_scrape_ms:{job}", []).append((i, ms))
        for job, n in s.prom_samples.items():
            series.setdefault(f"prom_samples:{job}", []).append((i, n))
    out = {}
    for key, points in series.items():
        first = [v for i, v in points if i < half]
        second = [v for i, v in points if i >= half]
        if first and second:
            out[key] = {"first_half_max": max(first), "second_half_max": max(second),
                        "first_half_median": statistics.median(first),
                        "second_half_median": statistics.median(second),
                        "last": points[-1][1]}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="CI's preset (about 2 minutes)")
    p.add_argument("--duration", type=float, help="seconds the rebuild should take, and over "
                   "which faults land (default 1200; --short 60)")
    p.add_argument("--genes", type=int, help="genes in all (default 500000; --short 12000)")
    p.add_argument("--shards", type=int, help="shards (default 40; --short 4); at least 2")
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--time-scale", type=float, help="simulated speed-up (default: fits "
                   "--duration)")
    p.add_argument("--sample", type=float, help="seconds between samples")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--keep", action="store_true", help="keep the run's directory")
    args = p.parse_args()
    preset = SHORT if args.short else FULL
    for key in ("duration", "genes", "shards", "sample"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if args.shards < 2 or args.genes < args.shards or args.duration <= 0:
        p.error("need --shards >= 2, --genes >= --shards and --duration > 0")
    if not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")):
        sys.exit("prometheus and prometheus-alertmanager must be on PATH")
    # More faults for a longer run, the preset's mix.
    scale = 1.0 if args.short else max(0.25, args.duration / FULL["duration"])
    counts = {k: max(1, round(n * scale)) for k, n in preset["faults"].items()}
    root = Path(tempfile.mkdtemp(prefix="crawlguard-soak-"))
    soak = Soak(args, root)
    try:
        specs = soak.corpus()
        total = sum(s.files * s.genes_per_file for s in specs)
        time_scale = args.time_scale or choose_time_scale(total, args.shards, args.duration)
        soak.schedule(counts)
        mix = {p: sum(1 for s in specs if s.profile == p) for p in PROFILES}
        print(f"soak: {total} genes over {args.shards} shards ({specs[0].files} files of "
              f"{specs[0].genes_per_file} genes, batches of {BATCH}); profiles {mix}; seed "
              f"{args.seed}; time scale {time_scale:g}x (healthy GPU {15.3 * time_scale:.0f} "
              f"genes/s); interval {INTERVAL:g}s; duration {args.duration:g}s; in {root}",
              flush=True)
        print("soak: faults " + ", ".join(f"{f.kind}@{f.at:g}s" for f in soak.faults),
              flush=True)
        started = time.monotonic()
        rc = soak.run(time_scale, specs)
        wall = time.monotonic() - started
        return report(soak, specs, rc, wall, total, time_scale)
    finally:
        if args.keep:
            print(f"soak: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def report(soak: Soak, specs: list[ShardSpec], rc: int, wall: float, total: int,
           time_scale: float) -> int:
    state = StateDir(soak.state)
    verdicts = [verify_shard(soak.data, s.shard) for s in specs]
    eps = [e for s in specs for e in episodes(soak.data, state, s.shard, soak.killed_pids)]
    lossless = all(v.lossless for v in verdicts)
    present = sum(v.present for v in verdicts)
    unacted = [e for e in eps if e["acted"] is None and not e["preempted"]
               and not e["finished_first"]]
    g = growth(soak.samples)

    print(f"\nup ended with exit status {rc} after {wall:.1f}s")
    print("\nfaults (seconds after up started)")
    for f in soak.faults:
        back = f" (back after {f.back_after:g}s)" if f.back_after is not None else ""
        print(f"  {f.kind:<18} at {f.fired_at if f.fired_at is not None else f.at:>7}s "
              f"{f.target:<18} {f.result}{back}")
    print("\nepisodes: seconds from the spill (or OOM death) to the alert's startsAt and "
          "to the sidecar's rung")
    print(f"  {'shard':<6} {'kind':<6} {'pid':>8} {'alert':>8} {'acted':>8}  rung / alert "
          "(batches the worker ran after the spill)")
    for e in eps:
        acted = ("preempted" if e["preempted"] else "finished" if e["finished_first"]
                 else _s(e["acted"]))
        after = f" ({e['batches_after']})" if e["batches_after"] is not None else ""
        print(f"  {e['shard']:<6} {e['kind']:<6} {e['pid']:>8} {_s(e['alert'])} {acted:>8}  "
              f"{e['rung'] or '-'} / {e['alertname'] or '-'}{after}")
    acted = [e["acted"] for e in eps if e["acted"] is not None]
    for alertname in sorted({e["alertname"] for e in eps if e["acted"] is not None}):
        these = [e["acted"] for e in eps if e["acted"] is not None
                 and e["alertname"] == alertname]
        print(f"  onset to action, {alertname}: {_spread(these)}")
    if acted:
        print(f"  onset to action, every episode: {_spread(acted)}")
    print("\ngrowth (first half of the run vs second half: max, median; and the last sample)")
    for key, v in sorted(g.items()):
        unit, div = (("MiB", 2**20) if key.startswith("rss") else
                     ("kB", 1e3) if key.endswith("bytes") else ("", 1))
        print(f"  {key:<34} {v['first_half_max'] / div:10.1f} {v['second_half_max'] / div:10.1f}"
              f"   {v['first_half_median'] / div:10.1f} {v['second_half_median'] / div:10.1f}"
              f"   last {v['last'] / div:.1f} {unit}")
    print("\nthe state dir at the end, by kind of file (shard names as *)")
    for pattern, (n, size) in breakdown(soak.state, [s.shard for s in specs])[:14]:
        print(f"  {pattern:<44} {n:>5} files {size / 1e3:>10.1f} kB")
    verdict = "lossless" if lossless else "NOT lossless"
    print(f"\n{verdict}: {present}/{total} genes over {len(specs)} shards; "
          f"{sum(v.missing for v in verdicts)} missing, "
          f"{sum(v.duplicated for v in verdicts)} duplicated, "
          f"{sum(v.mismatched for v in verdicts)} differ")
    print(f"episodes {len(eps)}: acted {len(acted)}, preempted by a kill "
          f"{sum(e['preempted'] for e in eps)}, shard finished within "
          f"{FINISHED_FIRST_BATCHES} batches of the spill {sum(e['finished_first'] for e in eps)}"
          f", not acted {len(unacted)}")
    for err in soak.errors:
        print(f"error: {err}")
    if soak.args.json:
        soak.args.json.write_text(json.dumps({
            "rc": rc, "wall_s": wall, "time_scale": time_scale, "genes": total,
            "lossless": lossless, "verdicts": [v.as_dict() for v in verdicts],
            "episodes": eps, "faults": [asdict(f) for f in soak.faults],
            "samples": [asdict(s) for s in soak.samples], "growth": g,
            "exporter_kills": soak.exporter_kills, "errors": soak.errors,
            "state_dir": breakdown(soak.state, [s.shard for s in specs])}, indent=1))
    return 0 if rc == 0 and lossless and not unacted and not soak.errors else 1


def breakdown(state: Path, shards: list[str]) -> list[tuple[str, tuple[int, int]]]:
    """Files and bytes of the state dir per path pattern, largest first."""
    names = set(shards)
    out: dict[str, tuple[int, int]] = {}
    for path in state.rglob("*"):
        with contextlib.suppress(OSError):
            if not path.is_file():
                continue
            parts = list(path.relative_to(state).parts)
            if parts[:2] in (["run", "prometheus-data"], ["run", "alertmanager-data"]):
                parts = [*parts[:2], "..."]
            parts = ["*" if p in names or Path(p).stem in names else p for p in parts]
            if parts[0] == "metrics":
                parts = ["metrics", parts[-1].split("_")[0] + "_*"]
            elif len(parts) > 2 and parts[-2] == "oom":
                parts[-1] = "*"
            key = "/".join(parts)
            n, size = out.get(key, (0, 0))
            out[key] = (n + 1, size + path.stat().st_size)
    return sorted(out.items(), key=lambda kv: -kv[1][1])


def _spread(values: list[float]) -> str:
    p90 = (statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1
           else values[0])
    return (f"median {statistics.median(values):.1f}s, p90 {p90:.1f}s, min {min(values):.1f}s, "
            f"max {max(values):.1f}s over {len(values)}")


def _s(seconds: float | None) -> str:
    return "   never" if seconds is None else f"{seconds:7.1f}s"


if __name__ == "__main__":
    sys.exit(main())
