"""`parallel_tool_calls: false` on a google/ model: Gemini has no switch to forbid parallel calls, so the
gateway keeps the answer's first function call and reports `first call only` (docs/gemini.md).

Codex CLI sends it by default with `tool_choice: "auto"`; the Messages dialect says it as
`tool_choice.disable_parallel_tool_use`. Each test has the Gemini fake answer TWO functionCall parts (the
first with its thoughtSignature, as Gemini 2.5+ sends them) and checks that the client of each dialect,
streamed and not, sees exactly the first one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeUpstream, Received, Reply, json_reply, sse_reply
from tests.inprocess import Harness, gateway_for

MODEL = "google/gemini-2.5-flash"
SIGNATURE = "Es8FCswFAXLI2nxFGW9oAYt0fTQoHlYcudYTgqNXlir9nzbX"
WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
QUESTION = "Weather in Paris and in Rome?"
ASK: Any = [{"role": "user", "content": QUESTION}]

PROVIDER = """
[providers.google]
type = "gemini"
base_url = "{base}/google"
api_key = "upstream-google"
"""

# Two calls in one answer, the shape of a recorded Gemini turn (tests/fixtures/gemini/
# pydantic-ai-parallel-functionCalls-multiturn.json): the signature rides on the first functionCall part.
PARTS = [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE},
         {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]
USAGE = {"promptTokenCount": 40, "candidatesTokenCount": 12, "thoughtsTokenCount": 30, "totalTokenCount": 82}


def two_calls(received: Received) -> Reply:
    if ":streamGenerateContent" not in received.path:
        return json_reply({"candidates": [{"content": {"role": "model", "parts": PARTS}, "finishReason": "STOP",
                                           "index": 0}], "usageMetadata": USAGE, "modelVersion": "gemini-2.5-flash"})
    # One record per call, as Gemini streams them; the finishReason comes with the last.
    records = [{"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0,
                                **({"finishReason": "STOP"} if i == len(PARTS) - 1 else {})}],
                "usageMetadata": USAGE, "modelVersion": "gemini-2.5-flash"} for i, part in enumerate(PARTS)]
    raw = b"".join(b"data: " + json.dumps(r).encode() + b"\r\n\r\n" for r in records)
    return sse_reply(raw, split=b"\r\n\r\n")


@pytest.fixture
async def gw(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[Harness]:
    fake.default = two_calls
    async with gateway_for(fake, tmp_path, extra=PROVIDER.format(base=fake.base)) as harness:
        yield harness


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def sent_upstream(fake: FakeUpstream) -> dict[str, Any]:
    """The one request Gemini got: the function is offered and nothing tells Gemini to call only once."""
    (received,) = fake.received
    body: dict[str, Any] = received.json()
    assert [d["name"] for t in body["tools"] for d in t["functionDeclarations"]] == ["get_weather"]
    assert "parallel" not in json.dumps(body)
    return body


CHAT_TOOL: Any = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMS}}


# ------------------------------------------------------------------------------------ chat completions


async def test_chat_keeps_the_first_of_two_calls(gw: Harness, fake: FakeUpstream) -> None:
    raw = await gw.client.chat.completions.with_raw_response.create(
        model=MODEL, messages=ASK, tools=[CHAT_TOOL],
        tool_choice="auto", parallel_tool_calls=False)
    completion = raw.parse()
    message = completion.choices[0].message
    assert [json.loads(c.function.arguments) for c in message.tool_calls or ()  # type: ignore[union-attr]
            ] == [{"city": "Paris"}]
    assert completion.choices[0].finish_reason == "tool_calls"
    extra = message.model_extra or {}
    # The kept call's signature goes with it, so the next turn can send it back.
    assert [d["data"] for d in extra["reasoning_details"]] == [SIGNATURE]
    assert raw.headers["x-gateway-adjusted"] == "parallel_tool_calls=first call only"
    sent_upstream(fake)


async def test_chat_without_the_restriction_gets_both_calls(gw: Harness, fake: FakeUpstream) -> None:
    """The control: the fake really answers two calls, and nothing is reported."""
    raw = await gw.client.chat.completions.with_raw_response.create(
        model=MODEL, messages=ASK, tools=[CHAT_TOOL])
    message = raw.parse().choices[0].message
    assert [json.loads(c.function.arguments)["city"] for c in message.tool_calls or ()  # type: ignore[union-attr]
            ] == ["Paris", "Rome"]
    assert "x-gateway-adjusted" not in raw.headers


async def test_chat_stream_keeps_the_first_of_two_calls(gw: Harness, fake: FakeUpstream) -> None:
    response = await gw.http.post("/v1/chat/completions", headers={"authorization": f"Bearer {gw.key}"}, json={
        "model": MODEL, "stream": True, "messages": [{"role": "user", "content": QUESTION}], "tools": [CHAT_TOOL],
        "tool_choice": "auto", "parallel_tool_calls": False})
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-adjusted"] == "parallel_tool_calls=first call only"
    chunks = events(response.text)
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    calls = [call for d in deltas for call in d.get("tool_calls") or ()]
    assert [(c["index"], json.loads(c["function"]["arguments"])) for c in calls] == [(0, {"city": "Paris"})]
    assert [e["data"] for d in deltas for e in d.get("reasoning_details") or ()] == [SIGNATURE]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")][-1] == "tool_calls"


async def test_tool_choice_none_reports_nothing(gw: Harness, fake: FakeUpstream) -> None:
    """With no call possible, `parallel_tool_calls: false` changes nothing and is not reported."""
    fake.default = lambda _: json_reply({"candidates": [{"content": {"role": "model", "parts": [{"text": "Sunny."}]},
                                                         "finishReason": "STOP"}], "usageMetadata": USAGE})
    raw = await gw.client.chat.completions.with_raw_response.create(
        model=MODEL, messages=ASK, tools=[CHAT_TOOL],
        tool_choice="none", parallel_tool_calls=False)
    assert raw.parse().choices[0].message.content == "Sunny."
    assert "x-gateway-adjusted" not in raw.headers


# -------------------------------------------------------------------------------------------- Messages

MESSAGES_BODY = {"model": MODEL, "max_tokens": 1024, "messages": [{"role": "user", "content": QUESTION}],
                 "tools": [{"name": "get_weather", "input_schema": WEATHER_PARAMS}],
                 "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_messages_disable_parallel_tool_use_keeps_the_first_call(gw: Harness, fake: FakeUpstream,
                                                                       stream: bool) -> None:
    response = await gw.http.post("/v1/messages", json={**MESSAGES_BODY, "stream": stream},
                                  headers={"x-api-key": gw.key, "anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-adjusted"] == "tool_choice.disable_parallel_tool_use=first call only"
    if stream:
        out = events(response.text)
        starts = [e["content_block"] for e in out if e["type"] == "content_block_start"]
        uses = [b for b in starts if b["type"] == "tool_use"]
        arguments = "".join(e["delta"]["partial_json"] for e in out if e["type"] == "content_block_delta"
                            and e["delta"]["type"] == "input_json_delta")
        assert len(uses) == 1 and json.loads(arguments) == {"city": "Paris"}
        assert next(e for e in out if e["type"] == "message_delta")["delta"]["stop_reason"] == "tool_use"
    else:
        body = response.json()
        assert [b["input"] for b in body["content"] if b["type"] == "tool_use"] == [{"city": "Paris"}]
        assert body["stop_reason"] == "tool_use"
    sent_upstream(fake)


# ------------------------------------------------------------------------------------------- Responses

RESPONSES_BODY = {"model": MODEL, "input": QUESTION, "store": False, "include": ["reasoning.encrypted_content"],
                  "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER_PARAMS}],
                  "tool_choice": "auto", "parallel_tool_calls": False}  # as Codex CLI sends them


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_responses_parallel_tool_calls_false_keeps_the_first_call(gw: Harness, fake: FakeUpstream,
                                                                        stream: bool) -> None:
    response = await gw.http.post("/v1/responses", json={**RESPONSES_BODY, "stream": stream},
                                  headers={"authorization": f"Bearer {gw.key}"})
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-adjusted"] == "parallel_tool_calls=first call only"
    if stream:
        out = events(response.text)
        added = [e["item"]["type"] for e in out if e["type"] == "response.output_item.added"]
        assert added.count("function_call") == 1
        assert [e["arguments"] for e in out if e["type"] == "response.function_call_arguments.done"] == [
            '{"city":"Paris"}']
        result = out[-1]["response"]
        assert out[-1]["type"] == "response.completed"
    else:
        result = response.json()
    calls = [item for item in result["output"] if item["type"] == "function_call"]
    assert [json.loads(c["arguments"]) for c in calls] == [{"city": "Paris"}]
    # The first call's signature is sealed in the reasoning item, for the next turn to send back.
    assert [item["encrypted_content"].startswith("gw1.") for item in result["output"]
            if item["type"] == "reasoning"] == [True]
    assert result["parallel_tool_calls"] is False
    sent_upstream(fake)
