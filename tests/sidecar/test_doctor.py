"""`crawlguard doctor`: fakes at the OS and NVML edges, real servers everywhere else."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawlguard.cli.main import main
from crawlguard.doctor import checks
from crawlguard.doctor.checks import Check, CheckInputs, run_checks
from crawlguard.doctor.probes import Gpu
from crawlguard.gpu.shared import PdhSharedSource
from crawlguard.kernel.errors import VramError
from crawlguard.kernel.settings import Endpoints, Preflight, Remediation, Settings
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import register_worker
from crawlguard.rig import promstack
from tests.gpu.test_shared import PDH_CSTATUS_NO_OBJECT, FakePdh, inst
from tests.helpers import REPO, Proc, crawlguard_cmd, free_port, require_binary, wait_until
from tests.sidecar.conftest import GONE, TOKEN, Live

GIB = 1 << 30


class FakeNvml:
    def __init__(self, version: str = "551.86", gpus: list[Gpu] | None = None,
                 error: str | None = None) -> None:
        self.version = version
        self._gpus = [Gpu(0, "NVIDIA GeForce RTX 4070", 12 * GIB)] if gpus is None else gpus
        self.error = error

    def driver_version(self) -> str:
        if self.error:
            raise VramError(f"NVML: {self.error}")
        return self.version

    def gpus(self) -> list[Gpu]:
        if self.error:
            raise VramError(f"NVML: {self.error}")
        return self._gpus


@pytest.fixture
def rig(tmp_path: Path) -> CheckInputs:
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1,
                                          "total_bytes": 12 * GIB}]}))
    settings = Settings(state_dir=tmp_path / "state", vram_source=f"file:{vram}",
                        endpoints=Endpoints(sidecar_url=f"http://127.0.0.1:{free_port()}"))
    return CheckInputs(settings, env={}, platform="win32", nvml=FakeNvml(),
               shared=lambda spec, plat: PdhSharedSource(FakePdh({inst(1): 0.0})))


def one(rig: CheckInputs, name: str) -> Check:
    found = dict(checks.CHECKS)[name](rig)
    assert found.name == name
    return found


@pytest.mark.parametrize(("platform", "version", "status", "words"), [
    ("win32", "531.79", "ok", "no sysmem fallback"),
    ("win32", "536.40", "warn", "cannot be switched off"),
    ("win32", "545.92", "warn", "cannot be switched off"),
    ("win32", "546.01", "ok", "policy can be set"),
    ("win32", "572.16", "ok", "policy can be set"),
    ("win32", "r550", "warn", "unrecognised"),
    ("linux", "535.104.05", "ok", "Linux drivers do not spill"),
])
def test_driver_version_against_the_fallback_and_policy_releases(
        rig: CheckInputs, platform: str, version: str, status: str, words: str) -> None:
    rig.platform, rig.nvml = platform, FakeNvml(version)
    got = one(rig, "driver")
    assert got.status == status and words in got.summary


def test_without_nvml_the_driver_is_unknown_and_nvml_fails_only_when_it_is_the_source(
        rig: CheckInputs) -> None:
    rig.nvml = FakeNvml(error="NVML Shared Library Not Found")
    assert one(rig, "driver").status == "warn"
    assert one(rig, "nvml").status == "skip"  # the VRAM source is file:
    rig.settings = replace(rig.settings, vram_source="nvml")
    got = one(rig, "nvml")
    assert got.status == "fail" and "Library Not Found" in got.summary


def test_the_fallback_policy_says_exactly_where_to_look_on_windows(rig: CheckInputs) -> None:
    got = one(rig, "sysmem-fallback")
    assert got.status == "warn"
    assert "NVIDIA Control Panel > Manage 3D settings" in got.advice
    assert "CUDA - Sysmem Fallback Policy" in got.advice
    rig.platform = "linux"
    assert one(rig, "sysmem-fallback").status == "skip"


@pytest.mark.parametrize(("platform", "conf", "status", "words"), [
    ("win32", "", "ok", "not set"),
    ("win32", "expandable_segments:True", "warn", "not supported on Windows"),
    ("linux", "expandable_segments:True", "ok", "expandable_segments"),
    ("linux", "backend:cudaMallocAsync", "warn", "raises out-of-memory"),
    ("win32", "max_split_size_mb:128, backend:cudaMallocAsync", "warn", "cudaMallocAsync"),
    ("win32", "max_split_size_mb:128", "ok", "max_split_size_mb"),
])
def test_pytorch_cuda_alloc_conf(rig: CheckInputs, platform: str, conf: str, status: str,
                                 words: str) -> None:
    rig.platform, rig.env = platform, {"PYTORCH_CUDA_ALLOC_CONF": conf}
    got = one(rig, "alloc-conf")
    assert got.status == status and words in got.summary


def test_dedicated_vram_against_the_cpu_backfill_knob(rig: CheckInputs) -> None:
    got = one(rig, "vram-size")
    assert got.status == "warn" and "HELIX_BFM_CPU_BACKFILL_MAX_VRAM_GB=12" in got.advice
    rig.settings = replace(rig.settings, remediation=Remediation(cpu_backfill_max_vram_gb=12))
    assert "starts on CPU" in one(rig, "vram-size").summary
    rig.settings = replace(rig.settings, remediation=Remediation(cpu_backfill_max_vram_gb=8))
    assert "starts on the GPU" in one(rig, "vram-size").summary
    rig.settings = replace(rig.settings, vram_source="file:/nonexistent/vram.json")
    assert one(rig, "vram-size").status == "warn"


def test_shared_memory_source_on_windows_linux_and_when_pdh_fails(rig: CheckInputs) -> None:
    got = one(rig, "shared-memory")
    assert got.status == "ok" and "pdh answers" in got.summary
    rig.shared = lambda spec, plat: PdhSharedSource(FakePdh(english_fails=PDH_CSTATUS_NO_OBJECT))
    got = one(rig, "shared-memory")
    assert got.status == "warn" and "PdhAddEnglishCounterW" in got.summary
    rig.settings = replace(rig.settings, shared_source="off")
    assert "only through NVML" in one(rig, "shared-memory").summary
    rig.platform = "linux"
    rig.settings = replace(rig.settings, shared_source="auto")
    got = one(rig, "shared-memory")
    assert got.status == "skip" and "not applicable" in got.summary


def test_state_dir_that_cannot_be_written_fails(rig: CheckInputs, tmp_path: Path) -> None:
    got = one(rig, "state-dir")  # not there yet: judged by where it would be created
    assert got.status == "ok" and "does not exist yet" in got.summary
    assert not rig.settings.state_dir.exists()
    rig.settings.state_dir.mkdir(mode=0o700)
    assert one(rig, "state-dir").status == "ok"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rig.settings = replace(rig.settings, state_dir=blocker / "state")
    got = one(rig, "state-dir")
    assert got.status == "fail" and "HELIX_BFM_STATE_DIR" in got.advice
    rig.settings = replace(rig.settings, state_dir=blocker)
    assert "not a directory" in one(rig, "state-dir").summary


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="POSIX permissions; root writes anything")
def test_state_dir_in_a_folder_this_user_cannot_write_fails(rig: CheckInputs,
                                                             tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        rig.settings = replace(rig.settings, state_dir=locked / "state")
        got = one(rig, "state-dir")
        assert got.status == "fail" and "cannot be created" in got.summary
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX mode bits")
@pytest.mark.parametrize(("mode", "status", "words"), [
    (0o700, "ok", "only its owner writes it"),
    (0o755, "ok", "only its owner writes it"),
    (0o770, "fail", "its group may write it"),
    (0o777, "fail", "its group and every user may write it"),
    (0o1703, "fail", "every user may write it"),
])
def test_a_state_dir_others_can_write_fails_with_the_chmod_to_run(
        rig: CheckInputs, mode: int, status: str, words: str) -> None:
    root, rig.platform = rig.settings.state_dir, sys.platform
    assert one(rig, "state-dir-mode").status == "skip"  # not there yet: created 0700
    root.mkdir()
    root.chmod(mode)
    got = one(rig, "state-dir-mode")
    assert (got.status, words in got.summary) == (status, True), got
    if status == "fail":
        assert got.advice == f"run: chmod go-w {shlex.quote(str(root))}"
        # The advice is the fix: run it, and the check passes.
        subprocess.run(["sh", "-c", got.advice.removeprefix("run: ")], check=True)
        assert one(rig, "state-dir-mode").status == "ok"


@pytest.mark.parametrize(("env", "words"), [
    ({"HELIX_BFM_CRAWL_FACTR": "3"}, "did you mean HELIX_BFM_CRAWL_FACTOR?"),
    ({"HELIX_BFM_VRAMSOURCE": "file:x"}, "did you mean HELIX_BFM_VRAM_SOURCE?"),
    ({"helix_bfm_crawl_window": "4"}, "did you mean HELIX_BFM_CRAWL_WINDOW?"),
    ({"HELIX_BFM_NOTHING_LIKE_IT": "1"}, "HELIX_BFM_NOTHING_LIKE_IT is not a knob"),
])
def test_unknown_knobs_are_warned_with_the_closest_one(rig: CheckInputs, env: dict[str, str],
                                                       words: str) -> None:
    rig.env = {"HELIX_BFM_CRAWL_FACTOR": "4", "HELIX_BFM_SHARD": "a", "PATH": "/bin", **env}
    got = one(rig, "knobs")
    assert got.status == "warn" and words in got.summary, got
    assert "HELIX_BFM_CRAWL_FACTOR is" not in got.summary and "SHARD" not in got.summary
    rig.env = {"HELIX_BFM_CRAWL_FACTOR": "4", "HELIX_BFM_SHARD": "a"}
    assert one(rig, "knobs").status == "ok"


def test_spill_evidence_is_any_source_that_answers_and_none_fails(rig: CheckInputs,
                                                                  tmp_path: Path) -> None:
    got = one(rig, "spill-evidence")  # file: VRAM and PDH (faked) both answer
    assert got.status == "ok"
    assert "dedicated VRAM from file:" in got.summary
    assert "shared GPU memory from pdh" in got.summary
    rig.platform = "linux"  # auto: no shared source; the file alone is enough
    assert one(rig, "spill-evidence").status == "ok"
    rig.settings = replace(rig.settings, vram_source=f"file:{tmp_path / 'absent.json'}")
    got = one(rig, "spill-evidence")
    assert got.status == "fail" and "absent.json" in got.summary
    for knob in ("HELIX_BFM_VRAM_SOURCE=file:PATH", "HELIX_BFM_SHARED_SOURCE", "NVML"):
        assert knob in got.advice
    rig.platform = "win32"  # PDH alone is evidence too
    assert one(rig, "spill-evidence").status == "ok"


def test_sidecar_health_and_token(rig: CheckInputs, sidecar_thread: Callable[..., Live]) -> None:
    got = one(rig, "sidecar")
    assert got.status == "warn" and "not answering" in got.summary
    live = sidecar_thread()
    rig.settings = replace(rig.settings, endpoints=Endpoints(sidecar_url=live.url, token=TOKEN))
    assert one(rig, "sidecar").status == "ok"
    rig.settings = replace(rig.settings, endpoints=Endpoints(sidecar_url=live.url, token="bad"))
    got = one(rig, "sidecar")
    assert got.status == "fail" and "401" in got.summary
    rig.settings = replace(rig.settings, endpoints=Endpoints(sidecar_url=live.url))
    assert "no token" in one(rig, "sidecar").summary


def test_up_skips_the_servers_it_starts_itself(rig: CheckInputs) -> None:
    names = [c.name for c in run_checks(rig, skip=checks.SELF_STARTED)]
    assert "sidecar" not in names and "prometheus" not in names and "state-dir" in names


def test_unconfigured_prometheus_and_alertmanager_are_skipped_and_unreachable_ones_fail(
        rig: CheckInputs) -> None:
    assert one(rig, "prometheus").status == "skip"
    assert one(rig, "alertmanager").status == "skip"
    dead = f"http://127.0.0.1:{free_port()}"
    rig.preflight = Preflight(prometheus_url=dead, alertmanager_url=dead)
    assert one(rig, "prometheus").status == "fail"
    assert one(rig, "alertmanager").status == "fail"


def test_the_command_prints_each_check_and_exits_0_unless_one_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1,
                                          "total_bytes": 24 * GIB}]}))
    monkeypatch.setenv("HELIX_BFM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HELIX_BFM_VRAM_SOURCE", f"file:{vram}")
    monkeypatch.setenv("HELIX_BFM_SIDECAR_URL", f"http://127.0.0.1:{free_port()}")
    for knob in ("HELIX_BFM_PROMETHEUS_URL", "HELIX_BFM_ALERTMANAGER_URL"):
        monkeypatch.delenv(knob, raising=False)
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert [c["name"] for c in data["checks"]] == [name for name, _ in checks.CHECKS]
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    assert set(statuses.values()) <= {"ok", "warn", "fail", "skip"}
    # A check that does not apply says so; it is not an "ok".
    assert statuses["prometheus"] == statuses["alertmanager"] == "skip"
    # Warnings and skips leave the exit status 0; so does a misspelled knob.
    monkeypatch.setenv("HELIX_BFM_CRAWL_FACTR", "3")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "skip  prometheus" in out and "skipped)" in out
    assert "warn  knobs" in out and "did you mean HELIX_BFM_CRAWL_FACTOR?" in out
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setenv("HELIX_BFM_STATE_DIR", str(blocker / "state"))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "fail  state-dir " in out and "doctor: fail (1 failed" in out


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its mode, size and mtime (ns)."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    st = root.lstat()
    out["."] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("state", ["absent", "default-absent", "present"])
def test_doctor_creates_nothing(tmp_path: Path, state: str) -> None:
    """Run as a person would (the real command, in a working directory): the file tree,
    state dir included, is byte for byte and timestamp for timestamp what it was."""
    work = tmp_path / "work"
    work.mkdir()
    vram = work / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1,
                                          "total_bytes": 24 * GIB}]}))
    env = {"HELIX_BFM_VRAM_SOURCE": f"file:{vram}",
           "HELIX_BFM_SIDECAR_URL": f"http://127.0.0.1:{free_port()}",
           "HELIX_BFM_PROMETHEUS_URL": "", "HELIX_BFM_ALERTMANAGER_URL": "",
           "HELIX_BFM_STATE_DIR": ""}
    if state == "absent":
        env["HELIX_BFM_STATE_DIR"] = str(work / "nested" / "state")
    elif state == "present":
        root = work / "state"
        register_worker(StateDir(root), "confluence", GONE)
        (root / "run").mkdir()
        env["HELIX_BFM_STATE_DIR"] = str(root)
    before = tree(work)
    proc = subprocess.run(crawlguard_cmd("doctor"), cwd=work, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "state-dir" in proc.stdout
    assert tree(work) == before
    if state != "present":
        assert "does not exist yet" in proc.stdout


# -- the real Prometheus and Alertmanager ---------------------------------------

Variant = Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], None]
"""Changes the shipped rules, Prometheus config and Alertmanager config of one stack."""


def shipped_stack(rules: dict[str, Any], prom: dict[str, Any], am: dict[str, Any]) -> None:
    """As shipped."""


def without_rules(rules: dict[str, Any], prom: dict[str, Any], am: dict[str, Any]) -> None:
    prom["rule_files"] = []
    am["route"] = {"receiver": "blackhole"}


def without_oom_group(rules: dict[str, Any], prom: dict[str, Any], am: dict[str, Any]) -> None:
    rules["groups"] = [g for g in rules["groups"] if g["name"] != "crawlguard-oom"]


def oom_not_routed(rules: dict[str, Any], prom: dict[str, Any], am: dict[str, Any]) -> None:
    (route,) = [r for r in am["route"]["routes"] if r["receiver"] == "crawlguard-sidecar"]
    route["matchers"] = ['alertname=~"BFMShardCrawl|BFMShardStalled"']


def people_alerts_dropped(rules: dict[str, Any], prom: dict[str, Any],
                          am: dict[str, Any]) -> None:
    am["route"]["routes"] = [r for r in am["route"]["routes"]
                             if r["receiver"] != "crawlguard-humans"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Callable[[Variant], tuple[str, str]]]:
    """Factory: real Prometheus + Alertmanager, from the shipped rules and route changed by
    a variant."""
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    shipped = promstack.Shipped.find()
    assert shipped is not None
    procs: list[Proc] = []

    def start(variant: Variant) -> tuple[str, str]:
        run = tmp_path / f"run-{len(procs)}"
        token = run / "sidecar.token"
        run.mkdir()
        token.write_text(TOKEN)
        am_port, prom_port = free_port(), free_port()
        am_cfg: dict[str, Any] = promstack.alertmanager_config(
            shipped, "http://127.0.0.1:9848", token, None)
        rules = promstack.rig_rules(shipped, "http://127.0.0.1:9848/runbook")
        prom_cfg = promstack.prometheus_config(shipped, "127.0.0.1:1", "127.0.0.1:1",
                                               f"127.0.0.1:{am_port}", None)
        variant(rules, prom_cfg, am_cfg)
        if prom_cfg["rule_files"]:
            prom_cfg["rule_files"] = [str(promstack.write_yaml(run / "rules.yml", rules))]
        am = Proc(promstack.alertmanager_argv(
            alertmanager, promstack.write_yaml(run / "am.yml", am_cfg), run / "am", am_port))
        prom = Proc(promstack.prometheus_argv(
            prometheus, promstack.write_yaml(run / "prom.yml", prom_cfg), run / "tsdb",
            prom_port))
        procs.extend([am, prom])
        return f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"

    yield start
    for p in procs:
        p.stop()


def answered(rig: CheckInputs, name: str, prom: str, am: str) -> Check:
    """The check once both servers are ready (they start in the background)."""
    rig.preflight = Preflight(prometheus_url=prom, alertmanager_url=am)
    wait_until(lambda: rig.http.get(f"{prom}/-/ready").status == 200
               and rig.http.get(f"{am}/-/ready").status == 200
               and rig.http.json(f"{prom}/api/v1/alertmanagers")["data"]["activeAlertmanagers"],
               30, 0.1, "Prometheus and Alertmanager ready")
    return one(rig, name)


def every_alert() -> list[str]:
    """The alerts of the shipped rules, read the way doctor does not: by hand, from YAML."""
    data = yaml.safe_load((REPO / "rules" / "crawlguard.rules.yml").read_text())
    return [r["alert"] for g in data["groups"] for r in g["rules"] if "alert" in r]


@pytest.mark.binaries
def test_real_prometheus_and_alertmanager_loaded_with_our_rules_and_route(
        rig: CheckInputs, stack: Callable[[Variant], tuple[str, str]]) -> None:
    prom, am = stack(shipped_stack)
    got = answered(rig, "prometheus", prom, am)
    assert got.status == "ok", got
    for name in every_alert():  # every alert, BFMShardOOM included
        assert name in got.summary
    got = one(rig, "alertmanager")
    assert got.status == "ok", got
    assert "BFMShardCrawl, BFMShardStalled, BFMShardOOM to http://127.0.0.1:9848/v1/alerts" \
        in got.summary

    prom, am = stack(without_rules)
    got = answered(rig, "prometheus", prom, am)
    assert got.status == "fail" and "has not loaded" in got.summary and "rule_files" in got.advice
    got = one(rig, "alertmanager")
    assert got.status == "fail" and "does not route" in got.summary


@pytest.mark.binaries
@pytest.mark.parametrize(("variant", "prometheus", "alertmanager", "words"), [
    # Prometheus without the OOM group: it names the alert and the group.
    (without_oom_group, "fail", "ok",
     ["has not loaded BFMShardOOM (rule group crawlguard-oom"]),
    # Alertmanager that routes Crawl and Stalled but not OOM to the sidecar.
    (oom_not_routed, "ok", "fail", ["does not route BFMShardOOM (to blackhole) to"]),
    # Alerts for people routed nowhere: heard by no one, a warning.
    (people_alerts_dropped, "ok", "warn",
     ["BFMShardCrawlOnCPU (to blackhole)", "BFMMetricsAbsent (to blackhole)"]),
], ids=["no-oom-group", "oom-not-routed", "people-unheard"])
def test_each_alert_of_the_rules_is_checked_on_both_servers(
        rig: CheckInputs, stack: Callable[[Variant], tuple[str, str]], variant: Variant,
        prometheus: str, alertmanager: str, words: list[str]) -> None:
    prom, am = stack(variant)
    got = {"prometheus": answered(rig, "prometheus", prom, am),
           "alertmanager": one(rig, "alertmanager")}
    assert {k: c.status for k, c in got.items()} == {"prometheus": prometheus,
                                                      "alertmanager": alertmanager}, got
    (broken,) = [c for c in got.values() if c.status != "ok"]
    for w in words:
        assert w in broken.summary, broken
    wrong = broken.summary.split(" but ")[-1].split("does not route")[-1]
    assert "BFMShardCrawl," not in wrong  # only what is wrong is named as wrong


class Answers:
    """What a Prometheus or Alertmanager answers, made up: the doctor's readers are fed
    arbitrary JSON (the real servers are above)."""

    timeout = 1.0

    def __init__(self, data: Any) -> None:
        self.data = data

    def json(self, url: str) -> Any:
        if isinstance(self.data, dict) and "/api/v2/status" in url and "yaml" in self.data:
            return {"config": {"original": self.data["yaml"]}}
        return self.data


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["data", "groups", "rules", "name", "health", "activeAlertmanagers", "url", "config",
         "original", "route", "receivers", "receiver", "routes", "matchers",
         "webhook_configs", "yaml"]), inner, max_size=4), max_leaves=25)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=ANY_JSON | st.builds(lambda d: {"yaml": yaml.safe_dump(d)}, ANY_JSON))
def test_any_answer_is_a_status_never_a_crash(rig: CheckInputs, data: Any) -> None:
    rig.preflight = Preflight(prometheus_url="http://127.0.0.1:1",
                              alertmanager_url="http://127.0.0.1:1")
    rig.http = Answers(data)  # type: ignore[assignment]
    for name in ("prometheus", "alertmanager"):
        assert one(rig, name).status in ("ok", "warn", "fail")
