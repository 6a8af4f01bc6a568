"""Packaging: one import root, a declarative list of shipped files, and both install modes.

`pip install .` puts exactly one top-level package, ``crawlguard``, into
site-packages; the folders of the design card (exporter/, sidecar/, rules/,
deploy/) map into it through pyproject.toml's package-dir, and the files the
program reads ship as package data, listed once. CI also installs the wheel
into a fresh venv and runs the demo on the real Prometheus path (.ci/run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _folder(package: str) -> Path:
    """The repository folder of an import package, by pyproject's package-dir."""
    mapping: dict[str, str] = SETUPTOOLS["package-dir"]
    best = max((p for p in mapping if package == p or package.startswith(p + ".")), key=len)
    return REPO / mapping[best] / Path(*package[len(best):].split(".")[1:])


def _inside_wheel(package: str, rel: str) -> str:
    return "/".join([*package.split("."), rel])


def _shipped() -> list[tuple[str, str]]:
    """(package, relative file) for every file pyproject ships as package data."""
    data: dict[str, list[str]] = SETUPTOOLS["package-data"]
    return [(pkg, rel) for pkg, files in data.items() for rel in files]


def _pip_wheel(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--disable-pip-version-check", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=240)
    shutil.rmtree(source / "build", ignore_errors=True)  # setuptools' in-tree build folder
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = _pip_wheel(REPO, out)
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("crawlguard-*.whl")
    return built


def test_the_package_list_is_every_package_folder() -> None:
    """pyproject lists packages by hand (package-dir needs it): none may be forgotten."""
    listed = set(SETUPTOOLS["packages"])
    on_disk = set()
    for package in SETUPTOOLS["package-dir"]:
        root = _folder(package)
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if not any(_folder(other) == init.parent for other in SETUPTOOLS["package-dir"]
                       if other != package):
                on_disk.add(".".join([package, *rel.parts]))
    assert listed == on_disk


def test_every_shipped_file_exists_and_a_missing_folder_fails_the_build(tmp_path: Path) -> None:
    for package, rel in _shipped():
        assert (_folder(package) / rel).is_file(), (package, rel)
    copy = tmp_path / "tree"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", "tests", "docs", "bench"))
    shutil.rmtree(copy / "deploy")
    done = _pip_wheel(copy, tmp_path / "out")
    assert done.returncode != 0
    assert not list(tmp_path.glob("out/*.whl"))


def test_the_wheel_has_one_import_root_and_ships_exactly_the_listed_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
        assert tops == {"crawlguard"}
        data = {n for n in names if not n.endswith(".py") and ".dist-info/" not in n}
        assert data == {_inside_wheel(pkg, rel) for pkg, rel in _shipped()}
        for pkg, rel in _shipped():
            assert zf.read(_inside_wheel(pkg, rel)) == (_folder(pkg) / rel).read_bytes(), rel


def _site(wheel: Path, tmp_path: Path) -> Path:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def test_an_installed_wheel_finds_its_files_from_any_directory(wheel: Path,
                                                               tmp_path: Path) -> None:
    site = _site(wheel, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import json, crawlguard; from crawlguard.rig.promstack import Shipped; "
            "from crawlguard.sidecar import runbook; s = Shipped.find(); "
            "print(json.dumps([crawlguard.__file__, str(s.rules), str(s.prometheus), "
            "runbook.page() is not None, crawlguard.CrawlTracker.__module__]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(site), "PATH": ""})
    assert done.returncode == 0, done.stderr
    module, rules, prom, has_runbook, tracker = json.loads(done.stdout)
    assert module.startswith(str(site))
    assert rules == str(site / "crawlguard" / "rules" / "crawlguard.rules.yml")
    assert prom == str(site / "crawlguard" / "deploy" / "prometheus" / "prometheus.yml")
    assert has_runbook and tracker == "crawlguard.exporter.tracker"


def test_the_old_top_level_names_are_gone(wheel: Path, tmp_path: Path) -> None:
    """`exporter` and `sidecar` are no importable names of their own: a build's own
    exporter.py or sidecar/ neither shadows crawlguard nor is shadowed by it."""
    site = _site(wheel, tmp_path)
    for name in ("exporter", "sidecar", "rules", "deploy"):
        done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60,
                              env={"PYTHONPATH": str(site), "PATH": ""})
        assert done.returncode != 0 and "No module named" in done.stderr, name


def test_this_run_imports_each_mapped_package_from_its_folder() -> None:
    import crawlguard.deploy
    import crawlguard.exporter
    import crawlguard.rules
    import crawlguard.sidecar

    for module in (crawlguard.exporter, crawlguard.sidecar, crawlguard.rules, crawlguard.deploy):
        assert Path(module.__file__ or "").parent == _folder(module.__name__)
