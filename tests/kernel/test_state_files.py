"""Every state file outside the sidecar's has one schema (a pydantic ``StateModel``), read
through ``crawlguard.kernel.formats.schema``: what crawlguard writes reads back the same,
and arbitrary JSON (1e400, nesting 100,000 deep, wrong shapes, a directory in the file's
place) reads as "unreadable" with a message naming the file and the field, never a
traceback. (The sidecar's own files: test_state_schemas.py.)

Each reader is fuzzed twice: with arbitrary JSON documents, and with a valid document
one of whose fields is replaced by arbitrary JSON (what a hand edit does)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawlguard.exporter import mpfiles
from crawlguard.exporter.baseline import BaselineRecord, load_baseline_record, save_baseline
from crawlguard.exporter.compaction import JOURNAL, Journal, MetricsJanitor
from crawlguard.exporter.rate import Baseline, Sample
from crawlguard.exporter.workmodel import Envelope, padded_shape
from crawlguard.kernel import drills, oom
from crawlguard.kernel.errors import CorruptStateError, StateError
from crawlguard.kernel.formats import batchlog, schema, vramlog
from crawlguard.kernel.formats.upfile import UP_FILE, UpFile, read_up
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import (
    LaunchRecord,
    Registration,
    WorkerIdentity,
    read_launch,
    read_registration,
    record_launch,
    register_worker,
)
from crawlguard.supervisor import runrecord

SHARD = "docs"
ME = WorkerIdentity.current()


def _work_model() -> Baseline:
    samples = [Sample(padded_shape(8, 100), 8.0, 0.5), Sample(padded_shape(8, 60), 8.0, 0.4)]
    envelope = Envelope()
    for sample in samples:
        envelope.learn(sample.shape, sample.seconds)
    return Baseline(16.0, envelope, samples)


BASELINE = _work_model()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=15)
HOSTILE_TEXTS = [
    '{"pid": 1e400, "create_time": 1e400}', '{"pid": 12, "create_time": -1e400}',
    '{"pid": 12, "create_time": NaN}', "[" * 100_000 + "]" * 100_000,
    '{"pid": ' + "[" * 100_000 + "]" * 100_000 + "}", "1", "[]", "null", '"x"', "{",
    '{"pid": true, "create_time": 1.0}', '{"pid": 0, "create_time": 1.0}',
    '{"pid": -5, "create_time": 1.0}', '{"pid": 12, "create_time": "now"}',
    '{"pid": 1' + "0" * 400 + ', "create_time": 1' + "0" * 400 + "}",
    '{"pid": 4294967296, "create_time": 1.0}',
]
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def state(tmp: pytest.TempPathFactory) -> StateDir:
    return StateDir(tmp.mktemp("state"))


# -- one reader per file, as its users call it --------------------------------------------
# Each returns what it read, or raises CorruptStateError / StateError where the file's
# users expect an error; readers whose users skip bad files return their "nothing".

def _registration(st_: StateDir, text: str) -> object:
    path = st_.worker_file(SHARD)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return read_registration(st_, SHARD)


def _launch(st_: StateDir, text: str) -> object:
    path = st_.launch_file(SHARD)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return read_launch(st_, SHARD)


def _run(st_: StateDir, text: str) -> object:
    path = st_.root / "run" / "children.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return runrecord.read(path)


def _up(st_: StateDir, text: str) -> object:
    path = st_.root / "run" / UP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return read_up(st_.root)


def _drill(st_: StateDir, text: str) -> object:
    path = drills.drill_path(st_, SHARD)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    # The sidecar's and the exporter's readers skip a bad file (no drill); read_drill names it.
    assert drills.live_drill(st_, SHARD, 0.0) is None or isinstance(
        read_drill_safely(st_), drills.DrillFile)
    assert isinstance(drills.live_drills(st_, 0.0), list)
    return drills.read_drill(st_, SHARD)


def read_drill_safely(st_: StateDir) -> object:
    try:
        return drills.read_drill(st_, SHARD)
    except StateError as exc:
        return exc


def _oom(st_: StateDir, text: str) -> object:
    path = oom.record_path(st_, SHARD, ME.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return oom.read_records(st_, SHARD)


def _baseline(st_: StateDir, text: str) -> object:
    path = st_.baseline_file(SHARD, "backfill", "cuda:0")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return load_baseline_record(st_, SHARD, "backfill", "cuda:0")


def _journal(st_: StateDir, text: str) -> object:
    metrics = st_.metrics_dir
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / JOURNAL).write_text(text)
    MetricsJanitor(metrics, lambda _: False).recover()
    return None


def _batches(st_: StateDir, text: str) -> object:
    path = st_.batches_file(SHARD)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("\n", " ") + "\n")
    tail = batchlog.BatchTail(path)
    tail.poll()
    return batchlog.read(path)


def _vram(st_: StateDir, text: str) -> object:
    st_.root.mkdir(parents=True, exist_ok=True)
    st_.vram_log.write_text(text.replace("\n", " ") + "\n")
    return vramlog.read(st_.vram_log)


READERS = {"worker.json": _registration, "launch.json": _launch, "run/children.json": _run,
           "run/up.json": _up, "drills/shard.json": _drill, "oom record": _oom,
           "baseline": _baseline,
           "compaction journal": _journal, "batches.jsonl": _batches, "vram.jsonl": _vram}


def read_safely(reader: str, st_: StateDir, text: str) -> object:
    """The reader's answer, or the CrawlguardError it raised: never anything else."""
    try:
        return READERS[reader](st_, text)
    except StateError as exc:  # CorruptStateError included
        assert str(exc), reader
        return exc


# -- what each writer writes reads back ----------------------------------------------------

def valid_docs(st_: StateDir) -> dict[str, dict[str, Any]]:
    """One document each writer writes (for the readers that read one document)."""
    me = {"pid": ME.pid, "create_time": ME.create_time}
    docs = {
        "worker.json": Registration(shard=SHARD, **me, registered_at=5.0, host="h",
                                    argv=["a"]),
        "launch.json": LaunchRecord(**me, job="Local\\crawlguard-1-2"),
        "run/children.json": runrecord.RunFile(pid=1, children=[runrecord.Child(name="w",
                                                                                **me)]),
        "run/up.json": UpFile(pid=1, alert_path="embedded",
                              urls={"sidecar": "http://127.0.0.1:1"}, token_file="t",
                              shards=[SHARD], servers={"sidecar": 3, "prometheus": None},
                              updated_at=2.0),
        "drills/shard.json": drills.DrillFile(
            id="d1", shard=SHARD, worker=schema.WorkerJson(**me), drill=schema.WorkerJson(**me),
            started_at=4.0, until=9.0, keep=True, shared_bytes=1 << 30),
        "oom record": oom.OomRecord(shard=SHARD, stage="backfill", device="cuda:0", gpu="0",
                                    **me, at=3.0, genes=8.0, error="OOM"),
        "baseline": BaselineRecord.of(BASELINE, "tokens", shard=SHARD, stage="backfill",
                                      device="cuda:0", now=9.0),
        "compaction journal": Journal(merged=[mpfiles.file_name("counter", ME)]),
    }
    return {**{name: doc.model_dump(mode="json") for name, doc in docs.items()},
            "batches.jsonl": {"v": 1, "t": 1.0, "stage": "backfill", "device": "cuda:0",
                              "gpu": "0", "pid": 42, "genes": 64.0, "seconds": 4.0,
                              "rate": 16.0, "ema": None, "baseline": 16.0, "streak": 0,
                              "factor": 5.0},
            "vram.jsonl": {"v": 1, "t": 1.0, "gpu": "0", "used_bytes": 5.0,
                           "total_bytes": 10.0}}


def test_what_each_writer_writes_its_reader_reads(tmp_path: Path) -> None:
    st_ = StateDir(tmp_path)
    reg = register_worker(st_, SHARD, ME, now=5.0)
    assert read_registration(st_, SHARD) == reg
    launch = LaunchRecord(pid=ME.pid, create_time=ME.create_time)
    record_launch(st_, SHARD, launch)
    assert read_launch(st_, SHARD) == launch
    record = runrecord.RunRecord(tmp_path / "run" / "children.json")
    record.add("worker", ME.pid)
    assert runrecord.read(record.path) == [runrecord.Child(name="worker", pid=ME.pid,
                                                           create_time=ME.create_time)]
    rec = oom.OomRecord(shard=SHARD, stage="backfill", device="cuda:0", gpu="0", pid=ME.pid,
                        create_time=ME.create_time, at=3.0, genes=8.0, error="x")
    oom.write_record(st_, rec)
    oom.write_record(st_, rec)
    assert [r.count for r in oom.read_records(st_, SHARD)] == [2]
    save_baseline(st_, SHARD, "backfill", "cuda:0", BASELINE, "genes", now=9.0)
    record = load_baseline_record(st_, SHARD, "backfill", "cuda:0")
    assert record == BaselineRecord.of(BASELINE, "genes", shard=SHARD, stage="backfill",
                                       device="cuda:0", now=9.0)
    model = record.work_model()
    assert model is not None and model.genes_per_second == BASELINE.genes_per_second
    assert model.samples == BASELINE.samples and model.pace == BASELINE.pace
    shape = padded_shape(3, 40)
    assert model.expected_seconds(shape) == BASELINE.expected_seconds(shape)
    for name, doc in valid_docs(st_).items():
        if name.endswith(".jsonl"):
            items, bad = READERS[name](StateDir(tmp_path / name), json.dumps(doc))
            assert bad == 0 and len(items) == 1, name
        elif name != "compaction journal":
            got = READERS[name](StateDir(tmp_path / name.replace("/", "_")), json.dumps(doc))
            assert got and not isinstance(got, StateError), name


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("text", HOSTILE_TEXTS, ids=range(len(HOSTILE_TEXTS)))
def test_hostile_json_reads_as_unreadable(tmp_path: Path, reader: str, text: str) -> None:
    got = read_safely(reader, StateDir(tmp_path), text)
    if isinstance(got, StateError):
        assert isinstance(got, CorruptStateError), got
        assert any(why in str(got) for why in ("crawlguard wrote (", "not valid JSON",
                                                "holds null")), got
    else:
        assert got in (None, [], ([], 1)), (reader, got)


def test_a_directory_in_a_files_place_is_unreadable_not_a_traceback(tmp_path: Path) -> None:
    st_ = StateDir(tmp_path)
    for path in (st_.worker_file(SHARD), st_.launch_file(SHARD), tmp_path / "run" / UP_FILE,
                 oom.record_path(st_, SHARD, ME.key),
                 st_.baseline_file(SHARD, "backfill", "cuda:0")):
        path.mkdir(parents=True)
    for read in (lambda: read_registration(st_, SHARD), lambda: read_launch(st_, SHARD),
                 lambda: read_up(tmp_path)):
        with pytest.raises(CorruptStateError, match="is a directory"):
            read()
    assert oom.read_records(st_, SHARD) == []
    assert load_baseline_record(st_, SHARD, "backfill", "cuda:0") is None


def test_a_registration_for_another_shard_is_refused(tmp_path: Path) -> None:
    st_ = StateDir(tmp_path)
    register_worker(st_, "other", ME)
    os.makedirs(st_.shard_dir(SHARD))
    os.replace(st_.worker_file("other"), st_.worker_file(SHARD))
    with pytest.raises(CorruptStateError, match="names shard 'other'"):
        read_registration(st_, SHARD)


def test_the_message_names_the_file_and_the_field(tmp_path: Path) -> None:
    with pytest.raises(CorruptStateError) as err:
        _launch(StateDir(tmp_path), '{"pid": 12, "create_time": "soon"}')
    assert str(err.value) == (f"{StateDir(tmp_path).launch_file(SHARD)} is not a launch "
                              "record crawlguard wrote (create_time: Input should be a "
                              "valid number)")
    with pytest.raises(CorruptStateError, match=r"children\.0\.pid: Input should be greater"):
        _run_strict(StateDir(tmp_path), '{"pid": 1, "children": [{"name": "x", "pid": 0, '
                                        '"create_time": 1.0}]}')


def _run_strict(st_: StateDir, text: str) -> object:
    path = st_.root / "run" / "children.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return schema.read_file(runrecord.RunFile, path, "a run record")


@FUZZ
@given(json_values)
def test_fuzz_every_reader_with_arbitrary_json(tmp_path_factory: pytest.TempPathFactory,
                                               doc: Any) -> None:
    text = json.dumps(doc)
    for reader in READERS:
        read_safely(reader, state(tmp_path_factory), text)


@FUZZ
@given(st.sampled_from(sorted(READERS)), st.data())
def test_fuzz_every_reader_with_one_field_changed(tmp_path_factory: pytest.TempPathFactory,
                                                  reader: str, data: st.DataObject) -> None:
    st_ = state(tmp_path_factory)
    doc = valid_docs(st_)[reader]
    field = data.draw(st.sampled_from(sorted(doc)))
    doc[field] = data.draw(json_values)
    got = read_safely(reader, st_, json.dumps(doc))
    if isinstance(got, (Registration, LaunchRecord)):
        WorkerIdentity(got.pid, got.create_time)  # whatever reads is a possible process


# -- the schema mechanism ------------------------------------------------------------------

def test_the_schemas_are_strict_and_name_the_field() -> None:
    def check(model: type[schema.M], doc: Any) -> schema.M:
        return schema.validate(model, doc, "f.json", "a test file")

    assert check(LaunchRecord, {"pid": 3, "create_time": 2}) == LaunchRecord(pid=3,
                                                                             create_time=2.0)
    for model, doc, why in [
            (LaunchRecord, {"pid": 3}, "create_time: Field required"),
            (LaunchRecord, {"pid": 3.0, "create_time": 2}, "pid: Input should be a valid integer"),
            (LaunchRecord, {"pid": True, "create_time": 2}, "pid: Input should be a valid integer"),
            (LaunchRecord, {"pid": 3, "create_time": 2, "job": 5}, "job: Input should be a valid "
                                                                   "string"),
            (LaunchRecord, [], "the document: Input should be a valid dictionary"),
            (runrecord.RunFile, {"pid": 1, "children": [{"name": "x", "pid": "1",
                                                         "create_time": 1.0}]},
             r"children\.0\.pid: Input should be a valid integer"),
            (runrecord.RunFile, {"pid": 1, "children": ["x"]}, "children.0: Input should be"),
            (BaselineRecord, {"baseline": 1.0, "unit": "bytes"},
             "unit: Input should be 'genes' or 'tokens'"),
            (BaselineRecord, {"baseline": 1e400}, "baseline: Input should be a finite number"),
            (BaselineRecord, {"baseline": 10 ** 400}, "baseline: Input should be a valid number"),
            (BaselineRecord, {"baseline": 1.0, "samples": [1.0, float("nan")]},
             "samples.1: Input should be a finite number"),
            (Journal, {"merged": ["gauge_all_1-2.db"]}, "merged.0: Value error"),
            (oom.OomRecord, {**valid_docs(StateDir(Path("x")))["oom record"], "shard": "../x"},
             "shard: Value error, shard '../x' is not a safe name")]:
        with pytest.raises(CorruptStateError, match=why):
            check(model, doc)


def test_the_identity_refuses_what_no_process_can_have() -> None:
    for pid, created in [(0, 1.0), (-1, 1.0), (True, 1.0), (2 ** 32, 1.0), (10 ** 400, 1.0),
                         (1, float("inf")), (1, float("nan")), (1, -1.0), (1, 10 ** 400)]:
        with pytest.raises(ValueError):
            WorkerIdentity(pid, created)
    assert WorkerIdentity.from_key("0-5") is None and WorkerIdentity.from_key("１-5") is None


BAD_IDENTITIES = [{"pid": 0, "create_time": 1.0}, {"pid": "5", "create_time": 1.0},
                  {"pid": 5, "create_time": float("inf")}, {"pid": 5, "create_time": -1.0},
                  {"pid": 2 ** 32, "create_time": 1.0}, {"pid": True, "create_time": 1.0},
                  {"pid": 5}, [5, 1.0], 5]


@pytest.mark.parametrize("bad", BAD_IDENTITIES, ids=range(len(BAD_IDENTITIES)))
def test_an_identity_is_held_to_one_rule_wherever_it_is_written(bad: Any) -> None:
    """``WorkerJson`` is the one JSON form: nested (the ladder, audit lines), inherited
    (worker.json, launch.json, OOM records, the run record) and made in code
    (``WorkerIdentity``) all refuse the same identities."""
    from crawlguard.kernel.formats import ladderfile

    good = {"pid": ME.pid, "create_time": ME.create_time}
    assert WorkerIdentity.from_json(good) == ME
    assert WorkerIdentity.from_json(schema.WorkerJson.model_validate(good)) == ME
    with pytest.raises(ValueError):
        WorkerIdentity.from_json(bad)
    if isinstance(bad, dict) and {"pid", "create_time"} <= set(bad):
        with pytest.raises(ValueError):
            WorkerIdentity(bad["pid"], bad["create_time"])
    with pytest.raises(CorruptStateError, match=r"pending\.worker"):
        ladderfile.parse({"pending": {"id": "r1", "rung": "cpu", "decided_at": 1.0,
                                      "worker": bad}})
    if isinstance(bad, dict):
        for model, doc in [(LaunchRecord, {}), (Registration, {"shard": SHARD}),
                           (runrecord.Child, {"name": "w"})]:
            with pytest.raises(CorruptStateError, match=r"pid|create_time"):
                schema.validate(model, {**doc, **bad}, "f.json", "a test file")
