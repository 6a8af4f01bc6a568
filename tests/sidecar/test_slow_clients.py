"""Slow, idle and unauthenticated clients cost the sidecar nothing: 401 before the body,
a deadline for the body, and no open schema or CDN-loaded docs."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest

from crawlguard.sidecar import app as sidecar_app
from tests.sidecar.conftest import TOKEN, Live


def raw(live: Live, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[str, float]:
    """Send a request head (and part of a body); the status line and how long it took."""
    url = urlsplit(live.url)
    started = time.monotonic()
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode(), time.monotonic() - started


def test_401_comes_before_the_body(sidecar_thread: Callable[..., Live]) -> None:
    live = sidecar_thread()
    head = ("POST /v1/alerts HTTP/1.1\nHost: x\nContent-Type: application/json\n"
            "Content-Length: 1000000\n")
    status, _ = raw(live, head)            # not one byte of the body is sent
    assert status == "HTTP/1.1 401 Unauthorized"
    status, _ = raw(live, head.replace("Host: x\n", "Host: x\nAuthorization: Bearer wrong\n"))
    assert status == "HTTP/1.1 401 Unauthorized"
    assert 'crawlguard_sidecar_invalid_requests_total{reason="unauthorized"} 2.0' in live.metrics()


def test_a_body_that_does_not_arrive_times_out(sidecar_thread: Callable[..., Live],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sidecar_app, "BODY_TIMEOUT_S", 0.5)
    live = sidecar_thread()
    head = (f"POST /v1/alerts HTTP/1.1\nHost: x\nAuthorization: Bearer {TOKEN}\n"
            "Content-Type: application/json\nContent-Length: 100\n")
    status, took = raw(live, head, b'{"version"')
    assert status == "HTTP/1.1 408 Request Timeout" and took < 4.5
    assert 'crawlguard_sidecar_invalid_requests_total{reason="timeout"} 1.0' in live.metrics()
    assert live.client.get("/healthz").status_code == 200      # and it still serves


def test_no_docs_and_no_schema_without_the_token(sidecar_thread: Callable[..., Live]) -> None:
    live = sidecar_thread()
    with httpx.Client(base_url=live.url, trust_env=False) as anon:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert anon.get(path).status_code == 404, path
        assert anon.get("/openapi.json").status_code == 401
        assert anon.get("/healthz").status_code == 200
    schema = live.client.get("/openapi.json")
    assert schema.status_code == 200 and "/v1/alerts" in schema.json()["paths"]
    assert "cdn" not in schema.text.lower()
