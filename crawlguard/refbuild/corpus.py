"""The input corpus of the reference rebuild: deterministic input files per shard.

Layout of a data directory (one per rebuild; ``crawlguard demo`` puts it in the
state dir)::

    <data>/<shard>/manifest.json       what the shard is: files, genes, batch size, profile
    <data>/<shard>/input/0000.jsonl    one gene a line: {"id": ..., "text": ...}
    <data>/<shard>/output/0000.json    written by the workers (see ``store``)
    <data>/<shard>/sim.jsonl           the spill simulator's events (see ``simdevice``)

The manifest is written last and atomically, so a corpus with a manifest is
complete; generating again with the same spec rewrites identical bytes. The
spill profile lives in the manifest so every worker of the shard (and every
relaunch) runs the same dynamics from the same command line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from crawlguard.kernel.errors import ConfigError, StateError
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.statedir import read_json, write_json_atomic

from .profiles import get_profile

_WORDS = ("gene", "vector", "shard", "batch", "dense", "sparse", "token", "context", "driver",
          "memory", "spill", "resume", "salvage", "worker", "query", "index", "page", "thread",
          "ticket", "channel", "oncall", "deploy", "incident", "runbook", "alert", "graph")


@dataclass(frozen=True)
class ShardSpec:
    shard: str
    files: int
    genes_per_file: int
    profile: str = "healthy"
    batch_size: int = 8


@dataclass(frozen=True)
class Manifest:
    shard: str
    profile: str
    batch_size: int
    files: list[str]
    genes: int


def shard_root(data_dir: Path, shard: str) -> Path:
    return Path(data_dir) / ShardName.parse(shard)


def input_dir(data_dir: Path, shard: str) -> Path:
    return shard_root(data_dir, shard) / "input"


def gene_id(shard: str, file_index: int, i: int) -> str:
    return f"{shard}:{file_index:04d}:{i:05d}"


def gene_text(shard: str, file_index: int, i: int) -> str:
    """A few pseudo-words, different for every gene, derived from its id alone."""
    digest = hashlib.sha256(gene_id(shard, file_index, i).encode("utf-8")).digest()
    words = [_WORDS[b % len(_WORDS)] for b in digest[: 6 + digest[0] % 10]]
    return f"{' '.join(words)} #{digest[:4].hex()}"


def generate(data_dir: Path, spec: ShardSpec) -> Manifest:
    """Write the inputs and the manifest of one shard (idempotent)."""
    get_profile(spec.profile)  # ConfigError naming the profiles
    for what, value in (("--files", spec.files), ("--genes", spec.genes_per_file),
                        ("--batch-size", spec.batch_size)):
        if value < 1:
            raise ConfigError(what, value, "must be >= 1")
    folder = input_dir(data_dir, spec.shard)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for f in range(spec.files):
        name = f"{f:04d}.jsonl"
        lines = [json.dumps({"id": gene_id(spec.shard, f, i),
                             "text": gene_text(spec.shard, f, i)}, sort_keys=True)
                 for i in range(spec.genes_per_file)]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        names.append(name)
    manifest = Manifest(spec.shard, spec.profile, spec.batch_size, names,
                        spec.files * spec.genes_per_file)
    write_json_atomic(shard_root(data_dir, spec.shard) / "manifest.json", asdict(manifest))
    return manifest


def load_manifest(data_dir: Path, shard: str) -> Manifest:
    path = shard_root(data_dir, shard) / "manifest.json"
    data = read_json(path)
    if data is None:
        raise StateError(f"{path} does not exist: generate the corpus of shard {shard!r} "
                         "first (python -m crawlguard.refbuild generate)")
    try:
        return Manifest(shard=str(data["shard"]), profile=str(data["profile"]),
                        batch_size=int(data["batch_size"]),
                        files=[str(f) for f in data["files"]], genes=int(data["genes"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{path} is malformed ({exc})") from exc


def read_genes(path: Path) -> list[tuple[str, str]]:
    """``(id, text)`` of every gene of one input file, in order."""
    out = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out.append((str(row["id"]), str(row["text"])))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"cannot read input {path}: {exc}") from exc
    return out


DEMO_SHARDS = (
    # Incident 1: decays after 60% of its 120 batches; caught, restarted once, finishes.
    ShardSpec("confluence", files=20, genes_per_file=48, profile="incident1"),
    # Incident 2: collapses after 25%; restarted, collapses again, finishes on CPU.
    ShardSpec("slack__eng-oncall", files=16, genes_per_file=48, profile="incident2"),
    # A healthy shard that crawlguard must leave alone.
    ShardSpec("jira", files=12, genes_per_file=40, profile="healthy"),
)
