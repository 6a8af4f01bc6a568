"""`crawlguard up`: every part of crawlguard for one rig, in one process tree.

    up (this process)
      exporter           in-process thread (exporter.server.Exporter), port chosen by the OS
      sidecar            child `crawlguard sidecar` on 127.0.0.1:9848 when that is free,
                         restarted on the same port if it dies
      alert evaluation   embedded thread (crawlguard.rules.EmbeddedAlerting), or
                         children `prometheus` + `prometheus-alertmanager` configured
                         from deploy/ (``promstack``), or none at all with
                         ``--alert-path external`` (a rig of a fleet: the central
                         Prometheus scrapes it, the central Alertmanager posts to it)
      simulated GPU      thread (crawlguard.refbuild.simgpu.Driver), only with simulate_gpu
      supervisor         the main thread (``supervisor.Supervisor``), workers as children
      live view          thread (``liveview.LiveView``)

Everything durable stays in the state dir (ladders, baselines, batches, the
workers' metrics), so a later `up` on the same state dir resumes where this
one stopped. ``<state>/run/`` holds this run's ephemera: up.json (its identity,
URLs, token and TLS files: how every client command finds this run with nothing but
the state dir, ``crawlguard.kernel.discovery``), the token file (mode 600; none when
HELIX_BFM_SIDECAR_TOKEN_FILE is set, whose file is used as it is), generated
configs, Prometheus/Alertmanager data, the logs of every child and the run
record (children.json, ``supervisor.runrecord``): a later ``up`` stops what a
run that died hard left behind before it starts anything.

On the external alert path the exporter and the sidecar listen where the knobs
say (HELIX_BFM_EXPORTER_HOST/_PORT, HELIX_BFM_SIDECAR_HOST/_PORT: the rig's
address in a fleet's env file) with TLS and the rig's tokens; on the other
paths both stay on loopback in plain HTTP: the exporter on a port of this run's
choosing, the sidecar on HELIX_BFM_SIDECAR_PORT (9848, the documented address the
README's ``curl`` uses) when it is free, else on a free port, said at start.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from filelock import FileLock, Timeout

from crawlguard.exporter.server import Exporter, ExporterConfig
from crawlguard.gpu.vram import VramSource, source_from_spec
from crawlguard.kernel import logs, longpaths
from crawlguard.kernel.errors import (
    ConfigError,
    NoEvidenceSource,
    ProcessError,
    StateError,
    StateGoneError,
)
from crawlguard.kernel.formats.upfile import UP_FILE, UpFile, UpTls
from crawlguard.kernel.listen import url_host
from crawlguard.kernel.settings import Settings
from crawlguard.kernel.statedir import StateDir, check_present, write_json_atomic
from crawlguard.kernel.tls import CA_KNOB, CERT_KNOB, KEY_KNOB
from crawlguard.kernel.workers import WorkerIdentity
from crawlguard.rules import EmbeddedAlerting
from crawlguard.rules.dispatch import REPEAT_INTERVAL_S
from crawlguard.supervisor import runrecord
from crawlguard.supervisor.loop import (
    EXIT_STATE_GONE,
    Supervisor,
    SupervisorConfig,
    SupervisorEvent,
)

from . import promstack, secretfile
from .console import ConsoleWriter
from .liveview import LiveView, UniqueGenes
from .promstack import resolve_alert_path
from .servers import ServerProc, free_port, port_free, steadily

MONITOR_PERIOD_S = 0.5


@dataclass(frozen=True)
class RigConfig:
    shards: tuple[str, ...]
    command: tuple[str, ...]
    settings: Settings
    env: Mapping[str, str]
    """The environment of the workers and the servers (knobs included)."""
    alert_path: str = "auto"
    interval: float | None = None
    """Scrape and evaluation interval; None: the shipped one (5s)."""
    am_timing: promstack.AmTiming | None = None
    """Alertmanager timings of the sidecar route; None: the shipped ones."""
    simulate_gpu: bool = False
    progress: str = "auto"
    progress_period: float = 10.0
    progress_prefix: str = "up"
    vram_log_interval: float = 5.0
    unique_genes: UniqueGenes | None = None
    """Distinct genes per shard for the live view, when the build can tell."""
    log_file: Path | None = None
    """Also append the live view's lines here (``up --log-file``): a log without a pipe."""
    blind: bool = False
    """Run even with no source of spill evidence (``up --blind``): no crawl is confirmed
    then, only rehearsed (``crawlguard drill`` brings its own evidence)."""


class RunningRig:
    def __init__(self, config: RigConfig, stream: TextIO = sys.stderr) -> None:
        self.config = config
        self.stream = stream
        self.state = StateDir(config.settings.state_dir.resolve())
        self.run_dir = self.state.root / "run"
        self.alert_path, self.alert_note = resolve_alert_path(config.alert_path)
        if self.alert_path == "external" and not config.settings.endpoints.token:
            # A token made up here would be known to no Alertmanager: every alert refused.
            raise ConfigError("--alert-path", "external", "needs the token the central "
                              "Alertmanager sends: set HELIX_BFM_SIDECAR_TOKEN_FILE (the env file "
                              "of crawlguard fleet generate does; pass it with --env-file)")
        self.token = config.settings.endpoints.token or secrets.token_urlsafe(32)
        # A configured token file is used in place: a copy in the state dir would take
        # that dir's ACL (on Windows readable by Users under %ProgramData%).
        configured = (self.config.env.get("HELIX_BFM_SIDECAR_TOKEN_FILE")
                      if not self.config.env.get("HELIX_BFM_SIDECAR_TOKEN") else None)
        self.token_file = (Path(configured).resolve() if configured
                           else self.run_dir / "sidecar.token")
        self._copy_token = not configured
        self.record = runrecord.RunRecord(self.run_dir / "children.json")
        self.views: list[LiveView] = []
        self._writers: list[ConsoleWriter] = []
        self.env = dict(config.env)
        self.env["HELIX_BFM_STATE_DIR"] = str(self.state.root)
        self.external = self.alert_path == "external"
        if not self.external:
            # This run's own servers are on loopback ports it picks, reached in plain
            # HTTP by its own Prometheus or evaluator: a fleet's TLS is not theirs.
            for knob in (CERT_KNOB, KEY_KNOB, CA_KNOB):
                self.env.pop(knob, None)
        self.vram_source = config.settings.vram_source
        self.shared_source = config.settings.shared_source
        self.servers: list[ServerProc] = []
        self.exporter: Exporter | None = None
        self.sidecar: ServerProc | None = None
        self.urls: dict[str, str] = {}
        self.view: LiveView | None = None
        self._source: VramSource | None = None
        self._stops: list[tuple[threading.Event, threading.Thread]] = []
        self._monitor_thread: tuple[threading.Event, threading.Thread] | None = None
        self._identity = WorkerIdentity.current()
        """This process, by pid AND creation time: clients tell a live up by it."""
        self._stop: threading.Event | None = None
        self._supervisor: Supervisor | None = None
        self.gone: StateError | None = None
        """Set by the monitor when the state dir vanished: the run stops, exit 4."""
        self._notes: list[str] = []
        """Said once the live view runs (it does not exist while the servers start)."""

    # -- the whole run -------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        self._require_evidence()
        note = longpaths.check_state_dir(self.state.root)
        if note:
            self.stream.write(f"crawlguard {self.config.progress_prefix}: warning: {note}\n")
        # One `up` per state dir: a second one would rewrite the token file
        # under the first one's Alertmanager and fight over the workers.
        self.state.open_for_service()
        self.state.ensure(self.run_dir)
        lock = FileLock(str(self.run_dir / ".up.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout as exc:
            raise StateError(f"another crawlguard up is running on state dir "
                             f"{self.state.root}") from exc
        try:
            for note in runrecord.sweep(self.record.path,
                                        self.config.settings.remediation.grace_seconds):
                self.stream.write(f"crawlguard {self.config.progress_prefix}: {note}\n")
            return self._run(stop)
        finally:
            lock.release()

    def _run(self, stop: threading.Event) -> int:
        self.state.ensure(self.run_dir / "logs")
        with logs.to_file(self.run_dir / "logs" / "up.log"):
            try:
                self._prepare()
                self._preflight()
                self._start_exporter()
                self._start_sidecar()
                self._start_alerting()
                return self._supervise(stop)
            finally:
                self._shutdown()

    def _prepare(self) -> None:
        self.state.ensure(self.run_dir / "logs")
        if self._copy_token:
            secretfile.write_private(self.token_file, self.token + "\n")
        if self.config.simulate_gpu:
            from crawlguard.refbuild.simgpu import Driver, SimGpu

            gpu = SimGpu(self.run_dir / "simgpu")
            shutil.rmtree(gpu.claims_dir, ignore_errors=True)
            gpu.configure()
            self.vram_source = gpu.source_spec
            self.shared_source = gpu.shared_source_spec
            self.env.update(HELIX_BFM_VRAM_SOURCE=gpu.source_spec,
                            HELIX_BFM_SHARED_SOURCE=gpu.shared_source_spec,
                            HELIX_BFM_SIMGPU_DIR=str(gpu.root))
            self._thread(lambda ev: Driver(gpu).start_thread(ev))

    def _require_evidence(self) -> None:
        """Refuse to start a rig that can never confirm a crawl: without a source of spill
        evidence (dedicated VRAM, shared GPU memory) the alerts never fire, and the run
        would look normal while it watches nothing. ``--simulate-gpu`` brings its own
        source; ``--blind`` goes ahead anyway, said at start. Before anything is created."""
        if self.config.simulate_gpu:
            return
        from crawlguard.doctor import checks

        found = checks.spill_evidence(checks.CheckInputs(self.config.settings, env=self.env))
        if found.working:
            return
        why = "; ".join(found.failing)
        if not self.config.blind:
            raise NoEvidenceSource(
                f"no source of spill evidence works, so no crawl could ever be confirmed "
                f"({why}). Give one: {checks.EVIDENCE_KNOBS}. Or pass --blind to run "
                "without (crawls are then neither detected nor fixed; a drill still works)")
        self._notes.append(f"running blind (--blind): no source of spill evidence ({why}): "
                           "no crawl will be confirmed")

    def _preflight(self) -> None:
        """`crawlguard doctor`'s checks, less the servers `up` starts itself and what `up`
        has judged already (knobs, spill evidence): warnings only."""
        from crawlguard.doctor import checks

        settings = replace(self.config.settings, vram_source=self.vram_source,
                           shared_source=self.shared_source, state_dir=self.state.root)
        skip = set(checks.SELF_STARTED) | {"knobs", "spill-evidence"}
        if self.config.simulate_gpu:
            skip |= {"driver", "sysmem-fallback"}  # about a real GPU this run does not use
        found = [c for c in checks.run_checks(checks.CheckInputs(settings, env=self.env), skip=skip)
                 if c.status not in ("ok", "skip")]
        checks.render(found, self.stream, prefix="up: doctor: ")

    def _thread(self, start: Any) -> None:
        ev = threading.Event()
        self._stops.append((ev, start(ev)))

    def _start_exporter(self) -> None:
        s = self.config.settings
        config = ExporterConfig(
            state_dir=self.state.root, vram_source=self.vram_source,
            vram_full_ratio=s.detection.vram_full_ratio, host="127.0.0.1", port=0,
            shared_source=self.shared_source, header_timeout=s.endpoints.header_timeout)
        if self.external:
            ep = s.endpoints
            config = replace(config, host=ep.exporter_host, port=ep.exporter_port, tls=ep.tls,
                             token=ep.exporter_token, allow_plaintext=ep.allow_plaintext)
        self.exporter = Exporter(config)
        self.exporter.start()
        self.urls["exporter"] = f"{config.scheme}://{url_host(config.host)}:{self.exporter.port}"

    def _start_sidecar(self) -> None:
        ep = self.config.settings.endpoints
        host, port = (ep.sidecar_host, ep.sidecar_port) if self.external else (
            "127.0.0.1", self._sidecar_port())
        try:
            self._serve_sidecar(host, port)
        except ProcessError:
            if self.external or port != ep.sidecar_port or self._sidecar_port_set:
                raise
            # Taken between the look and the bind: any free port, said like a taken one.
            self._taken_note(port)
            self._serve_sidecar(host, free_port())

    @property
    def _sidecar_port_set(self) -> bool:
        return bool((self.env.get("HELIX_BFM_SIDECAR_PORT") or "").strip())

    def _sidecar_port(self) -> int:
        """The documented port (HELIX_BFM_SIDECAR_PORT, default 9848), so that the README's
        ``curl`` and a sidecar client with no knobs reach this run; when the default is
        taken, a free one, said at start. A port set in the knob is used as set (0: any)."""
        port = self.config.settings.endpoints.sidecar_port
        if self._sidecar_port_set:
            return port or free_port()
        if port_free("127.0.0.1", port):
            return port
        self._taken_note(port)
        return free_port()

    def _taken_note(self, port: int) -> None:
        self._notes.append(f"port {port} is taken (another sidecar, or another up): this "
                           "run's sidecar listens on a free port instead; clients on this "
                           "state dir find it, curl needs the URL below")

    def _serve_sidecar(self, host: str, port: int) -> None:
        ep = self.config.settings.endpoints
        env = {**self.env, "HELIX_BFM_SIDECAR_TOKEN": self.token}
        env.pop("HELIX_BFM_SIDECAR_TOKEN_FILE", None)
        tls = ep.tls.client_context() if self.external and ep.tls.serves else None
        url = f"{'https' if tls else 'http'}://{url_host(host)}:{port}"
        sidecar = ServerProc(
            "sidecar", [sys.executable, "-m", "crawlguard", "sidecar", "--host", host,
                        "--port", str(port)], env, f"{url}/healthz",
            self.run_dir / "logs" / "sidecar.log", record=self.record, tls=tls)
        try:
            sidecar.start()
        except ProcessError:
            sidecar.stop()  # forgets it in the run record
            raise
        self.sidecar = sidecar
        self.servers.append(sidecar)
        self.urls["sidecar"] = url

    def _start_alerting(self) -> None:
        interval = self.config.interval
        if self.external:
            return  # the fleet's central Prometheus and Alertmanager do it
        if self.alert_path == "embedded":
            every = interval or 5.0
            repeat = (self.config.am_timing.repeat_interval if self.config.am_timing
                      else REPEAT_INTERVAL_S)
            alerting = EmbeddedAlerting(
                self.urls["exporter"], self.urls["sidecar"], self.token, interval_s=every,
                repeat_interval_s=repeat, retry_initial_s=min(1.0, every),
                retry_max_s=max(min(1.0, every), min(60.0, 10 * every)),
                runbook_url=f"{self.urls['sidecar']}/runbook")

            def start(ev: threading.Event) -> threading.Thread:
                t = threading.Thread(target=alerting.run_forever, args=(ev,),
                                     name="crawlguard-alerting", daemon=True)
                t.start()
                return t

            self._thread(start)
            return
        self._start_prometheus(interval)

    def _start_prometheus(self, interval: float | None) -> None:
        binaries, shipped = promstack.Binaries.find(), promstack.Shipped.find()
        assert binaries is not None and shipped is not None  # resolve_alert_path checked
        am_port, prom_port = free_port(), free_port()
        am_cfg = promstack.write_yaml(self.run_dir / "alertmanager.yml",
                                      promstack.alertmanager_config(
                                          shipped, self.urls["sidecar"], self.token_file,
                                          self.config.am_timing))
        # The alerts' runbook links open this rig's sidecar (GET /runbook).
        rules = promstack.write_yaml(self.run_dir / "crawlguard.rules.yml", promstack.rig_rules(
            shipped, f"{self.urls['sidecar']}/runbook"))
        prom_cfg = promstack.write_yaml(self.run_dir / "prometheus.yml",
                                        promstack.prometheus_config(
                                            shipped, _hostport(self.urls["exporter"]),
                                            _hostport(self.urls["sidecar"]),
                                            f"127.0.0.1:{am_port}", interval, rules))
        for name in ("alertmanager-data", "prometheus-data"):
            shutil.rmtree(self.run_dir / name, ignore_errors=True)
        am = ServerProc("alertmanager", promstack.alertmanager_argv(
            binaries.alertmanager, am_cfg, self.run_dir / "alertmanager-data", am_port),
            self.env, f"http://127.0.0.1:{am_port}/-/ready",
            self.run_dir / "logs" / "alertmanager.log", record=self.record)
        am.start()
        self.servers.append(am)
        prom = ServerProc("prometheus", promstack.prometheus_argv(
            binaries.prometheus, prom_cfg, self.run_dir / "prometheus-data", prom_port,
            min(interval or promstack.RESEND_DELAY_S, promstack.RESEND_DELAY_S)),
            self.env, f"http://127.0.0.1:{prom_port}/-/ready",
            self.run_dir / "logs" / "prometheus.log", record=self.record)
        prom.start()
        self.servers.append(prom)
        self.urls.update(alertmanager=f"http://127.0.0.1:{am_port}",
                         prometheus=f"http://127.0.0.1:{prom_port}")

    # -- supervising -----------------------------------------------------------
    def _supervise(self, stop: threading.Event) -> int:
        s = self.config.settings
        supervisor_config = SupervisorConfig(
            shards=self.config.shards, command=self.config.command, state_dir=self.state.root,
            remediation=s.remediation, log_dir=self.run_dir / "logs",
            vram_log_interval=self.config.vram_log_interval)
        source = self._source = source_from_spec(self.vram_source)
        supervisor = self._supervisor = Supervisor(supervisor_config, source=source,
                                                   base_env=self.env, record=self.record)
        # Console writes happen on a thread of their own (``console``): a QuickEdit
        # selection or a hung-up terminal must not stop the supervisor's thread.
        self.view = self._view(supervisor, self.stream, self.config.progress)
        if self.config.log_file is not None:
            try:
                log_stream = open(self.config.log_file, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise ConfigError("--log-file", str(self.config.log_file),
                                  f"cannot open: {exc.strerror or exc}") from exc
            # A log outlives the day: its lines carry the date too.
            self._view(supervisor, log_stream, "lines", stamp="%Y-%m-%d %H:%M:%S")

        def fan_out(event: SupervisorEvent) -> None:
            for v in self.views:
                v.event(event)

        supervisor.on_event = fan_out
        # Said even with --progress off: how this run is reached and where it keeps things.
        self._say(f"alert path: {self.alert_path}: {self.alert_note}", always=True)
        self._say(f"state {self.state.root}; logs {self.run_dir / 'logs'}", always=True)
        for note in self._notes:
            self._say(note, always=True)
        # What an operator in another terminal needs: the client commands find both
        # through run/up.json; curl needs them spelled out.
        self._say(f"sidecar {self.urls['sidecar']}; token file {self.token_file}", always=True)
        self._write_up_json()
        for v in self.views:
            self._thread(functools.partial(self._daemon, v.run))
        ev = threading.Event()
        self._stop = stop
        self._monitor_thread = (ev, self._daemon(self._monitor, ev))
        try:
            rc = supervisor.run(stop)
        except StateError:
            if self.gone is None:
                raise
            rc = EXIT_STATE_GONE
        return EXIT_STATE_GONE if self.gone is not None else rc

    def _view(self, supervisor: Supervisor, stream: TextIO, mode: str,
              stamp: str = "%H:%M:%S") -> LiveView:
        writer = ConsoleWriter(stream)
        self._writers.append(writer)
        view = LiveView(self.state, supervisor.runs, writer,  # type: ignore[arg-type]
                        mode, self.config.progress_period, self.config.progress_prefix,
                        self.config.unique_genes, stamp=stamp)
        self.views.append(view)
        return view

    def _say(self, text: str, always: bool = False) -> None:
        for view in self.views:
            view.say(text, always)

    @staticmethod
    def _daemon(target: Any, ev: threading.Event) -> threading.Thread:
        t = threading.Thread(target=target, args=(ev,), daemon=True)
        t.start()
        return t

    def _monitor(self, stop: threading.Event) -> None:
        """Bring back a server that died (the rebuild must not depend on luck), and stop
        the run when the state dir vanished. Never ends of an exception: a sidecar it
        restarted would die with it (the parent-death signal) and stay dead."""
        steadily(self._monitor_step, stop, MONITOR_PERIOD_S, "up's monitor")

    def _monitor_step(self) -> None:
        if self.gone is None:
            try:
                check_present(self.state.root)  # logs it critical
            except StateGoneError as exc:
                self.gone = exc
                if self._supervisor is not None:  # says it once, whoever saw it first
                    self._supervisor.state_gone("*", exc)
                for server in self.servers:
                    server.closed = True  # restarted, one would write into nothing
                if self._stop is not None:
                    self._stop.set()
                return
        for server in self.servers:
            note = server.ensure()
            if note:
                self._say(note)
                self._write_up_json()

    def _write_up_json(self) -> None:
        """What a client needs to reach this run: URLs, token files and, on the external
        path, the TLS files its client context is built from (``kernel.tls``)."""
        tls = self.config.settings.endpoints.tls
        exporter_token = self.env.get("HELIX_BFM_EXPORTER_TOKEN_FILE") or None
        write_json_atomic(self.run_dir / UP_FILE, UpFile(
            pid=os.getpid(), create_time=self._identity.create_time,
            vram_source=self.vram_source, shared_source=self.shared_source,
            alert_path=self.alert_path, urls=dict(self.urls),
            token_file=str(self.token_file), shards=list(self.config.shards),
            servers={s.name: s.pid for s in self.servers}, updated_at=time.time(),
            exporter_token_file=(str(Path(exporter_token).resolve())
                                 if self.external and exporter_token else None),
            tls=(UpTls(ca_file=_abs(tls.ca), cert_file=_abs(tls.cert), key_file=_abs(tls.key))
                 if self.external and tls.serves else None)).model_dump(mode="json"))

    def _shutdown(self) -> None:
        for server in self.servers:
            server.closed = True  # the monitor restarts nothing from here on
        for ev, _ in self._stops:
            ev.set()
        for _, thread in reversed(self._stops):
            thread.join(10)
        for server in reversed(self.servers):
            server.stop()
        # The monitor thread ends last: a server it restarted gets the Linux
        # parent-death signal (SIGKILL) the moment that thread exits.
        if self._monitor_thread is not None:
            self._monitor_thread[0].set()
            self._monitor_thread[1].join(10)
        for view in self.views:
            view.close()
        for writer in self._writers:
            writer.close()
            if writer.stream is not self.stream:
                writer.stream.close()
        if self.exporter is not None:
            self.exporter.stop()
        close = getattr(self._source, "close", None)
        if callable(close):
            close()


def _abs(path: Path | None) -> str | None:
    return None if path is None else str(path.resolve())


def _hostport(url: str) -> str:
    return url.split("://", 1)[-1]


def with_state_dir(settings: Settings, state_dir: Path | None) -> Settings:
    return settings if state_dir is None else replace(settings, state_dir=state_dir)
