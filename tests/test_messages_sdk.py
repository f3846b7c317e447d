"""/v1/messages end to end: the official anthropic SDK -> the gateway in-process -> fake OpenAI, Gemini and
Anthropic upstreams replaying recorded answers. Each test also checks what reached the upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from tests.fakes import FakeUpstream, fixture_bytes, fixture_json, json_reply, sse_reply
from tests.inprocess import Harness, err, gateway_for

WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
HI: list[Any] = [{"role": "user", "content": "Say hi"}]


@dataclass
class Gateway:
    harness: Harness
    client: anthropic.AsyncAnthropic
    http: httpx2.AsyncClient

    def as_key(self, key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url="http://gateway", api_key=key, http_client=self.http, max_retries=0)


@asynccontextmanager
async def messages_gateway(fake: FakeUpstream, tmp_path: Path, extra: str = "") -> AsyncIterator[Gateway]:
    providers = f"""
[providers.g]
type = "gemini"
base_url = "{fake.base}"

[providers.an]
type = "anthropic"
base_url = "{fake.base}"
{extra}
"""
    # The anthropic SDK speaks httpx2, which has its own ASGI transport.
    async with gateway_for(fake, tmp_path, extra=providers) as harness, \
            httpx2.AsyncClient(transport=httpx2.ASGITransport(app=harness.app), base_url="http://gateway") as http:
        yield Gateway(harness, anthropic.AsyncAnthropic(base_url="http://gateway", api_key=harness.key,
                                                        http_client=http, max_retries=0), http)


async def records(gw: Gateway, count: int) -> list[tuple[Any, ...]]:
    for _ in range(100):
        if gw.harness.state.usage.written >= count:
            break
        await asyncio.sleep(0.05)
    async with gw.harness.store._conn.execute(
            "SELECT mode, status, requested_model, provider, prompt_tokens, completion_tokens, stream "
            "FROM requests ORDER BY id") as cur:
        return [tuple(row) for row in await cur.fetchall()]


# --------------------------------------------------------------------------------- OpenAI upstream


async def test_text_with_an_openai_upstream_leaves_a_messages_record(fake: FakeUpstream, tmp_path: Path) -> None:
    async with messages_gateway(fake, tmp_path) as gw:
        raw = await gw.client.messages.with_raw_response.create(
            model="a/gpt-4o", max_tokens=100, system="Be brief.", messages=HI, metadata={"user_id": "u1"})
        message = await raw.parse()
        found = await records(gw, 1)
    assert fake.last.path == "/a/v1/chat/completions"
    assert fake.last.json() == {"model": "gpt-4o", "max_completion_tokens": 100, "user": "u1",
                                "messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Say hi"}]}
    assert message.type == "message" and message.role == "assistant" and message.model == "a/gpt-4o"
    assert message.id.startswith("msg_") and message._request_id == raw.headers["x-gateway-request-id"]
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", "Hello from the fake upstream.")]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (9, 6)
    assert raw.headers["x-gateway-provider"] == "a"
    assert found == [("messages", 200, "a/gpt-4o", "a", 9, 6, 0)]


async def test_streamed_text_with_an_openai_upstream(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(sse_reply(fixture_bytes("openai/openai-python-stream-text.sse")))
    async with messages_gateway(fake, tmp_path) as gw:
        async with gw.client.messages.stream(model="a/gpt-4o", max_tokens=100, messages=HI) as stream:
            texts = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        found = await records(gw, 1)
    sent = fake.last.json()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert len(texts) > 3 and final.content[0].type == "text" and final.content[0].text == "".join(texts)
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (14, 30)  # the usage chunk's, not estimates
    assert found == [("messages", 200, "a/gpt-4o", "a", 14, 30, 1)]


async def test_tool_use_round_trip_with_an_openai_upstream(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(sse_reply(fixture_bytes("openai/openai-python-stream-parallel-tool-calls.sse")))
    async with messages_gateway(fake, tmp_path) as gw:
        async with gw.client.messages.stream(model="a/gpt-4o", max_tokens=200, messages=HI, tools=[WEATHER],
                                             tool_choice={"type": "auto"}) as stream:
            first = await stream.get_final_message()
        assert first.stop_reason == "tool_use"
        calls = [b for b in first.content if b.type == "tool_use"]
        assert [(c.name, c.input) for c in calls] == [
            ("GetWeatherArgs", {"city": "Edinburgh", "country": "GB", "units": "c"}),
            ("get_stock_price", {"ticker": "AAPL", "exchange": "NASDAQ"})]
        second = await gw.client.messages.create(
            model="a/gpt-4o", max_tokens=200, tools=[WEATHER],
            messages=[*HI, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                      {"role": "user", "content": [
                          {"type": "tool_result", "tool_use_id": calls[0].id, "content": "12°C"},
                          {"type": "tool_result", "tool_use_id": calls[1].id,
                           "content": [{"type": "text", "text": "$230"}]},
                          {"type": "text", "text": "Summarise."}]}])
    assert second.content[0].type == "text"
    sent = fake.last.json()["messages"]
    assert sent[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": calls[0].id, "type": "function",
         "function": {"name": "GetWeatherArgs", "arguments": '{"city":"Edinburgh","country":"GB","units":"c"}'}},
        {"id": calls[1].id, "type": "function",
         "function": {"name": "get_stock_price", "arguments": '{"ticker":"AAPL","exchange":"NASDAQ"}'}}]}
    assert sent[2:] == [{"role": "tool", "tool_call_id": calls[0].id, "content": "12°C"},
                        {"role": "tool", "tool_call_id": calls[1].id, "content": "$230"},
                        {"role": "user", "content": "Summarise."}]


# --------------------------------------------------------------------------------- Gemini upstream

GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"


async def test_tool_use_round_trip_with_a_gemini_upstream(fake: FakeUpstream, tmp_path: Path) -> None:
    turn, after = fixture_json("gemini/pydantic-ai-parallel-functionCalls-multiturn.json")["interactions"][:2]
    signature = turn["response"]["body"]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    fake.reply(json_reply(turn["response"]["body"]), json_reply(after["response"]["body"]))
    topic = {"name": "generate_topic", "input_schema": {"type": "object", "properties": {}}}
    async with messages_gateway(fake, tmp_path) as gw:
        first = await gw.client.messages.create(model="g/gemini-2.5-flash", max_tokens=300, messages=HI,
                                                tools=[topic], tool_choice={"type": "any"})
        assert fake.last.path == GEMINI
        assert fake.last.json()["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
        calls = [b for b in first.content if b.type == "tool_use"]
        assert [(c.name, c.input) for c in calls] == [("generate_topic", {})] * 3  # three parallel calls
        assert first.stop_reason == "tool_use"
        # Gemini's thought signature comes back opaque, in a redacted_thinking block, and goes back in it.
        assert [b.type for b in first.content] == ["tool_use"] * 3 + ["redacted_thinking"]
        await gw.client.messages.create(
            model="g/gemini-2.5-flash", max_tokens=300, tools=[topic],
            messages=[*HI, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": c.id, "content": topic_name}
                                                   for c, topic_name in zip(calls, ("cars", "penguins", "wheels"),
                                                                            strict=True)]}])
    contents = fake.last.json()["contents"]
    calls_sent = [{"functionCall": {"name": "generate_topic", "args": {}, "id": c.id}} for c in calls]
    calls_sent[0]["thoughtSignature"] = signature  # back on the very call that carried it
    assert contents[1] == {"role": "model", "parts": calls_sent}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "generate_topic", "response": {"output": topic_name}, "id": c.id}}
        for c, topic_name in zip(calls, ("cars", "penguins", "wheels"), strict=True)]}


async def test_streamed_thoughts_with_a_gemini_upstream(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(sse_reply(fixture_bytes("gemini/pydantic-ai-stream-with-thoughts.sse"), split=b"\r\n\r\n"))
    async with messages_gateway(fake, tmp_path) as gw, gw.client.messages.stream(
            model="g/gemini-2.5-flash", max_tokens=30000, messages=HI,
            thinking={"type": "enabled", "budget_tokens": 30000}) as stream:
        final = await stream.get_final_message()
    assert fake.last.json()["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576,
                                                                       "includeThoughts": True}
    kinds = [b.type for b in final.content]
    assert kinds[:2] == ["thinking", "text"]
    assert final.content[0].thinking.startswith("**Clarifying User Goals**")  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn"


# ------------------------------------------------------------------------------ Anthropic upstream


def anthropic_recording(i: int) -> dict[str, Any]:
    turn: dict[str, Any] = fixture_json("anthropic/pydantic-ai-thinking-part-multiturn.json")["interactions"][i]
    return turn


async def test_thinking_signatures_round_trip_to_an_anthropic_upstream(fake: FakeUpstream, tmp_path: Path) -> None:
    """The recorded Messages requests, through the OpenAI format and back, reach Anthropic unchanged."""
    first, second = anthropic_recording(0), anthropic_recording(1)
    fake.reply(json_reply(first["response"]["body"]), json_reply(second["response"]["body"]))
    async with messages_gateway(fake, tmp_path) as gw:
        for turn in (first, second):
            request = {k: v for k, v in turn["request"]["body"].items() if k != "stream"}
            message = await gw.client.messages.create(**{**request, "model": "an/claude-3-7-sonnet-latest"})
            assert fake.last.path == "/v1/messages"
            assert fake.last.json() == request  # identical, signatures included
            assert [b.model_dump(exclude_none=True) for b in message.content] == turn["response"]["body"]["content"]


async def test_streamed_thinking_and_signature_from_an_anthropic_upstream(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(sse_reply(fixture_bytes("anthropic/pydantic-ai-thinking-stream.sse")))
    async with messages_gateway(fake, tmp_path) as gw, gw.client.messages.stream(
            model="an/claude-sonnet-4-0", max_tokens=4096, messages=HI,
            thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert fake.last.json()["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "signature" in kinds and "thinking" in kinds
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.signature.startswith("Eu4CCkYICxgCKkCptg1G")
    assert thinking.thinking.startswith("This is a straightforward question")
    assert final.content[1].type == "text"


# ------------------------------------------------------------------------------------------ errors


async def test_errors_are_anthropic_shaped_and_raise_the_sdk_exceptions(fake: FakeUpstream, tmp_path: Path) -> None:
    priced = '[[models]]\nname = "m"\nprovider = "a"\npricing = { input = 1000.0, output = 2000.0 }\n'
    async with messages_gateway(fake, tmp_path, extra=priced) as gw:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await gw.as_key("sk-proxy-wrong").messages.create(model="a/m", max_tokens=5, messages=HI)
        broke = await gw.harness.new_key("broke", budget_usd=0.000001)
        with pytest.raises(anthropic.RateLimitError) as budget:
            await gw.as_key(str(broke.api_key)).messages.create(model="a/m", max_tokens=5, messages=HI)
        with pytest.raises(anthropic.NotFoundError) as missing:
            await gw.client.messages.create(model="nowhere/m", max_tokens=5, messages=HI)
        with pytest.raises(anthropic.BadRequestError) as bad:
            await gw.client.messages.create(model="a/m", max_tokens=5, messages=HI, extra_body={"frobnicate": 1})
        with pytest.raises(anthropic.BadRequestError) as server_tool:
            await gw.client.messages.create(model="a/m", max_tokens=5, messages=HI,
                                            tools=[{"type": "web_search_20250305", "name": "web_search"}])
        fake.default = lambda received: err(429, {"retry-after": "7"})  # every retry too
        with pytest.raises(anthropic.RateLimitError) as upstream:
            await gw.client.messages.create(model="b/m", max_tokens=5, messages=HI)
        assert fake.last.path == "/b/v1/chat/completions"
        found = await records(gw, 5)
    assert auth.value.body == {"type": "error", "error": {"type": "authentication_error", "message": (
        "Incorrect API key provided: the key is unknown or was revoked.")}}
    assert budget.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "budget" in budget.value.message
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "frobnicate" in bad.value.message and bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "tools[0].type" in server_tool.value.message
    assert upstream.value.response.headers["retry-after"] == "7"
    assert upstream.value.response.headers["x-gateway-provider"] == "b"
    assert {row[0] for row in found} == {"messages"}


async def test_x_api_key_and_bearer_both_authenticate(fake: FakeUpstream, tmp_path: Path) -> None:
    body = {"model": "a/gpt-4o", "max_tokens": 5, "messages": HI}
    async with messages_gateway(fake, tmp_path) as gw:
        key = gw.harness.key
        by_header = await gw.http.post("/v1/messages", json=body, headers={"x-api-key": key})
        by_bearer = await gw.http.post("/v1/messages", json=body, headers={"authorization": f"Bearer {key}"})
        neither = await gw.http.post("/v1/messages", json=body)
    assert by_header.status_code == by_bearer.status_code == 200
    assert neither.status_code == 401 and "x-api-key" in neither.json()["error"]["message"]


async def test_a_stream_cut_mid_way_ends_with_an_error_event(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(sse_reply(fixture_bytes("openai/openai-python-stream-text.sse"), cut_after=3))
    async with messages_gateway(fake, tmp_path) as gw:
        with pytest.raises(anthropic.APIStatusError) as info:
            async with gw.client.messages.stream(model="a/gpt-4o", max_tokens=5, messages=HI) as stream:
                async for _ in stream:
                    pass
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


async def test_count_tokens_is_the_gateways_estimate(fake: FakeUpstream, tmp_path: Path) -> None:
    async with messages_gateway(fake, tmp_path) as gw:
        short = await gw.client.messages.count_tokens(model="a/gpt-4o", messages=HI)
        long = await gw.client.messages.count_tokens(model="a/gpt-4o", messages=[
            {"role": "user", "content": "Say hi " * 200}], tools=[WEATHER])
    assert fake.received == []  # no provider is asked
    assert 0 < short.input_tokens < long.input_tokens
    assert json.loads(json.dumps(long.model_dump())) == {"input_tokens": long.input_tokens}
