"""A recorded rebuild, written as the tracker and the sidecar would write it.

Two shards on a 12 GB rig: ``wiki`` stays healthy; ``slack__eng-oncall``
replays incident 2 (collapse to ~0.02 genes/s with VRAM full, RESTART, crawls
again, CPU demotion) so the report has every element to draw.
"""

from __future__ import annotations

import json
from pathlib import Path

from crawlguard.exporter.rate import RateState
from crawlguard.kernel.settings import Detection

T0 = 1_781_049_600.0  # 2026-06-10 00:00:00 UTC
TOTAL = 12 * 2**30  # a 12 GB card


def _batches(start: float, pid: int, device: str, rates: list[float], genes: int = 64,
             baseline: float | None = None) -> tuple[list[dict[str, object]], float]:
    """Batch lines for one worker process; returns them and the end time."""
    state = RateState(Detection(), baseline=baseline)
    t, out = start, []
    for rate in rates:
        seconds = genes / rate
        v = state.observe(genes, seconds)
        t += seconds
        out.append({"t": round(t, 3), "stage": "backfill", "device": device,
                    "gpu": "0" if device.startswith("cuda") else "", "pid": pid,
                    "genes": genes, "seconds": seconds, "rate": v.rate, "ema": v.ema,
                    "baseline": v.baseline, "streak": v.streak, "factor": 5})
    return out, t


def write_recorded_run(root: Path) -> dict[str, float]:
    """Write the state dir; returns the times of the rungs (for assertions)."""
    shards = root / "shards"
    (shards / "wiki").mkdir(parents=True)
    (shards / "slack__eng-oncall").mkdir(parents=True)

    healthy, _ = _batches(T0, 100, "cuda:0", [15.0 + (i % 5) * 0.3 for i in range(60)])
    lines = [json.dumps(b) for b in healthy]
    (shards / "wiki" / "batches.jsonl").write_text("\n".join(lines) + "\n")

    # Worker 1: healthy, then the spill: 15 -> 0.02 genes/s.
    rates1 = [15.3] * 12 + [6.0, 2.3, 0.8, 0.2] + [0.02] * 8
    w1, t = _batches(T0, 201, "cuda:0", rates1)
    base = w1[-1]["baseline"]
    assert isinstance(base, float)
    restart_at = t + 20
    # Worker 2 (fresh CUDA context) is judged against the persisted baseline.
    w2, t = _batches(restart_at + 30, 202, "cuda:0", [15.1] * 10 + [1.0] + [0.05] * 9,
                     baseline=base)
    cpu_at = t + 20
    w3, t = _batches(cpu_at + 30, 203, "cpu", [4.2 + (i % 3) * 0.1 for i in range(30)])
    lines = [json.dumps(b) for b in w1 + w2 + w3]
    # A line cut in the middle by a crash, and a line of garbage.
    lines.insert(5, lines[5][: len(lines[5]) // 2])
    lines.insert(40, "not json at all")
    text = "\n".join(lines) + "\n" + '{"t": 1781, "stage": "backf'  # being written now
    (shards / "slack__eng-oncall" / "batches.jsonl").write_text(text)

    # The sidecar's ladder.json (sidecar/state.py, schema 1), trimmed to what matters.
    ladder = {
        "schema": 1, "shard": "slack__eng-oncall", "crawls": 2, "rung": "cpu",
        "env": {"BGEM3_DEVICE": "cpu"}, "pending": None, "episode": None,
        "history": [
            {"kind": "crawl", "at": restart_at - 1, "alertname": "BFMShardCrawl"},
            {"kind": "rung", "at": restart_at, "id": "r1", "rung": "restart",
             "source": "alert", "outcome": "signalled", "effective_at": restart_at + 25,
             "reason": "BFMShardCrawl: EMA 0.02 genes/s < baseline/5"},
            {"kind": "same_episode", "at": restart_at + 5, "rung": "restart"},
            {"kind": "rung", "at": cpu_at, "id": "r2", "rung": "cpu", "source": "alert",
             "outcome": "signalled", "reason": "BFMShardCrawl: second crawl"},
        ],
    }
    (shards / "slack__eng-oncall" / "ladder.json").write_text(json.dumps(ladder))
    # As sidecar/audit.py writes it ("at", "event"), plus a damaged line.
    (root / "audit.jsonl").write_text(json.dumps(
        {"at": restart_at, "event": "rung_done", "shard": "slack__eng-oncall", "id": "r1",
         "rung": "restart", "outcome": "signalled"}) + "\n{broken\n")

    vram = []
    for i in range(int((t - T0) / 30)):
        ts = T0 + i * 30
        if ts < cpu_at:
            # Full while a context is alive; released between kill and relaunch.
            used = 0.6e9 if restart_at < ts < restart_at + 30 else 11.85 * 2**30
        else:
            used = 884 * 2**20  # the demoted shard's GPU use
        vram.append(json.dumps({"t": ts, "gpu": "0", "used_bytes": used,
                                "total_bytes": TOTAL}))
    (root / "vram.jsonl").write_text("\n".join(vram) + "\n")
    return {"restart": restart_at, "cpu": cpu_at, "end": t}
