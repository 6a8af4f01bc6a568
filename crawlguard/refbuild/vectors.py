"""Deterministic "embeddings": a vector that is a function of the text alone.

The real build's promise after a CPU demotion is byte-identical vectors; the
reference rebuild keeps the same promise by construction. A vector is DIM
float32 values in [-1, 1) derived from SHAKE-256 of the UTF-8 text: the
integer arithmetic is exact in a double and the only rounding is struct's
IEEE round-to-nearest to float32, which is the same on every platform, so the
"cuda" and "cpu" paths (and every worker after a restart) produce the same bytes.
"""

from __future__ import annotations

import hashlib
import struct

DIM = 32
VECTOR_BYTES = DIM * 4
_WORDS = struct.Struct(f"<{DIM}I")
_FLOATS = struct.Struct(f"<{DIM}f")


def embed(text: str) -> bytes:
    """The vector of ``text``: DIM little-endian float32 values."""
    digest = hashlib.shake_256(text.encode("utf-8")).digest(VECTOR_BYTES)
    return _FLOATS.pack(*(w / 2**31 - 1.0 for w in _WORDS.unpack(digest)))


def embed_batch(texts: list[str]) -> list[bytes]:
    return [embed(t) for t in texts]


def unpack(vector: bytes) -> tuple[float, ...]:
    """The float values of a vector (for people and reports; compare bytes, not these)."""
    return tuple(_FLOATS.unpack(vector))
