"""`crawlguard doctor`: fakes at the OS and NVML edges, real servers everywhere else."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crawlguard.cli.main import main
from crawlguard.doctor import checks
from crawlguard.doctor.checks import Check, CheckInputs, run_checks
from crawlguard.doctor.probes import Gpu
from crawlguard.gpu.shared import PdhSharedSource
from crawlguard.kernel.errors import VramError
from crawlguard.kernel.settings import Endpoints, Preflight, Remediation, Settings
from crawlguard.rig import promstack
from tests.gpu.test_shared import PDH_CSTATUS_NO_OBJECT, FakePdh, inst
from tests.helpers import Proc, free_port, require_binary, wait_until
from tests.sidecar.conftest import TOKEN, Live

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
    assert one(rig, "nvml").status == "ok"  # the VRAM source is file:
    rig.settings = replace(rig.settings, vram_source="nvml")
    got = one(rig, "nvml")
    assert got.status == "fail" and "Library Not Found" in got.summary


def test_the_fallback_policy_says_exactly_where_to_look_on_windows(rig: CheckInputs) -> None:
    got = one(rig, "sysmem-fallback")
    assert got.status == "warn"
    assert "NVIDIA Control Panel > Manage 3D settings" in got.advice
    assert "CUDA - Sysmem Fallback Policy" in got.advice
    rig.platform = "linux"
    assert one(rig, "sysmem-fallback").status == "ok"


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
    assert got.status == "ok" and "not applicable" in got.summary


def test_state_dir_that_cannot_be_written_fails(rig: CheckInputs, tmp_path: Path) -> None:
    assert one(rig, "state-dir").status == "ok"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rig.settings = replace(rig.settings, state_dir=blocker / "state")
    got = one(rig, "state-dir")
    assert got.status == "fail" and "HELIX_BFM_STATE_DIR" in got.advice


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
    assert "skipped" in one(rig, "prometheus").summary
    assert "skipped" in one(rig, "alertmanager").summary
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
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert [c["name"] for c in data["checks"]] == [name for name, _ in checks.CHECKS]
    assert all(c["status"] in ("ok", "warn", "fail") for c in data["checks"])
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setenv("HELIX_BFM_STATE_DIR", str(blocker / "state"))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "fail  state-dir" in out and "doctor: fail (1 failed" in out


# -- the real Prometheus and Alertmanager ---------------------------------------


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Callable[[bool], tuple[str, str]]]:
    """Factory: real Prometheus + Alertmanager, with the shipped rules and route or without."""
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    shipped = promstack.Shipped.find()
    assert shipped is not None
    procs: list[Proc] = []

    def start(ours: bool) -> tuple[str, str]:
        run = tmp_path / f"run-{len(procs)}"
        token = run / "sidecar.token"
        run.mkdir()
        token.write_text(TOKEN)
        am_port, prom_port = free_port(), free_port()
        am_cfg: dict[str, Any] = promstack.alertmanager_config(
            shipped, "http://127.0.0.1:9848", token, None)
        prom_cfg = promstack.prometheus_config(shipped, "127.0.0.1:1", "127.0.0.1:1",
                                               f"127.0.0.1:{am_port}", None)
        if not ours:
            am_cfg["route"] = {"receiver": "blackhole"}
            prom_cfg["rule_files"] = []
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


@pytest.mark.binaries
def test_real_prometheus_and_alertmanager_loaded_with_our_rules_and_route(
        rig: CheckInputs, stack: Callable[[bool], tuple[str, str]]) -> None:
    prom, am = stack(True)
    rig.preflight = Preflight(prometheus_url=prom, alertmanager_url=am)
    got = wait_until(lambda: (lambda c: c if c.status == "ok" else None)(
        one(rig, "prometheus")), 30, 0.2, "Prometheus with the shipped rules")
    assert "BFMShardCrawl, BFMShardStalled" in got.summary
    got = wait_until(lambda: (lambda c: c if c.status == "ok" else None)(
        one(rig, "alertmanager")), 30, 0.2, "Alertmanager with the shipped route")
    assert got.summary.endswith("to http://127.0.0.1:9848/v1/alerts")

    prom, am = stack(False)
    rig.preflight = Preflight(prometheus_url=prom, alertmanager_url=am)
    wait_until(lambda: "has not loaded" in one(rig, "prometheus").summary, 30, 0.2,
               "Prometheus without our rules to answer")
    got = one(rig, "prometheus")
    assert got.status == "fail" and "rule_files" in got.advice
    wait_until(lambda: "has no route" in one(rig, "alertmanager").summary, 30, 0.2,
               "Alertmanager without our route to answer")
