"""A fleet of three bare rigs, end to end, for real, on loopback addresses.

Three `crawlguard up --env-file DIR/rigs/NAME/crawlguard.env --alert-path external`
rigs on 127.0.0.2, .3 and .4 run the reference rebuild on their simulated GPUs;
one real Prometheus and one real Alertmanager on 127.0.0.1 run from the
generated files as they are. Every rig rebuilds a shard called ``alpha`` (so
only the `rig` label tells their alerts apart); rig2's is incident 2, the others
are healthy. The test checks that:

- the central Prometheus scrapes all six targets over mutual TLS with each rig's
  token, and a rig refuses plain HTTP, a wrong token and a certificate of another CA;
- `crawlguard status` on a rig and `crawlguard fleet status|rung` on the central
  host work against the fleet's TLS;
- rig2's crawl restarts only rig2's worker, then demotes only that shard (its
  next shard and the other rigs stay on the GPU, no other sidecar hears an alert);
- rig3 killed raises BFMRigDown for rig3 (and for no rig that is up), and rig3
  brought back resumes where it stopped;
- every rig's build ends lossless: every gene once, byte-identical to a clean
  computation (crawlguard.refbuild.verify).

Scaled time: a scrape/evaluation interval of 1 s, BFMRigDown after 4 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from crawlguard.kernel import envfile
from crawlguard.refbuild.corpus import ShardSpec, generate
from crawlguard.refbuild.store import output_dir
from crawlguard.refbuild.verify import verify_shard
from crawlguard.rig import promstack
from tests.helpers import REPO, Proc, crawlguard_cmd, require_binary, wait_until

from .conftest import RIG_HOSTS, GeneratedFleet
from .test_tls_servers import outcome

pytestmark = [pytest.mark.slow, pytest.mark.binaries,
              pytest.mark.skipif(sys.platform == "win32", reason="127.0.0.x and SIGKILL")]

SHARDS = {
    "rig1": [ShardSpec("alpha", files=24, genes_per_file=16, profile="healthy")],
    "rig2": [ShardSpec("alpha", files=12, genes_per_file=40, profile="incident2"),
             ShardSpec("beta", files=6, genes_per_file=16, profile="healthy")],
    "rig3": [ShardSpec("alpha", files=30, genes_per_file=16, profile="healthy")],
}
TIME_SCALE = {"rig1": "1", "rig2": "10", "rig3": "1"}
"""rig1 and rig3 run at the incidents' own pace (15.3 genes/s), long enough to be up
while rig2 crawls twice and while rig3 is killed; rig2 at the demo's."""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HELIX_BFM_")}


class Rig:
    def __init__(self, fleet: GeneratedFleet, name: str, root: Path) -> None:
        self.name, self.fleet = name, fleet
        self.data, self.state = root / name / "data", root / name / "state"
        for spec in SHARDS[name]:
            generate(self.data, spec)
        self.proc: Proc | None = None

    def up(self, time_scale: str) -> Proc:
        shards = [a for spec in SHARDS[self.name] for a in ("--shard", spec.shard)]
        self.proc = Proc(crawlguard_cmd(
            "up", "--env-file", str(self.fleet.layout.rig_dir(self.name) / "crawlguard.env"),
            "--alert-path", "external", "--state-dir", str(self.state), "--simulate-gpu",
            "--progress", "lines", *shards, "--", sys.executable, "-m", "crawlguard.refbuild",
            "work", "--data", str(self.data), "--shard", "{shard}", "--time-scale", time_scale),
            env=clean_env(), cwd=REPO)
        return self.proc

    def ladder(self, shard: str) -> dict[str, Any]:
        path = self.state / "shards" / shard / "ladder.json"
        return json.loads(path.read_text()) if path.exists() else {"crawls": 0, "history": []}

    def starts(self, shard: str) -> list[str]:
        lines = (self.data / shard / "sim.jsonl").read_text().splitlines()
        return [e["device"] for e in map(json.loads, lines) if e["event"] == "start"]

    def alerts_heard(self) -> int:
        audit = self.state / "audit.jsonl"
        lines = audit.read_text().splitlines() if audit.exists() else []
        return sum(1 for line in lines if json.loads(line).get("event") == "alert")

    def done_files(self, shard: str = "alpha") -> int:
        return len(list(output_dir(self.data, shard).glob("*.json")))


class Central:
    def __init__(self, fleet: GeneratedFleet, root: Path) -> None:
        binaries = promstack.Binaries.find()
        if binaries is None:
            require_binary("prometheus")
            require_binary("prometheus-alertmanager")
        assert binaries is not None
        central = fleet.root / "central"
        self.prom_url = f"http://127.0.0.1:{fleet.data['central']['prometheus_port']}"
        self.am_url = f"http://127.0.0.1:{fleet.data['central']['alertmanager_port']}"
        # The generated files as they are, run from another directory.
        self.am = Proc(promstack.alertmanager_argv(
            binaries.alertmanager, central / "alertmanager.yml", root / "am-data",
            fleet.data["central"]["alertmanager_port"]), cwd=root)
        self.prom = Proc(promstack.prometheus_argv(
            binaries.prometheus, central / "prometheus.yml", root / "prom-data",
            fleet.data["central"]["prometheus_port"]), cwd=root)
        for url in (f"{self.am_url}/-/ready", f"{self.prom_url}/-/ready"):
            wait_until(lambda url=url: httpx.get(url, timeout=2).status_code == 200, 60,
                       what=url)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prom_url}/api/v1/query", params={"query": expr}, timeout=5)
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def rigs_down_alerted(self) -> set[str]:
        alerts = httpx.get(f"{self.am_url}/api/v2/alerts",
                           params={"filter": 'alertname="BFMRigDown"', "active": "true"},
                           timeout=5).json()
        return {a["labels"]["rig"] for a in alerts}

    def stop(self) -> None:
        self.prom.stop()
        self.am.stop()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(crawlguard_cmd(*args), cwd=REPO, env={**clean_env(), **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_a_fleet_of_three_bare_rigs(gen_fleet: GeneratedFleet, stranger: Any,
                                    tmp_path: Path) -> None:
    central = Central(gen_fleet, tmp_path)
    rigs = {name: Rig(gen_fleet, name, tmp_path) for name in RIG_HOSTS}
    try:
        for name, rig in rigs.items():
            rig.up(TIME_SCALE[name])
        scenario(gen_fleet, central, rigs, stranger)
    finally:
        for rig in rigs.values():
            if rig.proc is not None:
                rig.proc.stop()
        central.stop()


def scenario(fleet: GeneratedFleet, central: Central, rigs: dict[str, Rig],
             stranger: Any) -> None:
    r1, r2, r3 = rigs["rig1"], rigs["rig2"], rigs["rig3"]
    # The central Prometheus scrapes every exporter and sidecar: TLS, client certificate,
    # token, each series labelled with its rig.
    wait_until(lambda: len(central.query('up{job=~"crawlguard-exporter|crawlguard-sidecar"} '
                                         '== 1')) == 6, 60, what="six targets up")
    wait_until(lambda: {s["metric"]["rig"] for s in central.query(
        'bfm_batches_total{shard="alpha"}')} == set(RIG_HOSTS), 60,
        what="every rig's alpha series, labelled with its rig")

    # A rig refuses plain HTTP, a wrong token and a certificate of another CA.
    rig1 = fleet.rig("rig1")
    good, token = fleet.central_tls(), fleet.token("rig1")
    stranger_client = type(good)(cert=stranger.cert, key=stranger.key, ca=good.ca)
    for url in (f"{rig1.exporter_url}/metrics", f"{rig1.sidecar_url}/v1/shards"):
        plain = url.replace("https://", "http://")
        assert outcome(plain, None, token) == "refused", plain
        assert outcome(url, good, "a-wrong-token-of-some-length") == 401, url
        assert outcome(url, stranger_client, token) == "refused", url
        assert outcome(url, good, token) == 200, url

    # Client commands against a fleet rig: `status` on the rig with its env file, and
    # `fleet status` / `fleet rung` on the central host.
    rig_env = envfile.read(fleet.layout.rig_dir("rig1") / "crawlguard.env")
    on_rig = cli("status", env=rig_env)
    assert on_rig.returncode == 0 and "action=ladder" in on_rig.stdout, on_rig.stderr
    doctor = cli("doctor", "--json", env=rig_env)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["sidecar"]["status"] == "ok", checks["sidecar"]
    # up.json carries what any client needs to reach the rig.
    record = json.loads((r1.state / "run" / "up.json").read_text())
    assert record["alert_path"] == "external"
    assert record["urls"]["sidecar"] == rig1.sidecar_url
    assert record["urls"]["exporter"] == rig1.exporter_url
    assert record["token_file"] == record["exporter_token_file"]
    tls = type(good)(**{k: Path(record["tls"][f"{k}_file"]) for k in ("cert", "key", "ca")})
    assert outcome(f"{record['urls']['sidecar']}/v1/shards", tls,
                   Path(record["token_file"]).read_text().strip()) == 200
    table = cli("fleet", "status", str(fleet.root), "--json")
    assert table.returncode == 0, table.stdout + table.stderr
    found = {r["rig"]: r for r in json.loads(table.stdout)["rigs"]}
    assert set(found) == set(RIG_HOSTS) and all(r["reachable"] for r in found.values())
    assert all("alpha" in r["exporter"]["shards"] for r in found.values())
    forced = cli("fleet", "rung", "rig1", "alpha", "restart", "--reason", "from the centre",
                 "--fleet", str(fleet.root))
    assert forced.returncode == 0 and forced.stdout.startswith("rig1 alpha: restart"), \
        forced.stdout + forced.stderr
    wait_until(lambda: len(r1.starts("alpha")) == 2, 60, what="rig1's forced restart")

    # rig3 killed (its `up`, hard): its rig alert fires, and no rig that is up raises one.
    wait_until(lambda: r3.done_files() >= 2, 60, what="rig3 under way")
    assert r3.proc is not None
    children = psutil.Process(r3.proc.pid).children(recursive=True)
    os.kill(r3.proc.pid, signal.SIGKILL)
    r3.proc.wait(30)
    _, alive = psutil.wait_procs(children, timeout=30)  # the worker salvages and exits
    assert not alive, alive
    down = wait_until(lambda: (d := central.rigs_down_alerted()) and "rig3" in d and d, 60,
                      what="BFMRigDown for rig3")
    exited = {n for n, r in rigs.items()
              if r.proc is not None and r.proc.popen.poll() is not None}
    assert down <= exited, f"rig alert for a rig that is up: {down - exited}"
    kept = r3.done_files()
    assert kept < SHARDS["rig3"][0].files
    # Back: it resumes where it stopped, at a faster pace.
    rigs["rig3"].up("20")

    # rig2's crawl: restart, crawl again, CPU; nothing of it anywhere else.
    wait_until(lambda: r2.ladder("alpha").get("env") == {"BGEM3_DEVICE": "cpu"}, 120,
               what="rig2's alpha demoted to CPU")
    assert [h["rung"] for h in r2.ladder("alpha")["history"] if h["kind"] == "rung"] == [
        "restart", "cpu"]
    assert r2.ladder("alpha")["crawls"] == 2

    for name, rig in rigs.items():
        assert rig.proc is not None
        assert rig.proc.wait(180) == 0, f"{name}:\n{rig.proc.output[-3000:]}"

    # Only rig2 crawled, only its alpha was demoted; rig1 took the forced rung alone.
    assert r2.starts("alpha") == ["cuda:0", "cuda:0", "cpu"]
    assert r2.starts("beta") == ["cuda:0"] and r2.ladder("beta")["crawls"] == 0
    assert r1.starts("alpha") == ["cuda:0", "cuda:0"]
    assert r1.ladder("alpha")["crawls"] == 0
    assert [h.get("reason") for h in r1.ladder("alpha")["history"] if h["kind"] == "rung"] == [
        "from the centre"]
    assert r3.starts("alpha") == ["cuda:0", "cuda:0"] and r3.ladder("alpha")["crawls"] == 0
    assert r2.alerts_heard() > 0 and r1.alerts_heard() == 0 and r3.alerts_heard() == 0
    worker_log = (r3.state / "run" / "logs" / "alpha.log").read_text()
    assert f"({16 * (30 - kept)} genes written by this worker)" in worker_log

    # Every build lossless: each gene once, byte-identical to a clean computation.
    for name, rig in rigs.items():
        for spec in SHARDS[name]:
            verdict = verify_shard(rig.data, spec.shard)
            assert verdict.lossless, (name, spec.shard, verdict)
