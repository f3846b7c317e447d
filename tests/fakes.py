"""A fake provider server on loopback: replays recorded traffic and records what it received.

It runs an aiohttp server in a thread of its own, so both in-process tests and a gateway running as a
real process can reach it. Tests queue replies (``fake.reply(...)``); with none queued it answers
from a default reply per path. Every request is recorded with its method, path, query, headers and body.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    chunks: list[bytes] | None = None  # stream these pieces one by one (SSE)
    chunk_delay: float = 0.0
    cut_after: int | None = None  # close the connection after this many chunks
    delay: float = 0.0  # wait before answering at all (for timeouts)


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=json.dumps(body).encode(),
                 headers={"content-type": "application/json", **(headers or {})})


def sse_reply(raw: bytes, *, split: bytes = b"\n\n", **kwargs: Any) -> Reply:
    """Stream a recorded SSE body event by event (each piece keeps its separator)."""
    pieces = [p + split for p in raw.split(split) if p.strip()]
    return Reply(chunks=pieces, headers={"content-type": "text/event-stream"}, **kwargs)


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LoopbackServer:
    """An aiohttp server on a free loopback port, run by an event loop in a thread of its own, so both
    in-process tests and a gateway running as a real process can reach it. Subclasses answer in ``_handle``."""

    handler_cancellation = False  # True: a handler is cancelled when its client goes away

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=self.handler_cancellation)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


class FakeUpstream(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self._queue: deque[Reply | Callable[[Received], Reply]] = deque()
        self.default: Callable[[Received], Reply] = _default_reply

    # --------------------------------------------------------------------------------- control
    def reply(self, *replies: Reply | Callable[[Received], Reply]) -> None:
        self._queue.extend(replies)

    def reset(self) -> None:
        self._queue.clear()
        self.received.clear()
        self.default = _default_reply

    @property
    def last(self) -> Received:
        return self.received[-1]


    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            method=request.method, path=request.path, query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()}, body=await request.read(),
        )
        self.received.append(received)
        item = self._queue.popleft() if self._queue else self.default
        reply = item(received) if callable(item) else item
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.chunks is None:
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        await response.prepare(request)
        for i, piece in enumerate(reply.chunks):
            if reply.cut_after is not None and i >= reply.cut_after:
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(piece)
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
        await response.write_eof()
        return response


def _default_reply(received: Received) -> Reply:
    """A plain OpenAI chat completion that echoes the model it was asked for."""
    body = received.json() if received.body else {}
    model = body.get("model", "unknown")
    if body.get("stream"):
        return sse_reply(fixture_bytes("openai/openai-python-stream-text.sse"))
    return json_reply({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1742842886, "model": model,
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello from the fake upstream.",
                                 "refusal": None}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
    })
