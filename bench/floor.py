"""The floor: the thinnest pass-through possible, a raw ASGI app forwarding with aiohttp.

Served by granian exactly like the gateway (one worker, same core), it is the denominator of the
throughput ratios: whatever granian + aiohttp cost on this machine, the gateway cannot go below it.
No routing, no auth, no parsing: the body goes to the mock at the same path, the answer comes back
(streamed chunk by chunk when it is SSE).

Run: ``BENCH_FLOOR_UPSTREAM=http://127.0.0.1:9100 python -m granian --interface asgi bench.floor:app``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

Message = MutableMapping[str, Any]
_session: aiohttp.ClientSession | None = None


async def app(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Message]],
              send: Callable[[Message], Awaitable[None]]) -> None:
    global _session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Same pool settings as the gateway's upstream, so the comparison is about the code path.
                connector = aiohttp.TCPConnector(limit=512, limit_per_host=512, keepalive_timeout=60)
                _session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert _session is not None and scope["type"] == "http"
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    url = os.environ["BENCH_FLOOR_UPSTREAM"] + scope["path"]
    async with _session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
        content_type = resp.headers.get("content-type", "application/json").encode()
        if content_type.startswith(b"text/event-stream"):
            await send({"type": "http.response.start", "status": resp.status,
                        "headers": [(b"content-type", content_type)]})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = await resp.read()
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
