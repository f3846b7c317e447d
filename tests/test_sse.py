from __future__ import annotations

import random
import time

import pytest

from gateway.errors import UpstreamError
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


def test_a_large_event_in_small_reads_costs_linear_time() -> None:
    """Each read used to copy and re-search the whole unfinished event: 10 MiB in 4 KiB reads took minutes."""
    event = b"data: " + b"x" * (10 * 1024 * 1024) + b"\n\n"
    parser = SSEParser()
    started = time.perf_counter()
    events = [e for i in range(0, len(event), 4096) for e in parser.feed(event[i:i + 4096])]
    assert time.perf_counter() - started < 3.0
    assert len(events) == 1 and len(events[0].data) == 10 * 1024 * 1024


def test_an_event_that_never_ends_is_cut_at_the_cap() -> None:
    """60 MB with no event break: refused once one event passes 16 MiB, in well under a second of CPU."""
    parser = SSEParser()
    piece = b"data: " + b"y" * 65530
    started = time.perf_counter()
    with pytest.raises(UpstreamError) as info:
        for _ in range(60 * 1024 * 1024 // len(piece)):
            parser.feed(piece)
    assert time.perf_counter() - started < 3.0
    assert info.value.status_code == 502 and info.value.code == "invalid_upstream_response"
    assert "16 MiB" in info.value.message


def test_the_event_cap_is_configurable_and_counts_whole_events_too() -> None:
    parser = SSEParser(max_event_bytes=100)
    assert parser.feed(b"data: " + b"a" * 90 + b"\n\n") == [SSEEvent(data=b"a" * 90)]
    with pytest.raises(UpstreamError):
        parser.feed(b"data: " + b"b" * 200 + b"\n\ndata: c\n\n")
