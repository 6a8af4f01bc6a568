"""crawlguard's metrics side: what runs in and beside the build.

Public surface::

    from exporter import CrawlTracker        # the build-side rate tracker
    from exporter import CrawlguardError     # root of every crawlguard error

Layers (never importing upwards): errors, settings -> statedir, workers ->
rate, baseline, mpfiles -> tracker | vram, collector -> server, alerting.
The sidecar package sits above all of these.
"""

from __future__ import annotations

from .errors import CrawlguardError
from .settings import Detection
from .tracker import CrawlTracker

__all__ = ["CrawlTracker", "CrawlguardError", "Detection"]
