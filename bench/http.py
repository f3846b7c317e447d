"""A minimal HTTP/1.1 client for the Python drivers: prebuilt request bytes, keep-alive, no allocations
beyond the response itself. aiohttp's client costs several times more CPU per request, which would
make the load generator (sharing a core with the mock) the bottleneck before the server under test.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


def build_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                  *, host: str = "127.0.0.1", close: bool = False) -> bytes:
    """The exact bytes of one request; built once and sent many times."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_response(buf: bytes | bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes consumed) of the first complete response in ``buf``; None if incomplete.

    Handles ``content-length`` and ``transfer-encoding: chunked`` bodies, which is all the servers
    under test send on keep-alive connections.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).split(b"\r\n")
    status = int(head[0].split(b" ", 2)[1])
    length = -1
    chunked = False
    for line in head[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    start = end + 4
    if not chunked:
        length = max(length, 0)
        if len(buf) < start + length:
            return None
        return status, bytes(buf[start:start + length]), start + length
    body = bytearray()
    pos = start
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
        data_start = line_end + 2
        if len(buf) < data_start + size + 2:
            return None
        if size == 0:
            return status, bytes(body), data_start + 2
        body += buf[data_start:data_start + size]
        pos = data_start + size + 2


class Connection(asyncio.Protocol):
    """One keep-alive connection answering one request at a time."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        _, protocol = await asyncio.get_running_loop().create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        parsed = parse_response(self.buffer)
        if parsed is not None:
            status, body, used = parsed
            del self.buffer[:used]
            self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed before a full response"))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.lost or self.transport is None:
            raise ConnectionError("connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class StreamTrace:
    """What one streamed answer looked like from the client's side (times in seconds from the send)."""

    status: int = 0
    first_event: float | None = None
    last_event: float | None = None
    events: int = 0
    max_gap: float = 0.0
    done: bool = False
    error: str | None = None


async def stream(host: str, port: int, raw: bytes, *, timeout: float) -> StreamTrace:
    """Send one ``connection: close`` request and read its SSE answer to the end, timing every read.

    ``raw`` must ask for ``connection: close``: the end of the answer is then the end of the
    connection, whatever the framing, so no chunked parsing sits between the socket and the clock.
    """
    trace = StreamTrace()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        trace.error = f"connect: {exc!r}"
        return trace
    head = b""
    tail = b""  # the last bytes seen, so markers split across two reads are still found
    started = time.perf_counter()
    deadline = started + timeout
    writer.write(raw)
    try:
        previous = started
        while True:
            data = await asyncio.wait_for(reader.read(65536), max(deadline - time.perf_counter(), 0.001))
            now = time.perf_counter() - started
            if not data:
                break
            if not trace.status:
                head += data
                if b"\r\n" in head:
                    trace.status = int(head.split(b" ", 2)[1])
            events = (tail + data).count(b"data:") - tail.count(b"data:")
            if events:
                if trace.first_event is None:
                    trace.first_event = now
                trace.last_event = now
                trace.events += events
            trace.max_gap = max(trace.max_gap, now - previous)
            previous = now
            if b"[DONE]" in tail + data:
                trace.done = True
            tail = (tail + data)[-16:]
    except (OSError, TimeoutError) as exc:
        trace.error = repr(exc)
    finally:
        writer.close()
    return trace
