"""A scripted worker for the supervisor tests: ``fake_worker.py MODE SHARD RECORD``.

Appends one JSON line per launch to RECORD (what it saw: argv, environment,
process group), then behaves as MODE says.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType


def main() -> int:
    mode, shard, record = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    lines = record.read_text().splitlines() if record.exists() else []
    launch = 1 + sum(1 for line in lines if json.loads(line)["shard"] == shard)
    marker = os.environ.get("FAKE_GPU_MARKER")
    seen = {
        "shard": shard, "launch": launch, "env_shard": os.environ.get("HELIX_BFM_SHARD"),
        "device": os.environ.get("BGEM3_DEVICE"),
        "state": os.environ.get("HELIX_BFM_STATE_DIR"),
        "leader": os.name == "nt" or os.getpgid(0) == os.getpid(),
        "gpu_held": bool(marker and Path(marker).exists()),
    }
    with open(record, "a") as fh:
        fh.write(json.dumps(seen) + "\n")
    state = Path(os.environ["HELIX_BFM_STATE_DIR"])

    def progress() -> None:
        # The tracker's own writer, so the supervisor reads what a real worker writes.
        from crawlguard.kernel.formats.batchlog import BatchWriter

        writer = BatchWriter(state / "shards" / shard / "batches.jsonl", stage="backfill",
                             device="cuda:0", gpu="0", pid=os.getpid(), factor=5.0)
        writer.append(t=time.time(), genes=8, seconds=1.0, rate=8.0, ema=None, baseline=None,
                      streak=0)
        writer.close()

    if mode == "ok":
        return 0
    if mode == "crash-once":
        return 1 if launch == 1 else 0
    if mode == "killed-once":
        if launch == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return 0
    if mode == "fail":
        return 1
    if mode == "progress-3-then-fail":
        if launch <= 3:
            progress()
        return 1
    if mode == "hold-then-crash-once":
        if marker:
            Path(marker).write_text("held")
        return 1 if launch == 1 else 0
    if mode == "wait-term":
        def on_term(signum: int, frame: FrameType | None) -> None:
            (record.parent / f"{shard}.terminated").write_text(str(signum))
            sys.exit(128 + signum)

        signal.signal(signal.SIGTERM, on_term)
        (record.parent / f"{shard}.ready").write_text("ready")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main())
