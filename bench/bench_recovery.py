"""Spill-to-action on the real Prometheus path, with Prometheus or Alertmanager killed.

    .venv/bin/python bench/bench_recovery.py [--interval SECONDS] [--runs 1]
        [--kill-after SECONDS]

Starts a real ``crawlguard up --alert-path prometheus`` (its own temporary state dir) on
a newcomer's build (tests/e2e/drillbuild.py) and runs ``crawlguard drill --json`` three
ways, ``--runs`` times each: nothing killed (the baseline), Prometheus SIGKILLed, and
Alertmanager SIGKILLed, ``--kill-after`` seconds after the drill's slowdown began (its
``onset``, read from the drill's live lines). ``up`` restarts the killed server; the
figure is the drill's onset->signal (slowdown to the rung's signal). ``--interval``
shortens the scrape/evaluation interval (default: the shipped 5 s). Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench_drill import BUILD, clean_env, drill_rig


def servers(state: Path) -> dict[str, int]:
    return dict(json.loads((state / "run" / "up.json").read_text())["servers"])


def drill(state: Path, kill: str | None, kill_after: float) -> str:
    env = clean_env(HELIX_BFM_STATE_DIR=str(state))
    proc = subprocess.Popen([sys.executable, "-m", "crawlguard", "drill", "bench", "--json",
                             "--timeout", "900"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed_at = None
    if kill is not None:
        # The drill says on stderr when its slowdown begins; kill after that.
        assert proc.stderr is not None
        for line in proc.stderr:
            if re.search(r" slowed [0-9]", line):
                break
        time.sleep(kill_after)  # the bench's schedule, not a synchronisation
        pid = servers(state)[kill]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
    out, err = proc.communicate()
    if proc.returncode != 0:
        return f"exit {proc.returncode}: {err.strip()[-300:]}"
    r = json.loads(out)
    back = servers(state).get(kill) if kill else None
    return (f"acted={r['acted']} rung={r['rung']} onset->alert {r['onset_to_alert_s']:.1f}s "
            f"onset->signal {r['onset_to_signal_s']:.1f}s"
            + (f" ({kill} pid {back} after the kill)" if killed_at else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interval", type=float, default=None)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--kill-after", type=float, default=1.0)
    args = p.parse_args()
    build = [sys.executable, str(BUILD), "--shard", "{shard}"]
    with drill_rig("prometheus", args.interval, build,
                   env=clean_env(HELIX_BFM_SIDECAR_PORT="0")) as state:
        print(f"prometheus path, interval {args.interval or 'shipped (5 s)'}, "
              f"kill {args.kill_after:g}s after the slowdown began")
        for run in range(1, args.runs + 1):
            for kill in (None, "prometheus", "alertmanager"):
                print(f"run {run} {kill or 'nothing'} killed: "
                      f"{drill(state, kill, args.kill_after)}", flush=True)


if __name__ == "__main__":
    main()
