"""Native pass-through: the official Anthropic, Google GenAI and OpenAI SDKs pointed at /anthropic, /gemini and
/openai of an in-process gateway, against the loopback fake replaying recorded provider traffic.

Each test checks both sides: what the SDK got (or raised), the bytes the client received, what reached the
fake (path, query, headers, body), and the usage record.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from gateway.config import Provider
from gateway.errors import BudgetExceeded, InvalidRequest, RateLimited
from gateway.native import UsageWatch, client_secret, error_body, split_query, stream_error, upstream_url, wanted
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeUpstream, Reply, free_port, json_reply, sse_reply
from tests.fakes import fixture_bytes as raw_fixture
from tests.fakes import fixture_json as json_fixture
from tests.inprocess import Harness, gateway_for

USER = [{"role": "user", "content": "Hello"}]
GEMINI_STREAM = "/v1beta/models/gemini-priced:streamGenerateContent"
# USD per 1M tokens: $0.001 an input token, $0.002 an output token, so costs are easy to check.
PRICE = "pricing = { input = 1000.0, output = 2000.0 }"


def providers(fake: FakeUpstream) -> str:
    dead = free_port()
    return f"""
[providers.openai]
type = "openai"
base_url = "{fake.base}/v1"
api_key = "{UPSTREAM_KEY}"

[providers.anthropic]
type = "anthropic"
base_url = "{fake.base}"
api_key = "{UPSTREAM_KEY}"
timeout = 1
native_paths = ["POST /v1/messages/batches"]  # beyond the defaults, for the model-less write below

[providers.google]
type = "gemini"
base_url = "{fake.base}"
api_key = "{UPSTREAM_KEY}"

[providers.claude-down]
type = "anthropic"
base_url = "http://127.0.0.1:{dead}"
api_key = "{UPSTREAM_KEY}"
connect_timeout = 1

[[models]]
name = "claude-priced"
provider = "anthropic"
{PRICE}

[[models]]
name = "gemini-priced"
provider = "google"
{PRICE}

[[models]]
name = "gpt-priced"
provider = "openai"
{PRICE}
"""


@dataclass
class Native:
    gw: Harness
    http2: httpx2.AsyncClient  # the Anthropic SDK 2.x brings its own httpx fork

    def anthropic(self, key: str | None = None) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url="http://gateway/anthropic", api_key=key or self.gw.key,
                                        http_client=self.http2, max_retries=0)

    def gemini(self, key: str | None = None, api_version: str | None = None) -> genai.Client:
        options = genai_types.HttpOptions(base_url="http://gateway/gemini", api_version=api_version,
                                          httpx_async_client=self.gw.http,
                                          retry_options=genai_types.HttpRetryOptions(attempts=1))
        return genai.Client(api_key=key or self.gw.key, http_options=options)

    def openai(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url="http://gateway/openai/v1", api_key=key or self.gw.key,
                                  http_client=self.gw.http, max_retries=0)

    async def key(self, name: str, **limits: object) -> str:
        client = await self.gw.new_key(name, **limits)
        return client.api_key

    async def records(self, count: int) -> list[dict[str, Any]]:
        for _ in range(100):
            if self.gw.state.usage.written >= count:
                break
            await asyncio.sleep(0.02)
        columns = ("mode", "stream", "requested_model", "provider", "model", "status", "error_type", "prompt_tokens",
                   "completion_tokens", "cached_tokens", "cost_total", "key_name")
        async with self.gw.store._conn.execute(f"SELECT {', '.join(columns)} FROM requests ORDER BY id") as cur:
            return [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]


@asynccontextmanager
async def native(fake: FakeUpstream, tmp_path: Path, extra: str = "") -> AsyncIterator[Native]:
    async with gateway_for(fake, tmp_path, extra=providers(fake) + extra) as gw:
        http2 = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gw.app), base_url="http://gateway")
        try:
            yield Native(gw=gw, http2=http2)
        finally:
            await http2.aclose()


def streamed(reply: Reply) -> bytes:
    assert reply.chunks is not None
    return b"".join(reply.chunks)


def anthropic_sse(name: str, **kwargs: Any) -> Reply:
    return sse_reply(raw_fixture(f"anthropic/{name}"), **kwargs)


def gemini_sse(name: str) -> Reply:
    return sse_reply(raw_fixture(f"gemini/{name}"), split=b"\r\n\r\n")


def cassette(provider: str, name: str, i: int = 0) -> dict[str, Any]:
    interaction: dict[str, Any] = json_fixture(f"{provider}/{name}")["interactions"][i]
    return interaction


def upstream_saw(fake: FakeUpstream, method: str, path: str, auth: tuple[str, str], client_key: str,
                 query: dict[str, str] | None = None) -> dict[str, str]:
    """The last request reached the right place with the provider's key, and nothing of the client's key."""
    last = fake.last
    assert (last.method, last.path) == (method, path)
    assert last.query == (query or {})
    assert last.headers[auth[0]] == auth[1]
    for name in ("authorization", "x-api-key", "x-goog-api-key"):
        if name != auth[0]:
            assert name not in last.headers
    assert client_key not in json.dumps(last.headers) + json.dumps(last.query) + last.body.decode(errors="replace")
    return last.headers


def clean(response: httpx.Response | httpx2.Response, body: bytes) -> None:
    """The provider key reaches the client in no header and no byte of the body."""
    assert UPSTREAM_KEY not in json.dumps(dict(response.headers))
    assert UPSTREAM_KEY.encode() not in body
    assert response.headers["x-gateway-request-id"].startswith("req_")


ANTHROPIC_AUTH = ("x-api-key", UPSTREAM_KEY)
GOOGLE_AUTH = ("x-goog-api-key", UPSTREAM_KEY)
OPENAI_AUTH = ("authorization", f"Bearer {UPSTREAM_KEY}")

# ------------------------------------------------------------------------------------------ Anthropic


async def test_anthropic_sdk_create_with_cache_usage(fake: FakeUpstream, tmp_path: Path) -> None:
    recorded = cassette("anthropic", "pydantic-ai-prompt-cache-usage.json", 1)["response"]["body"]
    fake.reply(json_reply(recorded, headers={"request-id": "req_upstream_1", "set-cookie": "cf=1; Domain=x"}))
    async with native(fake, tmp_path) as n:
        raw = await n.anthropic().messages.with_raw_response.create(
            model="claude-priced", max_tokens=300, messages=USER, extra_headers={"anthropic-beta": "tools-2025"})
        message = await raw.parse()
        found = await n.records(1)
        headers = upstream_saw(fake, "POST", "/v1/messages", ANTHROPIC_AUTH, n.gw.key)
    assert message.content[0].text == recorded["content"][0]["text"]  # type: ignore[union-attr]
    assert headers["anthropic-version"] == "2026-10-21"  # what SDK 2.x sends, forwarded unchanged
    assert headers["anthropic-beta"] == "tools-2025"
    assert fake.last.json() == {"model": "claude-priced", "max_tokens": 300, "messages": USER}
    assert raw.http_response.content == json.dumps(recorded).encode()  # the provider's bytes, untouched
    assert raw.headers["request-id"] == "req_upstream_1" and "set-cookie" not in raw.headers
    clean(raw.http_response, raw.http_response.content)
    usage = recorded["usage"]
    prompt = usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
    [record] = found
    assert record | {"cost_total": None} == {
        "mode": "native", "stream": 0, "requested_model": "anthropic/claude-priced", "provider": "anthropic",
        "model": "claude-priced", "status": 200, "error_type": None, "prompt_tokens": prompt,
        "completion_tokens": usage["output_tokens"], "cached_tokens": usage["cache_read_input_tokens"],
        "cost_total": None, "key_name": "t"}
    assert record["cost_total"] == pytest.approx(prompt * 0.001 + usage["output_tokens"] * 0.002)


async def test_anthropic_sdk_stream_is_relayed_byte_for_byte(fake: FakeUpstream, tmp_path: Path) -> None:
    reply = anthropic_sse("sdk-stream-basic_response.txt")
    fake.reply(reply, reply)
    async with native(fake, tmp_path) as n:
        async with n.anthropic().messages.stream(model="claude-priced", max_tokens=100, messages=USER) as stream:
            final = await stream.get_final_message()
        body = {"model": "claude-priced", "max_tokens": 100, "messages": USER, "stream": True}
        async with n.gw.http.stream("POST", "/anthropic/v1/messages", json=body,
                                    headers={"x-api-key": n.gw.key, "anthropic-version": "2023-06-01"}) as response:
            received = b"".join([chunk async for chunk in response.aiter_raw()])
        found = await n.records(2)
    upstream_saw(fake, "POST", "/v1/messages", ANTHROPIC_AUTH, n.gw.key)
    assert final.content[0].text == "Hello there!"  # type: ignore[union-attr]
    assert received == streamed(reply)
    assert response.headers["content-type"] == "text/event-stream"
    clean(response, received)
    # message_start's input count and message_delta's output count, priced.
    assert [(r["stream"], r["prompt_tokens"], r["completion_tokens"]) for r in found] == [(1, 11, 6)] * 2
    assert found[0]["cost_total"] == pytest.approx(11 * 0.001 + 6 * 0.002)


async def test_anthropic_sdk_tools_and_count_tokens(fake: FakeUpstream, tmp_path: Path) -> None:
    turn = cassette("anthropic", "pydantic-ai-parallel-tool-calls-and-results.json")
    fake.reply(json_reply(turn["response"]["body"]), json_reply({"input_tokens": 42}))
    tools: Any = turn["request"]["body"]["tools"]
    async with native(fake, tmp_path) as n:
        client = n.anthropic()
        message = await client.messages.create(model="claude-priced", max_tokens=1024, messages=USER, tools=tools)
        sent = fake.last.json()
        counted = await client.messages.count_tokens(model="claude-priced", messages=USER, tools=tools)
        found = await n.records(2)
    assert [b.name for b in message.content if b.type == "tool_use"] == ["retrieve_entity_info"] * 4
    assert message.stop_reason == "tool_use" and sent["tools"] == tools
    assert counted.input_tokens == 42
    assert fake.last.path == "/v1/messages/count_tokens"
    assert found[1]["status"] == 200 and found[1]["cost_total"] is None  # counting is free: nothing reserved


async def test_anthropic_sdk_raises_its_own_errors_for_gateway_refusals(fake: FakeUpstream, tmp_path: Path) -> None:
    async with native(fake, tmp_path) as n:
        with pytest.raises(anthropic.AuthenticationError) as unknown:
            await n.anthropic("sk-proxy-not-a-key").messages.create(model="claude-priced", max_tokens=5,
                                                                     messages=USER)
        narrow = n.anthropic(await n.key("narrow", models=["google/*"]))
        with pytest.raises(anthropic.PermissionDeniedError, match="may not use the model 'anthropic/claude-priced'"):
            await narrow.messages.create(model="claude-priced", max_tokens=5, messages=USER)
        limited = n.anthropic(await n.key("limited", rpm=1))
        await limited.messages.create(model="claude-priced", max_tokens=5, messages=USER)
        with pytest.raises(anthropic.RateLimitError) as limit:
            await limited.messages.create(model="claude-priced", max_tokens=5, messages=USER)
        poor = n.anthropic(await n.key("poor", budget_usd=0.01))
        with pytest.raises(anthropic.RateLimitError, match="Budget exceeded"):  # worst case 100 × $0.002 > $0.01
            await poor.messages.create(model="claude-priced", max_tokens=100, messages=USER)
        with pytest.raises(anthropic.PermissionDeniedError, match="no known price"):
            await poor.messages.create(model="claude-unpriced", max_tokens=1, messages=USER)
        found = await n.records(5)
    assert unknown.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": "Incorrect API key provided: the key is unknown or was revoked."}}
    assert limit.value.response.headers["retry-after"] == "60"
    assert limit.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert [r["error_type"] for r in found if r["status"] != 200] == [
        "permission_error", "rate_limit_error", "insufficient_quota", "permission_error"]
    assert len(fake.received) == 1  # only the one admitted request went upstream


async def test_anthropic_upstream_error_passes_through_unchanged(fake: FakeUpstream, tmp_path: Path) -> None:
    recorded = cassette("anthropic", "pydantic-ai-error-400.json")["response"]["body"]
    fake.reply(json_reply(recorded, status=400, headers={"content-type": "application/json; charset=utf-8"}))
    async with native(fake, tmp_path) as n:
        with pytest.raises(anthropic.BadRequestError) as info:
            await n.anthropic().messages.create(model="claude-priced", max_tokens=5, messages=USER)
        found = await n.records(1)
    response = info.value.response
    assert response.status_code == 400 and response.content == json.dumps(recorded).encode()
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert info.value.body == recorded
    assert (found[0]["status"], found[0]["error_type"], found[0]["cost_total"]) == (400, "invalid_request_error", None)


async def test_unreachable_provider_answers_in_its_shape(fake: FakeUpstream, tmp_path: Path) -> None:
    async with native(fake, tmp_path) as n:
        response = await n.gw.http.post("/native/claude-down/v1/messages", headers={"x-api-key": n.gw.key},
                                        json={"model": "claude-priced", "max_tokens": 5, "messages": USER})
        found = await n.records(1)
    assert response.status_code == 502
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "api_error"
    assert (found[0]["status"], found[0]["provider"], found[0]["error_type"]) == (502, "claude-down", "upstream_error")


# --------------------------------------------------------------------------------------------- Gemini


async def test_gemini_sdk_generate_content_on_v1_and_v1beta(fake: FakeUpstream, tmp_path: Path) -> None:
    recorded = cassette("gemini", "pydantic-ai-max-tokens.json")["response"]["body"]
    fake.reply(json_reply(recorded), json_reply(recorded))
    config = genai_types.GenerateContentConfig(max_output_tokens=5)
    async with native(fake, tmp_path) as n:
        first = await n.gemini().aio.models.generate_content(model="gemini-priced", contents="Capital?", config=config)
        upstream_saw(fake, "POST", "/v1/models/gemini-priced:generateContent", GOOGLE_AUTH, n.gw.key)
        await n.gemini(api_version="v1beta").aio.models.generate_content(model="gemini-priced", contents="Capital?")
        upstream_saw(fake, "POST", "/v1beta/models/gemini-priced:generateContent", GOOGLE_AUTH, n.gw.key)
        found = await n.records(2)
    assert first.text == "The capital of France is"
    assert [(r["requested_model"], r["prompt_tokens"], r["completion_tokens"]) for r in found] == [
        ("google/gemini-priced", 15, 5)] * 2
    assert found[0]["cost_total"] == pytest.approx(15 * 0.001 + 5 * 0.002)


async def test_gemini_sdk_stream_is_relayed_byte_for_byte(fake: FakeUpstream, tmp_path: Path) -> None:
    reply = gemini_sse("pydantic-ai-stream-with-thoughts.sse")
    fake.reply(reply, reply)
    async with native(fake, tmp_path) as n:
        chunks = [c async for c in await n.gemini(api_version="v1beta").aio.models.generate_content_stream(
            model="gemini-priced", contents="How do I cross the street?")]
        upstream_saw(fake, "POST", GEMINI_STREAM, GOOGLE_AUTH, n.gw.key, query={"alt": "sse"})
        # The Google REST way: the key in the query, which must not travel on.
        async with n.gw.http.stream("POST", f"/gemini{GEMINI_STREAM}?alt=sse&key={n.gw.key}",
                                    json={"contents": []}) as response:
            received = b"".join([chunk async for chunk in response.aiter_raw()])
        upstream_saw(fake, "POST", GEMINI_STREAM, GOOGLE_AUTH, n.gw.key, query={"alt": "sse"})
        found = await n.records(2)
    assert received == streamed(reply)
    clean(response, received)
    assert chunks[-1].usage_metadata is not None
    last = json.loads(streamed(reply).strip().split(b"\r\n\r\n")[-1].removeprefix(b"data: "))["usageMetadata"]
    # Cumulative usage, the last one wins; thoughts count as output.
    expected = (last["promptTokenCount"], last["candidatesTokenCount"] + last["thoughtsTokenCount"])
    assert [(r["prompt_tokens"], r["completion_tokens"], r["stream"]) for r in found] == [(*expected, 1)] * 2


async def test_gemini_sdk_raises_client_errors_for_gateway_refusals(fake: FakeUpstream, tmp_path: Path) -> None:
    async with native(fake, tmp_path) as n:
        narrow = await n.key("narrow", models=["anthropic/*"])
        limited = await n.key("limited", rpm=1)
        raised: list[genai_errors.ClientError] = []
        for key in ("sk-proxy-not-a-key", narrow, limited, limited):
            try:
                await n.gemini(key).aio.models.generate_content(model="gemini-priced", contents="hi")
            except genai_errors.ClientError as exc:
                raised.append(exc)
    assert [(e.code, e.status) for e in raised] == [
        (401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"), (429, "RESOURCE_EXHAUSTED")]
    assert "Rate limit reached" in (raised[2].message or "")


async def test_gemini_upstream_error_passes_through_unchanged(fake: FakeUpstream, tmp_path: Path) -> None:
    recorded = json_fixture("gemini/error-429-resource-exhausted.json")
    fake.reply(json_reply(recorded, status=429))
    async with native(fake, tmp_path) as n:
        with pytest.raises(genai_errors.ClientError) as info:
            await n.gemini().aio.models.generate_content(model="gemini-priced", contents="hi")
        found = await n.records(1)
    assert (info.value.code, info.value.details) == (429, recorded)
    assert (found[0]["status"], found[0]["error_type"]) == (429, "rate_limit_error")


# --------------------------------------------------------------------------------------------- OpenAI


async def test_openai_sdk_chat_stream_and_embeddings(fake: FakeUpstream, tmp_path: Path) -> None:
    reply = sse_reply(raw_fixture("openai/openai-python-stream-text.sse"))
    embedding = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.5]}],
                 "model": "gpt-priced", "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    fake.reply(Reply(body=b'{"id":"c","object":"chat.completion","created":1,"model":"gpt-priced","choices":[],'
                          b'"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}'),
               reply, json_reply(embedding))
    async with native(fake, tmp_path) as n:
        client = n.openai()
        chat = await client.chat.completions.create(model="gpt-priced", messages=USER)  # type: ignore[arg-type]
        upstream_saw(fake, "POST", "/v1/chat/completions", OPENAI_AUTH, n.gw.key)
        async with client.chat.completions.with_streaming_response.create(
                model="gpt-priced", messages=USER, stream=True) as response:  # type: ignore[arg-type]
            received = b"".join([chunk async for chunk in response.http_response.aiter_raw()])
        assert "stream_options" not in fake.last.json()  # native: the client's body, not the gateway's
        vectors = await client.embeddings.create(model="gpt-priced", input="hi")
        upstream_saw(fake, "POST", "/v1/embeddings", OPENAI_AUTH, n.gw.key)
        found = await n.records(3)
    assert chat.usage is not None and chat.usage.total_tokens == 15
    assert received == streamed(reply)
    assert vectors.data[0].embedding == [0.5, -0.5]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in found] == [(9, 6), (14, 30), (8, 0)]
    assert found[2]["cost_total"] == pytest.approx(8 * 0.001)


async def test_openai_responses_api_usage_in_body_and_stream(fake: FakeUpstream, tmp_path: Path) -> None:
    usage = {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 7,
             "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 27}
    completed = {"type": "response.completed", "response": {"id": "resp_1", "status": "completed", "usage": usage}}
    events = (b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1"}}\n\n'
              b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n")
    fake.reply(json_reply({"id": "resp_1", "object": "response", "usage": usage}),
               Reply(chunks=[events], headers={"content-type": "text/event-stream"}))
    async with native(fake, tmp_path) as n:
        headers = {"authorization": f"Bearer {n.gw.key}"}
        await n.gw.http.post("/openai/v1/responses", headers=headers, json={"model": "gpt-priced", "input": "hi"})
        async with n.gw.http.stream("POST", "/openai/v1/responses", headers=headers,
                                    json={"model": "gpt-priced", "input": "hi", "stream": True}) as response:
            received = b"".join([chunk async for chunk in response.aiter_raw()])
        found = await n.records(2)
    assert received == events and fake.last.path == "/v1/responses"
    assert [(r["prompt_tokens"], r["completion_tokens"], r["cached_tokens"]) for r in found] == [(20, 7, 4)] * 2


async def test_openai_route_errors_are_the_openai_envelope(fake: FakeUpstream, tmp_path: Path) -> None:
    async with native(fake, tmp_path) as n:
        with pytest.raises(openai.AuthenticationError) as info:
            await n.openai("sk-proxy-wrong").chat.completions.create(model="gpt-priced", messages=USER)  # type: ignore[arg-type]
        missing = await n.gw.http.get("/native/nowhere/v1/models", headers={"authorization": f"Bearer {n.gw.key}"})
        found = await n.records(1)
    assert info.value.code == "invalid_api_key"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert (found[0]["status"], found[0]["provider"]) == (404, None)


# ------------------------------------------------------------------------------------ shared behaviour


async def test_requests_without_a_model(fake: FakeUpstream, tmp_path: Path) -> None:
    listing = {"data": [{"type": "model", "id": "claude-priced"}], "has_more": False}
    fake.reply(json_reply(listing), json_reply(listing))
    async with native(fake, tmp_path) as n:
        limited = await n.key("limited", rpm=10, budget_usd=1.0)
        models = [m.id async for m in n.anthropic(limited).models.list()]
        upstream_saw(fake, "GET", "/v1/models", ANTHROPIC_AUTH, limited)
        with pytest.raises(anthropic.PermissionDeniedError, match="names no model"):  # a write could spend anything
            await n.anthropic(limited).messages.batches.create(requests=[])
        free = await n.gw.http.post("/anthropic/v1/messages/batches", headers={"x-api-key": n.gw.key},
                                    json={"requests": []})
        found = await n.records(3)
    assert models == ["claude-priced"] and free.status_code == 200
    assert [(r["key_name"], r["status"], r["requested_model"], r["cost_total"]) for r in found] == [
        ("limited", 200, None, None), ("limited", 403, None, None), ("t", 200, None, None)]
    assert len(fake.received) == 2


async def test_headers_crossing_each_way(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(json_reply({"usage": {"input_tokens": 1, "output_tokens": 1}},
                          headers={"x-ratelimit-limit-requests": "5000", "anthropic-ratelimit-requests-limit": "50"}))
    async with native(fake, tmp_path) as n:
        key = await n.key("limited", rpm=10)
        body = {"model": "claude-priced", "max_tokens": 1}
        response = await n.gw.http.post("/anthropic/v1/messages", json=body, headers={
            "x-api-key": key, "authorization": "Basic c2VjcmV0", "x-goog-api-key": "other", "cookie": "session=admin",
            "connection": "x-hop", "x-hop": "1", "x-gateway-project-id": "p", "anthropic-beta": "b1", "x-custom": "c"})
    sent = fake.last.headers
    assert sent["anthropic-beta"] == "b1" and sent["x-custom"] == "c"
    for name in ("authorization", "x-goog-api-key", "cookie", "x-hop", "x-gateway-project-id"):
        assert name not in sent
    assert sent["accept-encoding"] != "identity"  # aiohttp's own, not the client's
    # The key's limits replace the provider's x-ratelimit-*; other provider headers pass.
    assert response.headers["x-ratelimit-limit-requests"] == "10"
    assert response.headers["anthropic-ratelimit-requests-limit"] == "50"


async def test_gzip_answers_reach_the_client_decoded(fake: FakeUpstream, tmp_path: Path) -> None:
    body = json.dumps({"type": "message", "content": [{"type": "text", "text": "zipped"}], "role": "assistant",
                       "id": "m", "model": "claude-priced", "stop_reason": "end_turn", "stop_sequence": None,
                       "usage": {"input_tokens": 3, "output_tokens": 2}}).encode()
    fake.reply(Reply(body=gzip.compress(body), headers={"content-type": "application/json",
                                                        "content-encoding": "gzip"}))
    async with native(fake, tmp_path) as n:
        raw = await n.anthropic().messages.with_raw_response.create(model="claude-priced", max_tokens=5,
                                                                    messages=USER)
        found = await n.records(1)
    assert raw.http_response.content == body and "content-encoding" not in raw.headers
    assert (await raw.parse()).content[0].text == "zipped"  # type: ignore[union-attr]
    assert (found[0]["prompt_tokens"], found[0]["completion_tokens"]) == (3, 2)


# ------------------------------------------------------------------------------------------- pure parts

OPENAI = Provider(name="openai", kind="openai", base_url="https://api.openai.com/v1", api_key="k", models=None,
                  connect_timeout=1, timeout=1, headers={})
ANTHROPIC = Provider(name="anthropic", kind="anthropic", base_url="https://api.anthropic.com", api_key="k",
                     models=None, connect_timeout=1, timeout=1, headers={})


@pytest.mark.parametrize(("provider", "path", "query", "url"), [
    (OPENAI, "v1/chat/completions", "", "https://api.openai.com/v1/chat/completions"),
    (OPENAI, "v1", "", "https://api.openai.com/v1"),
    (OPENAI, "v1beta/x", "", "https://api.openai.com/v1/v1beta/x"),
    (ANTHROPIC, "v1/messages", "beta=true", "https://api.anthropic.com/v1/messages?beta=true"),
    (ANTHROPIC, "v1beta/models/g%20x:generateContent", "alt=sse",
     "https://api.anthropic.com/v1beta/models/g%20x:generateContent?alt=sse"),
])
def test_upstream_url(provider: Provider, path: str, query: str, url: str) -> None:
    assert upstream_url(provider, path, query) == url


def test_query_key_and_credentials() -> None:
    assert split_query(b"alt=sse&key=sk%2Dproxy&x=%20") == ("alt=sse&x=%20", "sk-proxy")
    assert split_query(b"") == ("", None)
    assert client_secret({"authorization": "Bearer a", "x-api-key": "b"}, None) == "a"
    assert client_secret({"authorization": "Basic a", "x-api-key": "b"}, None) == "b"
    assert client_secret({"x-goog-api-key": "c"}, "d") == "c"
    assert client_secret({}, "d") == "d" and client_secret({}, None) is None


def test_wanted_reads_model_and_limits() -> None:
    chat = wanted("openai", "v1/chat/completions", b'{"model":"m","max_completion_tokens":7,"messages":[]}')
    assert (chat.model, chat.max_tokens, chat.free) == ("m", 7, False)
    assert wanted("openai", "v1/responses", b'{"model":"m","max_output_tokens":9}').max_tokens == 9
    gem = wanted("gemini", "v1beta/models/gemini-2.5-flash:generateContent",
                 b'{"generationConfig":{"maxOutputTokens":3}}')
    assert (gem.model, gem.max_tokens) == ("gemini-2.5-flash", 3)
    assert wanted("gemini", "v1beta/models/gemini-2.5-flash:countTokens", b"{}").free
    assert wanted("anthropic", "v1/files", b"--multipart--", generation=False).model is None  # not JSON: no model
    with pytest.raises(InvalidRequest, match="could not parse"):  # a generation endpoint takes a JSON object
        wanted("anthropic", "v1/messages", b"--multipart--")
    with pytest.raises(InvalidRequest, match=re.escape("Expected `str | null`, got `int` - at `$.model`")):
        wanted("anthropic", "v1/messages", b'{"model": 5}')


def test_error_shapes() -> None:
    limited = RateLimited("slow down")
    assert json.loads(error_body("gemini", limited)) == {
        "error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}
    assert json.loads(error_body("anthropic", BudgetExceeded("spent"))) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "spent"}}
    assert json.loads(error_body("openai", limited))["error"]["code"] == "rate_limit_exceeded"
    # Mid-stream: the provider's own error event, after a blank line only when the cut left an event unfinished.
    assert stream_error("anthropic", limited, b"data: {}\n\n").startswith(b"event: error\ndata: {")
    assert stream_error("gemini", limited, b"data: {\"cand").startswith(b"\n\ndata: {\"error\":")


def test_usage_watch_survives_any_split() -> None:
    raw = raw_fixture("anthropic/sdk-stream-tool_use_response.txt")
    for size in (1, 7, 64, len(raw)):
        watch = UsageWatch("anthropic", event_stream=True)
        for i in range(0, len(raw), size):
            watch.feed(raw[i:i + size])
        watch.close()
        assert watch.usage is not None and watch.usage.prompt_tokens == 377
