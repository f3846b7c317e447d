"""Plain ASGI for the hot path: reading a body, answering with bytes, relaying a stream.

The chat endpoint is served here rather than through Litestar: measured under load, Litestar's routing,
request and response objects took about 12% of a core per request, more than all of the gateway's own
code on that path. Everything else (models, usage, admin, native, health) stays on Litestar.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import GatewayError, PayloadTooLarge

log = logging.getLogger("gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


class ClientGone(Exception):
    """The client closed the connection before the body was read."""


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(receive: Receive, limit: int) -> bytes:
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientGone
    body = first.get("body", b"")
    if not first.get("more_body"):
        if len(body) > limit:
            raise PayloadTooLarge("The request body is larger than server.max_body_mb allows.")
        return bytes(body)
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("The request body is larger than server.max_body_mb allows.")
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


def _headers(base: list[tuple[bytes, bytes]], extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return base + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]


async def respond(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(JSON_HEADERS, headers)})
    await send({"type": "http.response.body", "body": body})


async def respond_error(send: Send, error: GatewayError) -> None:
    await respond(send, error.status_code, error.body(), error.headers)


async def relay(send: Send, chunks: AsyncIterator[bytes], headers: dict[str, str]) -> None:
    """Send each chunk as it comes; when the client goes away, close the source so it settles."""
    await send({"type": "http.response.start", "status": 200, "headers": _headers(SSE_HEADERS, headers)})
    try:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except OSError:
        pass  # the client disconnected mid-stream: nothing left to tell it
    finally:
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]
