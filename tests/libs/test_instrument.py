"""tracker.instrument(model) on the real libraries, with small random models."""

from __future__ import annotations

import copy
import io
import json
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from crawlguard import CrawlTracker
from crawlguard.exporter.instrument import uninstrument
from crawlguard.kernel import oom
from crawlguard.kernel.errors import UnobservedPoolError
from crawlguard.kernel.statedir import StateDir
from tests.exporter.test_tracker import value

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


def _inflight(state_dir: Path) -> tuple[float | None, float | None]:
    return (value(state_dir, "bfm_batch_inflight_genes"),
            value(state_dir, "bfm_batch_inflight_work"))


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
    # Three batches, after FlagEmbedding's batch-size probe (its first batch, run once
    # more): the probe is work, but no genes.
    assert tracker.batches == 4
    lines = _log(state_dir)
    assert [ln["genes"] for ln in lines] == [0.0, 8.0, 8.0, 4.0]
    assert lines[0]["tokens"] == lines[1]["tokens"] > 0


@pytest.mark.parametrize(("items", "calls", "batch_size"), [
    (200, 1, 32),    # one call: the probe re-runs its first batch
    (557, 20, 32),   # one call per file: a probe per call
    (200, 1, 256),   # the probe is the whole call
])
def test_flag_model_probe_counts_each_gene_once(libs: Any, encoder_dir: Path, state_dir: Path,
                                                items: int, calls: int,
                                                batch_size: int) -> None:
    from FlagEmbedding import BGEM3FlagModel
    model = BGEM3FlagModel(str(encoder_dir), devices="cpu", use_fp16=False)
    tracker = _tracker(state_dir, total=items)
    tracker.instrument(model)
    texts = libs.texts(items, 3, 24)
    step = -(-items // calls)
    for start in range(0, items, step):
        model.encode(texts[start:start + step], batch_size=batch_size)
    lines = _log(state_dir)
    assert sum(ln["genes"] for ln in lines) == items
    assert tracker.remaining == 0 and lines[-1]["remaining"] == 0.0
    assert sum(1 for ln in lines if ln["genes"] == 0) == calls  # one probe per call


def test_refuses_what_is_no_model(libs: Any, state_dir: Path) -> None:
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        _tracker(state_dir).instrument(object())


def test_copies_are_plain_models(libs: Any, encoder_dir: Path, state_dir: Path) -> None:
    import torch
    model = _sentence_transformer(encoder_dir)
    tracker = _tracker(state_dir)
    tracker.instrument(model)
    expected = model.encode(["w1 w2"], batch_size=1)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert (clone.encode(["w1 w2"], batch_size=1) == expected).all()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=False).encode(["w1 w2"], batch_size=1)
    assert tracker.batches == 1  # the copies ran unobserved


def test_multi_process_pools_are_refused_loudly(libs: Any, encoder_dir: Path,
                                                state_dir: Path) -> None:
    from FlagEmbedding import BGEM3FlagModel
    model = _sentence_transformer(encoder_dir)
    tracker = _tracker(state_dir)
    tracker.instrument(model)
    with pytest.raises(UnobservedPoolError, match="one worker process per GPU"):
        model.encode(["w1 w2"] * 4, device=["cpu", "cpu"])
    with pytest.raises(UnobservedPoolError, match="uninstrument"):
        model.start_multi_process_pool(["cpu"])
    flag = BGEM3FlagModel(str(encoder_dir), devices=["cpu", "cpu"], use_fp16=False)
    tracker.instrument(flag)
    with pytest.raises(UnobservedPoolError):
        flag.encode(["w1 w2"] * 4, batch_size=2)
    flag.pool = None  # nothing was started
    # Unwatched on purpose: the pool pickles a plain model.
    uninstrument(model)
    pool = model.start_multi_process_pool(["cpu"])
    try:
        assert model.encode(["w1 w2"] * 2, pool=pool).shape[0] == 2
    finally:
        model.stop_multi_process_pool(pool)
    assert tracker.batches == 0


def test_an_interrupted_forward_leaves_nothing_in_flight(libs: Any, state_dir: Path) -> None:
    import torch

    class Interruptible(torch.nn.Module):
        interrupt = True

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            if self.interrupt:
                raise KeyboardInterrupt  # the notebook's interrupt, mid-batch
            return input_ids

    module = Interruptible()
    tracker = _tracker(state_dir)
    tracker.instrument(module)
    ids = torch.ones((4, 3), dtype=torch.long)
    with pytest.raises(KeyboardInterrupt):
        module(input_ids=ids, attention_mask=ids)
    assert _inflight(state_dir) == (0.0, 0.0)
    module.interrupt = False  # run encode again: every forward is observed again
    for _ in range(3):
        module(input_ids=ids, attention_mask=ids)
    assert tracker.batches == 3 and _inflight(state_dir) == (0.0, 0.0)


def test_threads_sharing_a_model_are_each_observed_once(libs: Any, encoder_dir: Path,
                                                        state_dir: Path) -> None:
    model = _sentence_transformer(encoder_dir)
    tracker = _tracker(state_dir)
    tracker.instrument(model)
    texts = libs.texts(32, 3, 12)
    barrier = threading.Barrier(2)

    def encode() -> None:
        barrier.wait()
        for _ in range(10):
            model.encode(texts, batch_size=32)

    threads = [threading.Thread(target=encode) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tracker.batches == 20 and tracker.done == 640
    assert _inflight(state_dir) == (0.0, 0.0)


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


@pytest.mark.parametrize("make_error", [
    lambda torch: torch.AcceleratorError("CUDA error: out of memory"),
    lambda torch: RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be "
                               "asynchronously reported"),
    lambda torch: RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling "
                               "`cublasCreate(handle)`"),
    lambda torch: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
], ids=["accelerator", "runtime", "cublas", "outofmemory"])
def test_every_oom_form_is_recorded_and_raised_unchanged(libs: Any, state_dir: Path,
                                                         make_error: Any) -> None:
    import torch

    error = make_error(torch)

    class Failing(torch.nn.Module):
        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            raise error

    module = Failing()
    _tracker(state_dir).instrument(module)
    ids = torch.ones((2, 3), dtype=torch.long)
    with pytest.raises(type(error)) as raised:
        module(input_ids=ids, attention_mask=ids)
    assert raised.value is error and raised.value.__traceback__ is not None
    (record,) = oom.read_records(StateDir(state_dir), "docs")
    assert record.genes == 2.0 and type(error).__name__ in record.error


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
