"""Spill profiles: how a simulated GPU worker's VRAM and speed evolve.

The numbers are the incidents' (sidecar/runbook.md; docs/architecture.md, "The reference
rebuild", names the profiles), with time scaled so a demo runs in
about a minute:

- a healthy GPU batch runs at ``Timing.gpu_rate`` = 15.3 genes/s (incident 1's
  rate before the spill) x ``time_scale``;
- VRAM of a fresh CUDA context starts at the model's size and grows with every
  batch (allocator caching, fragmentation). A spilling profile reaches the
  level incident 1 pinned at, 11.85 of 12 GB, after ``fill_fraction`` of the
  shard's batches; from then on the context has spilled into shared memory
  and every batch is slower, by ``spilled_rate(k)`` for the k-th batch after
  the spill: incident 1 decays from 1.0 to 2.3/15.3, incident 2 collapses to
  0.02/15.3 at once (a batch that would take minutes: only the stall rule
  sees it);
- a fresh process starts with an empty context, so a restart "un-crawls" —
  until the new context fills up again, which incident 2's does;
- the CPU never spills; it is slower (``cpu_factor``) and still holds a small
  CUDA context on the GPU (the incident's 884 MiB after demotion).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from crawlguard.kernel.errors import ConfigError

GIB = 1 << 30
MIB = 1 << 20

INCIDENT1_FLOOR = 2.3 / 15.3
"""Incident 1: confluence decayed from 15.3 to 2.3 genes/s."""
INCIDENT2_FLOOR = 0.02 / 15.3
"""Incident 2: slack__eng-oncall collapsed to ~0.02 genes/s."""


@dataclass(frozen=True)
class GpuModel:
    total_bytes: int = 12 * GIB
    desktop_bytes: int = 150 * MIB
    """Held by the display and other processes (WDDM desktop), never freed."""
    model_bytes: int = 2252 * MIB
    """A fresh worker's context right after loading BGE-M3 and SPLADE."""
    spill_bytes: int = 12134 * MIB
    """Device-wide use at which the driver starts spilling: incident 1's 11.85 GB."""
    healthy_bytes: int = 7680 * MIB
    """Where a worker that does not spill levels off."""
    cpu_context_bytes: int = 884 * MIB
    """What a CPU-demoted worker still holds on the GPU (the incident's 884 MiB)."""
    spilled_shared_bytes: int = 1536 * MIB
    """Shared (system) GPU memory a spilled context holds, as Windows counts it:
    what crossed over when the dedicated VRAM filled. A fresh context holds none."""

    @property
    def worker_spill_bytes(self) -> int:
        return self.spill_bytes - self.desktop_bytes


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    fill_fraction: float | None
    """Share of the shard's batches a fresh GPU context runs before it spills;
    None: it never spills."""
    spilled_rate: Callable[[int], float]
    """Speed multiplier of the k-th batch (k = 0, 1, ...) after the spill began."""


def _decay(k: int) -> float:
    # Exponential decay onto incident 1's floor within a handful of batches.
    return INCIDENT1_FLOOR + (1.0 - INCIDENT1_FLOOR) * math.exp(-(k + 1) / 1.5)


def _collapse(k: int) -> float:
    return INCIDENT2_FLOOR


def _never(k: int) -> float:
    return 1.0


PROFILES: dict[str, Profile] = {
    "healthy": Profile("healthy", "VRAM levels off well below full; never spills", None, _never),
    "incident1": Profile(
        "incident1", "fills VRAM after 60% of the shard, then decays 15.3 -> 2.3 genes/s; "
        "a fresh context does not fill again before the shard ends", 0.6, _decay),
    "incident2": Profile(
        "incident2", "fills VRAM after 25% of the shard, then collapses to ~0.02 genes/s; "
        "a fresh context fills and collapses again", 0.25, _collapse),
}


@dataclass(frozen=True)
class Timing:
    time_scale: float = 10.0
    """Simulated speed-up over the incidents' real rates."""
    cpu_factor: float = 0.5
    """CPU speed relative to a healthy GPU (kept high so the demo stays short)."""
    load_seconds: float = 1.5
    """Model load of a fresh worker, in incident seconds (scaled like the rest)."""
    jitter: float = 0.04
    """Relative batch-to-batch noise (deterministic per batch)."""

    @property
    def gpu_rate(self) -> float:
        return 15.3 * self.time_scale

    @property
    def cpu_rate(self) -> float:
        return self.gpu_rate * self.cpu_factor


def get_profile(name: str) -> Profile:
    """The profile called ``name``; ``ConfigError`` (a bad argument) for an unknown one."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError("profile", name, f"one of {', '.join(PROFILES)}") from None


def fill_batches(profile: Profile, total_batches: int) -> int | None:
    """GPU batches a fresh context of ``profile`` runs before it spills."""
    if profile.fill_fraction is None:
        return None
    return max(1, round(profile.fill_fraction * total_batches))
