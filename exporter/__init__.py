"""The metrics side (``crawlguard.exporter``): what runs in and beside the build.

The build-side API is ``from crawlguard import CrawlTracker``. Layers, never
importing upwards (pyproject.toml holds them as an import contract):
``server`` (the per-host /metrics endpoint) -> the collectors -> ``tracker``
and ``instrument`` (in the build) -> the file formats and readings
(``rate``, ``baseline``, ``mpfiles``, ``vram``, ``shared``, ``catalog``).
It never imports the remediation side (``crawlguard.sidecar``).
"""
