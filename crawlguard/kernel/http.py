"""crawlguard's HTTP calls: the one module that talks httpx.

Every call crawlguard makes as a client goes through ``HttpClient``: the
sidecar client (``crawlguard rung``, ``status``), the embedded alert twin
(scrape /metrics, post to /v1/alerts), the doctor's probes and ``up``'s
readiness checks. A failure to get an answer (refused, reset, timed out, a
bad URL) is ``HttpError`` with ``raise ... from`` the httpx error; an answer
of any status is an ``Answer``, whose ``json()`` is ``HttpError`` when the body
is not JSON. Callers judge statuses themselves.

The environment's proxy settings are not used (``trust_env=False``): every
peer is a part of the rig, on loopback by default, and an ``HTTP_PROXY`` meant
for the build's downloads must not stand between them. An ``https://`` peer (a
rig of a fleet) is verified with the ``ssl.SSLContext`` the caller passes as
``tls`` (``crawlguard.kernel.tls``: the fleet's CA, and this host's certificate
for a peer that demands one); a handshake that fails is ``HttpError`` whose
``why`` starts with ``TLS:``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from .errors import HttpError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Answer", "HttpClient", "Transport", "get"]

Transport = httpx.BaseTransport
"""What ``HttpClient(transport=)`` takes: e.g. ``httpx.MockTransport`` in tests."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, whatever its status."""

    url: str
    status: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON; ``HttpError`` when it is not JSON."""
        import json

        try:
            return json.loads(self.text)
        except (ValueError, RecursionError) as exc:
            raise HttpError(self.url, f"HTTP {self.status}, and the answer is not "
                                      "JSON") from exc


class HttpClient:
    """A client with one base URL (or none), bearer token and timeout for all its calls.

    ``tls`` is the client context for ``https://`` peers (None: the system's CAs).
    ``transport`` replaces the network (an ``httpx.MockTransport``) for tests of a
    caller's logic; crawlguard's own code never passes one."""

    def __init__(self, base_url: str = "", *, token: str | None = None,
                 timeout: float = 10.0, tls: ssl.SSLContext | None = None,
                 transport: Transport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout,
                                  verify=tls if tls is not None else True,
                                  transport=transport, trust_env=False)

    def request(self, method: str, url: str, json: Any = None) -> Answer:
        try:
            response = self._http.request(method, url, json=json)
        except httpx.HTTPError as exc:
            raise HttpError(_shown(self._http, url), _why(exc)) from exc
        except httpx.InvalidURL as exc:  # not an HTTPError
            raise HttpError(url, f"not a usable URL ({exc})") from exc
        return Answer(str(response.url), response.status_code, response.text)

    def get(self, url: str) -> Answer:
        return self.request("GET", url)

    def post(self, url: str, json: Any) -> Answer:
        return self.request("POST", url, json=json)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def get(url: str, *, token: str | None = None, timeout: float = 10.0,
        tls: ssl.SSLContext | None = None) -> Answer:
    """One GET, on a client of its own."""
    with HttpClient(token=token, timeout=timeout, tls=tls) as client:
        return client.get(url)


def _shown(client: httpx.Client, url: str) -> str:
    base = str(client.base_url)
    return f"{base.rstrip('/')}{url}" if base and url.startswith("/") else url


def _why(exc: httpx.HTTPError) -> str:
    """The reason a person can act on: a TLS failure (the certificate, the CA), else the
    kind of failure (refused, reset, timed out) and its text."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {getattr(cause, 'reason', None) or cause}"
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc or 'no answer'}"
