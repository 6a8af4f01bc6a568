"""crawlguard: watch a long GPU embedding rebuild, recognise the VRAM-spill crawl, fix it.

The one import root. Its public surface, for a build::

    from crawlguard import CrawlTracker        # the build-side rate tracker
    from crawlguard import CrawlguardError     # root of every crawlguard error
    from crawlguard import resume_env          # a shard's resume overrides, for a
                                               # build with its own supervisor loop

The names resolve lazily (PEP 562): ``import crawlguard`` costs nothing, and
``crawlguard.kernel.errors`` or ``crawlguard.sidecar.resume`` do not load the
tracker with prometheus_client, psutil and filelock.

The rooms (docs/architecture.md draws the map; import contracts in
pyproject.toml hold the layers)::

    cli/          the ``crawlguard`` command, one module per subcommand
    rig/          ``up`` and ``demo``: every part of one rig in one process tree
    supervisor/   ``crawlguard run``: launches and relaunches workers
    report/       ``crawlguard report``: charts and a summary from a state dir
    doctor/       ``crawlguard doctor``: the rig's pre-flight
    refbuild/     the reference rebuild (a build that uses CrawlTracker)
    exporter      the metrics side (repository folder ``exporter/``)
    sidecar       the remediation webhook service (repository folder ``sidecar/``)
    rules         the shipped alert rules and their embedded twin (``rules/``)
    deploy        the shipped deploy configs (``deploy/``)
    kernel/       what every room stands on: errors, knobs, names, state dir
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crawlguard.exporter.tracker import CrawlTracker
    from crawlguard.kernel.errors import CrawlguardError
    from crawlguard.sidecar.resume import resume_env

__all__ = ["CrawlTracker", "CrawlguardError", "resume_env"]

_LAZY = {
    "CrawlTracker": ("crawlguard.exporter.tracker", "CrawlTracker"),
    "CrawlguardError": ("crawlguard.kernel.errors", "CrawlguardError"),
    "resume_env": ("crawlguard.sidecar.resume", "resume_env"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'crawlguard' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
