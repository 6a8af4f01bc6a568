"""The alert rules (``crawlguard.rules``): shipped for Prometheus, and their embedded twin.

``crawlguard.rules.yml`` beside this file is what Prometheus loads (``RULES_FILE``).

For a rig that runs neither Prometheus nor Alertmanager, this evaluates the
conditions of ``rules/crawlguard.rules.yml`` (BFMShardCrawl, BFMShardStalled,
BFMShardOOM, BFMShardCrawlOnCPU, BFMMetricsAbsent) over the exporter's /metrics and posts
Alertmanager webhook payloads (version "4") to the sidecar. The rules and this
package agree on the same inputs; tests/rules/ proves it with promtool.

API::

    from crawlguard.rules import EmbeddedAlerting

    alerting = EmbeddedAlerting(
        exporter_url="http://127.0.0.1:9847",   # /metrics added when no path
        sidecar_url="http://127.0.0.1:9848",    # /v1/alerts added when no path
        token=settings.endpoints.token,          # Bearer token; None sends none
        interval_s=5.0,                         # scrape + evaluate period
        clock=time.time,                        # unix seconds: PromQL's time(); must
                                                # be the clock the trackers stamp
                                                # batch starts with (wall clock)
        # keyword-only, defaults shown:
        # repeat_interval_s=120.0   re-send a still-firing, unchanged group
        # retry_initial_s=1.0, retry_max_s=60.0   failed-delivery backoff (doubling)
        # timeout_s=5.0             per HTTP request
        # deliver=ACTIONABLE (Crawl, Stalled, OOM)        the rest is only logged
    )
    report = alerting.run_once()     # one tick -> TickReport(now, scrape_ok,
                                     #   alerts, delivered, failed); never sleeps
    stop = threading.Event()
    threading.Thread(target=alerting.run_forever, args=(stop,), daemon=True).start()
    ...
    stop.set()                       # run_forever returns and closes its client

One instance is driven by one thread (``run_once`` is not reentrant).
``EmbeddedAlerting`` raises ``ConfigError`` for a bad URL or interval at
construction; after that it never raises out of ``run_forever``: scrape and
delivery failures are logged, retried, and (for scrapes) treated as absent
series, as Prometheus would. Logger: ``crawlguard.alerting``.

Alerts are grouped by shard, one notification per shard (Crawl and Stalled
of one worker together), with ``groupKey``, ``receiver`` ("crawlguard-sidecar")
and the alerts' ``job``/``instance`` labels shaped like the shipped
Prometheus + Alertmanager path, so the sidecar sees the same fingerprints on
both paths.

Modules (each usable alone, no I/O outside ``loop``):
    samples     Sample, Snapshot, parse_exposition, fingerprint
    templating  the annotation-template subset the rules use
    files       where the shipped rules file is; the runbook's base URL
    twin        the conditions (RULES), PromQL-exact
    evaluator   Evaluator: pending/firing/resolved state per alert
    dispatch    Dispatcher: grouping, repeat interval, retry backoff
    payload     build_payload: the v4 webhook JSON
    loop        EmbeddedAlerting: httpx scrape + POST
"""

from __future__ import annotations

from .dispatch import Dispatcher, Notification
from .evaluator import Alert, Evaluator
from .files import RULES_FILE, RUNBOOK_URL
from .loop import EmbeddedAlerting, TickReport
from .payload import build_payload
from .samples import Sample, Snapshot, fingerprint, parse_exposition
from .twin import ACTIONABLE, RULES, Rule

__all__ = [
    "ACTIONABLE",
    "RULES",
    "RULES_FILE",
    "RUNBOOK_URL",
    "Alert",
    "Dispatcher",
    "EmbeddedAlerting",
    "Evaluator",
    "Notification",
    "Rule",
    "Sample",
    "Snapshot",
    "TickReport",
    "build_payload",
    "fingerprint",
    "parse_exposition",
]
