"""TLS for crawlguard's two servers (exporter, sidecar) and their clients: one home.

A rig of a fleet serves its exporter and its sidecar beyond loopback, so both
speak TLS with the rig's certificate, and both demand a client certificate
signed by the fleet's CA (mutual TLS) on top of the bearer token::

    HELIX_BFM_TLS_CERT_FILE   this host's certificate (PEM), served by both servers and
                              presented as the client certificate by crawlguard's clients
    HELIX_BFM_TLS_KEY_FILE    its private key (PEM)
    HELIX_BFM_TLS_CA_FILE     the CA that signs the peers: clients verify servers with it,
                              servers require client certificates signed by it

``crawlguard fleet generate`` writes all three for every rig (and a client
certificate for the central host). Without a CA file a server asks for no client
certificate and a client verifies with the system's trust store.

Standard library only. Contexts are built where a server or client starts, so
a file that cannot be read stops it at once with the knob named.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

CERT_KNOB = "HELIX_BFM_TLS_CERT_FILE"
KEY_KNOB = "HELIX_BFM_TLS_KEY_FILE"
CA_KNOB = "HELIX_BFM_TLS_CA_FILE"


@dataclass(frozen=True)
class TlsFiles:
    """The files of one host's TLS: its certificate and key, and the CA of its peers."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @property
    def serves(self) -> bool:
        """Whether a server can speak TLS with these (a certificate and its key)."""
        return self.cert is not None and self.key is not None

    @property
    def mutual(self) -> bool:
        """Whether a server built from these demands client certificates."""
        return self.serves and self.ca is not None

    def server_context(self) -> ssl.SSLContext:
        if self.cert is None or self.key is None:
            raise ConfigError(CERT_KNOB, None, "a TLS server needs a certificate and its key "
                              f"(set {CERT_KNOB} and {KEY_KNOB})")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_chain(ctx)
        if self.ca is not None:
            self._load_ca(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """Verifies the server (with the CA, else the system's roots) and, with a
        certificate and key, presents them for a server that demands one."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its name
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca is not None:
            self._load_ca(ctx)  # the fleet's CA alone: no public CA may vouch for a rig
        else:
            ctx.load_default_certs()
        if self.serves:
            self._load_chain(ctx)
        return ctx

    def _load_chain(self, ctx: ssl.SSLContext) -> None:
        assert self.cert is not None and self.key is not None
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except FileNotFoundError as exc:
            missing = self.cert if not self.cert.is_file() else self.key
            knob = CERT_KNOB if missing == self.cert else KEY_KNOB
            raise ConfigError(knob, str(missing), "no such file") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(CERT_KNOB, str(self.cert),
                              f"cannot load it with the key {self.key}: {_why(exc)}") from exc

    def _load_ca(self, ctx: ssl.SSLContext) -> None:
        assert self.ca is not None
        try:
            ctx.load_verify_locations(cafile=str(self.ca))
        except FileNotFoundError as exc:
            raise ConfigError(CA_KNOB, str(self.ca), "no such file") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(CA_KNOB, str(self.ca),
                              f"not a PEM CA certificate: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
