"""Native pass-through through a real gateway process (granian): what an in-process ASGI transport cannot show,
a client that goes away mid-stream and a provider that cuts its stream, plus the SDKs over real sockets."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import anthropic
import httpx
import pytest
from google import genai
from google.genai import types as genai_types

from tests.conftest import UPSTREAM_KEY, RunningGateway
from tests.fakes import FakeUpstream, fixture_bytes, sse_reply

MODEL = "claude-sonnet-4-6"  # priced by the built-in catalog
USER = [{"role": "user", "content": "Hello"}]


def record(gateway: RunningGateway, request_id: str) -> dict[str, Any]:
    """The usage record of one request, once the writer has committed it."""
    deadline = time.monotonic() + 10
    with sqlite3.connect(gateway.data_dir / "gateway.db") as db:
        db.row_factory = sqlite3.Row
        while time.monotonic() < deadline:
            row = db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
            if row is not None:
                return dict(row)
            time.sleep(0.05)
    raise AssertionError(f"no record for {request_id}")


def new_key(gateway: RunningGateway, name: str, *flags: str) -> str:
    created = gateway.cli("keys", "create", "--name", name, *flags)
    assert created.returncode == 0, created.stderr
    time.sleep(0.7)  # the server picks up new keys within half a second
    return created.stdout.strip()


def test_anthropic_sdk_stream_over_a_real_server(gateway: RunningGateway, fake: FakeUpstream) -> None:
    reply = sse_reply(fixture_bytes("anthropic/sdk-stream-tool_use_response.txt"))
    fake.reply(reply)
    client = anthropic.Anthropic(base_url=f"{gateway.base}/anthropic", api_key=gateway.key, max_retries=0)
    with client.messages.with_streaming_response.create(model=MODEL, max_tokens=100, messages=USER,
                                                        stream=True) as response:
        received = b"".join(response.http_response.iter_raw())
        rid = response.headers["x-gateway-request-id"]
    assert reply.chunks is not None and received == b"".join(reply.chunks)
    assert fake.last.headers["x-api-key"] == UPSTREAM_KEY and "authorization" not in fake.last.headers
    found = record(gateway, rid)
    assert (found["mode"], found["stream"], found["provider"]) == ("native", 1, "anthropic")
    assert found["prompt_tokens"] == 377
    assert found["cost_total"] > 0


def test_gemini_sdk_over_a_real_server(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse_reply(fixture_bytes("gemini/pydantic-ai-stream-with-thoughts.sse"), split=b"\r\n\r\n"))
    client = genai.Client(api_key=gateway.key, http_options=genai_types.HttpOptions(base_url=f"{gateway.base}/gemini"))
    text = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(
        model="gemini-2.5-flash", contents="How do I cross the street?"))
    assert text
    assert (fake.last.path, fake.last.query) == ("/v1/models/gemini-2.5-flash:streamGenerateContent", {"alt": "sse"})
    assert fake.last.headers["x-goog-api-key"] == UPSTREAM_KEY


def test_client_disconnect_mid_stream_settles_what_was_seen(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse_reply(fixture_bytes("anthropic/sdk-stream-basic_response.txt"), chunk_delay=0.1))
    key = new_key(gateway, "native-leaver", "--budget-usd", "10")
    body = {"model": MODEL, "max_tokens": 1000, "messages": USER, "stream": True}
    with httpx.stream("POST", f"{gateway.base}/anthropic/v1/messages", json=body, headers={"x-api-key": key}) as stream:
        rid = stream.headers["x-gateway-request-id"]
        next(stream.iter_raw())  # message_start has arrived; the client goes away
    found = record(gateway, rid)
    assert (found["status"], found["prompt_tokens"], found["completion_tokens"]) == (200, 11, 1)
    mine = httpx.get(f"{gateway.base}/v1/usage", headers={"authorization": f"Bearer {key}"}).json()
    assert mine["reserved_usd"] == 0.0 and mine["spent_usd"] == pytest.approx(found["cost_total"])


def test_provider_cut_mid_stream_ends_with_an_anthropic_error_event(gateway: RunningGateway,
                                                                     fake: FakeUpstream) -> None:
    reply = sse_reply(fixture_bytes("anthropic/sdk-stream-basic_response.txt"), cut_after=3)
    fake.reply(reply, reply)
    body = {"model": MODEL, "max_tokens": 1000, "messages": USER, "stream": True}
    with httpx.stream("POST", f"{gateway.base}/anthropic/v1/messages", json=body,
                      headers={"x-api-key": gateway.key}) as stream:
        received = b"".join(stream.iter_raw())
        rid = stream.headers["x-gateway-request-id"]
    assert reply.chunks is not None and received.startswith(b"".join(reply.chunks[:3]))
    event, data = received.removeprefix(b"".join(reply.chunks[:3])).decode().splitlines()[:2]
    assert event == "event: error"
    assert json.loads(data.removeprefix("data: "))["error"]["type"] == "api_error"
    client = anthropic.Anthropic(base_url=f"{gateway.base}/anthropic", api_key=gateway.key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError, match="closed the connection mid-response"):
        for _ in client.messages.create(model=MODEL, max_tokens=10, messages=USER, stream=True):  # type: ignore[arg-type]
            pass
    found = record(gateway, rid)
    assert (found["status"], found["error_type"], found["prompt_tokens"]) == (502, "upstream_error", 11)
