"""The one exception tree: every error class is drawn in errors.py's docstring, and
bad arguments are ConfigError wherever they are found."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from crawlguard.kernel import errors
from crawlguard.kernel.errors import (
    ConfigError,
    CrawlguardError,
    ReportError,
    ResumeEnvError,
    StateError,
)


def test_the_drawn_tree_is_the_class_tree() -> None:
    classes = {name: cls for name, cls in vars(errors).items()
               if inspect.isclass(cls) and issubclass(cls, CrawlguardError)}
    doc = errors.__doc__ or ""
    tree = doc[doc.index("CrawlguardError\n"):]
    depth: dict[str, int] = {}
    parents: list[str] = []
    for line in tree.splitlines():
        words = line.replace("│", " ").replace("├──", "   ").replace("└──", "   ").split()
        if not words or words[0] not in classes:
            continue
        # The root sits at the docstring's margin; each level adds "├── " or "│   ".
        indent = (len(line) - len(line.lstrip(" │├└─")) - 4) // 4
        parents = parents[:indent]
        if parents:
            assert classes[parents[-1]] in classes[words[0]].__bases__, words[0]
        depth[words[0]] = indent
        parents.append(words[0])
    assert set(depth) == set(classes), "classes missing from the drawn tree"
    assert issubclass(ResumeEnvError, StateError) and issubclass(ReportError, CrawlguardError)


FACADES = {"crawlguard", "crawlguard.rules"}
"""Packages whose ``__all__`` is their public surface, gathered from their modules."""


def test_each_name_is_exported_by_its_one_home_only() -> None:
    # Walked one by one: in a checkout the mapped folders are not under crawlguard/.
    import importlib
    import pkgutil

    borrowed = []
    for top in ("crawlguard", "crawlguard.exporter", "crawlguard.sidecar", "crawlguard.rules"):
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, top + "."):
            if info.name.endswith("__main__"):  # importing it would run it
                continue
            module = importlib.import_module(info.name)
            for name in getattr(module, "__all__", ()) if info.name not in FACADES else ():
                home = getattr(getattr(module, name), "__module__", info.name)
                if home.startswith("crawlguard") and home != info.name:
                    borrowed.append(f"{info.name}.{name} (from {home})")
    assert borrowed == [], "re-exported under a second name: callers import the one home"


def test_demo_refuses_a_bad_time_scale_like_up_refuses_a_bad_interval(
        capsys: pytest.CaptureFixture[str]) -> None:
    from crawlguard.cli.main import main

    assert main(["demo", "--time-scale", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "crawlguard demo: error: --time-scale=0.0: must be > 0")
    assert main(["up", "--interval", "-1", "--shard", "a", "--", "true"]) == 2
    assert capsys.readouterr().err.strip() == "crawlguard up: error: --interval=-1.0: must be > 0"


def test_the_reference_builds_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    from crawlguard.refbuild.__main__ import main
    from crawlguard.refbuild.corpus import ShardSpec, generate
    from crawlguard.refbuild.profiles import get_profile
    from crawlguard.refbuild.worker import device_from_env

    with pytest.raises(ConfigError, match="profile='nope'"):
        get_profile("nope")
    with pytest.raises(ConfigError, match="profile='nope'"):
        generate(tmp_path, ShardSpec("s", 1, 1, "nope", 1))
    with pytest.raises(ConfigError, match="--files=0"):
        generate(tmp_path, ShardSpec("s", 0, 1, "healthy", 1))
    with pytest.raises(ConfigError, match="BGEM3_DEVICE='mps'"):
        device_from_env({"BGEM3_DEVICE": "mps"})
    with pytest.raises(ConfigError, match="HELIX_BFM_DEVICE_VAR"):
        device_from_env({"HELIX_BFM_DEVICE_VAR": "no such name"})
    assert device_from_env({"HELIX_BFM_DEVICE_VAR": "DEV", "DEV": "cuda"}) == "cuda:0"
    assert main(["generate", "--data", str(tmp_path), "--shard", "s", "--files", "0"]) == 2
    assert main(["generate", "--data", str(tmp_path)]) == 2
    assert main(["work", "--data", str(tmp_path), "--shard", "s", "--time-scale", "0"]) == 2
