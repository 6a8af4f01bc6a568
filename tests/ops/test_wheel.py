"""The wheel carries rules/, deploy/ and the runbook, and an installed copy finds them.

`pip install .` (not `-e`) used to leave them out: `up` and `demo` silently fell
back to the embedded evaluation. CI also installs the wheel into a fresh venv
and runs the demo on the real Prometheus path (.ci/run).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

NEEDED = ("rules/crawlguard.rules.yml", "deploy/prometheus/prometheus.yml",
          "deploy/alertmanager/alertmanager.yml", "docs/runbook.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--disable-pip-version-check", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=240)
    (built,) = out.glob("crawlguard-*.whl")
    return built


def test_the_wheel_ships_the_top_level_files_unchanged(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for rel in NEEDED:
            assert f"crawlguard/_shipped/{rel}" in names, rel
            assert zf.read(f"crawlguard/_shipped/{rel}") == (REPO / rel).read_bytes(), rel
        assert not any("__pycache__" in n or n.endswith("sidecar.token") for n in names)


def test_an_installed_wheel_finds_them_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import crawlguard, json; from crawlguard import shipped; "
            "from sidecar.rig.promstack import Shipped; r = shipped.locate(); "
            "print(json.dumps([crawlguard.__file__, r.kind, str(Shipped.find().rules)]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(site), "PATH": ""})
    assert done.returncode == 0, done.stderr
    import json
    module, kind, rules = json.loads(done.stdout)
    assert module.startswith(str(site)) and kind == "wheel"
    assert rules == str(site / "crawlguard" / "_shipped" / "rules" / "crawlguard.rules.yml")


def test_a_checkout_reads_the_top_level_folders() -> None:
    from crawlguard import shipped

    found = shipped.locate()
    assert found is not None and found.kind == "checkout" and found.root == REPO
