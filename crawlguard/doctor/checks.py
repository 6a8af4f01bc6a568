"""The checks of ``crawlguard doctor``: each one ok, warn, fail or skip, with one line of
advice.

``fail`` is kept for what stops crawlguard from seeing or fixing a crawl (the
state dir, NVML when it is the VRAM source, no spill-evidence source at all, a
configured Prometheus without our rules, an Alertmanager that does not route
our alerts to the sidecar, a sidecar that rejects the token); ``warn`` for what
makes the crawl likelier or the evidence thinner; ``skip`` for a check that
does not apply here (another platform, a part this rig does not run). Everything
a check reads comes in through ``CheckInputs``, so tests fake the OS and NVML and
run real servers.

The checks only look: nothing here creates a file or a folder (the state dir
that does not exist yet is judged by the folder it would be created in).
Which alerts must be loaded and routed is read from the shipped rules and the
shipped Alertmanager route (``kernel.promconfig``), never listed here.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml

from crawlguard import deploy
from crawlguard.gpu.shared import SharedSource, resolve_spec, shared_source_from_spec
from crawlguard.gpu.vram import VramSource, source_from_spec
from crawlguard.kernel import private, processes, promconfig
from crawlguard.kernel.errors import CrawlguardError, SidecarRefused
from crawlguard.kernel.settings import Preflight, Settings, unknown_knob_lines
from crawlguard.kernel.statedir import StateDir
from crawlguard.rules.files import RULES_FILE
from crawlguard.sidecar.client import SidecarClient

from .probes import Http, NvmlProbe, Pynvml

Status = Literal["ok", "warn", "fail", "skip"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail", "skip")
FALLBACK_DRIVER = (536, 40)
"""The first Windows driver that spills a full context into system memory."""
POLICY_DRIVER = (546, 1)
"""The first Windows driver with the "CUDA - Sysmem Fallback Policy" setting."""
SMALL_GPU_GIB = 12.0
"""The incidents' card; at or below it the backfill stage is the one that spills."""
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
        return Check("sysmem-fallback", "skip", "not applicable: only Windows (WDDM) drivers "
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
            return Check("nvml", "skip", f"unreachable ({exc}), and not used: "
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
        return Check("shared-memory", "skip", "not applicable: only Windows counts a "
                     "process's shared GPU memory")
    source = None
    try:
        source = rig.shared(spec, rig.platform)
        if source is None:
            return Check("shared-memory", "skip", f"source {spec}: off")
        source.read([])
    except CrawlguardError as exc:
        return Check("shared-memory", "warn", f"source {spec} unreachable ({exc})",
                     "on Windows: pip install pywin32, and check that Performance Monitor shows "
                     "'GPU Process Memory'; or run windows_exporter with the gpu collector")
    finally:
        _close(source)
    return Check("shared-memory", "ok", f"source {source.name} answers")


def _loaded(groups: Any) -> dict[str, str]:
    """Rule name -> health, of what a Prometheus answers on /api/v1/rules."""
    out: dict[str, str] = {}
    for group in _list(groups):
        for rule in _list(group.get("rules")) if isinstance(group, dict) else []:
            if isinstance(rule, dict) and isinstance(rule.get("name"), str):
                out[rule["name"]] = str(rule.get("health", "unknown"))
    return out


def _names(names: Iterable[str]) -> str:
    return ", ".join(names)


def check_prometheus(rig: CheckInputs) -> Check:
    """Every rule of the shipped rules file loaded and healthy, and an Alertmanager to
    send the alerts to."""
    url = rig.preflight.prometheus_url
    if not url:
        return Check("prometheus", "skip", "not configured (HELIX_BFM_PROMETHEUS_URL)")
    try:
        groups = promconfig.rule_groups([RULES_FILE])
    except CrawlguardError as exc:
        return Check("prometheus", "fail", f"the shipped rules are unreadable ({exc})",
                     "reinstall crawlguard")
    try:
        data = rig.http.json(f"{url}/api/v1/rules")
        loaded = _loaded(data["data"]["groups"])
        managers = [str(m.get("url", "?")) for m in _list(rig.http.json(
            f"{url}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]) if isinstance(m, dict)]
    except (CrawlguardError, KeyError, TypeError) as exc:
        return Check("prometheus", "fail", f"{url} unreachable or not Prometheus ({exc})",
                     "start Prometheus, or fix HELIX_BFM_PROMETHEUS_URL")
    wanted = promconfig.rule_names(groups)
    alerts = [a.name for a in promconfig.alert_rules(groups)]
    missing = [name for name in wanted if name not in loaded]
    if missing:
        lacking = sorted({wanted[name] for name in missing})
        shown = [n for n in missing if n in alerts] or missing  # alerts say the most
        return Check("prometheus", "fail", f"{url} has not loaded {_names(shown)} (rule "
                     f"group{'s' if len(lacking) > 1 else ''} {_names(lacking)} of "
                     f"{RULES_FILE.name})",
                     f"add {RULES_FILE} to rule_files (all of it) and reload Prometheus "
                     "(POST /-/reload or SIGHUP)")
    bad = [f"{n} ({loaded[n]})" for n in wanted if loaded[n] not in ("ok", "unknown")]
    if bad:
        return Check("prometheus", "fail", f"{url}: rules failing to evaluate: "
                     f"{_names(bad)}", "see Prometheus' /rules page for the error")
    if not managers:
        return Check("prometheus", "fail", f"{url} has the rules but sends its alerts to no "
                     "Alertmanager", "add the Alertmanager under alerting: alertmanagers in "
                     "prometheus.yml (deploy/prometheus/prometheus.yml) and reload")
    return Check("prometheus", "ok", f"{url} has loaded every rule of {RULES_FILE.name} "
                 f"({_names(alerts)}) and sends alerts to {managers[0]}")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _receivers(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for r in _list(config.get("receivers")) if isinstance(r, dict)]


def _webhooks(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Receiver -> the URLs of its webhooks; a receiver without notifiers maps to []."""
    return {str(r.get("name")): [str(h.get("url", "")) for h in _list(r.get("webhook_configs"))
                                 if isinstance(h, dict)] for r in _receivers(config)}


def _notifies(config: Mapping[str, Any], receiver: str) -> bool:
    """Whether ``receiver`` has any notifier (email, Slack, a webhook ...)."""
    return any(str(k).endswith("_configs") and v for r in _receivers(config)
               if r.get("name") == receiver for k, v in r.items())


def check_alertmanager(rig: CheckInputs) -> Check:
    """Every alert of the shipped rules routed where the shipped route sends it: the
    sidecar's alerts to a webhook .../v1/alerts (else fail), the others to someone."""
    url = rig.preflight.alertmanager_url
    if not url:
        return Check("alertmanager", "skip", "not configured (HELIX_BFM_ALERTMANAGER_URL)")
    try:
        shipped = promconfig.alert_receivers(
            [RULES_FILE], promconfig.load_yaml(deploy.ALERTMANAGER))
    except CrawlguardError as exc:
        return Check("alertmanager", "fail", f"the shipped rules or route are unreadable "
                     f"({exc})", "reinstall crawlguard")
    try:
        original = rig.http.json(f"{url}/api/v2/status")["config"]["original"]
        if not isinstance(original, str):
            raise TypeError("config.original is not text")
        config = yaml.safe_load(original)
        if not isinstance(config, dict):
            raise TypeError("the config is not a mapping")
    except (CrawlguardError, KeyError, TypeError, yaml.YAMLError) as exc:
        return Check("alertmanager", "fail", f"{url} unreachable or not Alertmanager ({exc})",
                     "start Alertmanager, or fix HELIX_BFM_ALERTMANAGER_URL")
    try:
        live = promconfig.alert_receivers([RULES_FILE], config)
    except CrawlguardError as exc:
        return Check("alertmanager", "fail", f"{url}: its routing tree cannot be followed "
                     f"({exc})", "see its /#/status page")
    hooks = _webhooks(config)
    to_sidecar = [n for n, rs in shipped.items() if promconfig.SIDECAR_RECEIVER in rs]
    lost, reached = [], set()
    for name in to_sidecar:
        urls = [u for r in live[name] for u in hooks.get(r, []) if u.endswith("/v1/alerts")]
        if urls:
            reached.update(urls)
        else:
            lost.append(f"{name} (to {_names(live[name])})")
    if lost:
        return Check("alertmanager", "fail", f"{url} does not route {_names(lost)} to the "
                     "sidecar's webhook .../v1/alerts",
                     f"route {_names(to_sidecar)} as deploy/alertmanager/alertmanager.yml does "
                     "(receiver crawlguard-sidecar, with the sidecar's URL and token file) and "
                     "reload Alertmanager")
    unheard = [f"{name} (to {_names(rs)})" for name, rs in live.items()
               if name not in to_sidecar
               and not any(r in shipped[name] or _notifies(config, r) for r in rs)]
    if unheard:
        return Check("alertmanager", "warn", f"{url} routes {_names(to_sidecar)} to "
                     f"{_names(sorted(reached))}, but {_names(unheard)} reach no one",
                     "route them to a receiver with a notifier (crawlguard-humans in "
                     "deploy/alertmanager/alertmanager.yml)")
    return Check("alertmanager", "ok", f"{url} routes {_names(to_sidecar)} to "
                 f"{_names(sorted(reached))}, and the others to people")


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


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (an absolute path's anchor does)."""
    return next((p for p in (path, *path.parents) if os.path.lexists(p)), Path(path.anchor))


def check_state_dir(rig: CheckInputs) -> Check:
    """Writable, or creatable where it would be created; looked at, never created."""
    root = Path(os.path.abspath(rig.settings.state_dir))
    if root.is_dir():
        if os.access(root, os.W_OK | os.X_OK):
            return Check("state-dir", "ok", f"{root} is writable")
        return Check("state-dir", "fail", f"{root} is not writable by this user",
                     "fix its owner, or point HELIX_BFM_STATE_DIR at a local directory this "
                     "user can write")
    base = _nearest_existing(root)
    if base == root:
        return Check("state-dir", "fail", f"{root} exists and is not a directory",
                     "point HELIX_BFM_STATE_DIR at a directory")
    if not base.is_dir():
        return Check("state-dir", "fail", f"{root} cannot be created: {base} is not a "
                     "directory", "point HELIX_BFM_STATE_DIR at a local directory this user "
                     "can write")
    if not os.access(base, os.W_OK | os.X_OK):
        return Check("state-dir", "fail", f"{root} does not exist and cannot be created in "
                     f"{base} (not writable)", "create it, or point HELIX_BFM_STATE_DIR at "
                     "a local directory this user can write")
    return Check("state-dir", "ok", f"{root} does not exist yet; up, run and the sidecar "
                 f"create it (mode 0700) in {base}")


def check_state_dir_mode(rig: CheckInputs) -> Check:
    """Nobody but its owner may write the state dir: whoever can write a shard's
    worker.json decides which process a rung signals. The same test ``up`` and the
    sidecar refuse to start on (``StateDir.check_private``): POSIX mode bits, Windows ACL."""
    root = Path(os.path.abspath(rig.settings.state_dir))
    if not root.is_dir():
        return Check("state-dir-mode", "skip", f"{root} does not exist yet (created private)")
    try:
        StateDir(root).check_private()
    except CrawlguardError as exc:
        summary, _, fix = str(exc).partition(" Fix: ")
        return Check("state-dir-mode", "fail", summary, f"run: {fix}" if fix else "")
    return Check("state-dir-mode", "ok", f"{root}: only its owner writes it")


def check_knobs(rig: CheckInputs) -> Check:
    """A misspelled knob is otherwise ignored without a word."""
    lines = unknown_knob_lines(rig.env)
    if not lines:
        return Check("knobs", "ok", "every HELIX_BFM_* name in the environment is a knob")
    return Check("knobs", "warn", "; ".join(lines),
                 "rename or unset it: docs/architecture.md#knobs lists every knob")


@dataclass(frozen=True)
class Evidence:
    """What can show the "VRAM ~full" half of the crawl signature on this rig."""

    working: list[str]
    """One line per source that answers, e.g. ``dedicated VRAM from nvml (1 GPU)``."""
    failing: list[str]
    """One line per source that does not, with why."""


EVIDENCE_KNOBS = ("HELIX_BFM_VRAM_SOURCE=file:PATH (a JSON document of used/total bytes per "
                  "GPU, docs/integration.md), HELIX_BFM_SHARED_SOURCE (Windows: pdh, or "
                  "file:PATH), or NVML (the NVIDIA driver and nvidia-ml-py, "
                  "HELIX_BFM_VRAM_SOURCE=nvml)")
"""Where a rig gets spill evidence: said wherever there is none."""


def spill_evidence(rig: CheckInputs) -> Evidence:
    """Read each source of spill evidence once: the VRAM source (dedicated used/total;
    torch's reservation is judged against its total too) and the shared-memory source."""
    working: list[str] = []
    failing: list[str] = []
    vram_spec = rig.settings.vram_source
    source: Any = None
    try:
        source = rig.vram(vram_spec)
        gpus = source.read()
        if gpus:
            working.append(f"dedicated VRAM from {vram_spec} ({len(gpus)} GPU"
                           f"{'s' if len(gpus) > 1 else ''})")
        else:
            failing.append(f"HELIX_BFM_VRAM_SOURCE={vram_spec}: lists no GPU")
    except CrawlguardError as exc:
        failing.append(f"HELIX_BFM_VRAM_SOURCE={vram_spec}: {exc}")
    finally:
        _close(source)
    spec = resolve_spec(rig.settings.shared_source, rig.platform)
    shared: SharedSource | None = None
    try:
        shared = rig.shared(spec, rig.platform) if spec != "off" else None
        if shared is None:
            failing.append(f"HELIX_BFM_SHARED_SOURCE={rig.settings.shared_source}: off"
                           + ("" if rig.platform == "win32" else " (only Windows counts "
                              "a process's shared GPU memory)"))
        else:
            shared.read([])
            working.append(f"shared GPU memory from {spec}")
    except CrawlguardError as exc:
        failing.append(f"HELIX_BFM_SHARED_SOURCE={spec}: {exc}")
    finally:
        _close(shared)
    return Evidence(working, failing)


def _close(source: object) -> None:
    close = getattr(source, "close", None)
    if callable(close):
        close()


def check_spill_evidence(rig: CheckInputs) -> Check:
    found = spill_evidence(rig)
    if found.working:
        return Check("spill-evidence", "ok", _names(found.working))
    return Check("spill-evidence", "fail", "no source of spill evidence works: no crawl can "
                 f"ever be confirmed ({'; '.join(found.failing)})", f"give one: {EVIDENCE_KNOBS}")


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
    ("knobs", check_knobs), ("driver", check_driver),
    ("sysmem-fallback", check_fallback_policy), ("alloc-conf", check_alloc_conf),
    ("nvml", check_nvml), ("vram-size", check_vram_size), ("shared-memory", check_shared_source),
    ("spill-evidence", check_spill_evidence), ("prometheus", check_prometheus),
    ("alertmanager", check_alertmanager), ("sidecar", check_sidecar),
    ("state-dir", check_state_dir), ("state-dir-mode", check_state_dir_mode),
    ("token-file", check_token_file), ("priority", check_priority))
SELF_STARTED = frozenset({"sidecar", "prometheus", "alertmanager"})
"""What ``crawlguard up`` starts itself: not checked before it has."""


def run_checks(rig: CheckInputs, skip: Iterable[str] = ()) -> list[Check]:
    """Every check but those named in ``skip`` (left out, not reported as skipped)."""
    skipped = set(skip)
    return [check(rig) for name, check in CHECKS if name not in skipped]


def verdict(checks: Sequence[Check]) -> str:
    """One line: the worst status and the counts, e.g. ``fail (1 failed, 2 warnings, 3
    skipped)``. Only a failure makes ``crawlguard doctor`` exit non-zero."""
    counts = {s: sum(c.status == s for c in checks) for s in STATUSES}
    worst = "fail" if counts["fail"] else "warn" if counts["warn"] else "ok"
    return (f"{worst} ({counts['fail']} failed, {counts['warn']} warnings, "
            f"{counts['skip']} skipped)")


def render(checks: Sequence[Check], out: TextIO, prefix: str = "") -> None:
    width = max((len(c.name) for c in checks), default=0)
    for c in checks:
        print(f"{prefix}{c.status:<4}  {c.name:<{width}}  {c.summary}", file=out)
        if c.advice:
            print(f"{prefix}{'':<4}  {'':<{width}}  -> {c.advice}", file=out)
