"""Rebuild wall time with crawlguard vs. without remediation vs. a wall-clock timeout.

For each incident profile of the reference rebuild (crawlguard.refbuild), one
shard the size of the demo's is rebuilt for real with every part of crawlguard
(`up` with the simulated GPU), and the same shard is projected through the
same simulator model (crawlguard.refbuild.simdevice.SimDevice.step, no waiting)
under two alternatives nobody wants to wait for:

- no remediation: one worker runs the shard to its end, crawl and all;
- a per-shard wall-clock timeout (the alternative crawlguard replaces): the worker
  is killed when the shard has run TIMEOUT_FACTOR x its healthy time, resumed
  from its finished files in a fresh context, again and again; a timer has no
  ladder, so it never demotes to CPU. Projected twice: sized for this very
  shard (an oracle nobody has), and sized for a shard LARGEST x larger (what
  one timer for a whole rebuild must allow).

Detection delay is measured on the real run: batches the worker finished
after its context spilled (from the simulator's events) until a rung stopped
it, and the seconds in between. Figures are in simulated seconds and, scaled
back by the time scale, at the incidents' real pace.

Spill onset to signal, per episode of a shard (the incident-2 shard spills
twice: episode 2 is its relaunched worker's crawl): from the spill to the
alert's startsAt (the rule fired), to the sidecar's rung decision (it acted)
and to the worker's stop. ``--alert-path both`` measures the embedded and the
real Prometheus + Alertmanager path in one go; ``--am-timing shipped`` runs
Alertmanager with the shipped group_wait / group_interval / repeat_interval
(10 s / 1 m / 2 m) instead of the bench's scaled 1 s / 2 s / 10 s, which is
where a second episode waiting on repeat_interval shows.

    .venv/bin/python bench/bench_rebuild.py [--alert-path embedded|prometheus|auto|both]
        [--am-timing scaled|shipped] [--profile incident1|incident2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from crawlguard.kernel.formats import batchlog
from crawlguard.kernel.settings import Settings
from crawlguard.kernel.statedir import StateDir
from crawlguard.refbuild.corpus import DEMO_SHARDS, ShardSpec, generate, shard_root
from crawlguard.refbuild.profiles import Timing, get_profile
from crawlguard.refbuild.simdevice import SimDevice
from crawlguard.rig.demo import clean_env
from crawlguard.rig.promstack import AmTiming, resolve_alert_path
from crawlguard.rig.shardview import summarise_batches
from crawlguard.rig.up import RigConfig, RunningRig

TIMEOUT_FACTOR = 2.0
LARGEST = 10.0
"""A real rebuild's largest shard, relative to this one: one timer for every
shard must let the largest finish, so on this one it fires that much later."""
TIMING = Timing()


def project(spec: ShardSpec, timeout: float | None = None) -> float:
    """Seconds to rebuild ``spec`` on the GPU by the model alone; with ``timeout``,
    killing and resuming the worker every ``timeout`` seconds (file granularity)."""
    profile = get_profile(spec.profile)
    total_batches = math.ceil(spec.files * spec.genes_per_file / spec.batch_size)
    per_file = math.ceil(spec.genes_per_file / spec.batch_size)
    elapsed, files_done = 0.0, 0
    while files_done < spec.files:
        sim = SimDevice("cuda:0", profile, total_batches, TIMING, seed=spec.shard)
        attempt = TIMING.load_seconds / TIMING.time_scale
        progressed = False
        while files_done < spec.files:
            file_time = sum(sim.step(spec.batch_size) for _ in range(per_file))
            if timeout is not None and attempt + file_time > timeout:
                # Killed mid-file: the partial file is redone by the next worker.
                attempt = timeout
                break
            attempt += file_time
            files_done += 1
            progressed = True
        elapsed += attempt
        if not progressed and timeout is not None:
            return math.inf  # the timer kills every worker before its first file
    return elapsed


def healthy_time(spec: ShardSpec) -> float:
    return project(ShardSpec(spec.shard, spec.files, spec.genes_per_file, "healthy",
                             spec.batch_size))


def detection(data: Path, state: StateDir, shard: str) -> list[dict[str, Any]]:
    """Per spill: batches finished after it and seconds until the worker stopped."""
    events = [json.loads(line) for line in
              (shard_root(data, shard) / "sim.jsonl").read_text().splitlines()]
    batches, _ = batchlog.read(state.batches_file(shard))
    out = []
    for spill in (e for e in events if e["event"] == "spill"):
        pid, t0 = spill["pid"], spill["t"]
        stop = next((e for e in events if e["pid"] == pid and e["event"] in ("stop", "done")),
                    None)
        after = [b for b in batches if b.pid == pid and b.t > t0]
        out.append({"batches": len(after), "seconds": (stop["t"] - t0) if stop else None,
                    "ended": stop["event"] if stop else "killed"})
    return out


def of_worker(events: list[dict[str, Any]], history: list[dict[str, Any]], pid: int
              ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """The ladder's first crawl and rung entries for worker ``pid``, and its simulator
    event that ended it (stop or done); None for each that is not there."""
    def first(kind: str) -> dict[str, Any] | None:
        return next((h for h in history if h.get("kind") == kind
                     and (h.get("worker") or {}).get("pid") == pid), None)

    end = next((e for e in events if e["pid"] == pid and e["event"] in ("stop", "done")), None)
    return first("crawl"), first("rung"), end


def episodes(data: Path, state: StateDir, shard: str) -> list[dict[str, Any]]:
    """Per spill (episode), seconds from its onset to the alert's startsAt, to the
    sidecar's rung decision and to the worker's stop (None: did not happen)."""
    events = [json.loads(line) for line in
              (shard_root(data, shard) / "sim.jsonl").read_text().splitlines()]
    ladder = json.loads(state.ladder_file(shard).read_text())
    history = ladder.get("history", [])
    out = []
    for spill in (e for e in events if e["event"] == "spill"):
        pid, t0 = spill["pid"], spill["t"]
        crawl, rung, stop = of_worker(events, history, pid)
        out.append({
            "alert": crawl["starts_at"] - t0 if crawl else None,
            "acted": rung["decided_at"] - t0 if rung else None,
            "stopped": stop["t"] - t0 if stop else None,
            "alertname": crawl.get("alertname") if crawl else None})
    return out


def run_real(spec: ShardSpec, alert_path: str, root: Path, am_timing: AmTiming | None
             ) -> tuple[float, list[dict[str, Any]], list[dict[str, Any]]]:
    data, env = root / "refbuild", clean_env(dict(os.environ))
    generate(data, spec)
    path, _ = resolve_alert_path(alert_path)
    config = RigConfig(
        shards=(spec.shard,),
        command=(sys.executable, "-m", "crawlguard.refbuild", "work", "--data", str(data),
                 "--shard", "{shard}"),
        settings=Settings.from_env({**env, "HELIX_BFM_STATE_DIR": str(root)}), env=env,
        alert_path=path, interval=1.0 if path == "prometheus" else 0.5,
        am_timing=am_timing, simulate_gpu=True, progress="off")
    rc = RunningRig(config, sys.stderr).run(threading.Event())
    if rc != 0:
        raise SystemExit(f"the rebuild of {spec.shard} failed with exit status {rc}")
    state = StateDir(root)
    return (summarise_batches(state, spec.shard).wall_seconds, detection(data, state, spec.shard),
            episodes(data, state, spec.shard))


def fmt(seconds: float) -> str:
    if math.isinf(seconds):
        return "never"
    real = seconds * TIMING.time_scale
    unit = f"{real / 3600:.1f} h" if real >= 3600 else f"{real / 60:.1f} min"
    return f"{seconds:8.1f}s ({unit} at incident pace)"


def _s(seconds: float | None) -> str:
    return "   never" if seconds is None else f"{seconds:7.1f}s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alert-path", default="auto",
                        choices=("auto", "embedded", "prometheus", "both"))
    parser.add_argument("--am-timing", default="scaled", choices=("scaled", "shipped"))
    parser.add_argument("--profile", choices=("incident1", "incident2"),
                        help="only the shard of this incident profile")
    args = parser.parse_args()
    paths = (["embedded", "prometheus"] if args.alert_path == "both"
             else [resolve_alert_path(args.alert_path)[0]])
    am_timing = AmTiming(1.0, 2.0, 10.0) if args.am_timing == "scaled" else None
    print(f"time scale {TIMING.time_scale:g}x; wall-clock timeout = {TIMEOUT_FACTOR:g} x "
          f"healthy time; alert paths {', '.join(paths)}; Alertmanager timing "
          f"{'1s/2s/10s (scaled)' if am_timing else 'shipped (10s/1m/2m)'}")
    signal_rows: list[tuple[str, str, int, dict[str, Any]]] = []
    for spec in (s for s in DEMO_SHARDS if s.profile.startswith("incident")):
        if args.profile and spec.profile != args.profile:
            continue
        for path in paths:
            with tempfile.TemporaryDirectory(prefix="crawlguard-bench-") as tmp:
                real, delays, eps = run_real(spec, path, Path(tmp), am_timing)
            healthy = healthy_time(spec)
            genes = spec.files * spec.genes_per_file
            print(f"\n{spec.profile} ({path}): shard {spec.shard}, {genes} genes, "
                  f"{spec.files} files of {spec.genes_per_file}")
            rows = [("healthy GPU (reference)", healthy), ("with crawlguard (measured)", real),
                    ("without remediation (projected)", project(spec)),
                    ("timeout sized for this shard", project(spec, TIMEOUT_FACTOR * healthy)),
                    (f"timeout sized for a {LARGEST:g}x shard",
                     project(spec, TIMEOUT_FACTOR * LARGEST * healthy))]
            for label, seconds in rows:
                print(f"  {label:<34} {fmt(seconds)}")
            for i, d in enumerate(delays, 1):
                secs = "?" if d["seconds"] is None else f"{d['seconds']:.1f}s"
                print(f"  spill {i}: caught after {d['batches']} finished batches, {secs} "
                      f"after the spill began (worker {d['ended']})")
            signal_rows += [(spec.shard, path, i, e) for i, e in enumerate(eps, 1)]
    print("\nspill onset to signal (simulated seconds after the spill began)")
    print(f"  {'shard':<20} {'path':<11} {'episode':>7} {'alert':>8} {'acted':>8} "
          f"{'stopped':>8}  alert")
    for shard, path, i, e in signal_rows:
        print(f"  {shard:<20} {path:<11} {i:>7} {_s(e['alert'])} {_s(e['acted'])} "
              f"{_s(e['stopped'])}  {e['alertname'] or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
