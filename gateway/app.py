"""create_app: the one place that wires config, store, upstream and routes into an ASGI app."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException

from gateway.config import CONFIG_ENV_VAR, Config, load_config
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
)
from gateway.logs import access
from gateway.routes import admin, admin_api, health, messages, native, unified
from gateway.routes.asgi import ASGIApp, Message, Receive, Scope, Send, respond_error
from gateway.state import GatewayState
from gateway.store import Store
from gateway.upstream import Upstream

log = logging.getLogger("gateway")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
FastHandler = Callable[[GatewayState, Scope, Receive, Send, str], Awaitable[None]]
# The hot path, served as plain ASGI; everything else goes to Litestar.
FAST_ROUTES: dict[tuple[str, str], FastHandler] = {("POST", "/v1/chat/completions"): unified.chat_completions}
FAST_PATHS = {path: method for method, path in FAST_ROUTES}


class RequestIds:
    """Unique request ids without a syscall per request: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(6)
        self._next = itertools.count(1).__next__

    def new(self) -> str:
        return f"{self._prefix}{self._next():010x}"


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
                if _SAFE_REQUEST_ID.match(candidate):
                    rid = candidate
                break
        if not rid:
            rid = self.ids.new()
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 0
        rid_header = (b"x-gateway-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            fast = FAST_ROUTES.get((scope["method"], scope["path"]))
            if fast is None and scope["path"] in FAST_PATHS:
                await respond_error(send_with_id, MethodNotAllowed(
                    f"Method not allowed: use {FAST_PATHS[scope['path']]} for {scope['path']}."))
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
        finally:
            access.log(scope["method"], scope["path"], status, (time.perf_counter() - started) * 1000, rid)


def _render(error: GatewayError) -> Response[bytes]:
    return Response(error.body(), status_code=error.status_code, media_type="application/json",
                    headers=error.headers)


def _gateway_error(_: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    return _render(exc)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code == 404:
        return _render(RouteNotFound("Unknown path: see the README for the gateway's endpoints."))
    if exc.status_code == 405:
        return _render(MethodNotAllowed(f"Method not allowed: {exc.detail}."))
    if exc.status_code == 413:
        return _render(PayloadTooLarge("The request body is larger than server.max_body_mb allows."))
    return _render(InvalidRequest(str(exc.detail)))


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # A bug of ours: log it with its traceback, tell the client only that it happened.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _render(GatewayError("The gateway hit an internal error; it has been logged."))


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    upstream: Upstream | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RequestContext:
    """The gateway as an ASGI app. Tests pass their own store, clock and sleep; the server passes none."""
    state = GatewayState(config, store=store, upstream=upstream, clock=clock, sleep=sleep)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = Litestar(
        route_handlers=[unified.list_models, unified.usage, admin_api.usage_aggregates,
                        admin.router, health.healthz, health.readyz, native.openai_native, native.anthropic_native,
                        native.gemini_native, native.any_native, messages.create_message,
                        messages.count_tokens],
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
    """granian's factory in each worker process: the config arrives by path, through the environment."""
    from gateway.logs import setup_logging

    setup_logging()
    return create_app(load_config(os.environ.get(CONFIG_ENV_VAR) or None))
