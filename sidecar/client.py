"""A small client of the sidecar API, for `crawlguard rung`/`status` and scripts.

``SidecarClient.from_env`` reaches the sidecar of a running ``crawlguard up`` on the
state dir when the knobs do not name one (``crawlguard.kernel.discovery``).

It calls through ``crawlguard.kernel.http``. Every transport failure becomes
``SidecarUnavailable`` and every error answer ``SidecarRefused`` (with the
status and the server's ``detail``), both with ``raise ... from exc``, so the
command line prints one line, never a traceback.

An ``https://`` sidecar (a rig of a fleet) is reached with the client context of
``crawlguard.kernel.tls``: the server verified with HELIX_BFM_TLS_CA_FILE, and
this host's certificate presented when the sidecar demands one.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from crawlguard.kernel.discovery import URL_KNOB, rig_env
from crawlguard.kernel.errors import HttpError, SidecarRefused, SidecarUnavailable
from crawlguard.kernel.http import Answer, HttpClient
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.settings import Endpoints

DEFAULT_TIMEOUT_S = 10.0


class SidecarClient:
    def __init__(self, url: str, token: str | None, timeout: float = DEFAULT_TIMEOUT_S,
                 tls: ssl.SSLContext | None = None, hint: str = "") -> None:
        self.url = url.rstrip("/")
        self.hint = hint
        """Said after "cannot reach the sidecar" (or a 401): where it was looked for."""
        self._http = HttpClient(self.url, token=token, timeout=timeout, tls=tls)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SidecarClient:
        """The sidecar of a running ``up`` on the state dir, or HELIX_BFM_SIDECAR_URL and
        HELIX_BFM_SIDECAR_TOKEN (or _FILE); for an https:// URL the HELIX_BFM_TLS_* files.
        Knobs set win over what is found (``crawlguard.kernel.discovery``)."""
        rig = rig_env(env)
        client = cls.from_endpoints(Endpoints.from_env(rig.env))
        if rig.up is None and not (rig.env.get(URL_KNOB) or "").strip():
            client.hint = (f" (no running 'crawlguard up' on state dir "
                           f"{rig.state_dir.resolve()}: start one, or set HELIX_BFM_STATE_DIR "
                           "to its state dir or HELIX_BFM_SIDECAR_URL to the sidecar)")
        return client

    @classmethod
    def from_endpoints(cls, ep: Endpoints, timeout: float = DEFAULT_TIMEOUT_S) -> SidecarClient:
        tls = ep.tls.client_context() if ep.sidecar_url.startswith("https://") else None
        return cls(ep.sidecar_url, ep.token, timeout=timeout, tls=tls)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SidecarClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            answer = self._http.request(method, path, json=body)
        except HttpError as exc:
            raise SidecarUnavailable(f"cannot reach the sidecar at {self.url}: "
                                     f"{exc.why}{self.hint}") from exc
        if answer.status >= 400:
            # A 401 with nothing found: what answered is most likely another rig's sidecar.
            where = self.hint if answer.status == 401 else ""
            raise SidecarRefused(answer.status, f"{method} {path}: "
                                 f"{answer.status} {_detail(answer)}{where}")
        try:
            return answer.json()
        except HttpError as exc:
            raise SidecarUnavailable(f"{method} {path}: the answer is not JSON") from exc

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/healthz")
        return result

    def shards(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/shards")
        return result

    def shard(self, shard: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/shards/{ShardName.parse(shard)}")
        return result

    def rung(self, shard: str, rung: str, reason: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/shards/{ShardName.parse(shard)}/rung",
                                            {"rung": rung, "reason": reason})
        return result

    def reset(self, shard: str, reason: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/shards/{ShardName.parse(shard)}/reset",
                                            {"reason": reason})
        return result

    def pause(self, paused: bool, reason: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/pause" if paused else "/v1/resume",
                                            {"reason": reason})
        return result

    def alerts(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/alerts", dict(payload))
        return result


def _detail(answer: Answer) -> str:
    try:
        detail = answer.json().get("detail")
    except (HttpError, AttributeError):
        return answer.text[:200]
    if answer.status == 401:
        return (f"{detail} (check HELIX_BFM_SIDECAR_TOKEN / HELIX_BFM_SIDECAR_TOKEN_FILE, or "
                "the token file of the running up)")
    return detail if isinstance(detail, str) else str(detail)[:300]
