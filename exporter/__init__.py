"""The metrics side (``crawlguard.exporter``): what runs in and beside the build.

The build-side API is ``from crawlguard import CrawlTracker``. Layers, never
importing upwards (pyproject.toml holds them as an import contract):
``server`` (the per-host /metrics endpoint) -> the collectors and ``tracker``
-> ``instrument`` (in the build), ``baseline`` and the files' upkeep -> ``rate``
(the pace EMA, baseline and streak) -> ``workmodel`` (what a batch should cost)
-> ``mpfiles`` and ``catalog``.
It never imports the remediation side (``crawlguard.sidecar``).
"""
