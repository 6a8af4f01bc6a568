from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Knobs from the developer's shell must not leak into tests.
for _k in [k for k in os.environ if k.startswith("HELIX_BFM_") or k == "BGEM3_DEVICE"]:
    del os.environ[_k]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    path.mkdir()
    yield path
