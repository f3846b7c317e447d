"""A fast mock upstream speaking the OpenAI, Anthropic and Gemini HTTP shapes, JSON and SSE.

A raw asyncio protocol with a minimal HTTP/1.1 parser and keep-alive, because the mock must stay far
faster than anything measured through it (aiohttp.web tops out near a third of this on one core).
Response bodies are built once per knob setting and reused.

The Anthropic and Gemini routes validate the body the way those APIs do (``max_tokens`` required, no
``system`` role message; ``contents`` required), so a translation benchmark cannot pass by forwarding
OpenAI bytes unchanged.

Knobs (command-line flags, changed at run time with ``POST /_mock/config`` and a JSON object):
``delay_ms`` before the answer starts, ``chunks`` and ``chunk_ms`` for SSE, ``size`` (characters of
answer text) and ``error_rate`` (share of requests answered 500). ``GET /_mock/stats`` counts requests.

Run: ``python -m bench.mock --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import msgspec

from bench.procs import quiet_gc

MAX_HEADER_BYTES = 64 * 1024
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class Knobs:
    delay_ms: float = 0.0
    chunks: int = 8
    chunk_ms: float = 0.0
    size: int = 64
    error_rate: float = 0.0


class BadRequest(Exception):
    """The body is not what the real API would accept: answered 400 with the reason."""


# ------------------------------------------------------------------------------------------ bodies


def _text(size: int) -> str:
    return ("lorem ipsum " * (size // 12 + 1))[:size]


def _chunk_texts(knobs: Knobs) -> list[str]:
    return [f"tok{i} " for i in range(knobs.chunks)]


def openai_json(model: str, knobs: Knobs) -> bytes:
    return _json.encode({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": _text(knobs.size)},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": knobs.chunks, "total_tokens": 12 + knobs.chunks},
    })


def openai_events(model: str, knobs: Knobs, include_usage: bool) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        return b"data: " + _json.encode({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }) + b"\n\n"

    texts = _chunk_texts(knobs)
    events = [chunk({"role": "assistant", "content": t} if i == 0 else {"content": t}, None)
              for i, t in enumerate(texts)]
    tail = chunk({}, "stop")
    if include_usage:
        tail += b"data: " + _json.encode({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": len(texts),
                                     "total_tokens": 12 + len(texts)},
        }) + b"\n\n"
    tail += b"data: [DONE]\n\n"
    return _attach_tail(events, tail)


def anthropic_json(model: str, knobs: Knobs) -> bytes:
    return _json.encode({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": _text(knobs.size)}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": knobs.chunks},
    })


def anthropic_events(model: str, knobs: Knobs) -> list[bytes]:
    def event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _json.encode(data) + b"\n\n"

    head = event("message_start", {"type": "message_start", "message": {
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}})
    head += event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})
    events = [event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": t}})
              for t in _chunk_texts(knobs)]
    events[0] = head + events[0]
    tail = event("content_block_stop", {"type": "content_block_stop", "index": 0})
    tail += event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                    "stop_sequence": None}, "usage": {"output_tokens": knobs.chunks}})
    tail += event("message_stop", {"type": "message_stop"})
    return _attach_tail(events, tail)


def _gemini_candidate(text: str, finish: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    return candidate


def gemini_json(model: str, knobs: Knobs) -> bytes:
    return _json.encode({
        "candidates": [_gemini_candidate(_text(knobs.size), True)],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": knobs.chunks,
                          "totalTokenCount": 12 + knobs.chunks},
        "modelVersion": model, "responseId": "mock",
    })


def gemini_events(model: str, knobs: Knobs) -> list[bytes]:
    texts = _chunk_texts(knobs)
    events = []
    for i, text in enumerate(texts):
        last = i == len(texts) - 1
        data: dict[str, Any] = {"candidates": [_gemini_candidate(text, last)], "modelVersion": model,
                                "responseId": "mock"}
        if last:
            data["usageMetadata"] = {"promptTokenCount": 12, "candidatesTokenCount": len(texts),
                                     "totalTokenCount": 12 + len(texts)}
        events.append(b"data: " + _json.encode(data) + b"\r\n\r\n")  # Gemini separates events with CRLF
    return events


def _attach_tail(events: list[bytes], tail: bytes) -> list[bytes]:
    """The closing events travel with the last content chunk, as real providers send them."""
    if events:
        events[-1] += tail
        return events
    return [tail]


# ----------------------------------------------------------------------------------------- routes


class _Body(msgspec.Struct):
    model: str | None = None
    messages: list[dict[str, Any]] | None = None
    stream: bool | None = None
    max_tokens: int | None = None
    contents: list[Any] | None = None
    stream_options: dict[str, Any] | None = None


_body_decoder = msgspec.json.Decoder(_Body)


def _decode(body: bytes) -> _Body:
    try:
        return _body_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None


class Answer(msgspec.Struct):
    """What to send: a JSON body, or SSE events (paced by the knobs)."""

    status: int
    body: bytes = b""
    events: list[bytes] | None = None


def route(path: bytes, body: bytes, knobs: Knobs, cache: dict[tuple[Any, ...], Answer]) -> Answer:
    """The answer for one API request; raises BadRequest like the real API would refuse it."""
    if path == b"/v1/chat/completions":
        req = _decode(body)
        if not req.messages or not req.model:
            raise BadRequest("OpenAI: 'model' and 'messages' are required")
        usage = bool(req.stream_options and req.stream_options.get("include_usage"))
        key: tuple[Any, ...] = ("openai", req.model, bool(req.stream), usage)
        build: Callable[[], Answer] = (
            (lambda: Answer(200, events=openai_events(req.model or "", knobs, usage))) if req.stream
            else (lambda: Answer(200, body=openai_json(req.model or "", knobs))))
    elif path == b"/v1/messages":
        req = _decode(body)
        if req.contents is not None or not req.messages or not req.model:
            raise BadRequest("Anthropic: 'model' and 'messages' are required")
        if not isinstance(req.max_tokens, int):
            raise BadRequest("Anthropic: max_tokens: Field required")
        if any(m.get("role") not in ("user", "assistant") for m in req.messages):
            raise BadRequest("Anthropic: messages: roles must be 'user' or 'assistant' (system goes in 'system')")
        key = ("anthropic", req.model, bool(req.stream))
        build = ((lambda: Answer(200, events=anthropic_events(req.model or "", knobs))) if req.stream
                 else (lambda: Answer(200, body=anthropic_json(req.model or "", knobs))))
    elif path.startswith(b"/v1beta/models/"):
        model, _, method = path[len(b"/v1beta/models/"):].partition(b":")
        req = _decode(body)
        if not req.contents or req.messages is not None:
            raise BadRequest("Gemini: 'contents' is required")
        name = model.decode()
        if method == b"streamGenerateContent?alt=sse":
            key, build = ("gemini", name, True), (lambda: Answer(200, events=gemini_events(name, knobs)))
        elif method == b"generateContent":
            key, build = ("gemini", name, False), (lambda: Answer(200, body=gemini_json(name, knobs)))
        else:
            return Answer(404, body=b'{"error":{"message":"unknown method"}}')
    else:
        return Answer(404, body=b'{"error":{"message":"unknown path"}}')
    answer = cache.get(key)
    if answer is None:
        answer = cache[key] = build()
    return answer


# ------------------------------------------------------------------------------------------ server


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 411: b"Length Required", 500: b"Internal Server Error"}
_ERROR_500 = b'{"error":{"message":"mock error","type":"server_error","code":"mock_error"}}'


class MockState:
    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.cache: dict[tuple[Any, ...], Answer] = {}
        self.requests = 0
        self.errors = 0
        self.rng = random.Random(1)

    def configure(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in fields(Knobs)}
        unknown = set(changes) - names
        if unknown:
            raise BadRequest(f"unknown knobs: {sorted(unknown)}")
        self.knobs = replace(self.knobs, **changes)
        self.cache.clear()


class MockProtocol(asyncio.Protocol):
    """One connection: parse requests (keep-alive, pipelining tolerated), answer each in order."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # answers go out in order: the next request waits for a delayed/streamed one
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._drain()

    def _drain(self) -> None:
        while not self.busy and not self.closed:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self._close()
                return
            head = self.buffer[:end].split(b"\r\n")
            parts = head[0].split(b" ")
            if len(parts) != 3:
                self._close()
                return
            method, path = parts[0], parts[1]
            length = 0
            keep_alive = parts[2] == b"HTTP/1.1"
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    keep_alive = value.strip().lower() != b"close"
                elif name == b"transfer-encoding":
                    self._send(411, b'{"error":{"message":"send a content-length"}}', keep_alive=False)
                    return
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self._handle(method, path, body, keep_alive)

    def _handle(self, method: bytes, path: bytes, body: bytes, keep_alive: bool) -> None:
        state = self.state
        if path.startswith(b"/_mock/"):
            self._control(method, path, body, keep_alive)
            return
        state.requests += 1
        knobs = state.knobs
        if knobs.error_rate and state.rng.random() < knobs.error_rate:
            state.errors += 1
            self._later(knobs.delay_ms, lambda: self._send(500, _ERROR_500, keep_alive))
            return
        try:
            answer = route(path, body, knobs, state.cache)
        except BadRequest as exc:
            state.errors += 1
            self._send(400, _json.encode({"error": {"type": "invalid_request_error", "message": str(exc)}}),
                       keep_alive)
            return
        if answer.events is None:
            self._later(knobs.delay_ms, lambda: self._send(answer.status, answer.body, keep_alive))
        else:
            events = answer.events
            self._later(knobs.delay_ms, lambda: self._stream(events, knobs.chunk_ms, keep_alive))

    def _control(self, method: bytes, path: bytes, body: bytes, keep_alive: bool) -> None:
        state = self.state
        if path == b"/_mock/config" and method == b"POST":
            try:
                state.configure(msgspec.json.decode(body) if body else {})
            except (BadRequest, msgspec.DecodeError, TypeError) as exc:
                self._send(400, _json.encode({"error": str(exc)}), keep_alive)
                return
            self._send(200, _json.encode(asdict(state.knobs)), keep_alive)
        elif path == b"/_mock/stats":
            self._send(200, _json.encode({"requests": state.requests, "errors": state.errors,
                                          "knobs": asdict(state.knobs)}), keep_alive)
        else:
            self._send(404, b'{"error":"unknown control path"}', keep_alive)

    def _later(self, delay_ms: float, then: Callable[[], None]) -> None:
        if delay_ms <= 0:
            then()
            return
        self.busy = True
        asyncio.get_running_loop().call_later(delay_ms / 1000, then)

    def _send(self, status: int, body: bytes, keep_alive: bool) -> None:
        if self.closed or self.transport is None:
            return
        head = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                % (status, _REASONS.get(status, b"Error"), len(body)))
        head += b"\r\n" if keep_alive else b"connection: close\r\n\r\n"
        self.transport.write(head + body)
        self._done(keep_alive)

    def _stream(self, events: list[bytes], chunk_ms: float, keep_alive: bool) -> None:
        if self.closed or self.transport is None:
            return
        self.busy = True
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n" \
               b"transfer-encoding: chunked\r\n"
        head += b"\r\n" if keep_alive else b"connection: close\r\n\r\n"
        if chunk_ms <= 0:
            self.transport.write(head + b"".join(_chunk(e) for e in events) + b"0\r\n\r\n")
            self._done(keep_alive)
            return
        self.transport.write(head + _chunk(events[0]))
        self._pace(events, 1, chunk_ms / 1000, keep_alive)

    def _pace(self, events: list[bytes], index: int, interval: float, keep_alive: bool) -> None:
        if self.closed or self.transport is None:
            return
        if index == len(events):
            self.transport.write(b"0\r\n\r\n")
            self._done(keep_alive)
            return
        loop = asyncio.get_running_loop()

        def next_chunk() -> None:
            if self.closed or self.transport is None:
                return
            self.transport.write(_chunk(events[index]))
            self._pace(events, index + 1, interval, keep_alive)

        loop.call_later(interval, next_chunk)

    def _done(self, keep_alive: bool) -> None:
        self.busy = False
        if not keep_alive:
            self._close()
        elif self.buffer:
            self._drain()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve(host: str, port: int, knobs: Knobs) -> None:
    state = MockState(knobs)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(state), host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    defaults = Knobs()
    parser.add_argument("--delay-ms", type=float, default=defaults.delay_ms)
    parser.add_argument("--chunks", type=int, default=defaults.chunks)
    parser.add_argument("--chunk-ms", type=float, default=defaults.chunk_ms)
    parser.add_argument("--size", type=int, default=defaults.size)
    parser.add_argument("--error-rate", type=float, default=defaults.error_rate)
    args = parser.parse_args()
    knobs = Knobs(delay_ms=args.delay_ms, chunks=args.chunks, chunk_ms=args.chunk_ms, size=args.size,
                  error_rate=args.error_rate)
    quiet_gc()
    asyncio.run(serve(args.host, args.port, knobs))


if __name__ == "__main__":
    main()
