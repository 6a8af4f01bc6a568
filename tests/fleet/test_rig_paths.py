"""`up` on the external path and with an env file; `fleet status` when no rig answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crawlguard.kernel import envfile
from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.settings import Settings
from crawlguard.rig.up import RigConfig, RunningRig
from tests.helpers import REPO, crawlguard_cmd

from .conftest import RIG_HOSTS, GeneratedFleet


def rig(env: dict[str, str], alert_path: str, state: Path) -> RunningRig:
    return RunningRig(RigConfig(shards=("a",), command=(sys.executable, "-c", "pass"),
                         settings=Settings.from_env({**env, "HELIX_BFM_STATE_DIR": str(state)}),
                         env=env, alert_path=alert_path))


def test_the_external_path_needs_the_fleets_token(gen_fleet: GeneratedFleet,
                                                  state_dir: Path) -> None:
    env = envfile.read(gen_fleet.layout.rig_dir("rig1") / "crawlguard.env")
    assert rig(env, "external", state_dir).external
    del env["HELIX_BFM_SIDECAR_TOKEN_FILE"]
    with pytest.raises(ConfigError) as info:
        rig(env, "external", state_dir)
    assert info.value.knob == "--alert-path" and "HELIX_BFM_SIDECAR_TOKEN_FILE" in str(info.value)


def test_other_paths_keep_their_loopback_servers_plain(gen_fleet: GeneratedFleet,
                                                       state_dir: Path) -> None:
    """With a fleet's env file on the embedded path, the run's own servers stay plain HTTP
    on loopback: the TLS knobs do not reach its sidecar, whose evaluator speaks HTTP."""
    env = envfile.read(gen_fleet.layout.rig_dir("rig1") / "crawlguard.env")
    local = rig(env, "embedded", state_dir)
    assert not local.external
    assert not [k for k in local.env if k.startswith("HELIX_BFM_TLS_")]


def test_a_bad_env_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text("HELIX_BFM_CRAWL_FACTOR=5\nthis is not a knob\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIX_BFM_")}
    for path, message in ((tmp_path / "missing.env", "cannot read"), (bad, "line 2")):
        done = subprocess.run(crawlguard_cmd("up", "--env-file", str(path), "--shard", "a",
                                             "--", sys.executable, "-c", "pass"),
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_fleet_status_says_why_no_rig_answers(gen_fleet: GeneratedFleet) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIX_BFM_")}
    for target in ([str(gen_fleet.root)],
                   [str(gen_fleet.fleet_file), "--out", str(gen_fleet.root)]):
        done = subprocess.run(crawlguard_cmd("fleet", "status", *target, "--json"), cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        found = json.loads(done.stdout)
        assert found["reachable"] == 0 and found["total"] == len(RIG_HOSTS)
        for entry in found["rigs"]:
            assert not entry["reachable"]
            assert "refused" in entry["exporter"]["error"].lower(), entry
            assert "cannot reach the sidecar" in entry["sidecar"]["error"], entry
    table = subprocess.run(crawlguard_cmd("fleet", "status", str(gen_fleet.root)), cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 1 and "0 of 3 rigs reachable" in table.stdout, table.stdout
    nowhere = subprocess.run(crawlguard_cmd("fleet", "rung", "rig1", "a", "restart", "--fleet",
                                            str(gen_fleet.root.parent)), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
    assert nowhere.returncode == 2 and "fleet generate" in nowhere.stderr, nowhere.stderr
    unknown = subprocess.run(crawlguard_cmd("fleet", "rung", "rig9", "a", "restart", "--fleet",
                                            str(gen_fleet.root)), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "not in the fleet" in unknown.stderr, unknown.stderr
