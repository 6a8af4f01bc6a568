"""A fleet of bare rigs: spill to signal through the central host, and the central scrape.

1. ``signal`` (default: both parts): the incident shards of the demo, rebuilt for
   real twice in one run on the simulated GPU, with the same scaled timing
   (1 s scrape/evaluation, Alertmanager 1 s / 2 s / 20 s):

   - a single rig on the Prometheus path (`up` with its own Prometheus and
     Alertmanager on loopback, plain HTTP);
   - a rig of a fleet (`up --alert-path external` on 127.0.0.2, from the files of
     `crawlguard fleet generate`), watched by a central Prometheus and Alertmanager
     on 127.0.0.1 over mutual TLS with the rig's token.

   Per spill (episode): seconds from the spill's onset to the alert's startsAt, to
   the sidecar's rung decision and to the worker's stop, and the fleet's extra
   delay over the single rig (goal: at most 5 s).

2. ``scrape``: 20 simulated rigs x 4 shards, each rig an exporter process of its
   own on 127.0.0.N with TLS, client certificates and its token, 4 live trackers
   batching once a second; one central Prometheus from the generated config
   (2 s interval) scrapes them for a while. Prints each exporter target's scrape
   duration (median and max over the window), the samples per scrape and the rule
   group's evaluation time. The rigs' sidecars are not started (the central host
   also scrapes sidecars: those 20 targets are down here, which costs Prometheus a
   refused connection each).

    .venv/bin/python bench/bench_fleet.py [signal|scrape|both] [--profile incident1|incident2]
        [--rigs 20] [--shards 4] [--window 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from bench_rebuild import episodes

from crawlguard.fleet import fleetfile
from crawlguard.fleet.generate import generate as generate_fleet
from crawlguard.kernel import envfile
from crawlguard.kernel.settings import Settings
from crawlguard.kernel.statedir import StateDir
from crawlguard.refbuild.corpus import DEMO_SHARDS, ShardSpec
from crawlguard.refbuild.corpus import generate as generate_corpus
from crawlguard.rig import promstack
from crawlguard.rig.demo import clean_env
from crawlguard.rig.servers import free_port
from crawlguard.rig.up import RigConfig, RunningRig

INTERVAL = 1.0
AM_TIMING = promstack.AmTiming.scaled_to(INTERVAL)


class CentralHost:
    """The central Prometheus (and Alertmanager) run from the generated files as they are."""

    def __init__(self, out: Path, data: dict[str, Any], logs: Path, alertmanager: bool = True
                 ) -> None:
        binaries = promstack.Binaries.find()
        if binaries is None:
            raise SystemExit("prometheus and prometheus-alertmanager must be on PATH")
        central, c = out / "central", data["central"]
        self.prom_url = f"http://127.0.0.1:{c['prometheus_port']}"
        self.procs: list[subprocess.Popen[bytes]] = []
        argvs = [promstack.prometheus_argv(binaries.prometheus, central / "prometheus.yml",
                                           logs / "prom-data", c["prometheus_port"])]
        if alertmanager:
            argvs.append(promstack.alertmanager_argv(
                binaries.alertmanager, central / "alertmanager.yml", logs / "am-data",
                c["alertmanager_port"]))
        for argv in argvs:
            with open(logs / f"{Path(argv[0]).name}.log", "ab") as log:
                self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        ready = [f"{self.prom_url}/-/ready"] + (
            [f"http://127.0.0.1:{c['alertmanager_port']}/-/ready"] if alertmanager else [])
        for url in ready:
            wait(lambda url=url: httpx.get(url, timeout=2).status_code == 200, 60, url)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prom_url}/api/v1/query", params={"query": expr}, timeout=10)
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(30)


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def write_fleet(path: Path, rigs: list[tuple[str, str]], interval: float) -> dict[str, Any]:
    data = {"central": {"host": "127.0.0.1", "prometheus_port": free_port("127.0.0.1"),
                        "alertmanager_port": free_port("127.0.0.1"),
                        "interval": promstack.duration(interval)},
            "rigs": [{"name": name, "host": host, "exporter_port": free_port(host),
                      "sidecar_port": free_port(host)} for name, host in rigs]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return data


# -- 1. spill to signal ------------------------------------------------------------

def rebuild(spec: ShardSpec, root: Path, alert_path: str, env: dict[str, str]) -> StateDir:
    data = root / "refbuild"
    generate_corpus(data, spec)
    config = RigConfig(
        shards=(spec.shard,),
        command=(sys.executable, "-m", "crawlguard.refbuild", "work", "--data", str(data),
                 "--shard", "{shard}"),
        settings=Settings.from_env({**env, "HELIX_BFM_STATE_DIR": str(root)}), env=env,
        alert_path=alert_path, interval=INTERVAL, am_timing=AM_TIMING, simulate_gpu=True,
        progress="off")
    rc = RunningRig(config, sys.stderr).run(threading.Event())
    if rc != 0:
        raise SystemExit(f"the rebuild of {spec.shard} ({alert_path}) failed with {rc}")
    return StateDir(root)


def signal_bench(profiles: list[str]) -> None:
    rows = []
    for spec in (s for s in DEMO_SHARDS if s.profile in profiles):
        with tempfile.TemporaryDirectory(prefix="crawlguard-bench-") as tmp:
            root = Path(tmp)
            single = root / "single"
            state = rebuild(spec, single, "prometheus", clean_env(dict(os.environ)))
            rows.append((spec.shard, "single rig", episodes(single / "refbuild", state,
                                                            spec.shard)))
            fleet_file = root / "fleet.yml"
            data = write_fleet(fleet_file, [("rig1", "127.0.0.2")], INTERVAL)
            generate_fleet(fleetfile.load(fleet_file), root / "fleet")
            central = CentralHost(root / "fleet", data, root)
            try:
                env = envfile.overlay(clean_env(dict(os.environ)), envfile.read(
                    root / "fleet" / "rigs" / "rig1" / "crawlguard.env"))
                rig = root / "rig1"
                state = rebuild(spec, rig, "external", env)
                rows.append((spec.shard, "fleet", episodes(rig / "refbuild", state,
                                                           spec.shard)))
            finally:
                central.stop()
    print(f"\nspill onset to signal, seconds after the spill began (simulated time; scrape "
          f"and evaluation every {INTERVAL:g}s, Alertmanager {AM_TIMING.group_wait:g}s / "
          f"{AM_TIMING.group_interval:g}s / {AM_TIMING.repeat_interval:g}s on both paths)")
    print(f"  {'shard':<20} {'path':<11} {'episode':>7} {'alert':>8} {'acted':>8} "
          f"{'stopped':>8}")
    for shard, path, eps in rows:
        for i, e in enumerate(eps, 1):
            print(f"  {shard:<20} {path:<11} {i:>7} {_s(e['alert'])} {_s(e['acted'])} "
                  f"{_s(e['stopped'])}")
    by = {(shard, path): eps for shard, path, eps in rows}
    print("\nfleet minus single rig (goal: at most 5 s more to the signal)")
    for shard in dict.fromkeys(shard for shard, _, _ in rows):
        for i, (one, many) in enumerate(zip(by[(shard, "single rig")], by[(shard, "fleet")],
                                            strict=False), 1):
            diffs = [f"{key} {many[key] - one[key]:+.1f}s" for key in ("alert", "acted", "stopped")
                     if one[key] is not None and many[key] is not None]
            print(f"  {shard:<20} episode {i}: {', '.join(diffs) or 'not comparable'}")


def _s(seconds: float | None) -> str:
    return "   never" if seconds is None else f"{seconds:7.1f}s"


# -- 2. the central scrape at N rigs x M shards -------------------------------------

def sim_rig(args: argparse.Namespace) -> int:
    """One simulated rig: an exporter with the fleet's TLS and token, M live trackers."""
    from crawlguard.exporter.server import Exporter, ExporterConfig
    from crawlguard.exporter.tracker import CrawlTracker

    env = envfile.overlay(clean_env(dict(os.environ)), envfile.read(args.env_file))
    state = Path(args.state)
    vram = state / "vram.json"
    state.mkdir(parents=True, exist_ok=True)
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 8 << 30,
                                          "total_bytes": 12 << 30}]}))
    env.update(HELIX_BFM_STATE_DIR=str(state), HELIX_BFM_VRAM_SOURCE=f"file:{vram}",
               HELIX_BFM_SHARED_SOURCE="off")
    trackers = [CrawlTracker(f"shard{i}", "backfill", "cuda:0", state_dir=state, env=env,
                             total=1_000_000) for i in range(args.shards)]
    for _ in range(10):  # warm-up and baseline established
        for t in trackers:
            t.observe(genes=64, seconds=4.2)
    exporter = Exporter(ExporterConfig.from_settings(Settings.from_env(env)))
    exporter.start()
    print("ready", flush=True)
    stop = threading.Event()  # the bench closes our stdin to stop us
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    try:
        while not stop.wait(1.0):
            for t in trackers:
                t.observe(genes=64, seconds=4.2)
    finally:
        exporter.stop()
    return 0


def scrape_bench(n_rigs: int, n_shards: int, window: float) -> None:
    with tempfile.TemporaryDirectory(prefix="crawlguard-bench-") as tmp:
        root = Path(tmp)
        rigs = [(f"rig{i:02d}", f"127.0.0.{10 + i}") for i in range(1, n_rigs + 1)]
        fleet_file = root / "fleet.yml"
        data = write_fleet(fleet_file, rigs, 2.0)
        generate_fleet(fleetfile.load(fleet_file), root / "fleet")
        procs = []
        try:
            for name, _ in rigs:
                procs.append(subprocess.Popen(
                    [sys.executable, __file__, "sim-rig", "--env-file",
                     str(root / "fleet" / "rigs" / name / "crawlguard.env"),
                     "--state", str(root / name), "--shards", str(n_shards)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            for proc in procs:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise SystemExit("a simulated rig did not start")
            central = CentralHost(root / "fleet", data, root, alertmanager=False)
            try:
                sel = 'job="crawlguard-exporter"'
                wait(lambda: len(central.query(f"up{{{sel}}} == 1")) == n_rigs, 60,
                     "every simulated rig scraped")
                time.sleep(window)  # let the window fill with scrapes
                w = f"[{int(window)}s]"
                med = [float(s["value"][1]) for s in central.query(
                    f"quantile_over_time(0.5, scrape_duration_seconds{{{sel}}}{w})")]
                top = [float(s["value"][1]) for s in central.query(
                    f"max_over_time(scrape_duration_seconds{{{sel}}}{w})")]
                samples = [float(s["value"][1]) for s in central.query(
                    f"scrape_samples_scraped{{{sel}}}")]
                series = central.query(f'count(bfm_worker_info{{{sel}}})')
                groups = httpx.get(f"{central.prom_url}/api/v1/rules", timeout=10).json()[
                    "data"]["groups"]
                rules = {g["name"]: float(g["evaluationTime"]) for g in groups}
                up = central.query(f"sum(up{{{sel}}})")
            finally:
                central.stop()
        finally:
            for proc in procs:
                if proc.stdin is not None:
                    proc.stdin.close()
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        ms = [1000 * v for v in med]
        print(f"\ncentral scrape: {n_rigs} rigs x {n_shards} shards, interval 2s, window "
              f"{window:g}s, TLS (mutual) + bearer token per rig")
        print(f"  exporter targets up: {up[0]['value'][1] if up else '?'} of {n_rigs}; live "
              f"workers seen: {series[0]['value'][1] if series else '?'}")
        print(f"  scrape duration per target, median over the window: median "
              f"{statistics.median(ms):.1f} ms, slowest target {max(ms):.1f} ms")
        print(f"  scrape duration, slowest single scrape: {1000 * max(top):.1f} ms")
        print(f"  samples per scrape: {statistics.median(samples):.0f}")
        print("  rule group evaluation (last): " + ", ".join(
            f"{name} {1000 * seconds:.1f} ms" for name, seconds in rules.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", default="both",
                        choices=("signal", "scrape", "both", "sim-rig"))
    parser.add_argument("--profile", choices=("incident1", "incident2"))
    parser.add_argument("--rigs", type=int, default=20)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--env-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "sim-rig":
        return sim_rig(args)
    if args.part in ("signal", "both"):
        signal_bench([args.profile] if args.profile else ["incident1", "incident2"])
    if args.part in ("scrape", "both"):
        scrape_bench(args.rigs, args.shards, args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
