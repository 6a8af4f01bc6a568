"""The soak's short variant (bench/soak.py --short): faults at random moments of a real
rebuild under `crawlguard up` on the real Prometheus path, and nothing is lost.

Four shards of the reference rebuild on the simulated GPU, one of each spill kind
drawn at least once (a crawl, a stall), with a worker SIGKILLed twice, an OOM death,
and the sidecar, Prometheus, Alertmanager and a standalone exporter each SIGKILLed
once, at moments drawn from the seed. What must hold, whatever the machine's speed:

- the rebuild ends (exit 0) and is lossless: every gene once, byte-identical;
- every episode (a spill, an OOM death) was acted on by a rung, unless the soak
  SIGKILLed that worker itself or its shard was complete within a few batches of
  the spill; the crawl and the stall were both among those acted on;
- every fault fired, and each server `up` owns came back after its kill;
- nothing of ours grows without bound: open fds and RSS of up, the sidecar and the
  exporter, and the number of metrics files, are no higher in the second half of the
  run than the first half allows.

Timings are printed by the bench, never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, require_binary

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")]

OURS = ("up", "sidecar", "exporter")


def test_short_soak_is_lossless_acts_on_every_episode_and_stays_bounded(tmp_path: Path) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    out = tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIX_BFM_")}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--short",
                           "--json", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    why = done.stdout[-6000:] + done.stderr[-3000:]
    assert out.exists(), why
    r = json.loads(out.read_text())

    assert r["rc"] == 0, why
    assert r["lossless"] and r["genes"] == sum(v["present"] for v in r["verdicts"]), why
    assert not r["errors"], why

    episodes = r["episodes"]
    # Not acted on, legitimately: the soak SIGKILLed that worker itself, or the shard was
    # complete within a few batches of the spill (no crawl signature could form).
    unacted = [e for e in episodes if e["acted"] is None and not e["preempted"]
               and not e["finished_first"]]
    assert not unacted, why
    alerts = {e["alertname"] for e in episodes if e["acted"] is not None}
    assert {"BFMShardCrawl", "BFMShardStalled"} <= alerts, why

    for fault in r["faults"]:
        assert fault["fired_at"] is not None, why
        assert fault["result"] in ("killed", "triggered"), why
        if fault["kind"] in ("sidecar-kill", "prometheus-kill", "alertmanager-kill"):
            assert fault["back_after"] is not None, why
    # The OOM death happened (a GPU worker took the trigger) and was acted on.
    if any(f["kind"] == "oom" for f in r["faults"]):
        assert any(e["kind"] == "oom" and e["acted"] is not None for e in episodes), why

    g = r["growth"]
    for name in OURS:
        fds, rss = g[f"fds:{name}"], g[f"rss:{name}"]
        assert fds["second_half_max"] <= fds["first_half_max"] + 8, (name, fds, why)
        assert rss["second_half_max"] <= 1.5 * rss["first_half_max"] + (32 << 20), \
            (name, rss, why)
    metrics = g["metrics_files"]
    assert metrics["second_half_max"] <= metrics["first_half_max"] + 4, (metrics, why)
