"""`crawlguard up` in situations new users hit (issue 10, "small things")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, clean_env, crawlguard_cmd


def test_a_worker_that_dies_at_import_shows_its_last_lines(tmp_path: Path) -> None:
    env = {**os.environ, "HELIX_BFM_MAX_FUTILE_RESTARTS": "1"}
    done = subprocess.run(crawlguard_cmd(
        "up", "--blind", "--state-dir", str(tmp_path / "state"), "--alert-path", "embedded",
        "--progress", "lines", "--shard", "a", "--",
        sys.executable, "-c", "import no_such_module_for_crawlguard"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "last lines of" in done.stderr
    assert "ModuleNotFoundError: No module named 'no_such_module_for_crawlguard'" in done.stderr


def test_up_refuses_a_rig_with_no_spill_evidence_unless_blind(tmp_path: Path) -> None:
    """No NVML, no file: VRAM source, no shared-memory source: such a rig can never confirm
    a crawl, so `up` refuses it before creating anything, and names the knobs that give
    it evidence. --blind runs it anyway and says so; a file: source is evidence enough."""
    state = tmp_path / "state"
    vram = tmp_path / "vram.json"  # absent at first: the source does not answer
    env = clean_env(HELIX_BFM_VRAM_SOURCE=f"file:{vram}", HELIX_BFM_SHARED_SOURCE="off")

    def up(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(crawlguard_cmd(
            "up", *flags, "--state-dir", str(state), "--alert-path", "embedded",
            "--progress", "lines", "--shard", "a", "--", sys.executable, "-c", "pass"),
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    done = up()
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "no source of spill evidence works" in err and "vram.json" in err
    for knob in ("HELIX_BFM_VRAM_SOURCE=file:PATH", "HELIX_BFM_SHARED_SOURCE", "NVML",
                 "--blind"):
        assert knob in err, knob
    assert not state.exists()

    done = up("--blind")
    assert done.returncode == 0, done.stderr
    assert "running blind (--blind)" in done.stderr

    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1, "total_bytes": 8}]}))
    done = up()
    assert done.returncode == 0, done.stderr
    assert "running blind" not in done.stderr
