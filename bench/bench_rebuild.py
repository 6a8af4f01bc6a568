"""Rebuild wall time with crawlguard vs. without remediation vs. a wall-clock timeout.

For each incident profile of the reference rebuild (exporter.refbuild), one
shard the size of the demo's is rebuilt for real with every part of crawlguard
(`up` with the simulated GPU), and the same shard is projected through the
same simulator model (exporter.refbuild.simdevice.SimDevice.step, no waiting)
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

    .venv/bin/python bench/bench_rebuild.py [--alert-path embedded|prometheus|auto]
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

from crawlguard.formats import batchlog
from crawlguard.settings import Settings
from crawlguard.statedir import StateDir
from exporter.refbuild.corpus import DEMO_SHARDS, ShardSpec, generate, shard_root
from exporter.refbuild.profiles import Timing, get_profile
from exporter.refbuild.simdevice import SimDevice
from sidecar.rig.demo import clean_env
from sidecar.rig.promstack import AmTiming, resolve_alert_path
from sidecar.rig.shardview import summarise_batches
from sidecar.rig.up import Rig, RigConfig

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


def run_real(spec: ShardSpec, alert_path: str, root: Path) -> tuple[float, list[dict[str, Any]]]:
    data, env = root / "refbuild", clean_env(dict(os.environ))
    generate(data, spec)
    path, _ = resolve_alert_path(alert_path)
    config = RigConfig(
        shards=(spec.shard,),
        command=(sys.executable, "-m", "exporter.refbuild", "work", "--data", str(data),
                 "--shard", "{shard}"),
        settings=Settings.from_env({**env, "HELIX_BFM_STATE_DIR": str(root)}), env=env,
        alert_path=path, interval=1.0 if path == "prometheus" else 0.5,
        am_timing=AmTiming(1.0, 2.0, 10.0), simulate_gpu=True, progress="off")
    rc = Rig(config, sys.stderr).run(threading.Event())
    if rc != 0:
        raise SystemExit(f"the rebuild of {spec.shard} failed with exit status {rc}")
    state = StateDir(root)
    return summarise_batches(state, spec.shard).wall_seconds, detection(data, state, spec.shard)


def fmt(seconds: float) -> str:
    if math.isinf(seconds):
        return "never"
    real = seconds * TIMING.time_scale
    unit = f"{real / 3600:.1f} h" if real >= 3600 else f"{real / 60:.1f} min"
    return f"{seconds:8.1f}s ({unit} at incident pace)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alert-path", default="auto", choices=("auto", "embedded", "prometheus"))
    args = parser.parse_args()
    print(f"time scale {TIMING.time_scale:g}x; wall-clock timeout = {TIMEOUT_FACTOR:g} x "
          f"healthy time; alert path {resolve_alert_path(args.alert_path)[0]}")
    for spec in (s for s in DEMO_SHARDS if s.profile.startswith("incident")):
        with tempfile.TemporaryDirectory(prefix="crawlguard-bench-") as tmp:
            real, delays = run_real(spec, args.alert_path, Path(tmp))
        healthy = healthy_time(spec)
        genes = spec.files * spec.genes_per_file
        print(f"\n{spec.profile}: shard {spec.shard}, {genes} genes, "
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
            print(f"  spill {i}: caught after {d['batches']} finished batches, {secs} after "
                  f"the spill began (worker {d['ended']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
