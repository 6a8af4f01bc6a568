"""How clients find a running `up` through its state dir, and which knobs win."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawlguard.kernel.discovery import live_up, rig_env
from crawlguard.kernel.formats.upfile import UpFile, UpTls, up_path
from crawlguard.kernel.settings import Endpoints, Preflight, Settings
from crawlguard.kernel.statedir import write_json_atomic
from crawlguard.kernel.workers import WorkerIdentity

ME = WorkerIdentity.current()


def write_up(state: Path, **kw: object) -> UpFile:
    doc = {"pid": ME.pid, "create_time": ME.create_time, "alert_path": "prometheus",
           "urls": {"sidecar": "http://127.0.0.1:1", "exporter": "http://127.0.0.1:2",
                    "prometheus": "http://127.0.0.1:3", "alertmanager": "http://127.0.0.1:4"},
           "token_file": str(state / "run" / "sidecar.token"), "shards": ["s"],
           "servers": {"sidecar": 5}, "updated_at": 1.0, "vram_source": "file:/v.json",
           "shared_source": "off", **kw}
    up = UpFile.model_validate(doc)
    write_json_atomic(up_path(state), up.model_dump(mode="json"))
    (state / "run" / "sidecar.token").write_text("t" * 43 + "\n")
    return up


def test_a_live_up_fills_in_every_knob_the_environment_leaves_unset(tmp_path: Path) -> None:
    write_up(tmp_path)
    rig = rig_env({"HELIX_BFM_STATE_DIR": str(tmp_path)})
    assert rig.up is not None and rig.alert_path == "prometheus"
    settings, pre = Settings.from_env(rig.env), Preflight.from_env(rig.env)
    assert settings.endpoints.sidecar_url == "http://127.0.0.1:1"
    assert settings.endpoints.token == "t" * 43
    assert settings.vram_source == "file:/v.json" and settings.shared_source == "off"
    assert pre.prometheus_url == "http://127.0.0.1:3"
    assert pre.alertmanager_url == "http://127.0.0.1:4"


def test_knobs_that_are_set_win(tmp_path: Path) -> None:
    write_up(tmp_path)
    base = {"HELIX_BFM_STATE_DIR": str(tmp_path)}
    # A token of its own: up's token file is not added (the two would clash).
    rig = rig_env({**base, "HELIX_BFM_SIDECAR_TOKEN": "x" * 20,
                   "HELIX_BFM_VRAM_SOURCE": "nvml"})
    ep = Endpoints.from_env(rig.env)
    assert ep.sidecar_url == "http://127.0.0.1:1" and ep.token == "x" * 20
    assert Settings.from_env(rig.env).vram_source == "nvml"
    # A URL of its own: nothing is found, so up's token is never sent elsewhere.
    rig = rig_env({**base, "HELIX_BFM_SIDECAR_URL": "http://10.0.0.9:9848"})
    assert rig.up is None and rig.alert_path == "external"
    assert Endpoints.from_env(rig.env).token is None


def test_tls_files_of_a_fleet_rig(tmp_path: Path) -> None:
    write_up(tmp_path, urls={"sidecar": "https://rig1:9848"}, alert_path="external",
             tls=UpTls(ca_file="/ca.pem", cert_file="/c.pem", key_file="/k.pem"))
    ep = Endpoints.from_env(rig_env({"HELIX_BFM_STATE_DIR": str(tmp_path)}).env)
    assert ep.sidecar_url == "https://rig1:9848"
    assert (str(ep.tls.ca), str(ep.tls.cert), str(ep.tls.key)) == ("/ca.pem", "/c.pem",
                                                                    "/k.pem")
    own = rig_env({"HELIX_BFM_STATE_DIR": str(tmp_path), "HELIX_BFM_TLS_CA_FILE": "/mine.pem"})
    assert Endpoints.from_env(own.env).tls.cert is None  # the TLS knobs replace them all


def test_a_dead_ups_file_and_a_damaged_one_are_ignored(tmp_path: Path) -> None:
    write_up(tmp_path, create_time=ME.create_time - 5)   # same pid, another process
    assert live_up(tmp_path) is None
    assert rig_env({"HELIX_BFM_STATE_DIR": str(tmp_path)}).env.get(
        "HELIX_BFM_SIDECAR_URL") is None
    up_path(tmp_path).write_text('{"pid": "no"}')
    assert live_up(tmp_path) is None
    assert live_up(tmp_path / "nothing-here") is None


@pytest.fixture
def healthz() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_file_without_creation_time_is_live_while_its_sidecar_answers(
        tmp_path: Path, healthz: str) -> None:
    write_up(tmp_path, create_time=None, urls={"sidecar": healthz})
    assert live_up(tmp_path) is not None
    write_up(tmp_path, create_time=None, urls={"sidecar": "http://127.0.0.1:1"})
    assert live_up(tmp_path) is None
