"""The import contracts of pyproject.toml ([tool.importlinter]) hold.

CI runs `lint-imports` itself (.ci/run); this runs the same check in a plain
`pytest`, so a violation shows up before a push. Skipped where import-linter
(the `test` extra) is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def test_import_contracts_hold() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    found = str(exe) if exe.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.skip("import-linter not installed (pip install -e '.[test]')")
    proc = subprocess.run([found, "--no-cache"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "broken" in proc.stdout.lower()  # the summary line: "N kept, 0 broken"
