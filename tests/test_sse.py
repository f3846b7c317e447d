from __future__ import annotations

import random

import pytest

from gateway.sse import SSEEvent, SSEParser
from tests.fakes import fixture_bytes


def parse_in_pieces(data: bytes, sizes: list[int]) -> list[SSEEvent]:
    parser, events, pos = SSEParser(), [], 0
    for size in sizes:
        events += parser.feed(data[pos:pos + size])
        pos += size
    events += parser.feed(data[pos:])
    return events + parser.close()


@pytest.mark.parametrize("separator", [b"\n", b"\r\n", b"\r"])
def test_line_endings(separator: bytes) -> None:
    body = separator.join([b"event: message_start", b'data: {"a": 1}', b"", b": comment", b"data: x",
                           b"data: y", b"", b""])
    events = parse_in_pieces(body, [])
    assert events == [SSEEvent(data=b'{"a": 1}', event="message_start"), SSEEvent(data=b"x\ny")]


def test_any_split_gives_the_same_events() -> None:
    recorded = fixture_bytes("openai/openai-python-stream-parallel-tool-calls.sse")
    whole = parse_in_pieces(recorded, [])
    assert whole[-1].data == b"[DONE]" and len(whole) > 10
    rng = random.Random(7)
    for _ in range(50):
        sizes = [rng.randint(1, 40) for _ in range(200)]
        assert parse_in_pieces(recorded, sizes) == whole


def test_crlf_split_between_cr_and_lf() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\n\r") == []
    assert parser.feed(b"\ndata: b\r\n\r\n") == [SSEEvent(data=b"a"), SSEEvent(data=b"b")]


def test_unterminated_last_event_counts_on_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: [DONE]") == []
    assert parser.close() == [SSEEvent(data=b"[DONE]")]


def test_space_after_colon_is_optional_and_only_one_is_dropped() -> None:
    assert parse_in_pieces(b"data:x\n\ndata:  y\n\n", []) == [SSEEvent(data=b"x"), SSEEvent(data=b" y")]
