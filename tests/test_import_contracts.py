"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and they bind.

The contracts are checked on the tree as it installs (exporter/, sidecar/,
rules/ and deploy/ map into crawlguard.* only then): a throwaway
``pip install --target`` of this checkout, as ``.ci/static`` does. Each planted
violation below, an import a newcomer could add, must break the contract named.
Skipped where import-linter (the `test` extra) is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PLANTED = [
    # (module in the installed tree, import planted at its end, the contract it breaks)
    ("crawlguard/sidecar/ladder.py", "from crawlguard.sidecar import actions",
     "The sidecar service is ordered"),
    ("crawlguard/exporter/oomseries.py", "from crawlguard.exporter import server",
     "The exporter is ordered"),
    ("crawlguard/sidecar/runbook.py", "from crawlguard.sidecar import app",
     "The sidecar service is ordered"),
    ("crawlguard/sidecar/state.py", "from crawlguard.exporter import tracker", "Rooms:"),
    ("crawlguard/rules/loop.py", "from crawlguard.sidecar import client", "Rooms:"),
    ("crawlguard/exporter/tracker.py", "from crawlguard.rig import up", "Rooms:"),
    ("crawlguard/kernel/names.py", "from crawlguard.sidecar import ladder",
     "The kernel, the GPU edge"),
    ("crawlguard/sidecar/resume.py", "import fastapi", "resume"),
    # One boundary per foreign library.
    ("crawlguard/sidecar/actions.py", "import psutil", "psutil only in"),
    ("crawlguard/kernel/workers.py", "import psutil", "psutil only in"),
    ("crawlguard/rules/loop.py", "import httpx", "httpx only in"),
    ("crawlguard/doctor/probes.py", "import httpx", "httpx only in"),
    ("crawlguard/doctor/probes.py", "import pynvml", "pynvml only in"),
]


LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def _lint_imports() -> str:
    pytest.importorskip("importlinter", reason="import-linter not installed (the test extra)")
    return LINT_IMPORTS


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("installed")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-compile", "--disable-pip-version-check", "--target",
                           str(target), str(REPO)], capture_output=True, text=True, timeout=240)
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools' in-tree build folder
    assert done.returncode == 0, done.stderr
    return target


def _run(code: str, tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, "--no-cache", str(REPO / "pyproject.toml")],
                          cwd=tree, capture_output=True, text=True, timeout=180)


def test_import_contracts_hold(installed: Path) -> None:
    proc = _run(_lint_imports(), installed)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(("module", "line", "contract"), PLANTED,
                         ids=[f"{p[0].rsplit('/', 1)[1]}:{p[1].split()[-1]}" for p in PLANTED])
def test_a_planted_violation_breaks_its_contract(installed: Path, tmp_path: Path, module: str,
                                                 line: str, contract: str) -> None:
    exe = _lint_imports()
    tree = tmp_path / "tree"
    shutil.copytree(installed, tree)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # planted\n")
    proc = _run(exe, tree)
    assert proc.returncode != 0, proc.stdout[-3000:]
    broken = proc.stdout.split("Broken contracts", 1)[-1]
    assert contract in " ".join(broken.split()), proc.stdout[-3000:]
