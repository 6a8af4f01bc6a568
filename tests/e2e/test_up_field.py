"""`crawlguard up` in situations new users hit (issue 10, "small things")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, crawlguard_cmd


def test_a_worker_that_dies_at_import_shows_its_last_lines(tmp_path: Path) -> None:
    env = {**os.environ, "HELIX_BFM_MAX_FUTILE_RESTARTS": "1"}
    done = subprocess.run(crawlguard_cmd(
        "up", "--state-dir", str(tmp_path / "state"), "--alert-path", "embedded",
        "--progress", "lines", "--shard", "a", "--",
        sys.executable, "-c", "import no_such_module_for_crawlguard"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "last lines of" in done.stderr
    assert "ModuleNotFoundError: No module named 'no_such_module_for_crawlguard'" in done.stderr
