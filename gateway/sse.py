"""Server-sent events: an incremental parser (bytes in, events out) and the encoder.

The parser follows the WHATWG framing rules: lines end in LF, CRLF or CR (Gemini uses CRLF, Anthropic
and OpenAI LF), a blank line ends an event, ``:`` starts a comment, one space after the colon is
dropped, several ``data:`` lines join with LF. It keeps only the unfinished tail between feeds.
"""

from __future__ import annotations

import re

import msgspec

from gateway.errors import UpstreamError

MIB = 1024 * 1024
# The largest single event accepted from an upstream: far above any real chunk (a whole image as base64 is
# a few MiB), far below what would hurt the process.
MAX_EVENT_BYTES = 16 * MIB

# The separator between events: two line ends of any of the three kinds, in any mix.
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\r\n|\r\n\n|\n\n|\r\r")


class SSEEvent(msgspec.Struct, frozen=True):
    data: bytes
    event: str | None = None


class SSEParser:
    """Bytes in, events out, in time linear in the bytes fed: the unfinished tail is kept in a growing
    buffer and only the bytes not yet searched for a boundary are searched again (a boundary is at most
    four bytes, so the search restarts three bytes back). One event may not exceed ``max_event_bytes``:
    an upstream that never ends its event would otherwise grow the buffer without bound."""

    __slots__ = ("_buf", "_max", "_scanned")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched without finding a boundary
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf
        buf += chunk
        events: list[SSEEvent] = []
        pos = 0
        search = max(self._scanned - 3, 0)
        while (match := _BOUNDARY.search(buf, search)) is not None:
            self._check(match.start() - pos)
            event = _parse_block(bytes(buf[pos : match.start()]))
            if event is not None:
                events.append(event)
            pos = search = match.end()
        if pos:
            del buf[:pos]
        self._check(len(buf))
        self._scanned = len(buf)
        return events

    def close(self) -> list[SSEEvent]:
        """The stream ended: an unterminated last event still counts (some servers omit the blank line)."""
        tail = bytes(self._buf)
        self._buf.clear()
        self._scanned = 0
        event = _parse_block(tail.rstrip(b"\r\n")) if tail.strip() else None
        return [event] if event is not None else []

    def _check(self, size: int) -> None:
        if size > self._max:
            self._buf.clear()
            self._scanned = 0
            raise UpstreamError(f"The provider sent a stream event larger than {self._max // MIB} MiB; the gateway "
                                "stopped reading it.", status=502, code="invalid_upstream_response")


def _parse_block(block: bytes) -> SSEEvent | None:
    data: list[bytes] = []
    name: str | None = None
    for line in block.splitlines():
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data:
        return None
    return SSEEvent(data=b"\n".join(data), event=name)


def encode_data(payload: bytes) -> bytes:
    """One OpenAI-style event: ``data: <json>`` and a blank line."""
    return b"data: " + payload + b"\n\n"


def encode_event(name: str, payload: bytes) -> bytes:
    """One Anthropic-style event: the ``event:`` line names the JSON ``type``."""
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"
