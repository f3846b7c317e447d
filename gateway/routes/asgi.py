"""Plain ASGI for the hot path: reading a body, answering with bytes, relaying a stream.

The chat endpoint is served here rather than through Litestar: measured under load, Litestar's routing,
request and response objects took about 12% of a core per request, more than all of the gateway's own
code on that path. Everything else (models, usage, admin, native, health) stays on Litestar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from gateway.door import header_value
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


class Closable(Protocol):
    async def aclose(self) -> None: ...


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
    # header_value: some values come from an upstream's headers or a client's body, and must never raise.
    return base + [(k.encode("latin-1"), header_value(v).encode()) for k, v in extra.items()]


async def respond(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(JSON_HEADERS, headers)})
    await send({"type": "http.response.body", "body": body})


async def respond_error(send: Send, error: GatewayError) -> None:
    await respond(send, error.status_code, error.body(), error.headers)


async def relay(send: Send, receive: Receive, frames: AsyncIterator[bytes], headers: dict[str, str],
                source: Closable) -> None:
    """Send each frame as it comes while listening for the client leaving (``http.disconnect``).

    A server does not fail ``send`` when the client has gone (granian takes the bytes and drops them),
    so without listening the gateway would relay an abandoned stream to its end and bill all of it.
    When the client leaves, the relaying task is cancelled where it waits (usually on the upstream
    read), and closing ``source`` closes the upstream response and settles what was produced."""
    try:
        await send({"type": "http.response.start", "status": 200, "headers": _headers(SSE_HEADERS, headers)})
        pump = asyncio.ensure_future(_pump(send, frames))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            pump.cancel()
            gone.cancel()
            outcome, _ = await asyncio.gather(pump, gone, return_exceptions=True)
        if isinstance(outcome, Exception) and not isinstance(outcome, OSError):
            raise outcome  # a bug while relaying; OSError is a client gone mid-send: nothing left to tell it
    finally:
        if isinstance(frames, AsyncGenerator):  # a dialect's translation over ``source``
            with contextlib.suppress(Exception):
                await frames.aclose()
        await source.aclose()


async def _pump(send: Send, frames: AsyncIterator[bytes]) -> None:
    async for frame in frames:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
