"""crawlguard's metrics side: what runs in and beside the build.

Public surface::

    from exporter import CrawlTracker        # the build-side rate tracker
    from exporter import CrawlguardError     # root of every crawlguard error

The names are resolved lazily (PEP 562), so importing a submodule, or the
kernel (``crawlguard.*``) through it, does not load the tracker with
prometheus_client, psutil and filelock.

Layers (never importing upwards; the kernel ``crawlguard`` sits below all):
rate, baseline, mpfiles, vram, catalog -> tracker, collector -> server ->
alerting, refbuild. The sidecar package sits above all of these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crawlguard.errors import CrawlguardError
    from crawlguard.settings import Detection

    from .tracker import CrawlTracker

__all__ = ["CrawlTracker", "CrawlguardError", "Detection"]

_LAZY = {
    "CrawlTracker": ("exporter.tracker", "CrawlTracker"),
    "CrawlguardError": ("crawlguard.errors", "CrawlguardError"),
    "Detection": ("crawlguard.settings", "Detection"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'exporter' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
