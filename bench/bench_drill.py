"""How long a fire drill takes from slowdown to restart, on each alert path.

    .venv/bin/python bench/bench_drill.py [--alert-path embedded|prometheus] [--runs 3]
        [--interval SECONDS] [--cpu-ms 20] [--wait-ms 20]

Starts a real ``crawlguard up`` (its own temporary state dir) on a newcomer's build
(tests/e2e/drillbuild.py: ``--cpu-ms`` of CPU work and ``--wait-ms`` standing in for
the GPU per batch) and runs ``crawlguard drill --json`` ``--runs`` times from a clean
environment that has only the state dir; prints each drill's object and the timings
the timeline reports. ``--interval`` shortens the scrape/evaluation interval (default:
the shipped 5 s, and Alertmanager's shipped timing). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "tests" / "e2e" / "drillbuild.py"


def clean_env(**knobs: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT", "TEMP", "TMP")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **knobs}


@contextlib.contextmanager
def drill_rig(alert_path: str, interval: float | None, build: Sequence[str],
              env: dict[str, str] | None = None) -> Iterator[Path]:
    """A real ``crawlguard up`` on shard ``bench`` of ``build`` (its own temporary state
    dir, yielded once the worker is launched), stopped with SIGINT at the end."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        # --blind: the drill brings its own spill evidence; the rig needs no VRAM source.
        argv = [sys.executable, "-m", "crawlguard", "up", "--blind", "--state-dir", str(state),
                "--alert-path", alert_path, "--progress", "lines", "--shard", "bench"]
        if interval is not None:
            argv += ["--interval", str(interval)]
        argv += ["--", *build]
        log = open(Path(tmp) / "up.log", "w+")  # noqa: SIM115
        up = subprocess.Popen(argv, env=env or clean_env(), stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not re.search(r"launch #1", Path(log.name).read_text()):
                if time.monotonic() > deadline or up.poll() is not None:
                    sys.exit(f"up did not launch the worker:\n{Path(log.name).read_text()}")
                time.sleep(0.2)
            yield state
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(60)
            log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alert-path", choices=("embedded", "prometheus"), default="embedded")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--interval", type=float, default=None)
    p.add_argument("--cpu-ms", type=float, default=20.0)
    p.add_argument("--wait-ms", type=float, default=20.0)
    args = p.parse_args()
    build = [sys.executable, str(BUILD), "--shard", "{shard}",
             "--cpu-ms", str(args.cpu_ms), "--wait-ms", str(args.wait_ms)]
    with drill_rig(args.alert_path, args.interval, build) as state:
        print(f"alert path {args.alert_path}, interval "
              f"{args.interval or 'shipped (5 s)'}, batches {args.cpu_ms:g} ms CPU + "
              f"{args.wait_ms:g} ms device")
        for run in range(1, args.runs + 1):
            t0 = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "crawlguard", "drill", "bench",
                                   "--json", "--timeout", "900"],
                                  env=clean_env(HELIX_BFM_STATE_DIR=str(state)),
                                  capture_output=True, text=True)
            wall = time.monotonic() - t0
            if done.returncode != 0:
                print(f"run {run}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
                continue
            r = json.loads(done.stdout)
            print(f"run {run}: acted={r['acted']} rung={r['rung']} "
                  f"detected after {r['detected_after_batches']} batches, "
                  f"onset->alert {r['onset_to_alert_s']:.1f}s, "
                  f"onset->signal {r['onset_to_signal_s']:.1f}s, "
                  f"drill wall time {wall:.1f}s (baseline wait and verification "
                  "included)")


if __name__ == "__main__":
    main()
