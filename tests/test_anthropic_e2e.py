"""The official openai SDK against a running gateway whose Anthropic provider is a fake replaying recordings.

Each test checks both sides: what the SDK got back, and what reached the fake Anthropic (``fake.last``:
path, headers, body).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, RunningGateway
from tests.fakes import FakeUpstream, Reply, fixture_bytes, fixture_json, json_reply, sse_reply

MODEL = "anthropic/claude-sonnet-4-6"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def cassette(name: str) -> list[dict[str, Any]]:
    return fixture_json(f"anthropic/{name}")["interactions"]  # type: ignore[no-any-return]


def sent(fake: FakeUpstream) -> dict[str, Any]:
    """The request the fake Anthropic received, after checking it went where and how it should."""
    last = fake.last
    assert (last.method, last.path) == ("POST", "/v1/messages")
    assert last.headers["x-api-key"] == UPSTREAM_KEY
    assert last.headers["anthropic-version"] == "2023-06-01"
    assert last.headers["content-type"] == "application/json"
    assert "authorization" not in last.headers  # neither the client's gateway key nor a bearer token
    body: dict[str, Any] = last.json()
    assert body["model"] == "claude-sonnet-4-6"
    return body


def error_events(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


@pytest.mark.fidelity("text", "anthropic", "non-stream")
@pytest.mark.fidelity("system", "anthropic", "non-stream")
@pytest.mark.fidelity("usage", "anthropic", "non-stream")
def test_text(gateway: RunningGateway, fake: FakeUpstream) -> None:
    recorded = cassette("pydantic-ai-tool-choice-none.json")[0]["response"]["body"]
    fake.reply(json_reply(recorded))
    result = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        temperature=0.5, max_completion_tokens=100)
    assert result.object == "chat.completion"
    assert result.model == MODEL
    assert result.id.startswith("chatcmpl-")
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == recorded["content"][0]["text"]
    assert choice.finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (567, 16, 583)
    body = sent(fake)
    assert body == {"model": "claude-sonnet-4-6", "max_tokens": 100, "temperature": 0.5,
                    "system": [{"type": "text", "text": "Be brief."}],
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]}


@pytest.mark.fidelity("text", "anthropic", "stream")
@pytest.mark.fidelity("include-usage", "anthropic", "stream")
@pytest.mark.fidelity("usage", "anthropic", "stream")
def test_stream_with_include_usage(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse_reply(fixture_bytes("anthropic/sdk-stream-basic_response.txt")))
    stream = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert {c.model for c in chunks} == {MODEL}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (11, 6, 17)
    assert sent(fake)["stream"] is True


@pytest.mark.fidelity("tools", "anthropic", "non-stream")
@pytest.mark.fidelity("parallel-tools", "anthropic", "non-stream")
@pytest.mark.fidelity("tool-results", "anthropic", "non-stream")
@pytest.mark.fidelity("multi-turn", "anthropic", "non-stream")
@pytest.mark.fidelity("tool-choice", "anthropic", "non-stream")
def test_parallel_tool_calls_then_tool_results(gateway: RunningGateway, fake: FakeUpstream) -> None:
    turns = cassette("pydantic-ai-parallel-tool-calls-and-results.json")
    recorded = turns[0]["request"]["body"]
    tool = recorded["tools"][0]
    tools: Any = [{"type": "function", "function": {"name": tool["name"], "description": tool["description"],
                                                    "parameters": tool["input_schema"]}}]
    messages: list[Any] = [{"role": "system", "content": recorded["system"]},
                           {"role": "user", "content": recorded["messages"][0]["content"][0]["text"]}]
    client = gateway.client()
    fake.reply(json_reply(turns[0]["response"]["body"]), json_reply(turns[1]["response"]["body"]))

    first = client.chat.completions.create(model=MODEL, messages=messages, tools=tools, tool_choice="auto")
    body = sent(fake)
    assert body["tools"] == recorded["tools"]
    assert body["tool_choice"] == {"type": "auto"}
    assert body["messages"] == recorded["messages"]
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    assert [c.id for c in message.tool_calls] == [b["id"] for b in turns[0]["response"]["body"]["content"][1:]]
    assert [json.loads(c.function.arguments) for c in message.tool_calls] == [  # type: ignore[union-attr]
        {"name": n} for n in ("Alice", "Bob", "Charlie", "Daisy")]

    results = [b["content"] for b in turns[1]["request"]["body"]["messages"][2]["content"]]
    messages.append(message.model_dump(exclude_none=True))
    messages += [{"role": "tool", "tool_call_id": c.id, "content": r}
                 for c, r in zip(message.tool_calls, results, strict=True)]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=tools, tool_choice="auto")
    assert second.choices[0].message.content == turns[1]["response"]["body"]["content"][0]["text"]
    assert second.choices[0].finish_reason == "stop"
    expected = turns[1]["request"]["body"]["messages"]
    for block in expected[2]["content"]:
        del block["is_error"]  # pydantic-ai's explicit default; the gateway leaves it out
    assert sent(fake)["messages"] == expected  # 4 tool_use blocks, then all 4 tool_results in one user turn


@pytest.mark.fidelity("tools", "anthropic", "stream")
@pytest.mark.fidelity("finish-reason", "anthropic", "stream")
def test_streamed_tool_call(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse_reply(fixture_bytes("anthropic/sdk-stream-tool_use_response.txt")))
    stream = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], stream=True,
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"location": {"type": "string"}}}}}])
    text, calls, finishes = "", [], []
    for chunk in stream:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        calls += delta.tool_calls or []
        finishes += [chunk.choices[0].finish_reason] if chunk.choices[0].finish_reason else []
    assert text == "I'll check the current weather in Paris for you."
    assert {c.index for c in calls} == {0}
    assert calls[0].id == "toolu_01NRLabsLyVHZPKxbKvkfSMn"
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    assert all(c.id is None for c in calls[1:])
    assert json.loads("".join(c.function.arguments or "" for c in calls if c.function)) == {"location": "Paris"}
    assert finishes == ["tool_calls"]
    assert sent(fake)["tools"][0]["input_schema"]["properties"] == {"location": {"type": "string"}}


@pytest.mark.fidelity("vision-data-url", "anthropic", "non-stream")
def test_vision_with_a_data_url(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply(cassette("pydantic-ai-image-url-input.json")[0]["response"]["body"]))
    result = gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this vegetable?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "auto"}},
    ]}])
    assert (result.choices[0].message.content or "").startswith("This is a potato.")
    assert sent(fake)["messages"][0]["content"] == [
        {"type": "text", "text": "What is this vegetable?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]


@pytest.mark.fidelity("vision-https-url", "anthropic", "non-stream")
def test_vision_with_an_https_url(gateway: RunningGateway, fake: FakeUpstream) -> None:
    recorded = cassette("pydantic-ai-image-url-input.json")[0]
    url = recorded["request"]["body"]["messages"][0]["content"][1]["source"]["url"]
    fake.reply(json_reply(recorded["response"]["body"]))
    gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this vegetable?"}, {"type": "image_url", "image_url": {"url": url}}]}])
    assert sent(fake)["messages"] == recorded["request"]["body"]["messages"]


@pytest.mark.fidelity("json-schema", "anthropic", "non-stream")
def test_json_schema(gateway: RunningGateway, fake: FakeUpstream) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    fake.reply(json_reply({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
                           "content": [{"type": "text", "text": '{"city":"Paris"}'}], "stop_reason": "end_turn",
                           "usage": {"input_tokens": 20, "output_tokens": 7}}))
    result = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Capital of France?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}})
    assert json.loads(result.choices[0].message.content or "") == {"city": "Paris"}
    assert result.choices[0].finish_reason == "stop"
    assert sent(fake)["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


@pytest.mark.fidelity("json-object", "anthropic", "non-stream")
def test_json_object(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
                           "content": [{"type": "tool_use", "id": "toolu_1", "name": "gateway_json_response",
                                        "input": {"answer": 4}}],
                           "stop_reason": "tool_use", "usage": {"input_tokens": 20, "output_tokens": 7}}))
    result = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "2+2 as JSON"}], response_format={"type": "json_object"})
    assert json.loads(result.choices[0].message.content or "") == {"answer": 4}
    assert result.choices[0].message.tool_calls is None
    assert result.choices[0].finish_reason == "stop"
    assert sent(fake)["tool_choice"] == {"type": "tool", "name": "gateway_json_response"}


@pytest.mark.fidelity("reasoning", "anthropic", "non-stream")
@pytest.mark.fidelity("reasoning-signature", "anthropic", "non-stream")
@pytest.mark.fidelity("multi-turn", "anthropic", "non-stream")
def test_reasoning_signature_round_trip(gateway: RunningGateway, fake: FakeUpstream) -> None:
    turns = cassette("pydantic-ai-thinking-part-multiturn.json")
    first_request, second_request = turns[0]["request"]["body"], turns[1]["request"]["body"]
    thinking = turns[0]["response"]["body"]["content"][0]
    fake.reply(json_reply(turns[0]["response"]["body"]), json_reply(turns[1]["response"]["body"]))
    client = gateway.client()
    messages: list[Any] = [{"role": "user", "content": first_request["messages"][0]["content"][0]["text"]}]

    first = client.chat.completions.create(model=MODEL, messages=messages, reasoning_effort="low",
                                           max_completion_tokens=2048)
    assert sent(fake)["thinking"] == first_request["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    message = first.choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning"] == extra["reasoning_content"] == thinking["thinking"]
    assert extra["reasoning_details"] == [{"type": "reasoning.text", "text": thinking["thinking"],
                                           "signature": thinking["signature"], "format": "anthropic-claude-v1",
                                           "index": 0}]

    messages += [message.model_dump(exclude_none=True),
                 {"role": "user", "content": second_request["messages"][2]["content"][0]["text"]}]
    second = client.chat.completions.create(model=MODEL, messages=messages, reasoning_effort="low",
                                            max_completion_tokens=2048)
    assert sent(fake)["messages"] == second_request["messages"]  # thinking block, signature intact, first
    second_thinking, second_text = turns[1]["response"]["body"]["content"]
    assert second.choices[0].message.content == second_text["text"]
    assert (second.choices[0].message.model_extra or {})["reasoning_details"][0]["signature"] == (
        second_thinking["signature"])


@pytest.mark.fidelity("reasoning", "anthropic", "stream")
@pytest.mark.fidelity("reasoning-signature", "anthropic", "stream")
def test_streamed_reasoning_and_its_signature(gateway: RunningGateway, fake: FakeUpstream) -> None:
    raw = fixture_bytes("anthropic/pydantic-ai-thinking-stream.sse")
    fake.reply(sse_reply(raw))
    stream = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "How do I cross the street?"}], stream=True,
        reasoning_effort="low")
    reasoning, content, details = "", "", []
    for chunk in stream:
        extra = chunk.choices[0].delta.model_extra or {}
        reasoning += extra.get("reasoning", "")
        details += extra.get("reasoning_details", [])
        content += chunk.choices[0].delta.content or ""
    assert reasoning.startswith("This is a straightforward question about pedestrian safety.")
    assert content.startswith("Here's how to cross the street safely:")
    assert len(details) == 1
    assert details[0]["text"] == reasoning
    assert details[0]["signature"].startswith("Eu4CCkYICxgCKkCptg1Gj6hlyXcXwEx")
    assert sent(fake)["thinking"] == {"type": "enabled", "budget_tokens": 1024}


@pytest.mark.fidelity("cached-tokens", "anthropic", "non-stream")
def test_cached_tokens(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply(cassette("pydantic-ai-prompt-cache-usage.json")[1]["response"]["body"]))
    usage = gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}]).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1532, 33, 1565)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1111
    assert usage.prompt_tokens_details.cache_write_tokens == 418


@pytest.mark.fidelity("stop", "anthropic", "non-stream")
def test_stop_sequences(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply({"id": "msg_1", "type": "message", "role": "assistant", "content": [
        {"type": "text", "text": "1, 2, "}], "stop_reason": "stop_sequence", "stop_sequence": "3",
        "usage": {"input_tokens": 5, "output_tokens": 4}}))
    result = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count"}], stop=["3", "END"])
    assert result.choices[0].finish_reason == "stop"
    assert sent(fake)["stop_sequences"] == ["3", "END"]


@pytest.mark.fidelity("upstream-errors", "anthropic", "non-stream")
def test_unsupported_parameter_is_a_400_before_any_upstream_call(gateway: RunningGateway,
                                                                  fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=2)
    assert info.value.param == "n"
    assert info.value.code == "unsupported_parameter"
    assert fake.received == []


@pytest.mark.fidelity("upstream-errors", "anthropic", "non-stream")
def test_upstream_429_keeps_retry_after(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply({"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}},
                          status=429, headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as info:
        gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.type == "rate_limit_error"
    assert "Slow down" in info.value.message


@pytest.mark.fidelity("upstream-errors", "anthropic", "stream")
def test_upstream_529_becomes_503(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                          status=529))
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                 stream=True)
    assert info.value.status_code == 503
    assert info.value.type == "overloaded_error"


@pytest.mark.fidelity("upstream-errors", "anthropic", "non-stream")
def test_recorded_404(gateway: RunningGateway, fake: FakeUpstream) -> None:
    response = cassette("pydantic-ai-error-404-count-tokens.json")[0]["response"]
    fake.reply(json_reply(response["body"], status=404))
    with pytest.raises(openai.NotFoundError) as info:
        gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert "model: claude-does-not-exist" in info.value.message


@pytest.mark.fidelity("mid-stream-error", "anthropic", "stream")
def test_error_event_mid_stream(gateway: RunningGateway, fake: FakeUpstream) -> None:
    raw = fixture_bytes("anthropic/sdk-stream-basic_response.txt")
    head = raw[: raw.index(b"event: content_block_stop")]
    # One network read holds the text events and the error: the frames before the error still arrive.
    whole = head + error_events({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    fake.reply(Reply(chunks=[whole], headers={"content-type": "text/event-stream"}))
    stream = gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                      stream=True)
    text = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            text += chunk.choices[0].delta.content or ""
    assert text == "Hello there!"  # what arrived before the error reached the client
    assert "Overloaded" in info.value.message


@pytest.mark.fidelity("mid-stream-error", "anthropic", "stream")
def test_connection_cut_mid_stream(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse_reply(fixture_bytes("anthropic/sdk-stream-tool_use_response.txt"), cut_after=6))
    stream = gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                      stream=True)
    finishes = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            finishes += [chunk.choices[0].finish_reason] if chunk.choices[0].finish_reason else []
    assert finishes == []  # never a finish chunk or [DONE] for a cut stream
