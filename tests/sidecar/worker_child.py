"""A tiny stand-in for a build worker (run as ``python -m tests.sidecar.worker_child``).

It registers itself as the worker of a shard, prints ``registered PID``, and
waits. On SIGTERM it appends ``TERM <resume env as JSON>`` to the signal file,
so a test can tell that it was signalled, how often, and which resume
environment was already on disk at that moment; then it exits 0, unless
``--ignore-term`` (a worker whose salvage hangs) or ``--child`` (it also starts
a grandchild in its own process group, which records its own SIGTERM to
``<signal file>.child``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import register_worker
from crawlguard.sidecar.resume import resume_env


def main(argv: list[str]) -> None:
    state, shard, out = argv[0], argv[1], Path(argv[2])
    ignore = "--ignore-term" in argv
    no_register = "--no-register" in argv

    def on_term(signum: int, frame: FrameType | None) -> None:
        env = resume_env(state, shard) if shard != "-" else {}
        with out.open("a", encoding="utf-8") as fh:
            fh.write(f"TERM {json.dumps(env, sort_keys=True)}\n")
        if not ignore:
            os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    if "--child" in argv:
        child = subprocess.Popen([sys.executable, "-m", "tests.sidecar.worker_child", state,
                                  "-", f"{out}.child", "--no-register"],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        child.stdout.readline()  # its SIGTERM handler is installed: ready to be signalled
    if not no_register:
        register_worker(StateDir(state), shard)
    print(f"registered {os.getpid()}", flush=True)
    while True:
        if hasattr(signal, "pause"):
            signal.pause()
        else:  # Windows has no pause(); the handler still runs between sleeps
            time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])
