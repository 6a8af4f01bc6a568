"""A build of the kind a newcomer writes, not crawlguard's reference rebuild.

Each batch does real work (``--cpu-ms`` of this process's CPU time, hashing) and then
waits on a "device" (``--wait-ms`` of sleep, which goes on while the process is
stopped, as a GPU's work does), timed by ``CrawlTracker.batch`` with the real clock.
It runs until stopped: SIGTERM (SIGBREAK on Windows) ends it after the batch in hand
("salvage"), with exit code 3 so that its supervisor relaunches it. Nothing here
knows about drills.

    python tests/e2e/drillbuild.py --shard confluence [--cpu-ms 20] [--wait-ms 20]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time

from crawlguard import CrawlTracker

STOPPED = 3


def spin(cpu_seconds: float) -> None:
    """Burn this much of the process's own CPU time (it stands still while stopped)."""
    end = time.process_time() + cpu_seconds
    h = b"gene"
    while time.process_time() < end:
        for _ in range(200):
            h = hashlib.sha256(h).digest()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--shard", required=True)
    p.add_argument("--cpu-ms", type=float, default=20.0)
    p.add_argument("--wait-ms", type=float, default=20.0)
    p.add_argument("--genes", type=int, default=8, help="genes per batch")
    args = p.parse_args()
    stop: list[bool] = []
    for name in ("SIGTERM", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, lambda *_: stop.append(True))
    device = os.environ.get("BGEM3_DEVICE", "cuda:0")
    tracker = CrawlTracker(shard=args.shard, stage="backfill", device=device)
    print(f"worker pid {os.getpid()} on {device}", flush=True)
    while not stop:
        with tracker.batch(genes=args.genes):
            spin(args.cpu_ms / 1000)
            time.sleep(args.wait_ms / 1000)
    print("stopped by signal: batch in hand kept", flush=True)
    return STOPPED


if __name__ == "__main__":
    sys.exit(main())
