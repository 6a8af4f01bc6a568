"""A simulated GPU "driver": per-process memory claims aggregated into vram.json.

Layout of a simulated GPU directory (``up --simulate-gpu`` puts it in the
state dir's run folder)::

    <dir>/gpus.json                   {"gpus": [{"index": 0, "total_bytes": N, "desktop_bytes": N}]}
    <dir>/claims/<pid>-<ms>.json      {"gpu": 0, "bytes": N}: what one process holds
    <dir>/vram.json                   the ``file:`` VRAM source document, written by the driver
    <dir>/shared.json                 the ``file:`` shared-memory source document (per pid)

Why claims and a driver instead of workers writing vram.json themselves: a
SIGKILLed worker cannot take its memory back, and a real driver frees a dead
process's memory without its help. Each claim file is named after its process's
identity (pid AND creation time, ``WorkerIdentity.key``), and the driver counts
a claim only while that very process is alive; once it is gone the claim is
released after ``release_delay`` seconds (the real driver frees asynchronously,
which is what the supervisor's GPU-release wait is for) and its file deleted.
So vram.json stays true whatever kills a worker, including a reused pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from crawlguard.kernel.errors import ProcessError, StateError
from crawlguard.kernel.logs import Outage, get_logger
from crawlguard.kernel.statedir import write_volatile_json
from crawlguard.kernel.workers import WorkerIdentity

from .profiles import GpuModel

log = get_logger(__name__)


def _write_fast(path: Path, data: Any) -> None:
    """The state dir's atomic writer without fsync: these files describe live processes
    and are rewritten many times a second; after a crash nothing in them matters. Its
    rename is retried on Windows, where a reader holding the file open makes
    ``os.replace`` fail with a sharing violation for a moment."""
    write_volatile_json(path, data)


class SimGpu:
    """Paths of one simulated GPU directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def claims_dir(self) -> Path:
        return self.root / "claims"

    @property
    def vram_file(self) -> Path:
        return self.root / "vram.json"

    @property
    def shared_file(self) -> Path:
        return self.root / "shared.json"

    @property
    def shared_source_spec(self) -> str:
        """The HELIX_BFM_SHARED_SOURCE value that reads this GPU's shared memory."""
        return f"file:{self.shared_file}"

    @property
    def config_file(self) -> Path:
        return self.root / "gpus.json"

    @property
    def source_spec(self) -> str:
        """The HELIX_BFM_VRAM_SOURCE value that reads this GPU."""
        return f"file:{self.vram_file}"

    def configure(self, model: GpuModel | None = None, gpus: int = 1) -> None:
        model = model or GpuModel()
        self.claims_dir.mkdir(parents=True, exist_ok=True)
        _write_fast(self.config_file, {"gpus": [
            {"index": i, "total_bytes": model.total_bytes, "desktop_bytes": model.desktop_bytes}
            for i in range(gpus)]})

    def gpus(self) -> list[dict[str, int]]:
        try:
            data = json.loads(self.config_file.read_text(encoding="utf-8"))
            return [{k: int(g[k]) for k in ("index", "total_bytes", "desktop_bytes")}
                    for g in data["gpus"]]
        except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
            return []


class Claim:
    """The memory this process holds on one simulated GPU."""

    def __init__(self, gpu: SimGpu, index: int, identity: WorkerIdentity | None = None) -> None:
        self.gpu = gpu
        self.index = index
        self.identity = identity or WorkerIdentity.current()
        self.path = gpu.claims_dir / f"{self.identity.key}.json"
        self.bytes = 0
        self.shared_bytes = 0

    def set(self, nbytes: int, shared_bytes: int | None = None) -> None:
        """Hold ``nbytes`` of dedicated VRAM (and ``shared_bytes`` spilled, when given)."""
        self.bytes = max(0, int(nbytes))
        if shared_bytes is not None:
            self.shared_bytes = max(0, int(shared_bytes))
        self.gpu.claims_dir.mkdir(parents=True, exist_ok=True)
        _write_fast(self.path, {"gpu": self.index, "bytes": self.bytes,
                                "shared_bytes": self.shared_bytes})


class Driver:
    """Aggregates live claims into vram.json; frees the claims of dead processes."""

    def __init__(self, gpu: SimGpu, release_delay: float = 0.3) -> None:
        self.gpu = gpu
        self.release_delay = release_delay
        self._dead_since: dict[str, float] = {}

    def step(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        gpus = self.gpu.gpus()
        used = {g["index"]: g["desktop_bytes"] for g in gpus}
        shared: dict[int, int] = {}
        try:
            claims = sorted(self.gpu.claims_dir.glob("*.json"))
        except OSError:
            claims = []
        for path in claims:
            key = path.stem
            identity = WorkerIdentity.from_key(key)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                index, nbytes = int(data["gpu"]), int(data["bytes"])
                spilled = int(data.get("shared_bytes", 0))
            except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
                continue  # being replaced right now, or foreign: next step sees it
            if identity is not None and not self._alive(identity):
                since = self._dead_since.setdefault(key, now)
                if now - since >= self.release_delay:
                    with contextlib.suppress(OSError):
                        path.unlink()
                    self._dead_since.pop(key, None)
                    continue
            if index in used:
                used[index] += nbytes
            if identity is not None:
                shared[identity.pid] = shared.get(identity.pid, 0) + spilled
        doc = {"gpus": [{"index": g["index"], "total_bytes": g["total_bytes"],
                         "used_bytes": min(used[g["index"]], g["total_bytes"])} for g in gpus]}
        if gpus:
            _write_fast(self.gpu.vram_file, doc)
            # What Windows would count per process: a dead one's memory is gone with it.
            _write_fast(self.gpu.shared_file, {"processes": [
                {"pid": pid, "shared_bytes": n} for pid, n in sorted(shared.items())]})
        return doc

    @staticmethod
    def _alive(identity: WorkerIdentity) -> bool:
        try:
            return identity.is_alive()
        except ProcessError:
            return True  # cannot inspect it: keep its memory, as a driver would

    def run(self, stop: threading.Event, interval: float = 0.05) -> None:
        # A full disk fails every step (20 a second): said once, and once when it ends.
        outage = Outage(log, "simulated GPU:")
        while not stop.is_set():
            try:
                self.step()
            except StateError as exc:
                # One failed write must not stop the driver: the next step rewrites it.
                outage.failed("%s", exc)
            else:
                outage.recovered()
            stop.wait(interval)

    def start_thread(self, stop: threading.Event, interval: float = 0.05) -> threading.Thread:
        self.step()
        thread = threading.Thread(target=self.run, args=(stop, interval),
                                  name="crawlguard-simgpu", daemon=True)
        thread.start()
        return thread
