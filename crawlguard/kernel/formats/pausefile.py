"""``sidecar.json``: the sidecar's pause switch, and its schema.

``{"paused": true, "since": 1714557600.0, "reason": "maintenance"}``: while
``paused`` the sidecar takes no rungs (alerts are still judged and recorded).
Written by ``POST /v1/pause`` and ``/v1/resume`` (durably, before they answer),
so it survives a restart of the sidecar. ``PauseSwitch`` is its one schema,
``read`` its one reader and ``write`` its one writer.
"""

from __future__ import annotations

from pathlib import Path

from crawlguard.kernel.statedir import write_json_atomic

from .schema import StateModel, Time, read_file


class PauseSwitch(StateModel):
    paused: bool
    since: Time | None = None
    reason: str = ""


def read(path: Path) -> PauseSwitch | None:
    """The switch; None when it was never written; ``CorruptStateError`` when bad."""
    return read_file(PauseSwitch, path, "a pause switch")


def write(path: Path, switch: PauseSwitch) -> None:
    """Replace the switch, durably (atomic, fsynced)."""
    write_json_atomic(path, switch.model_dump(mode="json"))
