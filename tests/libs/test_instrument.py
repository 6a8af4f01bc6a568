"""tracker.instrument(model) on the real libraries, with small random models."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crawlguard import CrawlTracker
from crawlguard.exporter.instrument import uninstrument
from crawlguard.kernel import oom
from crawlguard.kernel.statedir import StateDir

from .conftest import require_libs


@pytest.fixture(scope="module")
def libs() -> Any:
    require_libs()
    from tests.libs import models
    return models


@pytest.fixture(scope="module")
def encoder_dir(libs: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return libs.save_encoder(tmp_path_factory.mktemp("xlmr"))


def _tracker(state_dir: Path, **kw: Any) -> CrawlTracker:
    return CrawlTracker("docs", "backfill", "cpu", state_dir=state_dir, **kw)


def _log(state_dir: Path) -> list[dict[str, Any]]:
    path = StateDir(state_dir).batches_file("docs")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _sentence_transformer(encoder_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    word = Transformer(str(encoder_dir), max_seq_length=512)
    return SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension())],
                               device="cpu")


def test_sentence_transformers_each_forward_is_one_batch(
        libs: Any, encoder_dir: Path, state_dir: Path) -> None:
    model = _sentence_transformer(encoder_dir)
    tracker = _tracker(state_dir, total=40)
    assert tracker.instrument(model) is model
    tracker.instrument(model)  # twice: still one observation per batch
    texts = libs.texts(40, 3, 60)
    vectors = model.encode(texts, batch_size=8)
    assert vectors.shape[0] == 40
    lines = _log(state_dir)
    assert [ln["genes"] for ln in lines] == [8.0] * 5
    assert tracker.unit == "tokens"
    # Non-padding tokens: the sum of the attention masks, per batch.
    expected = sum(len(model.tokenizer(t)["input_ids"]) for t in texts)
    assert sum(ln["tokens"] for ln in lines) == expected
    assert tracker.remaining == 0 and lines[-1]["remaining"] == 0.0
    # A second tracker (the next stage) takes the hooks over; the first sees no more.
    other = CrawlTracker("docs", "drain", "cpu", state_dir=state_dir)
    other.instrument(model)
    model.encode(texts[:8], batch_size=8)
    assert (tracker.batches, other.batches) == (5, 1)
    uninstrument(model)
    model.encode(texts[:8], batch_size=8)
    assert other.batches == 1


def test_instrumented_submodule_is_not_observed_twice(
        libs: Any, encoder_dir: Path, state_dir: Path) -> None:
    model = _sentence_transformer(encoder_dir)
    tracker = _tracker(state_dir)
    tracker.instrument(model)
    tracker.instrument(model[0].auto_model)  # nested inside the outer forward
    model.encode(libs.texts(16, 3, 20), batch_size=8)
    assert tracker.batches == 2


def test_splade_masked_lm(libs: Any, tmp_path: Path, state_dir: Path) -> None:
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    directory = libs.save_masked_lm(tmp_path / "mlm")
    model = AutoModelForMaskedLM.from_pretrained(directory).eval()
    tok = AutoTokenizer.from_pretrained(directory)
    tracker = _tracker(state_dir)
    tracker.instrument(model)
    texts = libs.texts(24, 2, 40)
    sparse = [libs.splade(model, tok, texts[i:i + 6]) for i in range(0, 24, 6)]
    assert tracker.batches == 4
    assert all(s.shape == (6, len(tok)) and bool((s >= 0).all()) for s in sparse)
    uninstrument(model)
    again = torch.cat([libs.splade(model, tok, texts[i:i + 6]) for i in range(0, 24, 6)])
    assert torch.equal(torch.cat(sparse), again)  # the hooks change nothing computed


def test_bge_m3_flag_model(libs: Any, encoder_dir: Path, state_dir: Path) -> None:
    from FlagEmbedding import BGEM3FlagModel
    model = BGEM3FlagModel(str(encoder_dir), devices="cpu", use_fp16=False)
    tracker = _tracker(state_dir)
    assert tracker.instrument(model) is model
    out = model.encode(libs.texts(20, 3, 40), batch_size=8, return_dense=True,
                       return_sparse=True)
    assert out["dense_vecs"].shape[0] == 20 and len(out["lexical_weights"]) == 20
    # Three batches, plus FlagEmbedding's batch-size probe (its first batch, run once more).
    assert tracker.batches == 4
    assert [ln["genes"] for ln in _log(state_dir)] == [8.0, 8.0, 8.0, 4.0]


def test_refuses_what_is_no_model(libs: Any, state_dir: Path) -> None:
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        _tracker(state_dir).instrument(object())


def test_hooks_pickle_as_inert(libs: Any, encoder_dir: Path, state_dir: Path) -> None:
    model = _sentence_transformer(encoder_dir)
    tracker = _tracker(state_dir)
    tracker.instrument(model)
    clone = pickle.loads(pickle.dumps(model))
    clone.encode(["w1 w2"], batch_size=1)
    assert tracker.batches == 0


def _oom_module(torch: Any) -> Any:
    class Flaky(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fail = True

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            if self.fail:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return input_ids * 2
    return Flaky()


def test_oom_through_instrument_is_recorded_then_recovered(libs: Any, state_dir: Path) -> None:
    import torch
    module = _oom_module(torch)
    tracker = _tracker(state_dir)
    tracker.instrument(module)
    ids = torch.ones((4, 3), dtype=torch.long)
    with pytest.raises(torch.OutOfMemoryError):
        module(input_ids=ids, attention_mask=torch.ones_like(ids))
    (record,) = oom.read_records(StateDir(state_dir), "docs")
    assert (record.pid, record.genes, record.recovered) == (
        int(tracker.identity_key.split("-")[0]), 4.0, False)
    assert "OutOfMemoryError" in record.error and tracker.batches == 0
    module.fail = False  # the build caught it and went on: not an OOM death
    module(input_ids=ids, attention_mask=torch.ones_like(ids))
    (record,) = oom.read_records(StateDir(state_dir), "docs")
    assert record.recovered and tracker.batches == 1


def test_oom_through_batch_and_other_errors(libs: Any, state_dir: Path) -> None:
    import torch
    tracker = _tracker(state_dir)
    with pytest.raises(ValueError), tracker.batch(genes=3):
        raise ValueError("not memory")
    assert oom.read_records(StateDir(state_dir), "docs") == []
    for _ in range(2):
        with pytest.raises(torch.cuda.OutOfMemoryError), tracker.batch(genes=5):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    (record,) = oom.read_records(StateDir(state_dir), "docs")
    assert record.count == 2 and record.genes == 5.0


def test_tracker_and_instrument_never_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from crawlguard import CrawlTracker\n"
        "import crawlguard.exporter.instrument\n"
        f"t = CrawlTracker('docs', 'backfill', 'cpu', state_dir={str(tmp_path)!r}, total=3)\n"
        "with t.batch(genes=3): pass\n"
        "try:\n"
        "    t.instrument(object())\n"
        "except TypeError as exc:\n"
        "    print('refused:', exc)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2]).stdout
    assert out.splitlines() == [
        "refused: instrument() needs a torch model, and torch is not imported; got object",
        "False"]
