"""Healthy shards of mixed shapes under ``crawlguard up`` with VRAM full: no rung.

Issue 17: the stall limit counted genes, so the first batch of wiki pages after
a baseline of chat lines (or of long documents after tiny items) "stalled"
while it ran at exactly the baseline's pace, and the ladder demoted a healthy
shard to CPU. Here a real sentence-transformers worker (``shape_worker``) runs
those corpora with a simulated device time that makes each page batch last
well past a genes-counted limit, under ``up`` on the embedded alert path with
dedicated VRAM full (so the spill evidence holds throughout): no crawl may be
counted and no rung taken. The same run's report finds no time lost, and the
ETA computed from work matches the time the run really had left, where one
computed from genes would have been several times too short.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from crawlguard.kernel.formats.batchlog import Batch, BatchTail
from crawlguard.kernel.settings import Detection
from crawlguard.kernel.statedir import StateDir
from crawlguard.report.evidence import load_run
from tests.helpers import REPO, Proc, crawlguard_cmd

from .conftest import require_libs
from .rigenv import full_vram_env

pytestmark = pytest.mark.slow

SHARD = "docs"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_libs("torch", "transformers", "sentence_transformers")
    from tests.libs import models
    return models.save_encoder(tmp_path_factory.mktemp("xlmr"), hidden=32)


def _run(tmp_path: Path, model: Path, corpus: str) -> tuple[Path, Proc]:
    state, data = tmp_path / "state", tmp_path / "data"
    env = full_vram_env(tmp_path)  # GPU 0 full for the whole run: spill evidence holds
    up = Proc(crawlguard_cmd(
        "up", "--state-dir", str(state), "--alert-path", "embedded", "--interval", "0.5",
        "--progress", "lines", "--shard", SHARD, "--", sys.executable, "-m",
        "tests.libs.shape_worker", "--model", str(model), "--data", str(data), "--shard",
        "{shard}", "--corpus", corpus), env=env, cwd=REPO)
    try:
        assert up.wait(300) == 0, up.output[-4000:]
    finally:
        up.stop()
    return state, up


def _batches(state: Path) -> list[Batch]:
    from crawlguard.kernel.formats import batchlog
    rows, bad = batchlog.read(StateDir(state).batches_file(SHARD))
    assert bad == 0
    return rows


def _check_no_rung_and_no_loss(state: Path, up: Proc) -> list[Batch]:
    ladder = StateDir(state).ladder_file(SHARD)
    history = json.loads(ladder.read_text())["history"] if ladder.exists() else []
    assert not [e for e in history if e.get("kind") in ("crawl", "rung")], history
    assert "BFMShardStalled" not in up.output and "BFMShardCrawl" not in up.output
    rows = _batches(state)
    det = Detection()
    # Not vacuous: long batches ran past the limit the genes alone would give them,
    # (window x factor x genes / baseline), and within the limit of their work.
    past = [b for b in rows if b.baseline and b.work and
            b.seconds > det.window * det.factor * b.genes / b.baseline]
    assert past, [(b.genes, b.seconds, b.baseline) for b in rows]
    assert all(b.seconds < det.window * det.factor * (b.work or 0) / (b.baseline or 1)
               for b in past)
    (shard,) = load_run(state).shards
    assert shard.slow_batches == 0 and shard.lost_seconds == 0.0
    return rows


def test_chat_and_wiki_alternating_is_no_crawl(tmp_path: Path, model_dir: Path) -> None:
    state, up = _run(tmp_path, model_dir, "chat_wiki")
    rows = _check_no_rung_and_no_loss(state, up)
    # Halfway through, the ETA from work is the time the run really had left; the one
    # from genes at the (chat) baseline's rate is a fraction of it.
    half = len(rows) // 2
    partial = tmp_path / "half.jsonl"
    lines = StateDir(state).batches_file(SHARD).read_text().splitlines()
    partial.write_text("\n".join(lines[:half]) + "\n")
    tail = BatchTail(partial)
    tail.poll()
    last = tail.last
    assert last is not None and last.remaining and last.baseline
    left = rows[-1].t - last.t
    eta_work = last.remaining * tail.paced_seconds / tail.paced_genes
    eta_genes = last.remaining / last.baseline
    print(f"\nhalfway: {left:.1f} s left; ETA from work {eta_work:.1f} s, "
          f"from genes {eta_genes:.1f} s")
    assert 0.4 < eta_work / left < 2.5
    assert eta_genes / left < 0.3


def test_tiny_items_then_long_documents_is_no_crawl(tmp_path: Path, model_dir: Path) -> None:
    state, up = _run(tmp_path, model_dir, "tiny_then_long")
    _check_no_rung_and_no_loss(state, up)
