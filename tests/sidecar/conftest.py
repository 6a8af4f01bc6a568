"""Fixtures of the sidecar tests: real workers, real servers (thread or subprocess)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from crawlguard.kernel.settings import Remediation
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity, register_worker
from crawlguard.sidecar.engine import Engine
from crawlguard.sidecar.server import SidecarServer
from tests.helpers import REPO, Proc, crawlguard_cmd, wait_until

TOKEN = "test-token-0123456789"


def iso(ts: float) -> str:
    """RFC 3339 with nanoseconds, as Alertmanager writes startsAt."""
    d = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}123Z"


def alert(shard: str, starts_at: float, fingerprint: str, name: str = "BFMShardCrawl",
          status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": name, "shard": shard, "stage": "backfill",
                                         "device": "cuda:0", "gpu": "0", **labels},
            "annotations": {"summary": "crawl"}, "startsAt": iso(starts_at),
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fingerprint}


GONE = WorkerIdentity(2 ** 22 - 3, 1.0)
"""A registered worker that is not running: alerts for its shard take rungs, which
find it already gone (a shard with no registered worker takes none)."""


def known(state_dir: Path, *shards: str) -> None:
    """Register ``GONE`` as the worker of each shard, so the sidecar knows them."""
    for shard in shards:
        register_worker(StateDir(state_dir), shard, GONE)


def laddered(state_dir: Path, *shards: str) -> None:
    """Give each shard an empty ladder (known, and no worker to signal)."""
    from crawlguard.sidecar.ladder import ShardLadder
    from crawlguard.sidecar.state import LadderStore

    for shard in shards:
        LadderStore(StateDir(state_dir)).save(ShardLadder(shard))


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0,
            "status": "firing" if firing else "resolved", "receiver": "crawlguard",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://localhost:9093", "alerts": list(alerts)}


@dataclass
class Worker:
    """A real worker process registered for a shard (tests/sidecar/worker_child.py)."""

    proc: Proc
    signal_file: Path
    grandchild: bool = False
    identity: WorkerIdentity = field(init=False)

    def __post_init__(self) -> None:
        self.proc.wait_for_line(rf"registered {self.proc.pid}\b")
        self.identity = WorkerIdentity.of_pid(self.proc.pid)

    @property
    def terms(self) -> list[str]:
        try:
            return self.signal_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def alive(self) -> bool:
        return self.proc.popen.poll() is None

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.grandchild and os.name != "nt":
                # The grandchild keeps the group (and so its id) alive: safe to signal.
                os.killpg(self.proc.pid, signal.SIGKILL)
            elif self.proc.popen.poll() is None:
                self.proc.popen.kill()
        self.proc.popen.wait(10)
        self.proc._reader.join(5)


@pytest.fixture
def spawn_worker(state_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    if sys.platform == "win32":
        pytest.skip("worker_child is stopped with SIGTERM and killpg (POSIX)")
    workers: list[Worker] = []

    def spawn(shard: str, *flags: str) -> Worker:
        out = tmp_path / f"signals-{shard}-{len(workers)}.txt"
        proc = Proc([sys.executable, "-m", "tests.sidecar.worker_child", str(state_dir), shard,
                     str(out), *flags], cwd=REPO)
        w = Worker(proc, out, grandchild="--child" in flags)
        workers.append(w)
        return w

    yield spawn
    for w in workers:
        w.kill()


@dataclass
class Live:
    """A running sidecar and an authenticated client of it."""

    url: str
    client: httpx.Client
    state_dir: Path
    engine: Engine | None = None
    server: SidecarServer | None = None
    proc: Proc | None = None

    def shard(self, shard: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/shards/{shard}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def post_alerts(self, body: dict[str, Any]) -> dict[str, Any]:
        r = self.client.post("/v1/alerts", json=body)
        assert r.status_code == 202, r.text
        data: dict[str, Any] = r.json()
        return data

    def settled(self, shard: str) -> dict[str, Any]:
        """The shard's state once no rung is in progress."""
        return wait_until(lambda: (lambda s: s if s["pending"] is None else None)(
            self.shard(shard)), what=f"shard {shard} to settle")

    def metrics(self) -> str:
        return self.client.get("/metrics").text


@pytest.fixture
def sidecar_thread(state_dir: Path) -> Iterator[Callable[..., Live]]:
    """Factory: a real uvicorn server on a thread of this process (fast to start)."""
    started: list[tuple[SidecarServer, httpx.Client]] = []

    def start(action: str = "ladder", grace: float = 10.0, token: str | None = TOKEN,
              clock: Callable[[], float] = time.time) -> Live:
        engine = Engine(StateDir(state_dir), Remediation(action=action, grace_seconds=grace),
                        clock=clock)
        server = SidecarServer(engine, "127.0.0.1", 0, token, insecure_no_token=token is None)
        bound = server.start()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=bound.url, headers=headers, timeout=10, trust_env=False)
        started.append((server, client))
        return Live(bound.url, client, state_dir, engine=engine, server=server)

    yield start
    for server, client in started:
        client.close()
        server.stop()


@pytest.fixture
def sidecar_proc(state_dir: Path) -> Iterator[Callable[..., Live]]:
    """Factory: a real ``crawlguard sidecar`` subprocess (what users run)."""
    started: list[Live] = []

    def start(**env: str) -> Live:
        full = {"HELIX_BFM_STATE_DIR": str(state_dir), "HELIX_BFM_SIDECAR_TOKEN": TOKEN, **env}
        proc = Proc(crawlguard_cmd("sidecar", "--host", "127.0.0.1", "--port", "0"), env=full,
                    cwd=REPO)
        m = proc.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)$")
        client = httpx.Client(base_url=m.group(1), headers={"Authorization": f"Bearer {TOKEN}"},
                              timeout=10, trust_env=False)
        live = Live(m.group(1), client, state_dir, proc=proc)
        started.append(live)
        return live

    yield start
    for live in started:
        live.client.close()
        assert live.proc is not None
        live.proc.stop()
