"""Operating `up` as a newcomer does: `crawlguard up` in one terminal, every client command
in another whose environment has nothing of crawlguard's (the default state dir of the
directory `up` was started in is all they share), and the README's `curl` line run as
written through a real shell. The build is the newcomer's own (tests/e2e/drillbuild.py),
not the reference rebuild; the drill is rehearsed on it on the embedded alert path."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from crawlguard.drill.timeline import JSON_KEYS
from tests.helpers import REPO, Proc, clean_env, crawlguard_cmd, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="bash, SIGINT to a process")]

BUILD = REPO / "tests" / "e2e" / "drillbuild.py"
SHARD = "confluence"  # the README's curl line names it
README_PORT = "http://127.0.0.1:9848"


def readme_curl() -> str:
    """The README's curl line, continuation joined, as a person pastes it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^curl .*?\\\n.*$", text, flags=re.M)
    assert m, "README.md has no curl line"
    return m.group(0)


def crawlguard(rig: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A client command in the other terminal: the rig's directory, a clean environment."""
    return subprocess.run(crawlguard_cmd(*args), cwd=rig, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def ladder(rig: Path) -> dict[str, object]:
    return json.loads((rig / ".crawlguard" / "shards" / SHARD / "ladder.json").read_text())


def audit(rig: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in
            (rig / ".crawlguard" / "audit.jsonl").read_text().splitlines()]


def registered(rig: Path) -> int:
    return int(json.loads((rig / ".crawlguard" / "shards" / SHARD / "worker.json")
                          .read_text())["pid"])


def test_every_client_command_reaches_a_running_up_with_nothing_but_its_state_dir(
        tmp_path: Path) -> None:
    rig = tmp_path / "rig"
    rig.mkdir()
    vram = tmp_path / "vram.json"  # a 16 GiB card, never full: the drill brings the evidence
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 2 << 30,
                                          "total_bytes": 16 << 30}]}))
    up = Proc(crawlguard_cmd("up", "--alert-path", "embedded", "--interval", "0.5",
                             "--progress", "lines", "--shard", SHARD, "--", sys.executable,
                             str(BUILD), "--shard", "{shard}"),
              env=clean_env(HELIX_BFM_VRAM_SOURCE=f"file:{vram}"), cwd=rig, inherit_env=False)
    try:
        m = up.wait_for_line(r"sidecar (http://127\.0\.0\.1:(\d+)); token file (\S+)", 60)
        url, token_file = m.group(1), Path(m.group(3))
        assert token_file == rig / ".crawlguard" / "run" / "sidecar.token"
        if url != README_PORT:   # 9848 was taken on this machine: up must have said so
            assert "port 9848 is taken" in up.output, up.output
        up.wait_for_line(rf"\[{SHARD}\] launch #1", 30)
        first = wait_until(lambda: registered(rig), what="the worker's registration")

        status = crawlguard(rig, "status")
        assert status.returncode == 0, status.stderr
        assert "action=ladder paused=no" in status.stdout

        doctor = crawlguard(rig, "doctor", "--json")
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert doctor.returncode == 0, doctor.stdout
        assert checks["sidecar"]["status"] == "ok" and url in checks["sidecar"]["summary"]
        # up's VRAM file is the evidence doctor finds (NVML is not used, so skipped)
        assert checks["spill-evidence"]["status"] == "ok", checks["spill-evidence"]

        # The drill, from the other terminal, on the newcomer's build.
        drill = crawlguard(rig, "drill", SHARD, "--json", "--timeout", "90")
        assert drill.returncode == 0, drill.stderr
        result = json.loads(drill.stdout)
        assert tuple(sorted(result)) == tuple(sorted(JSON_KEYS))
        assert result["acted"] is True and result["rung"] == "restart"
        assert result["alert_path"] == "embedded" and result["shard"] == SHARD
        assert result["detected_after_batches"] >= 8           # the default window
        assert 0 < result["onset_to_alert_s"] <= result["onset_to_signal_s"] < 60
        # Restarted for real, recorded as a drill, and the ladder did not move.
        assert registered(rig) != first and not psutil.pid_exists(first)
        doc = ladder(rig)
        assert (doc["crawls"], doc["rung"], doc["env"]) == (0, "none", {})
        kinds = [(e["kind"], e.get("source")) for e in doc["history"]]  # type: ignore[union-attr]
        assert ("drill", None) in kinds and ("rung", "drill") in kinds
        assert [e for e in audit(rig) if e.get("decision") == "drill"]
        assert [e for e in audit(rig) if e["event"] == "rung_decided"
                and e.get("source") == "drill"]
        assert not (rig / ".crawlguard" / "drills" / f"{SHARD}.json").exists()
        wait_until(lambda: any(e["kind"] == "verified" for e in ladder(rig)["history"]),  # type: ignore[union-attr]
                   30, what="the drill's restart verified")

        second = registered(rig)
        rung = crawlguard(rig, "rung", SHARD, "next", "--reason", "from the other terminal")
        assert rung.returncode == 0, rung.stderr
        assert f"{SHARD}: restart decided as" in rung.stdout
        third = wait_until(lambda: registered(rig) != second and registered(rig),
                           30, what="the worker relaunched after the manual restart")

        # The README's curl line, through a real shell, exactly as written (the URL
        # swapped only if up had to leave port 9848).
        line = readme_curl().replace(README_PORT, url)
        curl = subprocess.run(["bash", "-c", line], cwd=rig, env=clean_env(),
                              capture_output=True, text=True, timeout=30)
        assert curl.returncode == 0, curl.stderr
        assert json.loads(curl.stdout)["rung"] == "cpu", curl.stdout
        wait_until(lambda: registered(rig) != third, 30, what="the relaunch on CPU")
        env = crawlguard(rig, "env", SHARD)
        assert (env.returncode, env.stdout) == (0, "BGEM3_DEVICE=cpu\n")

        for cmd, said in (("pause", "sidecar paused"), ("resume", "sidecar resumed")):
            done = crawlguard(rig, cmd, "--reason", "newcomer")
            assert done.returncode == 0 and said in done.stdout, done.stderr
        report = crawlguard(rig, "report")
        assert report.returncode == 0, report.stderr
        assert (rig / ".crawlguard" / "report" / "report.md").is_file()
        # The worker is on CPU now: nothing the ladder could do, the drill says so.
        cpu = crawlguard(rig, "drill", SHARD, "--timeout", "30")
        assert cpu.returncode == 2 and "runs on cpu" in cpu.stderr, cpu.stderr
    finally:
        up.popen.send_signal(2)
        up.wait(60)
        up.stop()
    # No up, no worker: the drill cannot start, and status says where it looked.
    gone = crawlguard(rig, "drill", SHARD)
    assert gone.returncode == 2 and "no running worker for shard" in gone.stderr, gone.stderr
    status = crawlguard(rig, "status")
    assert status.returncode == 2 and "no running 'crawlguard up'" in status.stderr

