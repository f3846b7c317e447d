"""OpenTelemetry traces from a real `gateway serve`: an in-test OTLP/HTTP receiver decodes the spans of a
fallback request (request span, a child per attempt, GenAI attributes), and the client's trace reaches
the upstream as ``traceparent``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import gateway_env, wait_ready
from tests.fakes import FakeUpstream, free_port, json_reply
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


def test_fallback_request_spans_and_traceparent(fake: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    config = tmp_path / "config.toml"
    tracing = f'[tracing]\nenabled = true\nendpoint = "{receiver.url}"\n'
    config.write_text(config_text(fake, tmp_path / "data", extra=tracing))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # OTEL_BSP_SCHEDULE_DELAY: a standard variable the SDK reads, so the spans leave within 100 ms.
    env = gateway_env(OTEL_BSP_SCHEDULE_DELAY="100", OTEL_SERVICE_NAME="gateway-under-test")
    with (tmp_path / "gateway.log").open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(base, proc)
        fake.reply(json_reply({"error": {"message": "down", "type": "server_error"}}, status=500))
        response = httpx.post(f"{base}/v1/chat/completions", timeout=10, json={
            "model": "pair", "messages": [{"role": "user", "content": "a secret prompt"}]}, headers={
            "authorization": f"Bearer {MAIN_KEY}", "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"})
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 10
        while len(receiver.spans) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)

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
