"""The sidecar's HTTP API: a FastAPI app over one ``Engine``.

Security choices (the sidecar kills processes and rewrites environments):

- every ``/v1`` route (and ``/openapi.json``) needs ``Authorization: Bearer
  <token>``, checked once, by ``BodyLimit`` before any body is read, with
  ``hmac.compare_digest`` (no timing oracle); a missing or wrong token is 401
  with ``WWW-Authenticate: Bearer`` and changes nothing. ``/healthz`` and
  ``/metrics`` are open: they reveal no more than Prometheus scrapes anyway. A
  token of ``None`` means the operator started the sidecar with
  ``--insecure-no-token`` on loopback (see ``crawlguard.sidecar.server``);
- bodies are capped before anything parses them (``BodyLimit``): 1 MiB for
  ``/v1/alerts`` (Alertmanager groups can be large), 16 KiB elsewhere; more is
  413, and so is a notification of more than ``webhook.MAX_ALERTS`` alerts.
  Malformed bodies are 422 and change nothing; on ``/v1/alerts`` only a body
  that is not a v4 notification at all is: each alert is judged alone;
- the routes that touch the state dir (the engine's, and ``/metrics``, whose
  collectors read the ladders) are plain functions, which FastAPI runs on its
  thread pool, so no request holds up the event loop: each engine route takes
  the ladder lock and fsyncs before it answers, while ``/healthz`` answers from
  memory.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crawlguard.kernel.errors import (
    RungRefused,
    StateError,
    TooManyAlerts,
    UnknownShardError,
    UnsafeNameError,
)
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.names import PATTERN, ShardName
from crawlguard.sidecar import runbook

from .engine import Engine
from .ladder import ShardLadder
from .metrics import CONTENT_TYPE
from .schemas import (
    AlertDecision,
    AlertsAccepted,
    ErrorBody,
    Health,
    PauseView,
    ReasonRequest,
    RungRequest,
    ShardsView,
    ShardView,
    UnreadableShard,
    shard_view,
)
from .webhook import WebhookPayload

log = get_logger(__name__)
ALERTS_BODY_LIMIT = 1 << 20
BODY_TIMEOUT_S = 10.0
"""A whole request body must arrive within this (Alertmanager sends at once)."""
BODY_LIMIT = 16 << 10


def _shard(shard: Annotated[str, Path(min_length=1, max_length=128, pattern=PATTERN)]
           ) -> ShardName:
    """The path's shard, parsed once here (UnsafeNameError: 422); the pattern is for
    the OpenAPI schema, ``ShardName.parse`` is the rule."""
    return ShardName.parse(shard)


ShardParam = Annotated[ShardName, Depends(_shard)]
_BEARER = HTTPBearer(auto_error=False, description="HELIX_BFM_SIDECAR_TOKEN")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or wrong bearer token"},
    413: {"model": ErrorBody, "description": "body too large"},
}
_ALERTS_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    413: {"model": ErrorBody, "description": "body too large, or more alerts than the "
                                             "sidecar judges in one notification"},
    500: {"model": ErrorBody, "description": "a shard's ladder could not be read or written: "
                                             "its alerts were not recorded (Alertmanager "
                                             "retries)"}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no ladder and no registered worker"},
    409: {"model": ErrorBody, "description": "paused, action=off, or a rung in progress"}}


class BodyLimit:
    """Pure ASGI middleware in front of every route, before any body is read:

    - a request that needs the token and lacks it is answered 401 at once (an
      unauthenticated client cannot make the sidecar buffer a megabyte);
    - a body over the limit is 413 (Content-Length first, then counting what
      actually arrives);
    - a body that does not arrive within ``BODY_TIMEOUT_S`` is 408 and the
      connection is closed (a slow or idle client holds no buffer for long).
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int],
                 on_refuse: Callable[[str], None], on_done: Callable[[str, float], None],
                 authorized: Callable[[Scope], bool] = lambda scope: True,
                 body_timeout: float | None = None) -> None:
        self.app = app
        self.limit_for = limit_for
        self.on_refuse = on_refuse  # with the reason: unauthorized, too_large, timeout
        self.on_done = on_done  # every request's duration, refused ones included
        self.authorized = authorized
        self.body_timeout = BODY_TIMEOUT_S if body_timeout is None else body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self._limited(scope, receive, send)
        finally:
            self.on_done(scope["path"], time.perf_counter() - started)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.authorized(scope):
            self.on_refuse("unauthorized")
            await self._answer(scope, receive, send, 401, "missing or wrong bearer token",
                               {"WWW-Authenticate": "Bearer"})
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, limit)
            return
        body = bytearray()
        deadline = time.monotonic() + self.body_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(),
                                                 max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                self.on_refuse("timeout")
                await self._answer(scope, receive, send, 408,
                                   f"request body not received within {self.body_timeout:g}s")
                return
            if message["type"] != "http.request":
                break  # the client went away; the app sees an empty body
            body += message.get("body", b"")
            if len(body) > limit:
                await self._refuse(scope, receive, send, limit)
                return
            if not message.get("more_body", False):
                break
        scope = _json_for_curl(scope, bytes(body))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        self.on_refuse("too_large")
        await self._answer(scope, receive, send, 413, f"request body larger than {limit} bytes")

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, status: int, detail: str,
                      headers: dict[str, str] | None = None) -> None:
        # Connection: close, because the unread rest of the body is still on the wire.
        response = JSONResponse({"detail": detail}, status,
                                headers={"Connection": "close", **(headers or {})})
        await response(scope, receive, send)


def _needs_token(path: str) -> bool:
    return path.startswith("/v1/") or path == "/openapi.json"


def _json_for_curl(scope: Scope, body: bytes) -> Scope:
    """Treat a JSON object sent as curl's default form type as JSON.

    ``curl -d '{"rung":"next"}'`` labels the body application/x-www-form-urlencoded;
    operators forcing a rung at 3 a.m. should not get a 422 for omitting -H.
    Nothing else changes: the body must still validate as the JSON model.
    """
    headers = scope["headers"]
    ctype = dict(headers).get(b"content-type", b"")
    if ctype.split(b";")[0].strip() not in (b"", b"application/x-www-form-urlencoded"):
        return scope
    if not body.lstrip().startswith(b"{"):
        return scope
    fixed = [(k, v) for k, v in headers if k != b"content-type"]
    fixed.append((b"content-type", b"application/json"))
    return {**scope, "headers": fixed}


def create_app(engine: Engine, token: str | None) -> FastAPI:
    """The API over ``engine`` (already started). ``token`` None: no auth (insecure)."""
    metrics = engine.metrics
    # No /docs or /redoc (they load Swagger UI from a CDN) and no open /openapi.json:
    # the schema is served below, behind the token like the rest of the API.
    app = FastAPI(title="crawlguard sidecar", version="1",
                  description="Alertmanager webhook and escalation ladder of crawlguard: "
                              "restart a crawling worker, then demote its shard to CPU.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    expected = None if token is None else token.encode("utf-8")

    def authorized(scope: Scope) -> bool:
        """The token check, made before the body is read (``BodyLimit``)."""
        if expected is None or not _needs_token(scope["path"]):
            return True
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), expected)

    # Declares the bearer scheme in the OpenAPI schema; the one check is ``authorized``.
    auth = [Security(_BEARER)]
    action = engine.mode

    def view(state: ShardLadder) -> ShardView:
        return shard_view(state, engine.paused, action)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> Response:
        metrics.invalid.labels(reason="malformed").inc()
        # Not FastAPI's default handler: it echoes the input back and fails with a 500 on
        # bytes that are not UTF-8 (found by tests/sidecar/test_fuzz.py).
        detail = [{"type": str(e.get("type", "")), "msg": str(e.get("msg", "")),
                   "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())]}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # a body FastAPI could not even decode
            metrics.invalid.labels(reason="malformed").inc()
        return await http_exception_handler(request, exc)

    @app.exception_handler(RungRefused)
    async def refused(request: Request, exc: RungRefused) -> Response:
        return JSONResponse({"detail": str(exc)}, 409)

    @app.exception_handler(UnknownShardError)
    async def unknown(request: Request, exc: UnknownShardError) -> Response:
        return JSONResponse({"detail": str(exc)}, 404)

    @app.exception_handler(UnsafeNameError)
    async def unsafe(request: Request, exc: UnsafeNameError) -> Response:
        metrics.invalid.labels(reason="malformed").inc()
        return JSONResponse({"detail": str(exc)}, 422)

    @app.exception_handler(TooManyAlerts)
    async def too_many(request: Request, exc: TooManyAlerts) -> Response:
        metrics.invalid.labels(reason="too_many_alerts").inc()
        log.warning("%s %s refused: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, 413)

    @app.exception_handler(StateError)
    async def state_error(request: Request, exc: StateError) -> Response:
        # Every failure to read or write the state dir is logged, not only answered.
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, 500)

    @app.get("/openapi.json", include_in_schema=False, dependencies=auth)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/runbook", tags=["ops"], response_class=HTMLResponse)
    async def runbook_page() -> HTMLResponse:
        """The runbook every alert links to (``runbook_url``); no token: it is public."""
        text = runbook.page()
        if text is None:
            return HTMLResponse("the runbook is not installed with this copy of crawlguard",
                                404)
        return HTMLResponse(text)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        return Health(status="ok", paused=engine.paused, action=action,
                      rungs_in_progress=engine.rungs_in_progress())

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/alerts", status_code=202, response_model=AlertsAccepted,
              dependencies=auth, responses=_ALERTS_ERRORS, tags=["webhook"])
    def alerts(payload: WebhookPayload) -> AlertsAccepted | JSONResponse:
        """Alertmanager webhook (payload version 4). Decisions are durable when this
        answers; rungs are carried out in the background. Each alert is judged alone:
        one the ladder cannot take is refused in its decision, not with the request."""
        try:
            outcomes = engine.judge(payload)
        except StateError as exc:
            # Logged by the judge, once per shard until it can be recorded again; not
            # per retry, as the handler below would.
            return JSONResponse({"detail": str(exc)}, 500)
        return AlertsAccepted(received=len(payload.alerts), decisions=[
            AlertDecision(alertname=o.alertname, status=o.status, fingerprint=o.fingerprint,
                          shard=o.shard, decision=o.decision, note=o.note) for o in outcomes])

    @app.get("/v1/shards", response_model=ShardsView, dependencies=auth, responses=_ERRORS,
             tags=["ladder"])
    def shards() -> ShardsView:
        states, unreadable = engine.shards()
        return ShardsView(action=action, paused=engine.paused, shards=[view(s) for s in states],
                          unreadable=[UnreadableShard(shard=s, error=e)
                                      for s, e in sorted(unreadable.items())])

    @app.get("/v1/shards/{shard}", response_model=ShardView, dependencies=auth,
             responses=_ERRORS, tags=["ladder"])
    def shard(shard: ShardParam) -> ShardView:
        return view(engine.shard(shard))

    @app.post("/v1/shards/{shard}/rung", status_code=202, response_model=ShardView,
              dependencies=auth, responses={**_ERRORS, **_CONFLICT}, tags=["ladder"])
    def rung(shard: ShardParam, body: RungRequest) -> ShardView:
        """Force a rung by hand (`next` climbs one). It is carried out in the background;
        409 when paused, with HELIX_BFM_CRAWL_ACTION=off, or while a rung is in progress."""
        return view(engine.manual_rung(shard, body.rung, body.reason))

    @app.post("/v1/shards/{shard}/reset", response_model=ShardView, dependencies=auth,
              responses={**_ERRORS, **_CONFLICT}, tags=["ladder"])
    def reset(shard: ShardParam, body: ReasonRequest | None = None) -> ShardView:
        """Forget the shard's ladder: rung none, env cleared (back to GPU), crawls 0."""
        return view(engine.reset(shard, body.reason if body else ""))

    @app.post("/v1/pause", response_model=PauseView, dependencies=auth, responses=_ERRORS,
              tags=["ops"])
    def pause(body: ReasonRequest | None = None) -> PauseView:
        """Stop taking rungs (durable across restarts); alerts are still judged and recorded."""
        engine.set_paused(True, body.reason if body else "")
        return PauseView(paused=True)

    @app.post("/v1/resume", response_model=PauseView, dependencies=auth, responses=_ERRORS,
              tags=["ops"])
    def resume(body: ReasonRequest | None = None) -> PauseView:
        engine.set_paused(False, body.reason if body else "")
        return PauseView(paused=False)

    def limit_for(path: str) -> int:
        return ALERTS_BODY_LIMIT if path == "/v1/alerts" else BODY_LIMIT

    app.add_middleware(BodyLimit, limit_for=limit_for,
                       on_refuse=lambda reason: metrics.invalid.labels(reason=reason).inc(),
                       on_done=metrics.observe_request, authorized=authorized)
    return app
