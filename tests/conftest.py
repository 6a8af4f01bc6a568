from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The Windows OS boundary, faked (fixtures windows, no_break, jobs, procs).
pytest_plugins = ["tests.winfakes"]

# Knobs from the developer's shell must not leak into tests.
for _k in [k for k in os.environ if k.startswith("HELIX_BFM_") or k == "BGEM3_DEVICE"]:
    del os.environ[_k]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    path.mkdir()
    yield path


EARLY_START = Path(__file__).parent / "earlystart" / "sitecustomize.py"


@pytest.fixture
def early_starts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> float:
    """Seconds by which every process of the test reads its creation time early (the
    fixture's param, default 0): this process, and its Python children through
    tests/earlystart/sitecustomize.py. Linux only; 0 elsewhere."""
    early = float(getattr(request, "param", 0.0))
    if os.environ.get("CRAWLGUARD_TEST_START_EARLY_S"):  # the whole run reads early already
        return float(os.environ["CRAWLGUARD_TEST_START_EARLY_S"])
    if not early or not Path("/proc/uptime").exists():
        return 0.0
    import importlib.util

    spec = importlib.util.spec_from_file_location("crawlguard_test_earlystart", EARLY_START)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fraction = os.environ.get(module.FRACTION_VAR) or module.boot_fraction()
    monkeypatch.setenv(module.FRACTION_VAR, fraction)
    monkeypatch.setenv(module.EARLY_VAR, str(early))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(EARLY_START.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    request.addfinalizer(module.install(early))
    return early
