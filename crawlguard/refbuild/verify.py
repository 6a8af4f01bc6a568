"""The lossless verdict: every gene exactly once, byte-identical to a clean run.

The clean computation is the inputs embedded in this process, in one go,
without workers, signals or devices. A shard is lossless when its outputs hold
exactly the genes of its inputs, each once, each with the clean vector's bytes,
and nothing else.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .corpus import input_dir, load_manifest, read_genes
from .store import output_device, output_dir, read_output
from .vectors import embed


@dataclass(frozen=True)
class ShardVerdict:
    shard: str
    expected: int
    """Genes in the shard's inputs."""
    present: int
    """Distinct genes found in the outputs."""
    missing: int
    duplicated: int
    """Genes found more than once (counted once each)."""
    mismatched: int
    """Genes whose vector bytes differ from the clean computation."""
    unexpected: int
    """Genes in the outputs that are in no input."""
    devices: dict[str, int]
    """Output files per device that wrote them."""

    @property
    def lossless(self) -> bool:
        return (self.present == self.expected and not self.missing and not self.duplicated
                and not self.mismatched and not self.unexpected)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lossless": self.lossless}


def verify_shard(data_dir: Path, shard: str) -> ShardVerdict:
    manifest = load_manifest(data_dir, shard)
    clean: dict[str, bytes] = {}
    for name in manifest.files:
        for gid, text in read_genes(input_dir(data_dir, shard) / name):
            clean[gid] = embed(text)
    seen: Counter[str] = Counter()
    mismatched: set[str] = set()
    devices: Counter[str] = Counter()
    # Every output file there is, not only the expected names: a stray file
    # holding genes twice must fail the verdict.
    for path in sorted(output_dir(data_dir, shard).glob("*.json")):
        found = read_output(path)
        if found is None:
            continue
        devices[output_device(path) or "?"] += 1
        for gid, vec in found:
            seen[gid] += 1
            if gid in clean and clean[gid] != vec:
                mismatched.add(gid)
    return ShardVerdict(
        shard=shard, expected=len(clean), present=sum(1 for g in seen if g in clean),
        missing=sum(1 for g in clean if g not in seen),
        duplicated=sum(1 for n in seen.values() if n > 1), mismatched=len(mismatched),
        unexpected=sum(1 for g in seen if g not in clean), devices=dict(devices))
