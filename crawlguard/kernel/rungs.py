"""The escalation ladder's rungs: the one table (name, level, effect, label).

Every other module derives what it says about rungs from ``TABLE``: the
sidecar's ladder rules (``crawlguard.sidecar.ladder``: which rung is next,
what a rung does to the resume environment), its API schemas and metrics,
the ladder file's schema (``crawlguard.kernel.formats.ladderfile``), the
restart verification (``crawlguard.sidecar.verify``), HELIX_BFM_CRAWL_ACTION's
values (``crawlguard.kernel.settings.ACTIONS``), the command line's choices and
the report's markers. tests/kernel/test_rungs.py fails when a rung's name is
written as a literal anywhere else.

Every rung taken stops the shard's worker so that its supervisor relaunches
it (``crawlguard.sidecar.actions``): a fresh process with a fresh CUDA
context. A rung whose effect names a ``device`` first sets the shard's device
variable (HELIX_BFM_DEVICE_VAR, ``BGEM3_DEVICE`` by default) to it in the
resume environment, which every supervisor loop applies to the relaunch
(``crawlguard.sidecar.resume``). A shard's rung is the highest it has taken.

Standard library only: the ladder file's schema, and so
``crawlguard.sidecar.resume`` in a build's own supervisor loop, import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal


@dataclass(frozen=True)
class Effect:
    """What taking a rung does besides stopping the worker."""

    device: str | None = None
    """The device the shard's device variable is set to in its resume environment;
    None: the environment is left as it is."""

    def env(self, device_var: str) -> dict[str, str]:
        """The resume overrides this effect adds."""
        return {} if self.device is None else {device_var: self.device}


@dataclass(frozen=True)
class Rung:
    name: str
    level: int
    effect: Effect
    label: str
    """What the rung does, in a few words, for people (help, report, metrics)."""


TABLE: tuple[Rung, ...] = (
    Rung("none", 0, Effect(), "no rung taken: the shard runs as launched"),
    Rung("restart", 1, Effect(),
         "stop the worker; its supervisor relaunches it with a fresh CUDA context"),
    Rung("cpu", 2, Effect(device="cpu"),
         "set the shard's device variable to cpu, then restart the worker"),
)
NONE, RESTART, CPU = TABLE
"""By role: the bottom (nothing taken), the rung restart verification judges
(``crawlguard.sidecar.verify``) and the demotion HELIX_BFM_CRAWL_ACTION=cpu takes."""
TOP = TABLE[-1]
BY_NAME: Mapping[str, Rung] = {r.name: r for r in TABLE}
NAMES: tuple[str, ...] = tuple(BY_NAME)
TAKEN: tuple[Rung, ...] = tuple(r for r in TABLE if r.level > NONE.level)
"""The rungs that can be taken (everything above the bottom)."""
TAKEN_NAMES: tuple[str, ...] = tuple(r.name for r in TAKEN)
NEXT = "next"
"""A manual request for the rung above the shard's (the top one again at the top)."""
MANUAL: tuple[str, ...] = (*TAKEN_NAMES, NEXT)

# What pydantic validates (and the OpenAPI schema lists as an enum): a Literal of
# the table's names, built from it at run time; to mypy these are plain strings.
if TYPE_CHECKING:
    RungName = str
    TakenRungName = str
    ManualRungName = str
else:
    RungName = Literal[NAMES]
    TakenRungName = Literal[TAKEN_NAMES]
    ManualRungName = Literal[MANUAL]


def named(name: str) -> Rung:
    """The rung called ``name``; ``ValueError`` for a name the table does not have."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown rung {name!r} (rungs: {', '.join(NAMES)})") from None


def above(name: str) -> Rung | None:
    """The rung one level above ``name``'s; None at the top."""
    level = named(name).level
    return next((r for r in TABLE if r.level == level + 1), None)


def highest(a: str, b: str) -> str:
    """The higher of two rungs, by name."""
    return a if named(a).level >= named(b).level else b


def levels_help() -> str:
    """``0 none, 1 restart, 2 cpu``: the levels as the rung gauge's help states them."""
    return ", ".join(f"{r.level} {r.name}" for r in TABLE)
