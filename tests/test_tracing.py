"""OpenTelemetry traces from a real `gateway serve`: an in-test OTLP/HTTP receiver decodes the spans of a
fallback request (request span, a child per attempt, GenAI attributes), and the client's trace reaches
the upstream as ``traceparent``; prompts and completions appear on the request spans only with
``[tracing] capture_content = true``."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import UPSTREAM_KEY, gateway_env, wait_ready
from tests.fakes import FakeUpstream, Reply, free_port, json_reply
from tests.test_metrics import MAIN_KEY, config_text

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


class Receiver:
    """An OTLP/HTTP traces endpoint (protobuf), keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.paths.append(self.path)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


def attributes(span: Span) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in span.attributes:
        kind = item.value.WhichOneof("value")
        found[item.key] = getattr(item.value, kind) if kind else None
    return found


@contextlib.contextmanager
def serving(fake: FakeUpstream, tmp_path: Path, receiver: Receiver, tracing: str = "") -> Iterator[str]:
    """`gateway serve` with tracing on to ``receiver`` (plus ``tracing``'s lines), its base URL."""
    config = tmp_path / "config.toml"
    config.write_text(config_text(fake, tmp_path / "data",
                                  extra=f'[tracing]\nenabled = true\nendpoint = "{receiver.url}"\n{tracing}'))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # OTEL_BSP_SCHEDULE_DELAY: a standard variable the SDK reads, so the spans leave within 100 ms.
    env = gateway_env(OTEL_BSP_SCHEDULE_DELAY="100", OTEL_SERVICE_NAME="gateway-under-test")
    with (tmp_path / "gateway.log").open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def wait_for_spans(receiver: Receiver, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(receiver.spans) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_fallback_request_spans_and_traceparent(fake: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    with serving(fake, tmp_path, receiver) as base:
        fake.reply(json_reply({"error": {"message": "down", "type": "server_error"}}, status=500))
        response = httpx.post(f"{base}/v1/chat/completions", timeout=10, json={
            "model": "pair", "messages": [{"role": "user", "content": "a secret prompt"}]}, headers={
            "authorization": f"Bearer {MAIN_KEY}", "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"})
        assert response.status_code == 200, response.text
        wait_for_spans(receiver, 3)

    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert len(receiver.spans) == 3, [s.name for s in receiver.spans]
    request = next(s for s in receiver.spans if s.kind == Span.SPAN_KIND_SERVER)
    assert request.trace_id.hex() == TRACE_ID
    assert request.parent_span_id.hex() == CLIENT_SPAN
    assert request.name == "chat pair"
    got = attributes(request)
    assert got["gen_ai.operation.name"] == "chat"
    assert got["gen_ai.request.model"] == "pair"
    assert got["gen_ai.response.model"] == "gpt-4o-mini"
    assert got["gen_ai.provider.name"] == "openai"
    assert got["gen_ai.usage.input_tokens"] == 9
    assert got["gen_ai.usage.output_tokens"] == 6
    assert got["gateway.attempts"] == 2
    assert got["gateway.provider"] == "backup"
    assert got["gateway.key_name"] == "main"
    assert got["gateway.route"] == "unified"
    assert got["http.response.status_code"] == 200
    assert not any("secret prompt" in str(v) for s in receiver.spans for v in attributes(s).values())

    attempts = sorted((s for s in receiver.spans if s.kind == Span.SPAN_KIND_CLIENT),
                      key=lambda s: s.start_time_unix_nano)
    assert [s.parent_span_id for s in attempts] == [request.span_id] * 2
    assert all(s.trace_id.hex() == TRACE_ID for s in attempts)
    first, second = (attributes(s) for s in attempts)
    assert (first["gateway.provider"], first["http.response.status_code"], first["gateway.attempt.succeeded"]) == (
        "listed", 500, False)
    assert (second["gateway.provider"], second["http.response.status_code"], second["gateway.attempt.succeeded"]) == (
        "backup", 200, True)
    assert first["gen_ai.request.model"] == second["gen_ai.request.model"] == "gpt-4o-mini"
    assert attempts[0].status.code == 2  # STATUS_CODE_ERROR
    assert request.start_time_unix_nano <= attempts[0].start_time_unix_nano
    assert attempts[1].end_time_unix_nano <= request.end_time_unix_nano

    # Both upstream requests carried the trace: the client's trace id, the gateway's request span as parent.
    sent = [r.headers.get("traceparent") for r in fake.received]
    assert sent == [f"00-{TRACE_ID}-{request.span_id.hex()}-01"] * 2


def test_tracing_off_imports_nothing_of_opentelemetry(fake: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(fake, tmp_path / "data"))
    code = ("import sys; from pathlib import Path; from gateway.app import create_app; "
            "from gateway.config import load_config_file; "
            f"create_app(load_config_file(Path({str(config)!r}))); "
            # Litestar itself probes for the opentelemetry package (its plugin); the gateway's part, the SDK,
            # the exporter and the trace API, must not be loaded.
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter', "
            "'opentelemetry.trace', 'opentelemetry.context'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=gateway_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# The fake upstream's answers (tests/fakes.py): its plain completion and its recorded stream's text.
PLAIN_ANSWER = "Hello from the fake upstream."
STREAMED_ANSWER = ("I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
                   "I recommend checking a reliable weather website or a weather app.")
CONTENT_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
                "gateway.content.truncated")


def converse(base: str) -> None:
    """One plain and one streamed request in each dialect, through the official SDKs; each prompt quotes
    the gateway's provider key, which no trace may show. Request ids name the spans."""
    chat = openai.OpenAI(base_url=f"{base}/v1", api_key=MAIN_KEY, max_retries=0)
    messages = anthropic.Anthropic(base_url=base, api_key=MAIN_KEY, max_retries=0)
    said = chat.chat.completions.create(
        model="pair", messages=[{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": f"plain chat, key {UPSTREAM_KEY}"}],
        extra_headers={"x-request-id": "chat-plain"})
    assert said.choices[0].message.content == PLAIN_ANSWER
    streamed = chat.chat.completions.create(
        model="pair", stream=True, messages=[{"role": "user", "content": "streamed chat"}],
        extra_headers={"x-request-id": "chat-stream"})
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == STREAMED_ANSWER
    message = messages.messages.create(
        model="pair", max_tokens=100, system="Answer in French.",
        messages=[{"role": "user", "content": "plain messages"}], extra_headers={"x-request-id": "messages-plain"})
    assert message.content[0].type == "text" and message.content[0].text == PLAIN_ANSWER
    with messages.messages.stream(model="pair", max_tokens=100, messages=[{"role": "user", "content": "streamed"}],
                                  extra_headers={"x-request-id": "messages-stream"}) as stream:
        assert "".join(stream.text_stream) == STREAMED_ANSWER


def request_spans(receiver: Receiver, count: int) -> dict[str, dict[str, Any]]:
    """The request spans' attributes by request id, once ``count`` of them (and their attempts) arrived."""
    wait_for_spans(receiver, 2 * count)
    spans = {attributes(s)["gateway.request_id"]: attributes(s) for s in receiver.spans
             if s.kind == Span.SPAN_KIND_SERVER}
    assert len(spans) == count, sorted(spans)
    return spans


def test_capture_content_puts_prompt_and_completion_on_the_request_span(
        fake: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    long_text = "x" * 70_000  # over the 65,536 characters kept
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    events = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": long_text[i:i + 7000]}}]}
              for i in range(0, len(long_text), 7000)]
    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    with serving(fake, tmp_path, receiver, "capture_content = true\n") as base:
        converse(base)
        fake.reply(Reply(chunks=[f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"],
                         headers={"content-type": "text/event-stream"}))
        with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=10, json={
                "model": "pair", "stream": True, "messages": [{"role": "user", "content": "a long one"}]},
                headers={"authorization": f"Bearer {MAIN_KEY}", "x-request-id": "chat-long"}) as response:
            assert response.status_code == 200
            assert sum(len(piece) for piece in response.iter_bytes()) > len(long_text)
        spans = request_spans(receiver, 5)

    def content(rid: str) -> tuple[Any, Any]:
        return json.loads(spans[rid]["gen_ai.input.messages"]), json.loads(spans[rid]["gen_ai.output.messages"])

    def text(said: str) -> list[dict[str, Any]]:
        return [{"type": "text", "content": said}]

    prompt, answer = content("chat-plain")
    # A chat completion's system message is part of its history; the key it quoted is cut.
    assert prompt == [{"role": "system", "parts": text("Be brief.")},
                      {"role": "user", "parts": text("plain chat, key [REDACTED]")}]
    assert answer == [{"role": "assistant", "parts": text(PLAIN_ANSWER), "finish_reason": "stop"}]
    assert "gen_ai.system_instructions" not in spans["chat-plain"]
    assert content("chat-stream") == ([{"role": "user", "parts": text("streamed chat")}],
                                      [{"role": "assistant", "parts": text(STREAMED_ANSWER), "finish_reason": "stop"}])
    # Messages: the top-level system is instructions apart from the history.
    prompt, answer = content("messages-plain")
    assert prompt == [{"role": "user", "parts": text("plain messages")}]
    assert json.loads(spans["messages-plain"]["gen_ai.system_instructions"]) == text("Answer in French.")
    assert answer == [{"role": "assistant", "parts": text(PLAIN_ANSWER), "finish_reason": "stop"}]
    assert content("messages-stream") == ([{"role": "user", "parts": text("streamed")}],
                                          [{"role": "assistant", "parts": text(STREAMED_ANSWER),
                                            "finish_reason": "stop"}])
    # A long stream: its first 65,536 characters, marked truncated; the others are whole.
    _, answer = content("chat-long")
    assert answer == [{"role": "assistant", "parts": text("x" * 65_536), "finish_reason": "length"}]
    assert spans["chat-long"]["gateway.content.truncated"] is True
    assert [rid for rid, got in spans.items() if "gateway.content.truncated" in got] == ["chat-long"]
    assert not any(UPSTREAM_KEY in str(v) for s in receiver.spans for v in attributes(s).values())


@pytest.mark.parametrize("setting", ["capture_content = false\n", ""], ids=["explicit", "default"])
def test_without_capture_content_no_span_holds_any_content(fake: FakeUpstream, tmp_path: Path, receiver: Receiver,
                                                           setting: str) -> None:
    with serving(fake, tmp_path, receiver, setting) as base:
        converse(base)
        spans = request_spans(receiver, 4)
    assert all(got["http.response.status_code"] == 200 for got in spans.values())
    found = [(s.name, key, value) for s in receiver.spans for key, value in attributes(s).items()
             if key in CONTENT_KEYS or any(said in str(value) for said in (
                 "plain chat", "streamed", "plain messages", "Be brief", "French", PLAIN_ANSWER, "weather"))]
    assert found == []
