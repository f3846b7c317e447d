"""A stored response's reasoning item sent back by id alone gets its encrypted content from the store.

The OpenAI Agents SDK and LangChain leave ``store`` true and echo reasoning items as ``{id, summary}``
with no ``encrypted_content`` (tests/fixtures/clients/openai-agents/agents-runner-tool-reasoning-item.json):
OpenAI keeps that content itself. Through a translating target, the provider's signatures must come back
the same way, or Gemini 3 refuses the function call sent back without its thought signature. Only this
key's stored items count (docs/responses.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes import FakeUpstream, Received, Reply, json_reply
from tests.inprocess import Harness, gateway_for

MODEL = "google/gemini-2.5-flash"
SIGNATURE = "CikB0e2Kb7Zb0ZkUkqP6Zr5YbZ0aQ"
TOOL = {"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
USAGE = {"promptTokenCount": 30, "candidatesTokenCount": 6, "thoughtsTokenCount": 20, "totalTokenCount": 56}

PROVIDER = """
[providers.google]
type = "gemini"
base_url = "{base}/google"
api_key = "upstream-google"
"""


def gemini(received: Received) -> Reply:
    """A call with its signature while no result is back, then text (shapes as in tests/fixtures/gemini/)."""
    answered = any("functionResponse" in part for c in received.json()["contents"] for part in c["parts"])
    part: dict[str, Any] = {"text": "Sunny."} if answered else {
        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE}
    return json_reply({"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP",
                                       "index": 0}], "usageMetadata": USAGE})


@pytest.fixture
async def gw(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[Harness]:
    fake.default = gemini
    async with gateway_for(fake, tmp_path, extra=PROVIDER.format(base=fake.base)) as harness:
        yield harness


async def first_turn(client: openai.AsyncOpenAI) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the reasoning item, the function_call item) of a stored first turn, as the client got them."""
    first = await client.responses.create(model=MODEL, input="Weather in Paris?", tools=[TOOL])  # type: ignore[list-item]
    reasoning, call = (item.model_dump(exclude_none=True) for item in first.output)
    assert reasoning["type"] == "reasoning" and call["type"] == "function_call"
    assert "encrypted_content" not in reasoning  # not asked for with `include`: kept by the gateway
    return reasoning, call


async def second_turn(client: openai.AsyncOpenAI, reasoning: dict[str, Any], call: dict[str, Any]) -> str:
    answer = await client.responses.create(model=MODEL, tools=[TOOL], input=[  # type: ignore[list-item]
        {"role": "user", "content": "Weather in Paris?"}, reasoning, call,  # type: ignore[list-item]
        {"type": "function_call_output", "call_id": call["call_id"], "output": "21 C"}])
    return answer.output_text


def signatures_sent(received: Received) -> list[str | None]:
    return [part.get("thoughtSignature") for c in received.json()["contents"] for part in c["parts"]
            if "functionCall" in part]


async def test_a_stored_reasoning_item_sent_back_by_id_restores_the_signature(gw: Harness,
                                                                            fake: FakeUpstream) -> None:
    reasoning, call = await first_turn(gw.client)
    assert await second_turn(gw.client, reasoning, call) == "Sunny."
    assert signatures_sent(fake.last) == [SIGNATURE]


async def test_another_keys_reasoning_item_restores_nothing(gw: Harness, fake: FakeUpstream) -> None:
    reasoning, call = await first_turn(gw.client)
    other = await gw.new_key("other")
    assert await second_turn(other, reasoning, call) == "Sunny."
    assert signatures_sent(fake.last) == [None]


async def test_an_unknown_reasoning_id_is_served_as_before(gw: Harness, fake: FakeUpstream) -> None:
    _, call = await first_turn(gw.client)
    assert await second_turn(gw.client, {"type": "reasoning", "id": "rs_unknown", "summary": []}, call) == "Sunny."
    assert signatures_sent(fake.last) == [None]
