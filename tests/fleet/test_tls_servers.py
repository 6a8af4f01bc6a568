"""A fleet rig's two servers over TLS: real sockets on 127.0.0.2 / 127.0.0.3, real handshakes.

Each server is refused to: plain HTTP, a client without a certificate, a client
certificate of another CA, a wrong token; and answers the central host's
client certificate with the rig's token. The exporter does its handshakes on
the request's thread, so a client that connects and says nothing blocks no one.
Beyond loopback, neither server starts without TLS and a token.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawlguard.exporter.server import Exporter, ExporterConfig
from crawlguard.kernel import http
from crawlguard.kernel.errors import ConfigError, HttpError
from crawlguard.kernel.listen import refuse_plaintext
from crawlguard.kernel.settings import Remediation
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.tls import TlsFiles
from crawlguard.sidecar.client import SidecarClient
from crawlguard.sidecar.engine import Engine
from crawlguard.sidecar.server import SidecarServer
from tests.helpers import REPO, crawlguard_cmd

from .conftest import GeneratedFleet


def outcome(url: str, tls: TlsFiles | None, token: str | None) -> int | str:
    """The status code, or 'refused' when no HTTP answer came (handshake or protocol),
    through crawlguard's one HTTP boundary as every client of a rig calls."""
    try:
        return http.get(url, token=token, timeout=10,
                        tls=tls.client_context() if tls is not None else None).status
    except HttpError:
        return "refused"


@pytest.fixture
def exporter(gen_fleet: GeneratedFleet, tmp_path: Path) -> Iterator[str]:
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1, "total_bytes": 2}]}))
    rig = gen_fleet.rig("rig1")
    server = Exporter(ExporterConfig(
        state_dir=tmp_path / "state1", vram_source=f"file:{vram}", vram_full_ratio=0.95,
        host=rig.host, port=0, tls=gen_fleet.rig_tls("rig1"), token=gen_fleet.token("rig1")))
    server.start()
    try:
        yield f"{rig.host}:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def sidecar(gen_fleet: GeneratedFleet, tmp_path: Path) -> Iterator[str]:
    rig = gen_fleet.rig("rig2")
    state = tmp_path / "state2"
    state.mkdir()
    server = SidecarServer(Engine(StateDir(state), Remediation()), rig.host, 0,
                           gen_fleet.token("rig2"), tls=gen_fleet.rig_tls("rig2"))
    bound = server.start()
    try:
        assert bound.url.startswith(f"https://{rig.host}:")
        yield f"{rig.host}:{bound.port}"
    finally:
        server.stop()


def test_exporter_refuses_all_but_the_central_host(gen_fleet: GeneratedFleet, exporter: str,
                                                    stranger: TlsFiles) -> None:
    central, token = gen_fleet.central_tls(), gen_fleet.token("rig1")
    url = f"https://{exporter}/metrics"
    assert outcome(f"http://{exporter}/metrics", None, token) == "refused"       # plain HTTP
    assert outcome(url, TlsFiles(ca=central.ca), token) == "refused"          # no certificate
    other_ca_client = TlsFiles(cert=stranger.cert, key=stranger.key, ca=central.ca)
    assert outcome(url, other_ca_client, token) == "refused"                  # another CA
    assert outcome(url, central, "wrong-but-long-enough-token") == 401
    assert outcome(url, central, None) == 401
    assert outcome(url, central, token) == 200
    # The other way round: a client that trusts another CA does not trust the rig, and
    # says so in words a person can act on.
    distrust = TlsFiles(cert=central.cert, key=central.key, ca=stranger.ca)
    assert outcome(url, distrust, token) == "refused"
    with pytest.raises(HttpError, match="TLS: CERTIFICATE_VERIFY_FAILED"):
        http.get(url, token=token, tls=distrust.client_context())


def test_sidecar_refuses_all_but_the_central_host(gen_fleet: GeneratedFleet, sidecar: str,
                                                   stranger: TlsFiles) -> None:
    central, token = gen_fleet.central_tls(), gen_fleet.token("rig2")
    url = f"https://{sidecar}/v1/shards"
    assert outcome(f"http://{sidecar}/v1/shards", None, token) == "refused"
    assert outcome(f"https://{sidecar}/healthz", TlsFiles(ca=central.ca), None) == "refused"
    assert outcome(url, TlsFiles(cert=stranger.cert, key=stranger.key, ca=central.ca),
                   token) == "refused"
    assert outcome(url, central, "wrong-but-long-enough-token") == 401
    assert outcome(url, central, token) == 200
    # The rig's own certificate is a client certificate too: `crawlguard status` on the rig.
    with SidecarClient(f"https://{sidecar}", token,
                       tls=gen_fleet.rig_tls("rig2").client_context()) as client:
        assert client.shards()["shards"] == []


def test_a_silent_client_holds_up_no_one(gen_fleet: GeneratedFleet, exporter: str) -> None:
    host, port = exporter.split(":")
    with socket.create_connection((host, int(port))):      # connects, never says a word
        started = time.monotonic()
        assert outcome(f"https://{exporter}/metrics", gen_fleet.central_tls(),
                       gen_fleet.token("rig1")) == 200
    assert time.monotonic() - started < 5  # well under the silent one's 10 s deadline


@pytest.mark.parametrize(("server", "env", "message"), [
    ("exporter", {}, "beyond loopback without TLS and a token"),
    ("exporter", {"HELIX_BFM_EXPORTER_TOKEN": "t" * 20}, "beyond loopback without TLS:"),
    ("exporter", "tls", "beyond loopback without a token"),
    ("sidecar", {"HELIX_BFM_SIDECAR_TOKEN": "t" * 20}, "beyond loopback without TLS:"),
    ("sidecar", "tls", "non-loopback address '10.255.255.1' without a token"),
])
def test_beyond_loopback_a_server_needs_tls_and_a_token(
        server: str, env: dict[str, str] | str, message: str, gen_fleet: GeneratedFleet,
        state_dir: Path) -> None:
    """10.255.255.1 is never bound: the refusal comes first (exit 2, one line)."""
    if env == "tls":
        t = gen_fleet.rig_tls("rig1")
        env = {"HELIX_BFM_TLS_CERT_FILE": str(t.cert), "HELIX_BFM_TLS_KEY_FILE": str(t.key)}
    assert isinstance(env, dict)
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("HELIX_BFM_")},
            "HELIX_BFM_STATE_DIR": str(state_dir), **env}
    done = subprocess.run(crawlguard_cmd(server, "--host", "10.255.255.1", "--port", "0"),
                          cwd=REPO, env=full, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_plaintext_waiver_is_explicit() -> None:
    refuse_plaintext("exporter", "HOST", "127.0.0.9", False, False, "TOKEN", False)  # loopback
    refuse_plaintext("exporter", "HOST", "10.0.0.1", True, True, "TOKEN", False)     # both
    refuse_plaintext("exporter", "HOST", "10.0.0.1", False, False, "TOKEN", True)    # waived
    for tls, token in ((True, False), (False, True), (False, False)):
        with pytest.raises(ConfigError) as info:
            refuse_plaintext("exporter", "HOST", "10.0.0.1", tls, token, "TOKEN", False)
        assert info.value.knob == "HOST" and "HELIX_BFM_ALLOW_PLAINTEXT" in str(info.value)


def test_an_unreadable_certificate_names_its_knob(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError) as info:
        TlsFiles(cert=bad, key=bad).server_context()
    assert info.value.knob == "HELIX_BFM_TLS_CERT_FILE"
    with pytest.raises(ConfigError) as info:
        TlsFiles(cert=tmp_path / "gone.crt", key=bad).server_context()
    assert "no such file" in str(info.value)
    with pytest.raises(ConfigError) as info:
        TlsFiles(ca=bad).client_context()
    assert info.value.knob == "HELIX_BFM_TLS_CA_FILE"
