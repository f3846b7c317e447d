"""A fault-injecting fake provider: the upstream model name picks the fault, in each provider's dialect.

It speaks OpenAI chat (``POST /v1/chat/completions``), Anthropic Messages (``POST /v1/messages``) and
Gemini (``/v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``); the fault is the
model name's last ``/`` segment, so ``fake/bad-json``, ``anthropic/fault/bad-json`` and ``google/bad-json``
all get a 200 with a body that is not JSON, each in its own dialect's framing. Faults:

- ``ok``: a well-formed answer with usage (10 prompt, 5 completion tokens).
- ``bad-json``: 200 and a body that is not JSON (streamed: events whose data is not JSON).
- ``bad-shape``: 200 and JSON that is not the dialect's answer (``[1, 2]``).
- ``bad-status``: 500 with the dialect's error body.
- ``hang-up``: the connection is closed before any status line.
- ``cut``: the body stops half-way (streamed: after two events), the connection dropped.
- ``no-finish``: streamed, ends cleanly but without ``finish_reason``/``[DONE]`` (its stop events).
- ``no-usage``: a well-formed answer with no usage at all.
- ``huge``: a non-streamed body of ``huge_bytes`` (streamed: one event that never ends, 60 MiB).
- ``slow``: streamed, one event every 0.1 s for a minute; the server counts streams it is still writing.

It runs in a thread of its own (like ``tests/fakes.FakeUpstream``) so a gateway process can reach it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes import LoopbackServer

PROMPT, COMPLETION = 10, 5
HUGE_STREAM_EVENT = 60 * 1024 * 1024


def _sse(data: Any, event: str | None = None, sep: bytes = b"\n\n") -> bytes:
    payload = data if isinstance(data, bytes) else json.dumps(data).encode()
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + payload + sep


class _Dialect:
    """One provider format: its answers, stream events and error body."""

    sep = b"\n\n"

    def answer(self, model: str, usage: bool) -> dict[str, Any]:
        raise NotImplementedError

    def events(self, model: str, texts: list[str], usage: bool, finish: bool) -> list[bytes]:
        raise NotImplementedError

    def error(self) -> dict[str, Any]:
        raise NotImplementedError


class _OpenAI(_Dialect):
    def answer(self, model: str, usage: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": "chatcmpl-fault", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello from the fault server."}}]}
        if usage:
            body["usage"] = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION,
                             "total_tokens": PROMPT + COMPLETION}
        return body

    def events(self, model: str, texts: list[str], usage: bool, finish: bool) -> list[bytes]:
        def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
            return _sse({"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1, "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})
        out = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": t}) for t in texts]
        if finish:
            out.append(chunk({}, "stop"))
            if usage:
                out.append(_sse({"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1,
                                 "model": model, "choices": [],
                                 "usage": {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION,
                                           "total_tokens": PROMPT + COMPLETION}}))
            out.append(b"data: [DONE]\n\n")
        return out

    def error(self) -> dict[str, Any]:
        return {"error": {"message": "The fault server failed on purpose.", "type": "server_error"}}


class _Anthropic(_Dialect):
    def answer(self, model: str, usage: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"id": "msg_fault", "type": "message", "role": "assistant", "model": model,
                                "content": [{"type": "text", "text": "Hello from the fault server."}],
                                "stop_reason": "end_turn", "stop_sequence": None}
        if usage:
            body["usage"] = {"input_tokens": PROMPT, "output_tokens": COMPLETION}
        return body

    def events(self, model: str, texts: list[str], usage: bool, finish: bool) -> list[bytes]:
        start = {"type": "message_start", "message": {
            "id": "msg_fault", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "usage": {"input_tokens": PROMPT if usage else 0, "output_tokens": 1}}}
        out = [_sse(start, "message_start"),
               _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                    "content_block_start")]
        out += [_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
                     "content_block_delta") for t in texts]
        if finish:
            out += [_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                    _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                          "usage": {"output_tokens": COMPLETION if usage else 0}}, "message_delta"),
                    _sse({"type": "message_stop"}, "message_stop")]
        return out

    def error(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": "api_error", "message": "The fault server failed on purpose."}}


class _Gemini(_Dialect):
    sep = b"\r\n\r\n"

    def answer(self, model: str, usage: bool) -> dict[str, Any]:
        return self._record(["Hello from the fault server."], usage, finish=True)

    @staticmethod
    def _record(texts: list[str], usage: bool, finish: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": t} for t in texts]}, "index": 0}
        if finish:
            candidate["finishReason"] = "STOP"
        record: dict[str, Any] = {"candidates": [candidate], "modelVersion": "fault"}
        if usage:
            record["usageMetadata"] = {"promptTokenCount": PROMPT, "candidatesTokenCount": COMPLETION,
                                       "totalTokenCount": PROMPT + COMPLETION}
        return record

    def events(self, model: str, texts: list[str], usage: bool, finish: bool) -> list[bytes]:
        out = [_sse(self._record([t], usage=False, finish=False), sep=self.sep) for t in texts]
        if finish:
            out.append(_sse(self._record([], usage=usage, finish=True), sep=self.sep))
        return out

    def error(self) -> dict[str, Any]:
        return {"error": {"code": 500, "message": "The fault server failed on purpose.", "status": "INTERNAL"}}


class FaultUpstream(LoopbackServer):
    handler_cancellation = True  # a slow stream notices the reader that went away

    def __init__(self, *, huge_bytes: int = 3 * 1024 * 1024) -> None:
        super().__init__()
        self.huge_bytes = huge_bytes
        self.requests = 0
        self.open_streams = 0  # slow streams still being written
        self.closed_early = 0  # slow streams whose reader went away before the end

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        dialect: _Dialect
        if request.path.endswith("/chat/completions"):
            dialect, model, stream = _OpenAI(), str(body.get("model", "")), bool(body.get("stream"))
        elif request.path.endswith("/messages"):
            dialect, model, stream = _Anthropic(), str(body.get("model", "")), bool(body.get("stream"))
        else:  # /v1beta/models/{model}:generateContent | :streamGenerateContent
            model, _, method = request.path.rsplit("/", 1)[-1].partition(":")
            dialect, stream = _Gemini(), method == "streamGenerateContent"
        fault = model.rsplit("/", 1)[-1]
        if fault == "hang-up":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if fault == "bad-status":
            return web.json_response(dialect.error(), status=500)
        if not stream:
            return await self._plain(request, dialect, model, fault)
        return await self._stream(request, dialect, model, fault)

    async def _plain(self, request: web.Request, dialect: _Dialect, model: str, fault: str) -> web.StreamResponse:
        if fault == "bad-json":
            return web.Response(body=b'{"id": "x", "choices": [{"mess', content_type="application/json")
        if fault == "bad-shape":
            return web.Response(body=b"[1, 2]", content_type="application/json")
        if fault == "huge":
            filler = b" " * self.huge_bytes
            return web.Response(body=json.dumps(dialect.answer(model, True)).encode()[:-1] + filler + b"}",
                                content_type="application/json")
        answer = json.dumps(dialect.answer(model, usage=fault != "no-usage")).encode()
        if fault != "cut":
            return web.Response(body=answer, content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = len(answer)
        await response.prepare(request)
        await response.write(answer[: len(answer) // 2])
        assert request.transport is not None
        request.transport.close()
        return response

    async def _stream(self, request: web.Request, dialect: _Dialect, model: str, fault: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if fault == "bad-json":
            await response.write(b"data: {not json at all" + dialect.sep)
            await response.write_eof()
            return response
        if fault == "bad-shape":
            await response.write(b"data: [1, 2]" + dialect.sep)
            await response.write_eof()
            return response
        if fault == "huge":
            piece = b"x" * 65536
            await response.write(b"data: ")
            for _ in range(HUGE_STREAM_EVENT // len(piece)):
                await response.write(piece)
            await response.write_eof()
            return response
        if fault == "slow":
            return await self._slow(request, response, dialect, model)
        events = dialect.events(model, ["Hello", " from", " the", " fault", " server."],
                                usage=fault != "no-usage", finish=fault != "no-finish")
        for i, event in enumerate(events):
            if fault == "cut" and i == 2:
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(event)
        await response.write_eof()
        return response

    async def _slow(self, request: web.Request, response: web.StreamResponse, dialect: _Dialect,
                    model: str) -> web.StreamResponse:
        events = dialect.events(model, ["tick"] * 600, usage=True, finish=True)
        self.open_streams += 1
        finished = False
        try:
            for event in events:
                await response.write(event)
                await asyncio.sleep(0.1)
            await response.write_eof()
            finished = True
        except ConnectionError:
            pass  # the gateway closed its side: what the disconnect tests wait for
        finally:
            self.open_streams -= 1
            if not finished:
                self.closed_early += 1
        return response

    def wait_until(self, predicate: Any, timeout: float) -> float:
        """Seconds it took ``predicate()`` to hold; raises after ``timeout``."""
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not true after {timeout} s (open streams: {self.open_streams})")
            time.sleep(0.05)
        return time.monotonic() - started
