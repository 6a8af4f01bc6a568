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
for the build's downloads must not stand between them.
"""

from __future__ import annotations

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

    ``transport`` replaces the network (an ``httpx.MockTransport``) for tests of a
    caller's logic; crawlguard's own code never passes one."""

    def __init__(self, base_url: str = "", *, token: str | None = None,
                 timeout: float = 10.0, transport: Transport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout,
                                  transport=transport, trust_env=False)

    def request(self, method: str, url: str, json: Any = None) -> Answer:
        try:
            response = self._http.request(method, url, json=json)
        except httpx.HTTPError as exc:
            raise HttpError(_shown(self._http, url), f"{type(exc).__name__}: "
                                                     f"{exc or 'no answer'}") from exc
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


def get(url: str, *, token: str | None = None, timeout: float = 10.0) -> Answer:
    """One GET, on a client of its own."""
    with HttpClient(token=token, timeout=timeout) as client:
        return client.get(url)


def _shown(client: httpx.Client, url: str) -> str:
    base = str(client.base_url)
    return f"{base.rstrip('/')}{url}" if base and url.startswith("/") else url
