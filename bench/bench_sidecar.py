"""Figures of the sidecar webhook under an Alertmanager-like burst (prints, gates nothing).

Starts a real ``crawlguard sidecar`` (subprocess, loopback, bearer token) on a
throw-away state dir and sends NOTIFICATIONS webhook posts from CONCURRENCY
clients, each on its own keep-alive connection as that many Alertmanager
senders would. The burst is two phases over SHARDS shards: phase 1 holds each
shard's first crawl episode, phase 2 (sent once phase 1 has settled, with
later startsAt) its second. Inside a phase every episode is delivered many
times: exact repeats (Alertmanager's repeat_interval, an HA pair) and the
same worker's BFMShardStalled, all shuffled. The ladder says one rung per
episode: restart in phase 1, cpu in phase 2.

Every shard has a registered worker (an alert for a shard without one is
recorded without a rung): the first --workers get a real sleeping process,
the others a registration of a process that is gone, so their rungs take
effect at once (outcome ``already_gone``).

    .venv/bin/python bench/bench_sidecar.py [--notifications 1000] [--concurrency 32]

Prints the answers by status class (5xx included), the client's and the
sidecar's own latency (p50/p99), the actions taken against the distinct
episodes, and the rungs per shard. Alertmanager's webhook timeout is 10 s; the
sidecar answers each notification once its decisions are fsync'd. The figures
go to bench/README.md; nothing here decides pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from crawlguard.kernel import rungs

REPO = Path(__file__).resolve().parent.parent
RESTART, CPU = rungs.RESTART.name, rungs.CPU.name  # what the ladder climbs, in order


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _alert(shard: str, name: str, starts: float, fp: str) -> dict[str, Any]:
    return {"status": "firing", "labels": {"alertname": name, "shard": shard,
                                           "stage": "backfill", "device": "cuda:0", "gpu": "0"},
            "annotations": {}, "startsAt": _iso(starts), "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": fp}


def phase(shards: list[str], count: int, starts: float, tag: str,
          rng: random.Random) -> list[dict[str, Any]]:
    """``count`` notifications: every shard's episode once, the rest repeats of them."""
    def one(i: int) -> dict[str, Any]:
        shard = shards[i % len(shards)]
        stalled = i >= len(shards) and rng.random() < 0.3
        name = "BFMShardStalled" if stalled else "BFMShardCrawl"
        fp = f"{abs(hash((shard, name, tag))) & (2**64 - 1):016x}"
        # The same episode's stall alert began a little earlier. Both began before the
        # burst, so before the episode's rung took effect: one rung for the two.
        alert = _alert(shard, name, starts - (1.0 if stalled else 0.0), fp)
        return {"version": "4", "groupKey": f"{{}}:{{shard=\"{shard}\"}}", "truncatedAlerts": 0,
                "status": "firing", "receiver": "crawlguard", "groupLabels": {"shard": shard},
                "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
                "alerts": [alert]}

    notes = [one(i) for i in range(count)]
    rng.shuffle(notes)
    return notes


async def burst(clients: list[httpx.AsyncClient], notes: list[dict[str, Any]]
                ) -> tuple[list[float], list[int]]:
    """Send ``notes`` from every client at once; the latency and status of each answer."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for n in notes:
        queue.put_nowait(json.dumps(n).encode())
    latencies: list[float] = []
    statuses: list[int] = []

    async def sender(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            t0 = time.perf_counter()
            r = await client.post("/v1/alerts", content=body)
            latencies.append(time.perf_counter() - t0)
            statuses.append(r.status_code)

    await asyncio.gather(*(sender(c) for c in clients))
    return latencies, statuses


async def run_phases(url: str, token: str, shards: list[str], total: int, concurrency: int,
                     rng: random.Random) -> tuple[list[float], list[int], float, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    # Clients are built and connected before the clock starts: building an httpx client
    # takes ~20 ms (an SSL context), which would stall the other senders' event loop.
    clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=30, trust_env=False)
               for _ in range(concurrency)]
    try:
        await asyncio.gather(*(c.get("/healthz") for c in clients))
        latencies: list[float] = []
        statuses: list[int] = []
        wall = 0.0
        half = total // 2
        for tag, count in (("p1", half), ("p2", total - half)):
            notes = phase(shards, count, time.time(), tag, rng)
            t0 = time.perf_counter()
            got, codes = await burst(clients, notes)
            wall += time.perf_counter() - t0
            latencies += got
            statuses += codes
            data = await settle(clients[0])
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return latencies, statuses, wall, data


async def settle(client: httpx.AsyncClient, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data: dict[str, Any] = (await client.get("/v1/shards")).json()
        if all(s["pending"] is None for s in data["shards"]):
            return data
        if time.monotonic() > deadline:
            raise SystemExit("rungs did not settle in time")
        await asyncio.sleep(0.05)


def register_gone(state: Path, shards: list[str]) -> None:
    """Register, for each shard, a worker that no longer runs."""
    from crawlguard.kernel.statedir import StateDir
    from crawlguard.kernel.workers import WorkerIdentity, register_worker

    # Above Linux's largest pid_max (2**22): no process has, or will get, these pids.
    for i, shard in enumerate(shards):
        register_worker(StateDir(state), shard, WorkerIdentity(2**22 + 1 + i, 1.0))


def start_workers(state: Path, shards: list[str]) -> list[subprocess.Popen[str]]:
    code = ("import sys,time; from crawlguard.kernel.statedir import StateDir; "
            "from crawlguard.kernel.workers import register_worker; "
            "register_worker(StateDir(sys.argv[1]), sys.argv[2]); print('ok', flush=True); "
            "time.sleep(3600)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(state), s], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for s in shards]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ok"
    return procs


def server_quantile(metrics: str, q: float) -> float:
    """histogram_quantile(q) of the sidecar's own /v1/alerts durations, in seconds."""
    buckets = sorted(
        (float(le), float(n)) for le, n in re.findall(
            r'^crawlguard_sidecar_request_duration_seconds_bucket\{le="([^"]+)",'
            r'route="alerts"\} (\S+)$', metrics, re.M))
    total = buckets[-1][1]
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= q * total:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (q * total - prev_n) / max(n - prev_n, 1e-9)
        prev_le, prev_n = le, n
    return prev_le


def _cpu(times: Any) -> float:
    return float(times.user + times.system + times.children_user + times.children_system)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notifications", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--shards", type=int, default=50)
    ap.add_argument("--workers", type=int, default=4, help="shards with a real worker")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    shards = [f"shard-{i:03d}" for i in range(args.shards)]
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="crawlguard-bench-") as tmp:
        state = Path(tmp) / "state"
        env = {**os.environ, "HELIX_BFM_STATE_DIR": str(state),
               "HELIX_BFM_SIDECAR_TOKEN": token, "HELIX_BFM_GRACE_SECONDS": "5"}
        server = subprocess.Popen([sys.executable, "-m", "crawlguard", "sidecar", "--host",
                                   "127.0.0.1", "--port", "0"], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        workers: list[subprocess.Popen[str]] = []
        try:
            assert server.stdout is not None
            m = re.search(r"listening on (\S+)", server.stdout.readline())
            if not m:
                raise SystemExit("the sidecar did not start")
            url = m.group(1)
            workers = start_workers(state, shards[:args.workers])
            register_gone(state, shards[args.workers:])
            server_cpu0 = _cpu(psutil.Process(server.pid).cpu_times())
            latencies, statuses, wall, data = asyncio.run(run_phases(
                url, token, shards, args.notifications, args.concurrency, rng))
            server_cpu = _cpu(psutil.Process(server.pid).cpu_times()) - server_cpu0
            with httpx.Client(base_url=url, trust_env=False) as client:
                metrics = client.get("/metrics").text
        finally:
            server.terminate()
            server.wait(10)
            for w in workers:
                w.kill()
                w.wait()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    classes = {f"{c}xx": sum(1 for s in statuses if s // 100 == c) for c in (2, 4, 5)}
    rungs = [h for s in data["shards"] for h in s["history"] if h["kind"] == "rung"]
    outcomes: dict[str, int] = {}
    for h in rungs:
        outcomes[h["outcome"]] = outcomes.get(h["outcome"], 0) + 1
    dupes = sum(float(v) for v in re.findall(
        r"^crawlguard_sidecar_duplicates_suppressed_total\{[^}]*\} (\S+)$", metrics, re.M))
    per_shard = [[h["rung"] for h in s["history"] if h["kind"] == "rung"]
                 for s in data["shards"]]
    climbed = sum(1 for r in per_shard if r == [RESTART, CPU])
    print(f"notifications={len(latencies)} concurrency={args.concurrency} shards={len(shards)} "
          f"workers={args.workers} cores={os.cpu_count()}")
    print(f"answers {' '.join(f'{k}={v}' for k, v in classes.items())}")
    print(f"client_latency_ms p50={q[49] * 1000:.1f} p99={q[98] * 1000:.1f} "
          f"max={latencies[-1] * 1000:.1f} (Alertmanager's webhook timeout: 10000)")
    print(f"server_latency_ms p50={server_quantile(metrics, 0.5) * 1000:.1f} "
          f"p99={server_quantile(metrics, 0.99) * 1000:.1f} (sidecar histogram, interpolated)")
    print(f"throughput={len(latencies) / wall:.0f} notifications/s "
          f"server_cpu_ms_per_notification={server_cpu * 1000 / len(latencies):.2f}")
    print(f"distinct_episodes={2 * len(shards)} actions_taken={len(rungs)} "
          f"duplicates_suppressed={dupes:.0f} outcomes={dict(sorted(outcomes.items()))}")
    print(f"shards_with_rungs_[{RESTART},{CPU}]={climbed}/{len(per_shard)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
