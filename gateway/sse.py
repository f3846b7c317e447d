"""Server-sent events: an incremental parser (bytes in, events out) and the encoder.

The parser follows the WHATWG framing rules: lines end in LF, CRLF or CR (Gemini uses CRLF, Anthropic
and OpenAI LF), a blank line ends an event, ``:`` starts a comment, one space after the colon is
dropped, several ``data:`` lines join with LF. It keeps only the unfinished tail between feeds.
"""

from __future__ import annotations

import re

import msgspec

# The separator between events: two line ends of any of the three kinds, in any mix.
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\r\n|\r\n\n|\n\n|\r\r")


class SSEEvent(msgspec.Struct, frozen=True):
    data: bytes
    event: str | None = None


class SSEParser:
    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._tail + chunk if self._tail else chunk
        events: list[SSEEvent] = []
        pos = 0
        while (match := _BOUNDARY.search(buf, pos)) is not None:
            event = _parse_block(buf[pos : match.start()])
            if event is not None:
                events.append(event)
            pos = match.end()
        self._tail = buf[pos:]
        return events

    def close(self) -> list[SSEEvent]:
        """The stream ended: an unterminated last event still counts (some servers omit the blank line)."""
        tail, self._tail = self._tail, b""
        event = _parse_block(tail.rstrip(b"\r\n")) if tail.strip() else None
        return [event] if event is not None else []


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
