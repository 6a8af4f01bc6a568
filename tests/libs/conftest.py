"""Tests on the real embedding libraries (the ``libs`` extra).

They skip when a library is missing, unless ``CRAWLGUARD_REQUIRE_LIBS=1``
(set by .ci/run, which installs the extra) turns that into a failure.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

LIBS = ("torch", "transformers", "sentence_transformers", "FlagEmbedding")


def require_libs(*names: str) -> None:
    missing = [n for n in (names or LIBS) if importlib.util.find_spec(n) is None]
    if not missing:
        return
    if os.environ.get("CRAWLGUARD_REQUIRE_LIBS") == "1":
        pytest.fail(f"{', '.join(missing)} required (CRAWLGUARD_REQUIRE_LIBS=1) but not "
                    "installed: pip install torch==2.13.0 && pip install -e '.[libs]'")
    pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[libs]')")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing may come from a model hub: every model is built in the test.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
