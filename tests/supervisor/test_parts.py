"""The supervisor's parts: GPU-release wait, launch environment,
generated Prometheus/Alertmanager configs, and the `crawlguard run` command."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from crawlguard.gpu.vram import GpuMemory
from crawlguard.kernel.errors import VramError
from crawlguard.rig import promstack as promstack
from crawlguard.supervisor.gpuwait import MIN_SLACK_BYTES, GpuRelease
from tests.helpers import REPO, crawlguard_cmd, require_binary

GIB = 1 << 30


class Readings:
    name = "readings"

    def __init__(self, *values: int | None) -> None:
        self.values = list(values)

    def read(self) -> list[GpuMemory]:
        value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        if value is None:
            raise VramError("gone")
        return [GpuMemory(0, value, 12 * GIB)]


def test_release_level_follows_what_the_worker_held() -> None:
    g = GpuRelease(Readings(GIB, 11 * GIB), 0)
    g.at_launch()
    g.sample()
    assert (g.before, g.peak) == (GIB, 11 * GIB)
    assert g.level == GIB + GIB           # 10% of the 10 GiB it held
    small = GpuRelease(Readings(GIB, GIB + 10), 0)
    small.at_launch()
    small.sample()
    assert small.level == GIB + MIN_SLACK_BYTES


def test_wait_returns_once_the_level_is_back() -> None:
    g = GpuRelease(Readings(GIB, 11 * GIB, 11 * GIB, 11 * GIB, GIB), 0)
    g.at_launch()
    g.sample()
    r = g.wait(timeout=30, stop=threading.Event(), poll=0.001)
    assert r.released and "GPU 0 at 1.00 GiB" in r.detail
    never = GpuRelease(Readings(GIB, 11 * GIB), 0)
    never.at_launch()
    never.sample()
    r = never.wait(timeout=0.05, stop=threading.Event(), poll=0.001)
    assert not r.released and "relaunching anyway" in r.detail
    blind = GpuRelease(Readings(None), 0)
    blind.at_launch()
    r = blind.wait(timeout=30, stop=threading.Event())
    assert not r.released and "not measured" in r.detail and r.waited == 0


def _configs(tmp_path: Path) -> tuple[Path, Path]:
    shipped = promstack.Shipped.find()
    assert shipped is not None, "deploy/ and rules/ are part of the checkout"
    token = tmp_path / "sidecar.token"
    token.write_text("t0ken\n")
    prom = promstack.write_yaml(tmp_path / "prometheus.yml", promstack.prometheus_config(
        shipped, "127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003", 0.5))
    am = promstack.write_yaml(tmp_path / "alertmanager.yml", promstack.alertmanager_config(
        shipped, "http://127.0.0.1:1002", token, promstack.AmTiming(1, 2, 10)))
    return prom, am


def test_generated_configs_point_at_this_run(tmp_path: Path) -> None:
    prom_path, am_path = _configs(tmp_path)
    prom = yaml.safe_load(prom_path.read_text())
    assert prom["global"]["scrape_interval"] == "500ms"
    assert prom["global"]["scrape_timeout"] == "400ms"
    assert Path(prom["rule_files"][0]).is_absolute()
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert targets == {"crawlguard-exporter": ["127.0.0.1:1001"],
                       "crawlguard-sidecar": ["127.0.0.1:1002"]}
    am = yaml.safe_load(am_path.read_text())
    route = next(r for r in am["route"]["routes"] if r["receiver"] == "crawlguard-sidecar")
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == \
        ("1s", "2s", "10s")
    assert route["group_by"] == ["shard", "pid"]      # the shipped grouping is kept
    hook = next(r for r in am["receivers"] if r["name"] == "crawlguard-sidecar")
    hook = hook["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:1002/v1/alerts"
    assert hook["http_config"]["authorization"]["credentials_file"] == \
        str((tmp_path / "sidecar.token").resolve())


@pytest.mark.binaries
def test_generated_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    promtool, amtool = require_binary("promtool"), require_binary("amtool")
    prom, am = _configs(tmp_path)
    for argv in ([promtool, "check", "config", str(prom)], [amtool, "check-config", str(am)]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HELIX_BFM_STATE_DIR": str(tmp_path / "state"), "HELIX_BFM_VRAM_SOURCE":
           f"file:{tmp_path / 'none.json'}", "PATH": ""}
    return subprocess.run(crawlguard_cmd("run", *args), capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)


def test_run_command_exit_codes(tmp_path: Path) -> None:
    ok = _run(tmp_path, "--shard", "a", "--shard", "b", "--", sys.executable, "-c",
              "import os, sys; print('worker', sys.argv[1], os.environ['HELIX_BFM_SHARD'])",
              "{shard}")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["worker a a", "worker b b"]
    futile = _run(tmp_path, "--shard", "a", "--", sys.executable, "-c", "raise SystemExit(1)")
    assert futile.returncode == 3
    assert "giving up" in futile.stderr and "HELIX_BFM_MAX_FUTILE_RESTARTS=3" in futile.stderr
    no_cmd = _run(tmp_path, "--shard", "a")
    assert no_cmd.returncode == 2 and "CMD" in no_cmd.stderr
    missing = _run(tmp_path, "--shard", "a", "--", "/nonexistent/worker")
    assert missing.returncode == 2 and "cannot start" in missing.stderr
    unsafe = _run(tmp_path, "--shard", "../x", "--", sys.executable, "-c", "pass")
    assert unsafe.returncode == 2 and "not a safe name" in unsafe.stderr


def test_live_view_lines_and_terminal_modes(tmp_path: Path) -> None:
    import io

    from crawlguard.kernel.formats.batchlog import BatchWriter
    from crawlguard.kernel.statedir import StateDir
    from crawlguard.rig.liveview import LiveView
    from crawlguard.supervisor.loop import ShardRun, SupervisorEvent

    state = StateDir(tmp_path)
    writer = BatchWriter(state.batches_file("a"), stage="backfill", device="cuda:0", gpu="0",
                         pid=1, factor=5.0)
    writer.append(t=1.0, genes=8, seconds=0.4, rate=20.0, ema=22.0, baseline=150.0, streak=3)
    writer.close()
    runs = {"a": ShardRun("a", state="running", launches=1), "b": ShardRun("b")}
    out = io.StringIO()
    view = LiveView(state, runs, out, mode="lines", period=3600)
    view.tick(force=True)
    view.event(SupervisorEvent("a", "launch", "launch #2: pid 7"))
    text = out.getvalue()
    # The EMA and its share of the baseline: 22 / 150.
    assert "   a " in text and "22.0/s 15%" in text and " 8 genes " in text
    assert "CRAWLING crawls 0 rungs -" in text   # a slow streak of a running worker
    assert "embedded" not in text
    assert "crawlguard up: [a] launch #2: pid 7" in text
    assert "% done" not in text  # no total=, no progress
    tty = io.StringIO()
    view = LiveView(state, runs, tty, mode="tty")
    view.tick()
    view.say("hello")
    assert "\x1b[2F\x1b[J" in tty.getvalue()      # the two-line block is redrawn in place


def test_alert_path_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    from crawlguard.kernel.errors import ConfigError
    from crawlguard.rig.promstack import resolve_alert_path

    monkeypatch.setenv("PATH", "")
    assert resolve_alert_path("auto")[0] == "embedded"
    assert "not on PATH" in resolve_alert_path("auto")[1]
    with pytest.raises(ConfigError, match="not on PATH"):
        resolve_alert_path("prometheus")


def test_a_second_up_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    from filelock import FileLock

    from crawlguard.kernel.errors import StateError
    from crawlguard.kernel.settings import Settings
    from crawlguard.rig.up import RigConfig, RunningRig

    (tmp_path / "run").mkdir()
    with FileLock(str(tmp_path / "run" / ".up.lock")):
        rig = RunningRig(RigConfig(shards=("a",), command=("true",), env={}, alert_path="embedded",
                            settings=Settings.from_env({"HELIX_BFM_STATE_DIR": str(tmp_path)}),
                            blind=True))  # a CPU-only test machine: no spill evidence
        with pytest.raises(StateError, match="another crawlguard up"):
            rig.run(threading.Event())
    assert not (tmp_path / "run" / "sidecar.token").exists()


def test_vram_log_samples_for_the_report(tmp_path: Path) -> None:
    from crawlguard.kernel.formats import vramlog
    from crawlguard.kernel.statedir import StateDir
    from crawlguard.supervisor.vramlog import VramLog

    now = [100.0]
    log = VramLog(StateDir(tmp_path), Readings(GIB), interval=1.0, clock=lambda: now[0])
    log.tick()
    now[0] = 100.5
    log.tick()                      # within the interval: no sample
    now[0] = 101.0
    log.tick()
    # Read back with the report's reader, from where the report looks.
    assert vramlog.read(StateDir(tmp_path).vram_log) == (
        [vramlog.VramSample(t=100.0, gpu="0", used_bytes=GIB, total_bytes=12 * GIB),
         vramlog.VramSample(t=101.0, gpu="0", used_bytes=GIB, total_bytes=12 * GIB)], 0)
    VramLog(StateDir(tmp_path), Readings(None), interval=1.0).tick()   # a failing source: no line
    assert len((tmp_path / "vram.jsonl").read_text().splitlines()) == 2


def test_shipped_configs_are_found_from_a_checkout() -> None:
    """`up` derives Prometheus/Alertmanager configs from deploy/ and rules/ of the checkout."""
    from crawlguard.rig.promstack import Shipped

    found = Shipped.find()
    assert found is not None and found.rules.name == "crawlguard.rules.yml"


def test_the_embedded_fallback_says_the_real_reason(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """Binaries present, shipped files absent: the reason names the files, not PATH."""
    from crawlguard import deploy
    from crawlguard.kernel.errors import ConfigError
    from crawlguard.rig.promstack import resolve_alert_path

    for name in ("prometheus", "prometheus-alertmanager"):
        fake = tmp_path / name
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(deploy, "PROMETHEUS", tmp_path / "nowhere" / "prometheus.yml")
    path, why = resolve_alert_path("auto")
    assert path == "embedded" and "not on PATH" not in why and "asked for" not in why
    assert str(tmp_path / "nowhere" / "prometheus.yml") in why
    with pytest.raises(ConfigError, match="lacks"):
        resolve_alert_path("prometheus")


def test_the_live_view_counts_distinct_genes_when_the_build_can_tell(tmp_path: Path) -> None:
    """A batch redone after a restart is two lines in the batch log but one gene count."""
    import io

    from crawlguard.kernel.statedir import StateDir
    from crawlguard.refbuild.store import output_dir, write_output
    from crawlguard.refbuild.vectors import VECTOR_BYTES
    from crawlguard.rig.demo import DistinctGenes
    from crawlguard.rig.liveview import LiveView
    from crawlguard.supervisor.loop import ShardRun

    state = StateDir(tmp_path / "state")
    state.batches_file("a").parent.mkdir(parents=True)
    state.batches_file("a").write_text('{"genes": 2}\n{"genes": 2}\n')   # redone once
    vec = bytes(VECTOR_BYTES)
    out = output_dir(tmp_path / "data", "a")
    write_output(out / "f1.json", "f1", "cpu", [("g1", vec), ("g2", vec)])
    write_output(out / "f2.json", "f2", "cpu", [("g2", vec)])          # a stray copy
    stream = io.StringIO()
    view = LiveView(state, {"a": ShardRun("a")}, stream, mode="lines",
                    unique_genes=DistinctGenes(tmp_path / "data"))
    view.tick(force=True)
    assert "      2 genes" in stream.getvalue() and "embedded" not in stream.getvalue()


def test_live_view_eta_at_the_baseline_pace() -> None:
    from crawlguard.kernel.formats.batchlog import Batch
    from crawlguard.rig.liveview import eta_seconds

    line = Batch(t=1.0, stage="backfill", device="cuda:0", gpu="0", pid=1, genes=8,
                 seconds=4.0, rate=2.0, ema=2.0, baseline=10.0, streak=0, factor=5,
                 total=1000, remaining=400.0)
    # 400 genes at the baseline's 10 genes/s, not at the crawl's 2.
    assert eta_seconds(line) == 40.0
    assert eta_seconds(line.model_copy(update={"baseline": None})) is None
    assert eta_seconds(line.model_copy(update={"remaining": 0.0})) == 0.0
    assert eta_seconds(line.model_copy(update={"total": None, "remaining": None})) is None
    assert eta_seconds(None) is None
