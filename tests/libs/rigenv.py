"""The environment of a rig under test whose GPU 0 is full: ``file:`` VRAM source, short
warm-up and baseline, nothing from a model hub, this repository importable."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import REPO


def full_vram_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for ``crawlguard up``: GPU 0 at 11.85 of 12 GB (as during a
    spill) for the whole run, and ``extra`` knobs on top."""
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 11_850_000_000,
                                          "total_bytes": 12_000_000_000}]}))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HELIX_BFM_") and k != "BGEM3_DEVICE"}
    env.update(HELIX_BFM_VRAM_SOURCE=f"file:{vram}", HELIX_BFM_WARMUP_BATCHES="1",
               HELIX_BFM_BASELINE_BATCHES="3", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [
                   os.environ.get("PYTHONPATH")])]), **extra)
    return env
