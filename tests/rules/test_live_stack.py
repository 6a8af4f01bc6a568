"""The shipped configs on the real Prometheus and Alertmanager, end to end.

A real ``crawlguard exporter`` serves a real worker process that enters the
crawl signature (VRAM from a file at 11.85/12 GB). Prometheus and
Alertmanager run with test copies generated from deploy/ (only intervals,
ports and paths changed), and a plain HTTP receiver stands in for the
sidecar. The same exporter also feeds the embedded evaluator, posting to the
same receiver under another path, so the two paths are compared on one
episode: same labels, fingerprint, groupKey and annotations.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from crawlguard.rules import EmbeddedAlerting, fingerprint
from tests.helpers import REPO, Proc, free_port, require_binary, start_exporter, wait_until

PROM_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
AM_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
TOKEN = "live-test-token"
WORKER_LABELS = {"shard": "confluence", "stage": "backfill", "device": "cuda:0", "gpu": "0"}

WORKER = """\
import threading
from crawlguard import CrawlTracker

t = CrawlTracker(shard="confluence", stage="backfill", device="cuda:0")
for _ in range(12):          # warm-up, then the baseline (~15.2 genes/s)
    t.observe(genes=64, seconds=4.2)
for _ in range(100):         # incident 1: 2.3 genes/s until the signature holds
    if t.crawling:
        break
    t.observe(genes=64, seconds=64 / 2.3)
print("CRAWLING" if t.crawling else "NOT CRAWLING", repr(t), flush=True)
threading.Event().wait(300)  # stay alive (its gauges are served) until killed
"""


@dataclass
class Receiver:
    """A stand-in sidecar: records every POST (path, Authorization, JSON)."""

    posts: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, path: str) -> list[tuple[str | None, dict[str, Any]]]:
        with self.lock:
            return [(auth, body) for p, auth, body in self.posts if p == path]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with rec.lock:
                rec.posts.append((self.path, self.headers.get("Authorization"), body))
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:  # Prometheus scrapes "the sidecar"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(b"# an empty exposition\n")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def alertmanager_config(tmp: Path, receiver_url: str) -> Path:
    cfg = yaml.safe_load(AM_CONFIG.read_text(encoding="utf-8"))
    route = next(r for r in cfg["route"]["routes"] if r["receiver"] == "crawlguard-sidecar")
    # Short waits so the test is quick; a long repeat so any second notification
    # of the episode would be a real duplicate, not a scheduled repeat.
    route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    receiver = next(r for r in cfg["receivers"] if r["name"] == "crawlguard-sidecar")
    (hook,) = receiver["webhook_configs"]
    hook["url"] = f"{receiver_url}/v1/alerts"
    token_file = tmp / "sidecar.token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def prometheus_config(tmp: Path, exporter: str, receiver: str, alertmanager: str) -> Path:
    cfg = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    cfg["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str((PROM_CONFIG.parent / f).resolve()) for f in cfg["rule_files"]]
    cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    targets = {"crawlguard-exporter": exporter, "crawlguard-sidecar": receiver}
    for job in cfg["scrape_configs"]:
        job["static_configs"][0]["targets"] = [targets[job["job_name"]]]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def rule_iterations(prom: str) -> float:
    text = httpx.get(f"{prom}/metrics", timeout=2).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "prometheus_rule_group_iterations_total" and \
                    s.labels.get("rule_group", "").endswith(";crawlguard"):
                return float(s.value)
    return 0.0


def firing(posts: list[tuple[str | None, dict[str, Any]]], status: str = "firing"
           ) -> list[tuple[str | None, dict[str, Any]]]:
    return [(a, b) for a, b in posts if b["status"] == status]


@pytest.mark.binaries
@pytest.mark.timeout(120)
def test_crawl_reaches_the_webhook_once_per_episode(
        tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    rec, rec_url = receiver
    state = tmp_path / "state"
    state.mkdir()
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 11_850_000_000,
                                          "total_bytes": 12_000_000_000}]}), encoding="utf-8")
    procs: list[Proc] = []
    try:
        exp_proc, exp_url = start_exporter(state, vram)
        procs.append(exp_proc)
        am_port, prom_port = free_port(), free_port()
        am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
        procs.append(Proc([
            alertmanager, f"--config.file={alertmanager_config(tmp_path, rec_url)}",
            f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address="]))
        prom_cfg = prometheus_config(tmp_path, exp_url.split("//")[1], rec_url.split("//")[1],
                                     f"127.0.0.1:{am_port}")
        procs.append(Proc([
            prometheus, f"--config.file={prom_cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}"]))
        wait_until(lambda: ready(am_url), 30, what=f"alertmanager ready\n{procs[1].output}")
        wait_until(lambda: ready(prom_url), 30, what=f"prometheus ready\n{procs[2].output}")

        worker = Proc([sys.executable, "-c", WORKER], cwd=REPO,
                      env={"HELIX_BFM_STATE_DIR": str(state), "CUDA_VISIBLE_DEVICES": ""})
        procs.append(worker)
        worker.wait_for_line(r"^CRAWLING", timeout=30)

        embedded = EmbeddedAlerting(exp_url, f"{rec_url}/embedded/v1/alerts", TOKEN,
                                    interval_s=1.0)
        wait_until(lambda: embedded.run_once().delivered, 15, interval=0.2,
                   what="the embedded path's notification")

        wait_until(lambda: firing(rec.of("/v1/alerts")), 45, interval=0.2,
                   what="Alertmanager's webhook notification")
        # Let Prometheus evaluate 5 more times and Alertmanager flush the group
        # several times (group_interval 1s): a duplicate would show up by then.
        seen = rule_iterations(prom_url)
        wait_until(lambda: rule_iterations(prom_url) >= seen + 5, 30,
                   what="five more rule evaluations")
        embedded.run_once()
        am_posts, emb_posts = firing(rec.of("/v1/alerts")), firing(rec.of("/embedded/v1/alerts"))
        assert len(am_posts) == 1, am_posts
        assert len(emb_posts) == 1, emb_posts
        (am_auth, am), (emb_auth, emb) = am_posts[0], emb_posts[0]
        assert am_auth == emb_auth == f"Bearer {TOKEN}"
        assert am["version"] == "4" and am["receiver"] == "crawlguard-sidecar"
        assert am["groupLabels"] == {"shard": "confluence", "pid": str(worker.popen.pid)}
        (alert,) = am["alerts"]
        assert alert["labels"]["alertname"] == "BFMShardCrawl"
        assert alert["labels"]["pid"] == str(worker.popen.pid)
        assert {k: alert["labels"][k] for k in WORKER_LABELS} == WORKER_LABELS
        assert alert["fingerprint"] == fingerprint(alert["labels"])

        # The embedded path said the same thing.
        (emb_alert,) = emb["alerts"]
        assert emb_alert["labels"] == alert["labels"]
        assert emb_alert["fingerprint"] == alert["fingerprint"]
        assert emb_alert["annotations"] == alert["annotations"]
        assert emb["groupKey"] == am["groupKey"]
        assert set(emb) == set(am) and set(emb_alert) == set(alert)
        assert emb_alert["endsAt"] == alert["endsAt"]

        # The episode ends when the worker dies (its gauges vanish): resolved, once.
        worker.stop()
        wait_until(lambda: firing(rec.of("/v1/alerts"), "resolved"), 45, interval=0.2,
                   what="Alertmanager's resolved notification")
        wait_until(lambda: embedded.run_once().delivered, 15, interval=0.2,
                   what="the embedded path's resolved notification")
        assert firing(rec.of("/embedded/v1/alerts"), "resolved")
        assert len(firing(rec.of("/v1/alerts"))) == 1

        # A relaunched worker crawls again: a new pid, so a new alert in a new group,
        # sent after group_wait (repeat_interval is 1h here), on both paths alike.
        second = Proc([sys.executable, "-c", WORKER], cwd=REPO,
                      env={"HELIX_BFM_STATE_DIR": str(state), "CUDA_VISIBLE_DEVICES": ""})
        procs.append(second)
        second.wait_for_line(r"^CRAWLING", timeout=30)
        wait_until(lambda: len(firing(rec.of("/v1/alerts"))) == 2, 30, interval=0.2,
                   what="Alertmanager's notification of the second episode")

        def embedded_sent_second() -> bool:
            embedded.run_once()
            return len(firing(rec.of("/embedded/v1/alerts"))) == 2

        wait_until(embedded_sent_second, 15, interval=0.2,
                   what="the embedded path's notification of the second episode")
        (_, am2), (_, emb2) = firing(rec.of("/v1/alerts"))[1], firing(rec.of(
            "/embedded/v1/alerts"))[1]
        assert am2["groupLabels"] == {"shard": "confluence", "pid": str(second.popen.pid)}
        assert am2["groupKey"] == emb2["groupKey"]
        assert am2["alerts"][0]["fingerprint"] == emb2["alerts"][0]["fingerprint"] != \
            alert["fingerprint"]
        embedded.close()
    finally:
        for p in reversed(procs):
            p.stop()
