"""The benchmark harness's pure pieces (bench/): statistics, the open-loop schedule, HTTP framing and the
mock's request validation. No server is started here; `python -m bench --quick` exercises the rest."""

from __future__ import annotations

import json
import math

import pytest

from bench.drivers import schedule
from bench.http import build_request, parse_response
from bench.mock import BadRequest, Knobs, route
from bench.procs import descendants
from bench.stats import added, percentile, slope_per_minute, summary


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_nan_and_bounds_are_checked() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_reports_count_and_tail() -> None:
    figures = summary([float(v) for v in range(1, 11)])
    assert figures["n"] == 10 and figures["max"] == 10.0 and figures["p50"] == 5.5


def test_added_is_the_median_of_per_round_differences() -> None:
    base = [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    target = [[1.5, 1.5], [9.0, 9.0], [1.7, 1.7]]  # one noisy round does not move the median
    assert added(target, base, 50) == pytest.approx(0.7)


def test_slope_per_minute() -> None:
    assert slope_per_minute([(0.0, 100.0), (30.0, 100.5), (60.0, 101.0)]) == pytest.approx(1.0)
    assert math.isnan(slope_per_minute([(0.0, 1.0)]))


def test_open_loop_schedule_is_evenly_spaced_and_bounded() -> None:
    times = schedule(1000, 2.5)
    assert len(times) == 2500
    assert times[0] == 0.0 and times[1] == pytest.approx(0.001) and times[-1] == pytest.approx(2.499)
    assert schedule(0, 10) == [] and schedule(10, 0) == []


def test_build_request_frames_a_post() -> None:
    raw = build_request("POST", "/v1/x", b"{}", {"authorization": "Bearer k"}, close=True)
    head, body = raw.split(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /v1/x HTTP/1.1"
    assert b"content-length: 2" in head and b"connection: close" in head and body == b"{}"


def test_parse_response_with_content_length_keeps_what_follows() -> None:
    buf = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 404"
    assert parse_response(buf) == (200, b"hello", len(buf) - len(b"HTTP/1.1 404"))
    assert parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel") is None
    assert parse_response(b"HTTP/1.1 200 OK\r\ncontent-le") is None


def test_parse_response_chunked() -> None:
    buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert parse_response(buf) == (200, b"abcde", len(buf))
    assert parse_response(buf[:-4]) is None


def test_descendants_walks_the_whole_tree() -> None:
    parents = {10: 1, 11: 10, 12: 11, 13: 1, 14: 10}
    assert descendants(parents, 10) == {10, 11, 12, 14}


def _openai_body(**extra: object) -> bytes:
    messages = [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}]
    return json.dumps({"model": "m", "messages": messages, **extra}).encode()


def test_mock_refuses_openai_bodies_on_anthropic_and_gemini_routes() -> None:
    knobs, cache = Knobs(), {}
    assert route(b"/v1/chat/completions", _openai_body(), knobs, cache).status == 200
    with pytest.raises(BadRequest, match="max_tokens"):
        route(b"/v1/messages", _openai_body(), knobs, cache)
    with pytest.raises(BadRequest, match="roles"):
        route(b"/v1/messages", _openai_body(max_tokens=5), knobs, cache)
    with pytest.raises(BadRequest, match="contents"):
        route(b"/v1beta/models/g:generateContent", _openai_body(), knobs, cache)


def test_mock_answers_translated_shapes_and_streams() -> None:
    knobs, cache = Knobs(chunks=3), {}
    anthropic = json.dumps({"model": "c", "max_tokens": 5, "system": "s",
                            "messages": [{"role": "user", "content": "hi"}]}).encode()
    answer = route(b"/v1/messages", anthropic, knobs, cache)
    assert json.loads(answer.body)["type"] == "message"
    gemini = json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).encode()
    stream = route(b"/v1beta/models/g:streamGenerateContent?alt=sse", gemini, knobs, cache)
    assert stream.events is not None and len(stream.events) == 3
    openai = route(b"/v1/chat/completions", _openai_body(stream=True), knobs, cache)
    assert openai.events is not None and openai.events[-1].endswith(b"data: [DONE]\n\n")
