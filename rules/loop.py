"""The embedded alerting loop: scrape, evaluate, notify the sidecar.

One tick (``run_once``) scrapes the exporter's /metrics, evaluates the rules,
and POSTs every due notification to the sidecar in Alertmanager's webhook
format with ``Authorization: Bearer <token>``. A failed scrape is treated as
Prometheus treats it: every series is gone at once (their alerts resolve,
BFMMetricsAbsent may start). Nothing in a tick sleeps; retries of failed
deliveries are scheduled for later ticks by the ``Dispatcher``.

Only ``deliver`` alerts (``twin.ACTIONABLE``: Crawl, Stalled, OOM) go to the sidecar,
as the shipped Alertmanager route does; the informational ones are logged
when they start and end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from crawlguard.kernel.errors import ConfigError, HttpError
from crawlguard.kernel.http import HttpClient, Transport
from crawlguard.kernel.logs import Outage, get_logger

from .dispatch import REPEAT_INTERVAL_S, Dispatcher, Notification
from .evaluator import FIRING, INACTIVE, Alert, Evaluator
from .payload import build_payload
from .samples import Sample, Snapshot, parse_exposition
from .twin import ACTIONABLE, RULES, with_runbook

log = get_logger(__name__)

Clock = Callable[[], float]
EXPORTER_JOB = "crawlguard-exporter"  # the job name of deploy/prometheus/prometheus.yml


def _with_default_path(url: str, path: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(what, url, "must be an http(s) URL like http://127.0.0.1:9847")
    if parts.path in ("", "/"):
        parts = parts._replace(path=path)
    return urlunsplit(parts)


@dataclass
class TickReport:
    """What one ``run_once`` did (for logs and tests)."""

    now: float
    scrape_ok: bool
    alerts: list[Alert] = field(default_factory=list)
    delivered: list[Notification] = field(default_factory=list)
    failed: list[Notification] = field(default_factory=list)

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == FIRING]


class EmbeddedAlerting:
    """The embedded default: the shipped alert rules without Prometheus/Alertmanager.

    ``exporter_url`` and ``sidecar_url`` may be base URLs (``/metrics`` and
    ``/v1/alerts`` are added) or full ones. ``clock`` returns unix seconds
    and stamps every evaluation; the waiting in ``run_forever`` uses real time.
    """

    def __init__(self, exporter_url: str, sidecar_url: str, token: str | None,
                 interval_s: float = 5.0, clock: Clock = time.time, *,
                 repeat_interval_s: float = REPEAT_INTERVAL_S, retry_initial_s: float = 1.0,
                 retry_max_s: float = 60.0, timeout_s: float = 5.0,
                 deliver: Iterable[str] = ACTIONABLE,
                 transport: Transport | None = None,
                 runbook_url: str | None = None) -> None:
        if not interval_s > 0:
            raise ConfigError("interval_s", interval_s, "must be > 0")
        if not repeat_interval_s > 0:
            raise ConfigError("repeat_interval_s", repeat_interval_s, "must be > 0")
        if not 0 < retry_initial_s <= retry_max_s:
            raise ConfigError("retry_initial_s", retry_initial_s,
                              f"must be > 0 and <= retry_max_s ({retry_max_s})")
        self.metrics_url = _with_default_path(exporter_url, "/metrics", "exporter_url")
        self.alerts_url = _with_default_path(sidecar_url, "/v1/alerts", "sidecar_url")
        self.interval_s = interval_s
        self.clock = clock
        self.deliver = frozenset(deliver)
        # The labels Prometheus would give the exporter's series, so alerts
        # have the same label sets (and fingerprints) on both paths.
        self.target_labels = {"job": EXPORTER_JOB, "instance": urlsplit(self.metrics_url).netloc}
        # runbook_url: where this rig serves the runbook (``crawlguard up``: its sidecar's
        # /runbook); None keeps the shipped link, as Prometheus has it.
        self.evaluator = Evaluator(RULES if runbook_url is None else with_runbook(runbook_url))
        self.dispatcher = Dispatcher(repeat_interval_s=repeat_interval_s,
                                     retry_initial_s=retry_initial_s, retry_max_s=retry_max_s)
        self._client = HttpClient(token=token, timeout=timeout_s, transport=transport)
        self._scrape = Outage(log, f"scrape of {self.metrics_url}")
        self._logged_states: dict[str, str] = {}

    # -- one tick ---------------------------------------------------------
    def scrape(self) -> list[Sample] | None:
        """The exporter's samples, or None when the scrape failed."""
        try:
            answer = self._client.get(self.metrics_url)
            if not answer.ok:
                raise HttpError(self.metrics_url, f"HTTP {answer.status}")
            samples = parse_exposition(answer.text, self.target_labels)
        except (HttpError, ValueError) as exc:
            self._scrape.failed("failed, treating its series as absent: %s", exc)
            return None
        self._scrape.recovered()
        return samples

    def run_once(self) -> TickReport:
        now = self.clock()
        samples = self.scrape()
        alerts = self.evaluator.evaluate(Snapshot(samples or []), now)
        self._log_informational(alerts)
        self.dispatcher.update((a for a in alerts if a.name in self.deliver), now)
        report = TickReport(now=now, scrape_ok=samples is not None, alerts=alerts)
        for n in self.dispatcher.due(now):
            (report.delivered if self._post(n, now) else report.failed).append(n)
        return report

    def _post(self, n: Notification, now: float) -> bool:
        payload = build_payload(n.alerts, n.group_labels, external_url=self.metrics_url,
                                generator_url=self.metrics_url)
        try:
            resp = self._client.post(self.alerts_url, json=payload)
        except HttpError as exc:
            delay = self.dispatcher.failed(n, now)
            log.warning("delivery to %s failed (%s); retrying in %.0fs",
                        self.alerts_url, exc, delay)
            return False
        if resp.ok:
            self.dispatcher.delivered(n, now)
            log.info("notified %s: %s %s", self.alerts_url, payload["status"],
                     ", ".join(sorted({a.name for a in n.alerts})))
            return True
        # 4xx will not heal by itself (bad token, bad payload): back off fully.
        permanent = 400 <= resp.status < 500 and resp.status not in (408, 429)
        delay = self.dispatcher.failed(n, now, permanent=permanent)
        log.warning("sidecar %s answered %d%s; retrying in %.0fs", self.alerts_url,
                    resp.status, " (check HELIX_BFM_SIDECAR_TOKEN)"
                    if resp.status in (401, 403) else "", delay)
        return False

    def _log_informational(self, alerts: list[Alert]) -> None:
        """Alerts not delivered to the sidecar are for people: log transitions."""
        seen: dict[str, str] = {}
        for a in alerts:
            if a.name in self.deliver or a.state not in (FIRING, INACTIVE):
                continue
            seen[a.fingerprint] = a.state
            if self._logged_states.get(a.fingerprint) != a.state:
                level = logging.WARNING if a.state == FIRING else logging.INFO
                log.log(level, "%s %s: %s", a.name, "firing" if a.state == FIRING
                        else "resolved", a.annotations.get("summary", ""))
        self._logged_states = seen

    # -- forever ----------------------------------------------------------
    def run_forever(self, stop_event: threading.Event) -> None:
        """Tick every ``interval_s`` until ``stop_event`` is set. A bug in one
        tick is logged and the loop goes on: missing crawls is worse."""
        while not stop_event.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception:
                log.exception("embedded alerting tick failed")
            stop_event.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        self.close()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EmbeddedAlerting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
