"""Figures of a rig's servers under hostile clients (issue 18; prints, gates nothing).

Real ``crawlguard sidecar`` and ``crawlguard exporter`` subprocesses on loopback,
each with a throw-away state dir and the knobs' defaults, and four measurements:

1. ``slow``: how long each kind of slow client keeps its connection: one that
   sends nothing, part of a request line, part of its headers, or its head a
   byte a second; then 1,000 clients that send part of their headers at once,
   how long they stay connected and how long a well-behaved client waits
   meanwhile. Watching stops at --cap seconds (a connection still open then is
   printed as ``>= cap``).
2. ``notification``: one authenticated notification of --shards alerts for
   shards the sidecar has never heard of, while another client asks /healthz and
   /metrics every 50 ms: its status and time, the worst /healthz and /metrics
   answer meanwhile, the bytes written under the state dir, the shard
   directories and the sidecar's series named for a shard. Then the largest
   notification the sidecar takes (MAX_ALERTS alerts, all for known shards
   whose ladder each needs a write), measured the same way.
3. ``logs``: log bytes per minute of a sidecar with one unreadable ladder, while
   Alertmanager re-sends that shard's notification every 10 s (each answered
   500, as a notification that cannot be recorded is): the first window, with
   whatever is logged once, and the one after it.

    .venv/bin/python bench/bench_hostile.py [slow|notification|logs ...] [--cap 75]

The figures go to bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent

TOKEN = "bench-hostile-token-0123456789"
HEAD = b"GET /healthz HTTP/1.1\r\nHost: rig\r\nAuthorization: Bearer " + TOKEN.encode()
PARTIAL_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: rig\r\n"


class Server:
    """A crawlguard server in a subprocess; its output is kept (log bytes)."""

    def __init__(self, kind: str, state: Path, env: dict[str, str] | None = None) -> None:
        self.state = state
        full = {**{k: v for k, v in os.environ.items() if not k.startswith("HELIX_BFM_")},
                "HELIX_BFM_STATE_DIR": str(state), "HELIX_BFM_SIDECAR_TOKEN": TOKEN,
                **(env or {})}
        if kind == "exporter":
            vram = state / "vram.json"
            vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1,
                                                  "total_bytes": 2}]}))
            full["HELIX_BFM_VRAM_SOURCE"] = f"file:{vram}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crawlguard", kind, "--host", "127.0.0.1", "--port", "0"],
            env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        self.url = ""
        for line in self.proc.stdout:
            m = re.search(rb"listening on (https?://[^/\s]+)", line)
            if m:
                self.url = m.group(1).decode()
                break
        if not self.url:
            raise SystemExit(f"crawlguard {kind} did not start")
        self.port = int(self.url.rsplit(":", 1)[1])
        self.log_bytes = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log_bytes += len(line)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@contextlib.contextmanager
def server(kind: str, env: dict[str, str] | None = None,
           prepare: Any = None) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        if prepare is not None:
            prepare(state)
        s = Server(kind, state, env)
        try:
            yield s
        finally:
            s.stop()


def watch(socks: list[tuple[socket.socket, float]], cap: float,
          drip: dict[int, bytes] | None = None) -> list[float]:
    """Seconds each socket, opened at its monotonic time, stayed open (``cap`` for one
    still open then); sockets in ``drip`` (by fileno) are sent one more byte of their
    bytes every second."""
    from tests.fleet.crowd_child import closed  # the tests' own check of a closed socket

    drip = dict(drip or {})
    sent = {fd: 0 for fd in drip}
    started = min(at for _, at in socks)
    lives = {s.fileno(): cap for s, _ in socks}
    with selectors.DefaultSelector() as sel:
        for s, at in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, at)
        last_drip = time.monotonic()
        while sel.get_map() and time.monotonic() - started < cap:
            for key, _ in sel.select(0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if closed(sock):
                    lives[sock.fileno()] = time.monotonic() - key.data
                    sel.unregister(sock)
            if time.monotonic() - last_drip >= 1.0:
                last_drip = time.monotonic()
                for fd, data in drip.items():
                    if fd in sel.get_map() and sent[fd] < len(data):
                        with contextlib.suppress(OSError):
                            sel.get_key(fd).fileobj.send(  # type: ignore[union-attr]
                                data[sent[fd]:sent[fd] + 1])
                        sent[fd] += 1
    for s, _ in socks:
        s.close()
    return list(lives.values())


def shown(seconds: float, cap: float) -> str:
    return f">= {cap:g} s (still open)" if seconds >= cap else f"{seconds:.2f} s"


def slow(cap: float) -> None:
    print("## slow clients (knob defaults)")
    for kind in ("sidecar", "exporter"):
        with server(kind) as s:
            kinds = {"nothing at all": b"", "part of a request line": b"GET /heal",
                     "part of its headers": PARTIAL_HEADERS, "a byte a second": b""}
            socks = {}
            for name, first in kinds.items():
                sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
                sock.sendall(first)
                socks[name] = (sock, time.monotonic())
            fd = socks["a byte a second"][0].fileno()
            lives = watch(list(socks.values()), cap, drip={fd: HEAD})
            for name, life in zip(socks, lives, strict=True):
                print(f"{kind:8s} {name:24s} connected for {shown(life, cap)}")
            crowd = []
            for _ in range(1000):
                sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
                sock.sendall(PARTIAL_HEADERS)
                crowd.append((sock, time.monotonic()))
            path = "/healthz" if kind == "sidecar" else "/metrics"
            t = time.monotonic()
            status = httpx.get(s.url + path, timeout=60, trust_env=False).status_code
            good = time.monotonic() - t
            lives = sorted(watch(crowd, cap))
            print(f"{kind:8s} 1,000 partial heads: connected for {shown(lives[0], cap)} to "
                  f"{shown(lives[-1], cap)}; a good client meanwhile: {status} in "
                  f"{good * 1000:.0f} ms")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _notification(shards: list[str]) -> bytes:
    now = time.time()
    alerts = [{"status": "firing", "labels": {"alertname": "BFMShardCrawl", "shard": shard},
               "startsAt": _iso(now), "fingerprint": f"f{i}"} for i, shard in enumerate(shards)]
    return json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode()


def _disk(state: Path) -> tuple[int, int]:
    files = [p for p in state.rglob("*") if p.is_file()]
    shards = state / "shards"
    dirs = sum(1 for p in shards.iterdir()) if shards.is_dir() else 0
    return sum(p.stat().st_size for p in files), dirs


def _post_watched(s: Server, body: bytes) -> None:
    worst = {"/healthz": 0.0, "/metrics": 0.0}
    failures = {"/healthz": 0, "/metrics": 0}
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=s.url, timeout=5, trust_env=False) as c:
            while not done.is_set():
                for path in worst:
                    t = time.monotonic()
                    try:
                        c.get(path)
                    except httpx.HTTPError:
                        failures[path] += 1
                    worst[path] = max(worst[path], time.monotonic() - t)
                done.wait(0.05)

    before, _ = _disk(s.state)
    prober = threading.Thread(target=probe)
    prober.start()
    t = time.monotonic()
    r = httpx.post(s.url + "/v1/alerts", content=body, timeout=600, trust_env=False,
                   headers={"Authorization": f"Bearer {TOKEN}",
                            "Content-Type": "application/json"})
    took = time.monotonic() - t
    done.set()
    prober.join()
    after, dirs = _disk(s.state)
    metrics = httpx.get(s.url + "/metrics", trust_env=False).text
    series = sum(1 for line in metrics.splitlines()
                 if not line.startswith("#") and 'shard="' in line)
    print(f"  {len(body) / 1024:.0f} KiB -> {r.status_code} in {took:.2f} s; worst /healthz "
          f"{worst['/healthz'] * 1000:.0f} ms, /metrics {worst['/metrics'] * 1000:.0f} ms "
          f"(failed {failures['/healthz']}, {failures['/metrics']}); state dir +{after - before} B,"
          f" {dirs} shard dirs, {series} series with a shard label")


def notification(count: int, largest: bool) -> None:
    print(f"## one notification of {count} unknown shards")
    with server("sidecar") as s:
        _post_watched(s, _notification([f"u{i}" for i in range(count)]))
    if not largest:
        return
    from crawlguard.sidecar.webhook import MAX_ALERTS

    print(f"## the largest notification taken: {MAX_ALERTS} unknown shards")
    with server("sidecar") as s:
        _post_watched(s, _notification([f"u{i}" for i in range(MAX_ALERTS)]))
    known = [f"k{i}" for i in range(MAX_ALERTS)]

    def register(state: Path) -> None:
        from crawlguard.kernel.statedir import StateDir
        from crawlguard.kernel.workers import WorkerIdentity, register_worker

        for shard in known:  # a process that is gone: each rung finds it already gone
            register_worker(StateDir(state), shard, WorkerIdentity(2**22 - 3, 1.0))

    print(f"## the worst notification taken: {MAX_ALERTS} alerts, each a new crawl of a "
          "registered shard (a rung each)")
    with server("sidecar", prepare=register) as s:
        _post_watched(s, _notification(known))


def logs(seconds: float) -> None:
    print(f"## log bytes with one unreadable ladder, two windows of {seconds:g} s each")

    def corrupt(state: Path) -> None:
        (state / "shards" / "broken").mkdir(parents=True)
        (state / "shards" / "broken" / "ladder.json").write_text("{not json")

    with server("sidecar", prepare=corrupt) as s:
        body = _notification(["broken"])
        with httpx.Client(base_url=s.url, timeout=10, trust_env=False,
                          headers={"Authorization": f"Bearer {TOKEN}",
                                   "Content-Type": "application/json"}) as c:
            for window in ("first", "second"):
                start_bytes, t = s.log_bytes, time.monotonic()
                statuses = []
                while time.monotonic() - t < seconds:
                    statuses.append(c.post("/v1/alerts", content=body).status_code)
                    time.sleep(10.0)  # Alertmanager's pace, not a synchronisation
                took = time.monotonic() - t
                grew = s.log_bytes - start_bytes
                print(f"  {window}: {grew} B in {took:.0f} s = {grew * 60 / took:.0f} B/min "
                      f"({len(statuses)} notifications answered {sorted(set(statuses))})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", nargs="*", default=["slow", "notification", "logs"])
    ap.add_argument("--cap", type=float, default=75.0, help="stop watching a slow client")
    ap.add_argument("--shards", type=int, default=6000)
    ap.add_argument("--log-seconds", type=float, default=60.0)
    ap.add_argument("--no-largest", action="store_true",
                    help="skip the notifications of MAX_ALERTS alerts")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))  # tests.fleet.crowd_child
    if "slow" in args.what:
        slow(args.cap)
    if "notification" in args.what:
        notification(args.shards, not args.no_largest)
    if "logs" in args.what:
        logs(args.log_seconds)


if __name__ == "__main__":
    main()
