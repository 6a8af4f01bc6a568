"""What the benches that run real embedding libraries share: the repository on
``sys.path`` (for ``tests.libs``, which builds random models offline) and no model hub."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def offline() -> Path:
    """Put the repository on ``sys.path``, keep the libraries off the hub; the repository."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return REPO
