"""Deployment files: Kubernetes (generated from rules/ and fleet.yml), systemd, Windows."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import pytest
import yaml

from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.settings import Settings, knob_names
from tests.helpers import REPO, require_binary, wait_until

from .promql import promtool_check

K8S = REPO / "deploy" / "k8s"
GENERATE = K8S / "generate.py"
SYSTEMD = REPO / "deploy" / "systemd"
WINDOWS = REPO / "deploy" / "windows"


class GoYamlLoader(yaml.SafeLoader):
    """kubectl prints `matchType: =` bare; PyYAML alone reads '=' as a special tag."""


GoYamlLoader.add_constructor("tag:yaml.org,2002:value",
                             lambda loader, node: loader.construct_scalar(node))


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GENERATE), *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO)


def rules_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted((REPO / "rules").glob("*.yml")) + sorted((REPO / "rules").glob("*.yaml")):
        groups += (yaml.safe_load(path.read_text()) or {}).get("groups", [])
    return groups


@pytest.fixture(scope="module")
def fleet() -> dict[str, Any]:
    data = yaml.safe_load((K8S / "fleet.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object kustomization.yaml applies, by (kind, name)."""
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for rel in kust["resources"]:
        for doc in load_docs(K8S / rel):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


# -- Kubernetes: generated from the same sources ------------------------------------

def test_generated_files_are_up_to_date() -> None:
    proc = generate("--check")
    assert proc.returncode == 0, proc.stderr


def test_prometheusrule_groups_are_the_rules_files() -> None:
    (rule,) = load_docs(K8S / "generated" / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == rules_groups()


def test_prometheusrule_passes_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    (rule,) = load_docs(K8S / "generated" / "prometheusrule.yaml")
    path = tmp_path / "from-prometheusrule.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The dashboard-style check as well: every expr alone is valid PromQL.
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    promtool_check(exprs, tmp_path, promtool)


def route(amtool: str, config: Path, **labels: str) -> str:
    argv = [amtool, "config", "routes", "test", f"--config.file={config}",
            *(f"{k}={v}" for k, v in labels.items())]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_alertmanager_routes_each_pod_to_its_own_sidecar(tmp_path: Path) -> None:
    amtool = require_binary("amtool")
    fleet = tmp_path / "fleet.yml"
    data = yaml.safe_load((K8S / "fleet.yml").read_text())
    data["rigs"] = [{"shards": ["a"]}, {"shards": ["b", "c"]}, {"shards": ["d"]}]
    fleet.write_text(yaml.safe_dump(data))
    proc = generate("--fleet", str(fleet), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    config = tmp_path / "generated" / "alertmanager.yml"
    check = subprocess.run([amtool, "check-config", str(config)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    ns = data["namespace"]
    for i in range(3):
        pod = f"{data['name']}-{i}"
        for alert in ("BFMShardCrawl", "BFMShardStalled"):
            assert route(amtool, config, alertname=alert, namespace=ns, pod=pod,
                         shard="x") == f"sidecar-{pod}"
    # People, not a sidecar: no rung left, or no sidecar known for the pod.
    assert route(amtool, config, alertname="BFMShardCrawlOnCPU", namespace=ns,
                 pod=f"{data['name']}-0") == "crawlguard-humans"
    assert route(amtool, config, alertname="BFMShardCrawl", namespace=ns,
                 pod=f"{data['name']}-9") == "crawlguard-humans"
    assert route(amtool, config, alertname="Watchdog") == "blackhole"
    cfg = yaml.safe_load(config.read_text())
    urls = {r["name"]: r["webhook_configs"][0]["url"] for r in cfg["receivers"]
            if "webhook_configs" in r}
    assert urls[f"sidecar-{data['name']}-2"] == (
        f"http://{data['name']}-2.{data['name']}.{ns}.svc:9848/v1/alerts")
    kust = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    assert kust["replicas"] == [{"name": data["name"], "count": 3}]
    (amc,) = load_docs(tmp_path / "generated" / "alertmanagerconfig.yaml")
    sidecar_route = amc["spec"]["route"]["routes"][0]
    assert [r["receiver"] for r in sidecar_route["routes"]] == [
        f"sidecar-{data['name']}-{i}" for i in range(3)]


@pytest.mark.parametrize("change, message", [
    ({"rigs": [{"shards": ["a", "b"]}, {"shards": ["b"]}]}, "is in rig 0 and rig 1"),
    ({"rigs": [{"shards": ["../etc"]}]}, "shard '../etc' is not a safe name"),
    # The rules are crawlguard.kernel.names.ShardName's, not a copy: a copy missed these two.
    ({"rigs": [{"shards": ["con"]}]}, "shard 'con' is not a safe name"),
    ({"rigs": [{"shards": ["a."]}]}, "shard 'a.' is not a safe name"),
    ({"build_command": "python -m build"}, "{shard}"),
    ({"rigs": []}, "at least one rig"),
])
def test_generator_refuses_a_bad_fleet(tmp_path: Path, change: dict[str, Any],
                                       message: str) -> None:
    data = yaml.safe_load((K8S / "fleet.yml").read_text())
    data.update(change)
    (tmp_path / "fleet.yml").write_text(yaml.safe_dump(data))
    proc = generate("--fleet", str(tmp_path / "fleet.yml"), "--out", str(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "generated").exists()


def test_generator_runs_where_crawlguard_is_not_installed(tmp_path: Path) -> None:
    """Only PyYAML on the path (no site-packages, no crawlguard): the checkout's own
    crawlguard/kernel/names.py still checks the shards."""
    only_yaml = tmp_path / "path"
    only_yaml.mkdir()
    (only_yaml / "yaml").symlink_to(Path(yaml.__file__).parent)
    data = yaml.safe_load((K8S / "fleet.yml").read_text())
    data["rigs"] = [{"shards": ["nul"]}]
    (tmp_path / "fleet.yml").write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [sys.executable, "-S", str(GENERATE), "--fleet", str(tmp_path / "fleet.yml"),
         "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(only_yaml)})
    assert proc.returncode == 2 and "reserved device name on Windows" in proc.stderr, \
        proc.stderr


# Only the fields crawlguard relies on; kubeconform is not available offline.
META = {"type": "object", "required": ["name", "namespace"],
        "properties": {"name": {"type": "string", "pattern": "^[a-z0-9][-a-z0-9.]*$"}}}
PORTS = {"type": "array", "items": {"type": "object", "required": ["name", "containerPort"]}}
CONTAINER = {"type": "object", "required": ["name", "image", "securityContext"],
             "properties": {"ports": PORTS, "securityContext": {
                 "type": "object", "required": ["allowPrivilegeEscalation", "capabilities"],
                 "properties": {"allowPrivilegeEscalation": {"const": False}}}}}
SCHEMAS: dict[str, dict[str, Any]] = {
    "Namespace": {"required": ["apiVersion", "metadata"]},
    "StatefulSet": {"required": ["apiVersion", "metadata", "spec"], "properties": {
        "apiVersion": {"const": "apps/v1"}, "metadata": META,
        "spec": {"type": "object",
                 "required": ["serviceName", "selector", "template", "volumeClaimTemplates"],
                 "properties": {"template": {"type": "object", "required": ["metadata", "spec"],
                                             "properties": {"spec": {
                     "type": "object",
                     "required": ["containers", "shareProcessNamespace", "securityContext"],
                     "properties": {
                         "shareProcessNamespace": {"const": True},
                         "containers": {"type": "array", "minItems": 2, "items": CONTAINER},
                         "securityContext": {"type": "object",
                                             "required": ["runAsNonRoot", "runAsUser"]}}}}}}}}},
    "Service": {"required": ["apiVersion", "metadata", "spec"], "properties": {
        "apiVersion": {"const": "v1"}, "metadata": META,
        "spec": {"type": "object", "required": ["selector", "ports"]}}},
    "PodMonitor": {"required": ["apiVersion", "metadata", "spec"], "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "metadata": META,
        "spec": {"type": "object", "required": ["selector", "podMetricsEndpoints"],
                 "properties": {"podMetricsEndpoints": {"type": "array", "minItems": 1,
                                                        "items": {"required": ["port"]}}}}}},
    "PrometheusRule": {"required": ["apiVersion", "metadata", "spec"], "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "metadata": META,
        "spec": {"type": "object", "required": ["groups"]}}},
    "AlertmanagerConfig": {"required": ["apiVersion", "metadata", "spec"], "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1alpha1"}, "metadata": META,
        "spec": {"type": "object", "required": ["route", "receivers"], "properties": {
            "receivers": {"type": "array", "items": {"type": "object", "required": ["name"],
                "properties": {"webhookConfigs": {"type": "array", "items": {
                    "type": "object", "required": ["url", "httpConfig"]}}}}}}}}},
    "ConfigMap": {"required": ["apiVersion", "metadata", "data"], "properties": {
        "metadata": META, "data": {"type": "object",
                                   "additionalProperties": {"type": "string"}}}},
    "NetworkPolicy": {"required": ["apiVersion", "metadata", "spec"], "properties": {
        "apiVersion": {"const": "networking.k8s.io/v1"}, "metadata": META,
        "spec": {"type": "object", "required": ["podSelector", "ingress"]}}},
}


def test_manifests_have_the_fields_we_rely_on(
        manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = {kind for kind, _ in manifests}
    assert kinds == set(SCHEMAS), kinds ^ set(SCHEMAS)
    for (kind, name), doc in manifests.items():
        try:
            jsonschema.validate(doc, {"type": "object", **SCHEMAS[kind]})
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{kind}/{name}: {exc.message} at {list(exc.absolute_path)}")


def test_worker_and_sidecar_share_what_the_ladder_needs(
        manifests: dict[tuple[str, str], dict[str, Any]], fleet: dict[str, Any]) -> None:
    sts = manifests[("StatefulSet", fleet["name"])]
    pod = sts["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    worker, sidecar = containers["worker"], containers["sidecar"]
    # One PID namespace, one uid: the sidecar may see and signal the worker.
    assert pod["shareProcessNamespace"] is True
    for c in (worker, sidecar):
        assert "runAsUser" not in c["securityContext"], "one uid for the whole pod"
    # One state dir, mounted at the path both processes are told.
    env = {n: {e["name"]: e.get("value") for e in c["env"]} for n, c in containers.items()}
    mounts = {n: {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
              for n, c in containers.items()}
    assert mounts["worker"]["state"] == mounts["sidecar"]["state"]
    assert env["worker"]["HELIX_BFM_STATE_DIR"] == env["sidecar"]["HELIX_BFM_STATE_DIR"] \
        == mounts["worker"]["state"]
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["state"]
    # The token: the Secret of fleet.yml, mounted where the sidecar is told.
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = volumes["token"]["secret"]
    token = fleet["token_secret"]
    assert secret["secretName"] == token["name"]
    assert [i["key"] for i in secret["items"]] == [token["key"]]
    token_file = env["sidecar"]["HELIX_BFM_SIDECAR_TOKEN_FILE"]
    assert token_file == f"{mounts['sidecar']['token']}/{secret['items'][0]['path']}"
    # Pod DNS for Alertmanager: the headless Service the StatefulSet names.
    svc = manifests[("Service", sts["spec"]["serviceName"])]
    assert svc["spec"]["clusterIP"] == "None"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c["ports"]}
    assert ports == {"exporter": 9847, "sidecar": 9848}
    amc = manifests[("AlertmanagerConfig", "crawlguard")]
    for r in amc["spec"]["receivers"]:
        for hook in r.get("webhookConfigs", []):
            assert hook["url"].endswith(f".{svc['metadata']['name']}.{fleet['namespace']}.svc:"
                                        f"{ports['sidecar']}/v1/alerts")
            assert hook["httpConfig"]["authorization"]["credentials"] == token
    # Scraped: the PodMonitor selects these pods, on both named ports.
    pm = manifests[("PodMonitor", "crawlguard")]
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} == set(ports)
    np = manifests[("NetworkPolicy", fleet["name"])]
    assert {p["port"] for p in np["spec"]["ingress"][0]["ports"]} == set(ports.values())
    # Every pod finds its shards and the entrypoint in the fleet ConfigMap.
    cm = manifests[("ConfigMap", volumes["fleet"]["configMap"]["name"])]
    for i, rig in enumerate(fleet["rigs"]):
        assert cm["data"][f"{fleet['name']}-{i}.shards"].split() == rig["shards"]
    assert worker["command"][-1] == f"{mounts['worker']['fleet']}/worker.sh"
    assert "worker.sh" in cm["data"]


def test_kustomize_builds_the_fleet(fleet: dict[str, Any]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (kustomize build check)")
    proc = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.load_all(proc.stdout, Loader=GoYamlLoader) if d]
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    assert sts["spec"]["replicas"] == len(fleet["rigs"])
    images = {c["image"] for c in sts["spec"]["template"]["spec"]["containers"]}
    assert images == {fleet["image"]}


@pytest.fixture
def worker_sh(tmp_path: Path, manifests: dict[tuple[str, str], dict[str, Any]],
              fleet: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """worker.sh with the fleet ConfigMap on disk and a fake `crawlguard` on PATH."""
    if shutil.which("sh") is None or sys.platform == "win32":
        pytest.skip("no POSIX sh")
    cm = manifests[("ConfigMap", "crawlguard-fleet")]
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir()
    for key, text in cm["data"].items():
        (fleet_dir / key).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "crawlguard"
    fake.write_text('#!/bin/sh\ncase "$1" in\n'
                    '  exporter) echo "fake exporter up"; exec sleep 60 ;;\n'
                    '  run) shift; echo "fake run $*"; exit "${FAKE_RC:-0}" ;;\n'
                    'esac\nexit 99\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "CRAWLGUARD_FLEET_DIR": str(fleet_dir), "POD_NAME": f"{fleet['name']}-1"}
    return fleet_dir / "worker.sh", env


def test_worker_entrypoint_runs_the_pods_shards_then_keeps_serving(
        worker_sh: tuple[Path, dict[str, str]], fleet: dict[str, Any]) -> None:
    script, env = worker_sh
    assert subprocess.run(["sh", "-n", str(script)], timeout=10).returncode == 0
    proc = subprocess.Popen(["sh", str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        shards = " ".join(f"--shard {s}" for s in fleet["rigs"][1]["shards"])
        expected = f"fake run {shards} -- {fleet['build_command']}"
        lines: list[str] = []
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)

        def done() -> bool:
            chunk = proc.stdout.read() if proc.stdout else None
            if chunk:
                lines.extend(chunk.splitlines())
            return any("is done" in line for line in lines)

        wait_until(done, timeout=10, what="worker.sh to finish the shards")
        assert expected in lines, lines
        script_proc = psutil.Process(proc.pid)

        def settled() -> bool:
            # After "is done" the script's last command is `wait "$exporter"`: asleep,
            # with the exporter (`sleep 60` here) as its only child.
            if proc.poll() is not None:
                return True
            children = script_proc.children()
            return (script_proc.status() == psutil.STATUS_SLEEPING and len(children) == 1
                    and children[0].name() == "sleep")

        wait_until(settled, timeout=10, what="worker.sh to wait on the exporter or exit")
        assert proc.poll() is None, "the exporter must keep serving after the rebuild"
        os.kill(proc.pid, signal.SIGTERM)  # the pod is deleted
        assert proc.wait(10) == 143
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_worker_entrypoint_fails_with_the_supervisor(
        worker_sh: tuple[Path, dict[str, str]]) -> None:
    script, env = worker_sh
    proc = subprocess.run(["sh", str(script)], env={**env, "FAKE_RC": "3"},
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    proc = subprocess.run(["sh", str(script)], env={**env, "POD_NAME": "not-in-the-fleet"},
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 64 and "no shards for pod" in proc.stderr


# -- systemd -------------------------------------------------------------------------

UNITS = sorted(SYSTEMD.glob("*.service")) + sorted(SYSTEMD.glob("*.target"))


def unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    # verify insists that ExecStart= exists: point it at this checkout's command.
    exe = Path(sys.executable).with_name("crawlguard")
    if not exe.exists():
        exe = Path(shutil.which("true") or "/bin/true")
    for unit in UNITS:
        text = unit.read_text().replace("/opt/crawlguard/venv/bin/crawlguard", str(exe))
        (tmp_path / unit.name).write_text(text)
    names = [u.name for u in UNITS]
    proc = subprocess.run([analyze, "verify", "--man=no", *names], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ours = [line for line in proc.stderr.splitlines() if str(tmp_path) in line]
    assert not ours, "\n".join(ours)  # unknown keys and bad values are only warnings
    for name in ("crawlguard-sidecar.service", "crawlguard-exporter.service"):
        sec = subprocess.run([analyze, "security", "--offline=true", "--no-pager", name],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", sec.stdout + sec.stderr)
        if m is None:
            pytest.skip(f"systemd-analyze security --offline unsupported: {sec.stderr[:200]}")
        assert float(m.group(1)) <= 2.0, sec.stdout


def test_systemd_sidecar_gets_its_token_as_a_credential() -> None:
    sidecar = unit_settings(SYSTEMD / "crawlguard-sidecar.service")
    rebuild = unit_settings(SYSTEMD / "crawlguard-rebuild.service")
    (cred,) = sidecar["LoadCredential"]
    name, _, source = cred.partition(":")
    assert source == "/etc/crawlguard/sidecar.token"
    assert f"HELIX_BFM_SIDECAR_TOKEN_FILE=%d/{name}" in sidecar["Environment"]
    # The sidecar signals the worker: same user, and it must see /proc/<pid>.
    assert sidecar["User"] == rebuild["User"]
    assert "PrivatePIDs" not in sidecar and "ProcSubset" not in sidecar
    for unit in SYSTEMD.glob("*.service"):
        s = unit_settings(unit)
        assert s["EnvironmentFile"] == ["/etc/crawlguard/crawlguard.env"], unit.name
        assert "HELIX_BFM_SIDECAR_TOKEN" not in unit.read_text().replace(
            "HELIX_BFM_SIDECAR_TOKEN_FILE", ""), "the token is never in the environment"


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("path", [SYSTEMD / "crawlguard.env",
                                  WINDOWS / "crawlguard.env.example"])
def test_env_files_hold_valid_knobs(path: Path) -> None:
    env = env_file(path)
    unknown = {key for key in env if key.startswith("HELIX_BFM_")} - knob_names()
    assert not unknown, f"knobs crawlguard does not read: {unknown}"
    assert "HELIX_BFM_SIDECAR_TOKEN" not in env, "the token is a file, not a knob value"
    Settings.from_env(env)  # a bad value raises ConfigError naming the knob


# -- Windows ---------------------------------------------------------------------------

def test_windows_scripts_keep_one_console() -> None:
    run = (WINDOWS / "crawlguard.ps1").read_text()
    task = (WINDOWS / "register-task.ps1").read_text()
    setup = (WINDOWS / "setup.ps1").read_text()
    assert "-NoNewWindow" in run and "HELIX_BFM_SIDECAR_TOKEN_FILE" in run
    assert "@('--')" in run  # '--' reaches crawlguard verbatim
    # No pipe: on Ctrl+C PowerShell kills a piped native command and orphans its children.
    assert "Tee-Object" not in run.replace("(Tee-Object)", "") and "'--log-file'" in run
    assert "-LogonType Interactive" in task
    assert "nssm install" not in (run + task).lower()  # never a service: see the docstrings
    assert "/inheritance:r" in setup and "ProgramData" in setup


def _powershell() -> Any:
    ts = pytest.importorskip("tree_sitter")
    grammar = pytest.importorskip("tree_sitter_powershell")
    return ts.Parser(ts.Language(grammar.language()))


@pytest.mark.parametrize("script", sorted(p.name for p in WINDOWS.glob("*.ps1")))
def test_windows_scripts_parse_as_powershell(script: str) -> None:
    # No pwsh here: tree-sitter's PowerShell grammar finds what would stop the script
    # before it ran a line (an unbalanced brace, an unterminated string or here-string).
    source = (WINDOWS / script).read_bytes()
    tree = _powershell().parse(source)
    errors = []

    def walk(node: Any) -> None:
        if node.type == "ERROR" or node.is_missing:
            line = node.start_point[0] + 1
            errors.append(f"line {line}: {source.splitlines()[line - 1].decode()!r}")
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    assert not errors, f"{script} does not parse: {errors}"


def _calls(script: str, command: str) -> list[str]:
    """The text of every call of ``command`` in ``script``, continuation lines joined."""
    text = (WINDOWS / script).read_text().replace("`\n", " ")
    return [m.group(0) for m in re.finditer(rf"{re.escape(command)}\b[^\n]*", text)]


def test_the_task_runs_at_normal_priority_and_can_start_at_boot() -> None:
    [settings] = _calls("register-task.ps1", "New-ScheduledTaskSettingsSet")
    # 4 = NORMAL_PRIORITY_CLASS; the default 7 is BELOW_NORMAL, inherited by every child.
    assert re.search(r"-Priority 4\b", settings)
    task = (WINDOWS / "register-task.ps1").read_text()
    assert "New-ScheduledTaskTrigger -AtStartup" in task and "-LogonType S4U" in task
    assert "[ValidateSet('Logon', 'Startup')]" in task


def test_the_script_restarts_crawlguard_after_a_non_zero_exit() -> None:
    run = (WINDOWS / "crawlguard.ps1").read_text()
    loop = run[run.index("while ($true)"):]
    # Restarted unless finished (0) or stopped on purpose (130), with a bound.
    assert "if ($rc -eq 0)" in loop and "if ($rc -eq 130)" in loop
    assert "$failures -gt $MaxRestarts" in loop
    assert "Start-Sleep -Seconds $RestartDelaySeconds" in loop
    assert "KillOnCloseJob" in run and "QuickEditOff" in run


def test_the_scripts_env_lines_follow_crawlguards_own_rule() -> None:
    from crawlguard.kernel import envfile

    run = (WINDOWS / "crawlguard.ps1").read_text()
    [pattern] = re.findall(r"-notmatch '\^(.+?)\$'", run)
    assert pattern == envfile._KEY.pattern   # one rule for a variable name, both readers
    assert "line ${number}: expected KEY=VALUE" in run
    with pytest.raises(ConfigError, match="line 2': expected KEY=VALUE"):
        envfile.parse("A=1\nnot a line\n")
