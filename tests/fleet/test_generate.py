"""`crawlguard fleet generate`: the files, their checks by the real tools, and secrets kept.

promtool and amtool check the generated configs as they are (from another
working directory: every path in them is relative to their own folder), amtool
routes each rig's crawl alerts to that rig's sidecar alone, and a second run
keeps every key, certificate and token byte for byte. A certificate that no
longer fits is refused with the reason, never replaced.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawlguard import deploy
from crawlguard.fleet import fleetfile, pki
from crawlguard.fleet.generate import RULES, generate
from crawlguard.fleet.layout import Layout, read_record
from crawlguard.kernel import envfile, promconfig
from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.settings import Settings
from crawlguard.rig import promstack
from crawlguard.rules.files import FLEET_RULES_FILE, RULES_FILE
from tests.helpers import REPO, crawlguard_cmd, require_binary

from .conftest import RIG_HOSTS, GeneratedFleet, write_fleet

SECRETS = ["ca/ca.key", "central/tls/client.key", "central/tokens/rig1.token",
           "rigs/rig1/token", "rigs/rig1/tls.key", "rigs/rig3/tls.key"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_private_files(gen_fleet: GeneratedFleet) -> None:
    root = gen_fleet.root
    for rig in RIG_HOSTS:
        for name in ("crawlguard.env", "token", "tls.crt", "tls.key", "ca.crt"):
            assert (root / "rigs" / rig / name).is_file()
        assert (root / "central" / "tokens" / f"{rig}.token").read_text() == \
            (root / "rigs" / rig / "token").read_text()
    for name in ("prometheus.yml", "alertmanager.yml", *(f"rules/{r}" for r in RULES),
                 "grafana/datasource.yml",
                 "grafana/dashboards/crawlguard-fleet.json",
                 "grafana/dashboards/crawlguard-rebuild.json"):
        assert (root / "central" / name).is_file(), name
    if sys.platform != "win32":
        for rel in SECRETS:
            assert stat.S_IMODE((root / rel).stat().st_mode) == 0o600, rel
    central, rigs = read_record(gen_fleet.layout)
    assert central.host == "127.0.0.1" and [r.name for r in rigs] == list(RIG_HOSTS)


def test_certificates_name_their_hosts_and_chain_to_the_ca(gen_fleet: GeneratedFleet) -> None:
    ca = pki.load_ca(gen_fleet.root / "ca" / "ca.crt", gen_fleet.root / "ca" / "ca.key")
    for rig, host in RIG_HOSTS.items():
        d = gen_fleet.layout.rig_dir(rig)
        assert pki.check(d / "tls.crt", d / "tls.key", ca, [host, "127.0.0.1"]) == []
        assert pki.check(d / "tls.crt", d / "tls.key", ca, ["127.0.0.9"]) != []
    t = gen_fleet.layout.central_tls
    assert pki.check(t / "client.crt", t / "client.key", ca, ["127.0.0.1"]) == []


def test_the_rig_env_file_is_what_up_reads(gen_fleet: GeneratedFleet) -> None:
    folder = gen_fleet.layout.rig_dir("rig2")
    moved = gen_fleet.root.parent / "elsewhere"  # a rig's folder works wherever it is copied
    shutil.copytree(folder, moved)
    env = envfile.read(moved / "crawlguard.env")
    ep = Settings.from_env(env).endpoints
    rig = gen_fleet.rig("rig2")
    assert (ep.exporter_host, ep.exporter_port) == (rig.host, rig.exporter_port)
    assert (ep.sidecar_host, ep.sidecar_port) == (rig.host, rig.sidecar_port)
    assert ep.sidecar_url == f"https://{rig.host}:{rig.sidecar_port}"
    assert ep.token == ep.exporter_token == gen_fleet.token("rig2")
    assert ep.tls.cert == moved / "tls.crt" and ep.tls.ca == moved / "ca.crt"
    assert ep.tls.mutual
    ep.tls.server_context()
    ep.tls.client_context()


@pytest.mark.binaries
def test_central_configs_pass_the_real_tools_from_anywhere(gen_fleet: GeneratedFleet,
                                                            tmp_path: Path) -> None:
    promtool, amtool = require_binary("promtool"), require_binary("amtool")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    central = gen_fleet.root / "central"
    for argv in ([promtool, "check", "config", str(central / "prometheus.yml")],
                 [amtool, "check-config", str(central / "alertmanager.yml")]):
        done = subprocess.run(argv, cwd=elsewhere, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 2 rule files found" in subprocess.run(
        [promtool, "check", "config", str(central / "prometheus.yml")], cwd=elsewhere,
        capture_output=True, text=True, timeout=60).stdout


def route(amtool: str, config: Path, **labels: str) -> str:
    done = subprocess.run([amtool, "config", "routes", "test", f"--config.file={config}",
                           *(f"{k}={v}" for k, v in labels.items())],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.binaries
def test_each_rigs_crawls_go_to_its_own_sidecar(gen_fleet: GeneratedFleet) -> None:
    amtool = require_binary("amtool")
    config = gen_fleet.root / "central" / "alertmanager.yml"
    for rig in RIG_HOSTS:
        for alert in ("BFMShardCrawl", "BFMShardStalled", "BFMShardOOM"):
            assert route(amtool, config, alertname=alert, rig=rig, shard="s") == f"sidecar-{rig}"
    # People, never a sidecar: the rig alert, the informational ones, an unknown rig.
    assert route(amtool, config, alertname="BFMRigDown", rig="rig2") == "crawlguard-humans"
    assert route(amtool, config, alertname="BFMShardCrawlOnCPU", rig="rig1") == \
        "crawlguard-humans"
    assert route(amtool, config, alertname="BFMShardCrawl", rig="rig9") == "crawlguard-humans"
    assert route(amtool, config, alertname="Watchdog") == "blackhole"
    cfg = yaml.safe_load(config.read_text())
    hooks = {r["name"]: r["webhook_configs"][0] for r in cfg["receivers"]
             if "webhook_configs" in r}
    rig2 = gen_fleet.rig("rig2")
    assert hooks["sidecar-rig2"]["url"] == f"https://127.0.0.3:{rig2.sidecar_port}/v1/alerts"
    http = hooks["sidecar-rig2"]["http_config"]
    assert http["authorization"]["credentials_file"] == "tokens/rig2.token"
    assert http["tls_config"] == {"ca_file": "tls/ca.crt", "cert_file": "tls/client.crt",
                                  "key_file": "tls/client.key"}


def test_prometheus_scrapes_every_rig_under_the_shipped_job_names(
        gen_fleet: GeneratedFleet) -> None:
    cfg = yaml.safe_load((gen_fleet.root / "central" / "prometheus.yml").read_text())
    assert cfg["global"]["scrape_interval"] == "1s"
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert len(jobs) == 2 * len(RIG_HOSTS)
    rig3 = gen_fleet.rig("rig3")
    job = jobs["crawlguard-exporter-rig3"]
    assert job["static_configs"] == [{"targets": [f"127.0.0.4:{rig3.exporter_port}"],
                                      "labels": {"rig": "rig3"}}]
    assert job["relabel_configs"] == [{"target_label": "job",
                                       "replacement": "crawlguard-exporter"}]
    assert job["scheme"] == "https"
    assert job["authorization"]["credentials_file"] == "tokens/rig3.token"
    assert jobs["crawlguard-sidecar-rig3"]["static_configs"][0]["targets"] == [
        f"127.0.0.4:{rig3.sidecar_port}"]
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{gen_fleet.data['central']['alertmanager_port']}"]


def test_central_rules_are_the_shipped_ones_plus_the_rig_alert(
        gen_fleet: GeneratedFleet) -> None:
    """The meaning of the shipped rules is untouched: only the runbook links move (to a
    page the central host can open) and BFMRigDown's `for:` follows the fleet file."""
    rules = gen_fleet.root / "central" / "rules"
    shipped = promconfig.load_yaml(RULES_FILE)
    ours = promconfig.load_yaml(rules / "crawlguard.rules.yml")

    def meaning(doc: dict[str, Any]) -> list[Any]:
        return [{k: v for k, v in r.items() if k != "annotations"} | {
            "annotations": {k: v for k, v in r.get("annotations", {}).items()
                            if k != "runbook_url"}}
                for g in doc["groups"] for r in g["rules"]]

    assert meaning(ours) == meaning(shipped)
    links = [r["annotations"]["runbook_url"] for g in ours["groups"] for r in g["rules"]
             if "alert" in r]
    assert links and all(u.startswith(fleetfile.DEFAULT_RUNBOOK + "#") for u in links)
    fleet_rules = promconfig.load_yaml(rules / "crawlguard-fleet.rules.yml")
    (rule,) = [r for g in fleet_rules["groups"] for r in g["rules"]]
    assert rule["alert"] == "BFMRigDown" and rule["for"] == "4s"
    assert rule["expr"] == promconfig.load_yaml(FLEET_RULES_FILE)["groups"][0]["rules"][0][
        "expr"]


def test_the_k8s_and_the_bare_fleet_route_with_one_code(gen_fleet: GeneratedFleet) -> None:
    """Both generators build their per-rig routing with promconfig.per_rig_alertmanager from
    the shipped single-rig config: the same matchers, grouping, timing and webhook settings."""
    bare = yaml.safe_load((gen_fleet.root / "central" / "alertmanager.yml").read_text())
    k8s = yaml.safe_load((REPO / "deploy" / "k8s" / "generated" / "alertmanager.yml")
                         .read_text())
    shipped = promconfig.load_yaml(deploy.ALERTMANAGER)
    sidecar_route = promconfig.shipped_route(shipped, promconfig.SIDECAR_RECEIVER)
    for cfg, extra in ((bare, []), (k8s, ['namespace="crawlguard"'])):
        first = cfg["route"]["routes"][0]
        assert first["matchers"] == sidecar_route.matchers + extra
        assert first["group_by"] == sidecar_route.group_by
    hook = promconfig.shipped_webhook(shipped, promconfig.SIDECAR_RECEIVER)
    for cfg in (bare, k8s):
        for receiver in cfg["receivers"]:
            for h in receiver.get("webhook_configs", []):
                assert {k: h[k] for k in ("send_resolved", "max_alerts")} == {
                    k: hook[k] for k in ("send_resolved", "max_alerts")}
    # The fleet's scaled timing (interval 1s), the shipped one on Kubernetes.
    assert bare["route"]["routes"][0]["group_wait"] == "1s"
    assert k8s["route"]["routes"][0]["group_wait"] == sidecar_route.timing["group_wait"]


def test_a_second_run_keeps_every_secret(gen_fleet: GeneratedFleet) -> None:
    before = snapshot(gen_fleet.root)
    notes = generate(fleetfile.load(gen_fleet.fleet_file), gen_fleet.root)
    assert snapshot(gen_fleet.root) == before
    assert not [n for n in notes if ": new" in n], notes
    assert sum("kept its token" in n for n in notes) == len(RIG_HOSTS)


def test_a_rig_moved_to_another_host_is_refused_not_reissued(
        gen_fleet: GeneratedFleet) -> None:
    data = gen_fleet.data
    data["rigs"][1]["host"] = "127.0.0.9"
    gen_fleet.fleet_file.write_text(yaml.safe_dump(data))
    before = snapshot(gen_fleet.root)
    with pytest.raises(ConfigError) as info:
        generate(fleetfile.load(gen_fleet.fleet_file), gen_fleet.root)
    assert "rigs/rig2/tls.crt" in str(info.value) and "does not name 127.0.0.9" in \
        str(info.value) and "delete tls.crt and tls.key" in str(info.value)
    assert snapshot(gen_fleet.root) == {k: v for k, v in before.items()}  # nothing replaced
    # Deleting the pair is how a person asks for a new one.
    for name in ("tls.crt", "tls.key"):
        (gen_fleet.layout.rig_dir("rig2") / name).unlink()
    notes = generate(fleetfile.load(gen_fleet.fleet_file), gen_fleet.root)
    assert "rig rig2: new certificate rigs/rig2/tls.crt for 127.0.0.9" in notes
    after = snapshot(gen_fleet.root)
    assert after["rigs/rig1/tls.key"] == before["rigs/rig1/tls.key"]
    assert after["rigs/rig2/token"] == before["rigs/rig2/token"]


@pytest.mark.parametrize(("damage", "message"), [
    (lambda lay: (lay.rig_dir("rig1") / "tls.key").unlink(), "tls.key is missing beside it"),
    (lambda lay: lay.central_token("rig3").write_text("x" * 40 + "\n"),
     "differs from central/tokens/rig3.token"),
    (lambda lay: (lay.rig_dir("rig3") / "token").write_text("short\n"),
     "no token of at least 16 characters"),
    (lambda lay: shutil.rmtree(lay.ca_dir), "not issued by the fleet's CA"),
    (lambda lay: (lay.ca_dir / "ca.crt").unlink(), "without its certificate"),
])
def test_damage_is_refused_with_the_way_out(gen_fleet: GeneratedFleet, damage: Any,
                                            message: str) -> None:
    damage(gen_fleet.layout)
    with pytest.raises(ConfigError) as info:
        generate(fleetfile.load(gen_fleet.fleet_file), gen_fleet.root)
    assert message in str(info.value), str(info.value)


def test_a_lost_token_copy_is_restored_from_its_twin(gen_fleet: GeneratedFleet) -> None:
    token = gen_fleet.token("rig1")
    gen_fleet.layout.central_token("rig1").unlink()
    generate(fleetfile.load(gen_fleet.fleet_file), gen_fleet.root)
    assert gen_fleet.layout.central_token("rig1").read_text().strip() == token


def test_certificates_the_user_brings(tmp_path: Path) -> None:
    """A CA without its key, and every certificate brought: nothing is issued, all is
    checked; a certificate of another CA is refused."""
    own = tmp_path / "own"
    own.mkdir()
    ca_pem, ca_key = pki.new_ca()
    (own / "ca.crt").write_bytes(ca_pem)
    (own / "ca.key").write_bytes(ca_key)
    ca = pki.load_ca(own / "ca.crt", own / "ca.key")
    hosts = {"central": "127.0.0.1", **RIG_HOSTS}
    for name, host in hosts.items():
        cert, key = pki.issue(ca, name, [host], server=name != "central")
        (own / f"{name}.crt").write_bytes(cert)
        (own / f"{name}.key").write_bytes(key)
    fleet_file = tmp_path / "fleet.yml"
    data = write_fleet(fleet_file, cert="own/central.crt", key="own/central.key")
    data["tls"] = {"ca_cert": "own/ca.crt"}
    for rig in data["rigs"]:
        rig.update(cert=f"own/{rig['name']}.crt", key=f"own/{rig['name']}.key")
    fleet_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    notes = generate(fleetfile.load(fleet_file), out)
    assert not (out / "ca").exists()  # the user's CA stays where it is
    assert (out / "rigs" / "rig2" / "tls.crt").read_bytes() == (own / "rig2.crt").read_bytes()
    assert (out / "rigs" / "rig2" / "ca.crt").read_bytes() == ca_pem
    assert any("copied from the fleet file" in n for n in notes)
    # A certificate of another CA is refused, naming why.
    other_pem, other_key = pki.new_ca()
    (own / "other.crt").write_bytes(other_pem)
    (own / "other.key").write_bytes(other_key)
    cert, key = pki.issue(pki.load_ca(own / "other.crt", own / "other.key"), "rig1",
                          ["127.0.0.2"], server=True)
    (own / "rig1.crt").write_bytes(cert)
    (own / "rig1.key").write_bytes(key)
    with pytest.raises(ConfigError) as info:
        generate(fleetfile.load(fleet_file), out)
    assert "not issued by the fleet's CA" in str(info.value)
    assert "fix the certificate you brought" in str(info.value)


def test_the_command_line(tmp_path: Path) -> None:
    fleet_file = tmp_path / "fleet.yml"
    write_fleet(fleet_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIX_BFM_")}
    done = subprocess.run(crawlguard_cmd("fleet", "generate", str(fleet_file), "--out",
                                         str(tmp_path / "out")),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "CA: new ca/ca.crt" in done.stdout and "rig rig3: new token" in done.stdout
    fleet_file.write_text("central: {host: 127.0.0.1}\nrigs: [{name: ../x, host: h}]\n")
    done = subprocess.run(crawlguard_cmd("fleet", "generate", str(fleet_file), "--out",
                                         str(tmp_path / "out")),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "rigs[0].name" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_up_reads_the_shipped_files_the_generator_reads() -> None:
    """The fleet is generated from the installed shipped files, as `up` runs from them."""
    shipped = promstack.Shipped.find()
    assert shipped is not None and FLEET_RULES_FILE.is_file()
    assert deploy.FLEET_DASHBOARD.is_file()
    assert Layout(Path("x")).central_token("r") == Path("x/central/tokens/r.token")
