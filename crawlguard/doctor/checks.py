"""The checks of ``crawlguard doctor``: each one ok, warn or fail, with one line of advice.

``fail`` is kept for what stops crawlguard from seeing or fixing a crawl (the
state dir, NVML when it is the VRAM source, a configured Prometheus without
our rules, a sidecar that rejects the token); ``warn`` for what makes the
crawl likelier or the evidence thinner. Everything a check reads comes in
through ``CheckInputs``, so tests fake the OS and NVML and run real servers.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml

from crawlguard.gpu.shared import SharedSource, resolve_spec, shared_source_from_spec
from crawlguard.gpu.vram import VramSource, source_from_spec
from crawlguard.kernel import private, processes
from crawlguard.kernel.errors import CrawlguardError, SidecarRefused
from crawlguard.kernel.settings import Preflight, Settings
from crawlguard.kernel.statedir import StateDir
from crawlguard.sidecar.client import SidecarClient

from .probes import Http, NvmlProbe, Pynvml

Status = Literal["ok", "warn", "fail"]
FALLBACK_DRIVER = (536, 40)
"""The first Windows driver that spills a full context into system memory."""
POLICY_DRIVER = (546, 1)
"""The first Windows driver with the "CUDA - Sysmem Fallback Policy" setting."""
SMALL_GPU_GIB = 12.0
"""The incidents' card; at or below it the backfill stage is the one that spills."""
OUR_ALERTS = ("BFMShardCrawl", "BFMShardStalled")
PRIORITY_CLASSES = {0x40: "IDLE", 0x4000: "BELOW_NORMAL", 0x20: "NORMAL",
                    0x8000: "ABOVE_NORMAL", 0x80: "HIGH", 0x100: "REALTIME"}
"""Windows' priority classes (GetPriorityClass) by value."""
POLICY_PATH = ("NVIDIA Control Panel > Manage 3D settings > Program Settings (python.exe) "
               "or Global Settings > CUDA - Sysmem Fallback Policy")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    summary: str
    advice: str = ""

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "summary": self.summary,
                "advice": self.advice}


@dataclass
class CheckInputs:
    """What the checks look at; defaults are the real machine."""

    settings: Settings
    preflight: Preflight = field(default_factory=Preflight)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    platform: str = sys.platform
    nvml: NvmlProbe = field(default_factory=Pynvml)
    http: Http = field(default_factory=Http)
    vram: Callable[[str], VramSource] = source_from_spec
    shared: Callable[[str, str], SharedSource | None] = shared_source_from_spec
    priority: Callable[[], int | None] = processes.priority_class


def _version(text: str) -> tuple[int, int] | None:
    m = re.match(r"^\s*(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_driver(rig: CheckInputs) -> Check:
    try:
        text = rig.nvml.driver_version()
    except CrawlguardError as exc:
        return Check("driver", "warn", f"driver version unknown ({exc})",
                     "run nvidia-smi to see the driver; crawlguard cannot judge it without NVML")
    if rig.platform != "win32":
        return Check("driver", "ok", f"{text}: Linux drivers do not spill to system memory "
                     "(a full GPU raises out-of-memory instead)")
    version = _version(text)
    if version is None:
        return Check("driver", "warn", f"unrecognised driver version {text!r}",
                     "check it in nvidia-smi against 536.40 and 546.01")
    if version < FALLBACK_DRIVER:
        return Check("driver", "ok", f"{text}: older than 536.40, no sysmem fallback "
                     "(a full GPU raises out-of-memory, it does not crawl)")
    if version < POLICY_DRIVER:
        return Check("driver", "warn", f"{text}: sysmem fallback is on (>= 536.40) and cannot "
                     "be switched off (< 546.01)",
                     "install driver 546.01 or newer to be able to choose the fallback policy")
    return Check("driver", "ok", f"{text}: sysmem fallback exists (>= 536.40) and its policy "
                 "can be set (>= 546.01)")


def check_fallback_policy(rig: CheckInputs) -> Check:
    if rig.platform != "win32":
        return Check("sysmem-fallback", "ok", "not applicable: only Windows (WDDM) drivers "
                     "fall back to system memory")
    # The setting lives in the driver's profile database (NVAPI DRS), which neither
    # NVML nor any documented registry value exposes.
    return Check("sysmem-fallback", "warn", "the CUDA sysmem fallback policy cannot be read "
                 "from here", f"check it in {POLICY_PATH}: 'Prefer No Sysmem Fallback' makes a "
                 "full GPU raise out-of-memory instead of crawling")


def check_alloc_conf(rig: CheckInputs) -> Check:
    raw = rig.env.get("PYTORCH_CUDA_ALLOC_CONF", "")
    if not raw.strip():
        return Check("alloc-conf", "ok", "PYTORCH_CUDA_ALLOC_CONF is not set")
    opts: dict[str, str] = {}
    for part in raw.split(","):
        key, _, value = part.partition(":")
        opts[key.strip().lower()] = value.strip().lower()
    if opts.get("backend") == "cudamallocasync":
        return Check("alloc-conf", "warn", f"PYTORCH_CUDA_ALLOC_CONF={raw}: cudaMallocAsync "
                     "raises out-of-memory instead of spilling",
                     "expect crashes, not crawls: the supervisor relaunches them, but the "
                     "restart ladder is not what helps; drop backend:cudaMallocAsync")
    if opts.get("expandable_segments") == "true" and rig.platform == "win32":
        return Check("alloc-conf", "warn", f"PYTORCH_CUDA_ALLOC_CONF={raw}: expandable_segments "
                     "is not supported on Windows (torch ignores it with a warning)",
                     "remove expandable_segments:True; it does not reduce fragmentation here")
    return Check("alloc-conf", "ok", f"PYTORCH_CUDA_ALLOC_CONF={raw}")


def check_nvml(rig: CheckInputs) -> Check:
    try:
        gpus = rig.nvml.gpus()
    except CrawlguardError as exc:
        if rig.settings.vram_source != "nvml":
            return Check("nvml", "ok", f"unreachable ({exc}), and not used: "
                         f"HELIX_BFM_VRAM_SOURCE={rig.settings.vram_source}")
        return Check("nvml", "fail", f"unreachable: {exc}",
                     "install the NVIDIA driver and nvidia-ml-py, or set HELIX_BFM_VRAM_SOURCE"
                     "=file:PATH; without a VRAM reading no crawl can be confirmed")
    names = ", ".join(f"{g.index}: {g.name}" for g in gpus) or "no GPU"
    return Check("nvml", "ok", f"reachable ({names})")


def check_vram_size(rig: CheckInputs) -> Check:
    knob = rig.settings.remediation.cpu_backfill_max_vram_gb
    try:
        gpus = rig.vram(rig.settings.vram_source).read()
    except CrawlguardError as exc:
        return Check("vram-size", "warn", f"dedicated VRAM unknown ({exc})",
                     "the small-rig policy (HELIX_BFM_CPU_BACKFILL_MAX_VRAM_GB) cannot apply")
    if not gpus:
        return Check("vram-size", "warn", "the VRAM source lists no GPU")
    smallest = min(gpus, key=lambda g: g.total_bytes)
    gib = smallest.total_bytes / 2**30
    if knob > 0:
        where = "on CPU (small-rig policy)" if gib <= knob else "on the GPU"
        return Check("vram-size", "ok", f"GPU {smallest.index}: {gib:.1f} GiB dedicated, "
                     f"HELIX_BFM_CPU_BACKFILL_MAX_VRAM_GB={knob:g}: backfill starts {where}")
    if gib <= SMALL_GPU_GIB:
        return Check("vram-size", "warn", f"GPU {smallest.index}: {gib:.1f} GiB dedicated, "
                     "the incidents' size", f"set HELIX_BFM_CPU_BACKFILL_MAX_VRAM_GB={gib:.0f} "
                     "to start the backfill on CPU instead of waiting for the crawl")
    return Check("vram-size", "ok", f"GPU {smallest.index}: {gib:.1f} GiB dedicated")


def check_shared_source(rig: CheckInputs) -> Check:
    spec = resolve_spec(rig.settings.shared_source, rig.platform)
    url = rig.preflight.windows_exporter_url
    if url:
        try:
            text = rig.http.get(f"{url}/metrics").text
        except CrawlguardError as exc:
            return Check("shared-memory", "warn", f"windows_exporter unreachable ({exc})",
                         "start windows_exporter with --collectors.enabled=...,gpu")
        if "windows_gpu_process_memory_shared_bytes" in text:
            return Check("shared-memory", "ok", f"windows_exporter at {url} exports "
                         "windows_gpu_process_memory_shared_bytes")
        if spec == "off":
            return Check("shared-memory", "warn", f"windows_exporter at {url} has no gpu "
                         "collector", "add gpu to its --collectors.enabled list")
    if spec == "off":
        if rig.platform == "win32":
            return Check("shared-memory", "warn", "HELIX_BFM_SHARED_SOURCE=off: the spill is "
                         "seen only through NVML's device-wide ratio",
                         "unset HELIX_BFM_SHARED_SOURCE (auto reads PDH) for direct evidence")
        return Check("shared-memory", "ok", "not applicable: only Windows counts a process's "
                     "shared GPU memory")
    source = None
    try:
        source = rig.shared(spec, rig.platform)
        if source is None:
            return Check("shared-memory", "ok", f"source {spec}: off")
        source.read([])
    except CrawlguardError as exc:
        return Check("shared-memory", "warn", f"source {spec} unreachable ({exc})",
                     "on Windows: pip install pywin32, and check that Performance Monitor shows "
                     "'GPU Process Memory'; or run windows_exporter with the gpu collector")
    finally:
        close = getattr(source, "close", None)
        if callable(close):
            close()
    return Check("shared-memory", "ok", f"source {source.name} answers")


def _rule_names(groups: Iterable[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for group in groups:
        for rule in group.get("rules", []) if isinstance(group, dict) else []:
            if isinstance(rule, dict) and isinstance(rule.get("name"), str):
                out[rule["name"]] = str(rule.get("health", "unknown"))
    return out


def check_prometheus(rig: CheckInputs) -> Check:
    url = rig.preflight.prometheus_url
    if not url:
        return Check("prometheus", "ok", "not configured (HELIX_BFM_PROMETHEUS_URL): skipped")
    try:
        data = rig.http.json(f"{url}/api/v1/rules")
        rules = _rule_names(data["data"]["groups"])
    except (CrawlguardError, KeyError, TypeError) as exc:
        return Check("prometheus", "fail", f"{url} unreachable or not Prometheus ({exc})",
                     "start Prometheus, or fix HELIX_BFM_PROMETHEUS_URL")
    missing = [name for name in OUR_ALERTS if name not in rules]
    if missing:
        return Check("prometheus", "fail", f"{url} has not loaded {', '.join(missing)}",
                     "add rules/crawlguard.rules.yml to rule_files and reload Prometheus "
                     "(POST /-/reload or SIGHUP)")
    bad = [f"{n} ({rules[n]})" for n in OUR_ALERTS if rules[n] not in ("ok", "unknown")]
    if bad:
        return Check("prometheus", "fail", f"{url}: rules failing to evaluate: "
                     f"{', '.join(bad)}", "see Prometheus' /rules page for the error")
    return Check("prometheus", "ok", f"{url} has loaded {', '.join(OUR_ALERTS)}")


def _routes(route: Any) -> Iterable[dict[str, Any]]:
    if isinstance(route, dict):
        yield route
        for child in route.get("routes", []) or []:
            yield from _routes(child)


def check_alertmanager(rig: CheckInputs) -> Check:
    url = rig.preflight.alertmanager_url
    if not url:
        return Check("alertmanager", "ok", "not configured (HELIX_BFM_ALERTMANAGER_URL): "
                     "skipped")
    try:
        status = rig.http.json(f"{url}/api/v2/status")
        config = yaml.safe_load(status["config"]["original"])
    except (CrawlguardError, KeyError, TypeError, yaml.YAMLError) as exc:
        return Check("alertmanager", "fail", f"{url} unreachable or not Alertmanager ({exc})",
                     "start Alertmanager, or fix HELIX_BFM_ALERTMANAGER_URL")
    hooks = {r.get("name"): [h.get("url", "") for h in r.get("webhook_configs", []) or []]
             for r in (config or {}).get("receivers", []) or [] if isinstance(r, dict)}
    for route in _routes((config or {}).get("route")):
        urls = [u for u in hooks.get(route.get("receiver"), []) if str(u).endswith("/v1/alerts")]
        matchers = " ".join(str(m) for m in route.get("matchers", []) or [])
        matchers += " " + " ".join(str(v) for key in ("match", "match_re")
                                   for v in (route.get(key) or {}).values())
        if urls and all(name in matchers for name in OUR_ALERTS):
            return Check("alertmanager", "ok", f"{url} routes {', '.join(OUR_ALERTS)} to "
                         f"{urls[0]}")
    return Check("alertmanager", "fail", f"{url} has no route of {', '.join(OUR_ALERTS)} to a "
                 "webhook .../v1/alerts", "load deploy/alertmanager/alertmanager.yml (with the "
                 "sidecar's URL and token file) and reload Alertmanager")


def check_sidecar(rig: CheckInputs) -> Check:
    ep = rig.settings.endpoints
    with SidecarClient.from_endpoints(ep, timeout=rig.http.timeout) as client:
        try:
            client.health()
        except CrawlguardError as exc:
            return Check("sidecar", "warn", f"{ep.sidecar_url} not answering ({exc})",
                         "start it (crawlguard sidecar, the systemd unit or the Scheduled "
                         "Task); crawlguard up starts its own")
        if not ep.token:
            return Check("sidecar", "warn", f"{ep.sidecar_url} healthy, but no token is set",
                         "set HELIX_BFM_SIDECAR_TOKEN or HELIX_BFM_SIDECAR_TOKEN_FILE, as "
                         "the sidecar's Alertmanager route does")
        try:
            client.shards()
        except SidecarRefused as exc:
            return Check("sidecar", "fail", f"{ep.sidecar_url} refuses the token "
                         f"(HTTP {exc.status})", "use the token the sidecar was started with")
        except CrawlguardError as exc:
            return Check("sidecar", "warn", f"{ep.sidecar_url}: {exc}")
    return Check("sidecar", "ok", f"{ep.sidecar_url} healthy and accepts the token")


def check_state_dir(rig: CheckInputs) -> Check:
    state = StateDir(rig.settings.state_dir)
    try:
        state.ensure()
        fd, path = tempfile.mkstemp(prefix=".doctor-", dir=state.root)
        os.close(fd)
        os.remove(path)
    except (OSError, CrawlguardError) as exc:
        return Check("state-dir", "fail", f"{state.root} is not writable ({exc})",
                     "point HELIX_BFM_STATE_DIR at a local directory this user can write")
    try:
        state.check_private()
    except CrawlguardError as exc:
        summary, _, fix = str(exc).partition(" Fix: ")
        return Check("state-dir", "fail", summary, fix)
    return Check("state-dir", "ok", f"{state.root.resolve()} is writable, and by this user only")


def check_token_file(rig: CheckInputs) -> Check:
    path = rig.env.get("HELIX_BFM_SIDECAR_TOKEN_FILE", "").strip()
    if not path:
        return Check("token-file", "ok", "no HELIX_BFM_SIDECAR_TOKEN_FILE: skipped")
    try:
        others = private.others_may_read(Path(path))
    except OSError as exc:
        return Check("token-file", "warn", f"{path}: cannot tell who may read it "
                     f"({exc.strerror or exc})")
    if others:
        return Check("token-file", "warn", f"{path}: {'; '.join(others)}",
                     "run deploy/windows/setup.ps1 (Windows) or chmod 600 it: whoever reads "
                     "the token can force rungs")
    return Check("token-file", "ok", f"{path} is readable by this user only")


def check_priority(rig: CheckInputs) -> Check:
    if rig.platform != "win32":
        return Check("priority", "ok", "not applicable: Windows Scheduled Tasks only")
    value = rig.priority()
    name = PRIORITY_CLASSES.get(value or 0)
    if value is None or name is None:
        return Check("priority", "ok", "priority class unknown")
    if name in ("IDLE", "BELOW_NORMAL"):
        return Check("priority", "warn", f"crawlguard runs at {name}_PRIORITY_CLASS (a "
                     "Scheduled Task's default priority 7 is BELOW_NORMAL)",
                     "register the task with deploy/windows/register-task.ps1 (-Priority 4): "
                     "workers start at NORMAL, but a slower supervisor and sidecar, and a "
                     "worker's inherited I/O priority, would still differ from a run by hand")
    return Check("priority", "ok", f"{name}_PRIORITY_CLASS")


CHECKS: tuple[tuple[str, Callable[[CheckInputs], Check]], ...] = (
    ("driver", check_driver), ("sysmem-fallback", check_fallback_policy),
    ("alloc-conf", check_alloc_conf), ("nvml", check_nvml), ("vram-size", check_vram_size),
    ("shared-memory", check_shared_source), ("prometheus", check_prometheus),
    ("alertmanager", check_alertmanager), ("sidecar", check_sidecar),
    ("state-dir", check_state_dir), ("token-file", check_token_file),
    ("priority", check_priority))
SELF_STARTED = frozenset({"sidecar", "prometheus", "alertmanager"})
"""What ``crawlguard up`` starts itself: not checked before it has."""


def run_checks(rig: CheckInputs, skip: Iterable[str] = ()) -> list[Check]:
    skipped = set(skip)
    return [check(rig) for name, check in CHECKS if name not in skipped]

def render(checks: Sequence[Check], out: TextIO, prefix: str = "") -> None:
    width = max((len(c.name) for c in checks), default=0)
    for c in checks:
        print(f"{prefix}{c.status:<4}  {c.name:<{width}}  {c.summary}", file=out)
        if c.advice:
            print(f"{prefix}{'':<4}  {'':<{width}}  -> {c.advice}", file=out)
