"""create_app: the one place that wires config, store, upstream and routes into an ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException

from gateway import tracing
from gateway.admin import api as admin_api
from gateway.admin import routes as admin
from gateway.config import CONFIG_ENV_VAR, SERVE_FLAGS_ENV_VAR, Config, ServeFlags, load_config
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
    RouteNotFound,
)
from gateway.logs import access
from gateway.native import Kind, error_body
from gateway.redaction import redact
from gateway.routes import embeddings, health, messages, metrics, native, openapi, responses, unified
from gateway.routes.asgi import ASGIApp, Message, Receive, Scope, Send, respond, respond_error
from gateway.routes.context import gateway_state
from gateway.state import GatewayState
from gateway.store import Store
from gateway.upstream import Upstream

log = logging.getLogger("gateway")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
FastHandler = Callable[[GatewayState, Scope, Receive, Send, str], Awaitable[None]]
# The hot path, served as plain ASGI; everything else goes to Litestar.
FAST_ROUTES: dict[tuple[str, str], FastHandler] = {("POST", "/v1/chat/completions"): unified.chat_completions,
                                                   ("GET", "/metrics"): metrics.scrape,
                                                   ("POST", "/v1/embeddings"): embeddings.create_embeddings,
                                                   ("POST", "/v1/responses"): responses.create_response,
                                                   ("POST", "/v1/messages"): messages.create_message}
FAST_PATHS = {path: method for method, path in FAST_ROUTES}


class RequestIds:
    """Unique request ids without a syscall per request: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(6)
        self._next = itertools.count(1).__next__

    def new(self) -> str:
        return f"{self._prefix}{self._next():010x}"


# How much of a body the gateway reads and throws away, in units of server.max_body_mb, before answering
# a request whose body it did not read (a 401 before the upload ended, a 413): HTTP/1 clients send the whole
# body before they read the answer, so closing on them makes them see a broken pipe instead of the error.
DRAIN_BODIES = 2


class BoundedBody:
    """The request's ``receive``, with the body read against a deadline.

    The body must arrive within ``server.body_timeout_s``, and each ``min_body_rate_kbps`` kB received buys
    one more second: a slow but steady upload finishes, a connection that trickles bytes to stay open is
    refused with a 408 once the deadline passes. Without it a few thousand tricklers hold every slot granian
    gives the app and the server stops accepting anyone. Once the body is complete, ``receive`` is the
    server's own again: waiting for ``http.disconnect`` during a long answer is not bounded.
    """

    __slots__ = ("_limit", "_per_byte", "_receive", "deadline", "disconnected", "done", "expired", "received")

    def __init__(self, receive: Receive, config: Config) -> None:
        server = config.server
        self._receive = receive
        self._per_byte = 1.0 / (server.min_body_rate_kbps * 1000.0)
        self._limit = DRAIN_BODIES * server.max_body_mb * 1024 * 1024
        self.deadline = asyncio.get_running_loop().time() + server.body_timeout_s
        self.received = 0
        self.done = False  # the whole body arrived, or the client left
        self.disconnected = False  # ...the latter, before the body was complete
        self.expired = False

    async def __call__(self) -> Message:
        if self.done:
            if self.expired:  # the request is over for the app: it was answered with a 408
                return {"type": "http.disconnect"}
            return await self._receive()
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self._receive()
        except TimeoutError:
            self.done = self.expired = True
            raise RequestTimeout("The request body did not arrive in time: send it within server.body_timeout_s, "
                                 "at server.min_body_rate_kbps or faster.") from None
        if message["type"] == "http.request":
            size = len(message.get("body", b""))
            self.received += size
            self.deadline += size * self._per_byte
            self.done = not message.get("more_body", False)
        else:
            self.done = self.disconnected = True
        return message

    async def drain(self, content_length: int | None) -> None:
        """Read and discard the rest of a body the app answered without reading, within the deadline and
        up to DRAIN_BODIES bodies; past either, the server closes the connection as before."""
        if content_length is not None and content_length > self._limit:
            return
        while not self.done and self.received <= self._limit:
            try:
                await self()
            except RequestTimeout:
                return


class RequestContext:
    """ASGI middleware: gives every request an id (or keeps a sane incoming ``x-request-id``), echoes
    it as ``x-gateway-request-id`` on every answer (404s included), logs one line per request, and
    sends the hot path to its plain-ASGI handler."""

    def __init__(self, app: ASGIApp, state: GatewayState) -> None:
        self.app = app
        self.state = state
        self.ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                # Checked once here, so that nothing downstream (answers, records, log lines) needs to:
                # an id with a secret in it is replaced as one with a control character is.
                if _SAFE_REQUEST_ID.match(candidate) and redact(candidate) == candidate:
                    rid = candidate
                break
        if not rid:
            rid = self.ids.new()
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 0
        rid_header = (b"x-gateway-request-id", rid.encode())
        body = BoundedBody(receive, self.state.config)
        receive = body
        span = tracing.start_request(scope, rid) if tracing.tracer is not None else None
        if access.json:
            access.begin()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
                if not body.done:
                    await body.drain(_content_length(scope))
            await send(message)

        try:
            fast = FAST_ROUTES.get((scope["method"], scope["path"]))
            if fast is None and scope["path"] in FAST_PATHS:
                refused = MethodNotAllowed(f"Method not allowed: use {FAST_PATHS[scope['path']]} for {scope['path']}.",
                                           headers={"allow": FAST_PATHS[scope["path"]]})
                await respond(send_with_id, refused.status_code,
                              error_body(error_kind(scope["path"], self.state.config), refused), refused.headers)
            elif fast is None:
                await self.app(scope, receive, send_with_id)
            else:
                try:
                    await fast(self.state, scope, receive, send_with_id, rid)
                except Exception as exc:
                    # A bug of ours: log it with its traceback, tell the client only that it happened.
                    log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
                    if not status:
                        await respond_error(send_with_id, GatewayError(
                            "The gateway hit an internal error; it has been logged."))
            if not status and body.disconnected:
                # The route gave up on a body that ended early: the client left, or granian could not parse
                # its chunked encoding (which it reports as a disconnect, then answers a bare 500 for the
                # silence). Whoever still listens gets a 400 in the route's shape; nobody may be left.
                error = InvalidRequest("The request body ended before it was complete (or its chunked encoding "
                                       "is malformed).")
                with contextlib.suppress(Exception):
                    await respond(send_with_id, error.status_code,
                                  error_body(error_kind(scope["path"], self.state.config), error), error.headers)
        finally:
            if span is not None:
                tracing.end_request(span, status)
            access.log(scope["method"], scope["path"], status, (time.perf_counter() - started) * 1000, rid)
            if status == 401:  # refused for its key, on any route: counted, not recorded (see usage.py)
                self.state.usage.count_unauthenticated(scope["path"], scope["headers"], scope["query_string"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def error_kind(path: str, config: Config) -> Kind:
    """Whose error shape a path speaks: /v1/messages and /anthropic/* Anthropic's, /gemini/* Google's,
    /native/NAME/* its provider's, everything else OpenAI's. Errors raised before a route's own handler runs
    (Litestar's 404/405/413, an unread body) use it too, so a client's SDK always parses what it gets."""
    if path.startswith(("/v1/messages", "/anthropic/")):
        return "anthropic"
    if path.startswith("/gemini/"):
        return "gemini"
    if path.startswith("/native/"):
        provider = config.providers.get(path.split("/", 3)[2])
        return provider.kind if provider is not None else "openai"
    return "openai"


def _render(request: Request[Any, Any, Any], error: GatewayError) -> Response[bytes]:
    body = error_body(error_kind(request.scope["path"], gateway_state(request).config), error)
    return Response(body, status_code=error.status_code, media_type="application/json", headers=error.headers)


def _gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    return _render(request, exc)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code == 404:
        return _render(request, RouteNotFound("Unknown path: see the README for the gateway's endpoints."))
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("allow", "")
        methods = ", ".join(m for m in allow.split(", ") if m not in ("OPTIONS", "HEAD")) or "another method"
        return _render(request, MethodNotAllowed(f"Method not allowed: use {methods} for {request.scope['path']}.",
                                                 headers={"allow": allow} if allow else None))
    if exc.status_code == 413:
        return _render(request, PayloadTooLarge("The request body is larger than server.max_body_mb allows."))
    return _render(request, InvalidRequest(str(exc.detail)))


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # A bug of ours: log it with its traceback, tell the client only that it happened.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _render(request, GatewayError("The gateway hit an internal error; it has been logged."))


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    upstream: Upstream | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    flags: ServeFlags | None = None,
    started: Callable[[], None] | None = None,
) -> RequestContext:
    """The gateway as an ASGI app. Tests pass their own store, clock and sleep; the server passes the serve
    command's flags, which a reload applies again over the file, and what a worker does once it is up
    (``started``)."""
    state = GatewayState(config, store=store, upstream=upstream, clock=clock, sleep=sleep, flags=flags)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await state.start()
        if started is not None:
            started()
        try:
            yield
        finally:
            await state.stop()

    app = Litestar(
        route_handlers=[unified.list_models, unified.retrieve_model, unified.usage, admin_api.usage_aggregates,
                        admin.router, admin.front_door, health.healthz, health.readyz, native.openai_native,
                        native.anthropic_native, native.gemini_native, native.any_native, messages.count_tokens,
                        responses.retrieve_response, responses.delete_response, responses.list_input_items,
                        openapi.openapi_json],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=[lifespan],
        openapi_config=None,
        request_max_body_size=int(config.server.max_body_mb * 1024 * 1024),
        logging_config=None,
    )
    app.state.gateway = state
    asgi: ASGIApp = app  # type: ignore[assignment]  # Litestar's own ASGI types are narrower TypedDicts
    return RequestContext(asgi, state)


def serve_app() -> RequestContext:
    """granian's factory in each worker process: the config arrives by path, and the serve command's flags
    as JSON, through the environment."""
    from gateway.logs import setup_logging
    from gateway.server import die_with_parent, freeze_startup_heap, tolerate_closed_stderr

    die_with_parent()
    tolerate_closed_stderr()
    setup_logging()
    flags = msgspec.json.decode(os.environ.get(SERVE_FLAGS_ENV_VAR) or "{}", type=ServeFlags)
    config = flags.apply(load_config(os.environ.get(CONFIG_ENV_VAR) or None))
    setup_logging(config.logging.format)  # again, now that the format is known (a config error logs as text)
    return create_app(config, flags=flags, started=freeze_startup_heap)
