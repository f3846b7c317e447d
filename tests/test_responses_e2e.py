"""/v1/responses end to end: the official openai SDK -> a real `gateway serve` -> loopback fakes replaying
recorded answers: an OpenAI-compatible server that speaks only chat, Anthropic, Gemini, and a server that
speaks the Responses API itself (forwarded, not translated). Each test also checks what reached the fake."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY, gateway_env, run_cli, wait_ready
from tests.fakes import FakeUpstream, fixture_bytes, fixture_json, free_port, json_reply, sse_reply

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
FAKE_TEXT = "Hello from the fake upstream."  # the fake's default chat answer


@dataclass
class Gateway:
    base: str
    keys: dict[str, str]
    data_dir: Path

    def client(self, key: str = "main") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=self.keys[key], max_retries=0)

    def post(self, body: dict[str, Any] | bytes, key: str = "main") -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{self.base}/v1/responses", content=content, timeout=10,
                          headers={"authorization": f"Bearer {self.keys[key]}", "content-type": "application/json"})

    def records(self, request_id: str) -> list[tuple[Any, ...]]:
        """The usage rows of one request, once the writer has put them down (it writes behind)."""
        deadline = time.monotonic() + 10
        while True:
            with sqlite3.connect(self.data_dir / "gateway.db") as db:
                rows = db.execute("SELECT mode, status, provider, prompt_tokens, completion_tokens, cost_total "
                                  "FROM requests WHERE request_id = ?", (request_id,)).fetchall()
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("responses")
    config = root / "config.toml"
    config.write_text(f"""
[server]
data_dir = "{root / 'data'}"

[routing]
retries = 0

[providers.compat]
type = "openai"
base_url = "{fake.base}/compat/v1"
api_key = "{UPSTREAM_KEY}"

[providers.native]
type = "openai"
base_url = "{fake.base}/native/v1"
api_key = "{UPSTREAM_KEY}"
responses = true

[providers.anthropic]
type = "anthropic"
base_url = "{fake.base}/an"
api_key = "{UPSTREAM_KEY}"

[providers.google]
type = "gemini"
base_url = "{fake.base}/gg"
api_key = "{UPSTREAM_KEY}"
""")
    keys = {}
    for name, *limits in (("main",), ("other",), ("slow", "--rpm", "1"), ("broke", "--budget-usd", "0.0000001")):
        created = run_cli("keys", "create", "--name", name, *limits, "--config", str(config))
        assert created.returncode == 0, created.stderr
        keys[name] = created.stdout.strip()
    port = free_port()
    with (root / "gateway.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=gateway_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield Gateway(base=base, keys=keys, data_dir=root / "data")
    finally:
        proc.terminate()
        proc.wait(10)


def recorded(name: str, turn: int = 0) -> Any:
    return fixture_json(name)["interactions"][turn]["response"]["body"]


# ---------------------------------------------------------------------- translated: chat-only compatible


def test_text_retrieve_input_items_delete_on_a_chat_only_server(fake: FakeUpstream, gw: Gateway) -> None:
    client = gw.client()
    raw = client.responses.with_raw_response.create(model="compat/gpt-4o", input="Say hi", instructions="Be brief.")
    response = raw.parse()
    assert fake.last.path == "/compat/v1/chat/completions"  # never /responses: this server speaks only chat
    assert fake.last.json()["messages"] == [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Say hi"}]
    assert response.output_text == FAKE_TEXT and response.status == "completed"
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (9, 6)
    assert raw.headers["x-gateway-provider"] == "compat" and raw.headers["x-gateway-model"] == "gpt-4o"
    assert gw.records(raw.headers["x-gateway-request-id"])[0][:5] == ("responses", 200, "compat", 9, 6)

    assert _eventually(lambda: client.responses.retrieve(response.id)).output_text == FAKE_TEXT
    items = client.responses.input_items.list(response.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError):
        gw.client("other").responses.retrieve(response.id)  # another key's response does not exist for it
    with pytest.raises(openai.NotFoundError):
        gw.client("other").responses.delete(response.id)
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_previous_response_id_continues_the_conversation_for_its_key_only(fake: FakeUpstream, gw: Gateway) -> None:
    client = gw.client()
    first = client.responses.create(model="compat/gpt-4o", input="My name is Ada.")
    second = client.responses.create(model="compat/gpt-4o", input="What is my name?", previous_response_id=first.id)
    assert fake.last.json()["messages"] == [{"role": "user", "content": "My name is Ada."},
                                            {"role": "assistant", "content": FAKE_TEXT},
                                            {"role": "user", "content": "What is my name?"}]
    assert second.previous_response_id == first.id
    sent = len(fake.received)
    with pytest.raises(openai.BadRequestError) as refused:
        gw.client("other").responses.create(model="compat/gpt-4o", input="hi", previous_response_id=first.id)
    assert refused.value.code == "previous_response_not_found" and len(fake.received) == sent


def test_json_schema_and_codex_builtin_tools_are_reported(fake: FakeUpstream, gw: Gateway) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    raw = gw.client().responses.with_raw_response.create(
        model="compat/gpt-4o", input="Answer.", store=False,
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        tools=[{"type": "web_search", "external_web_access": False}, WEATHER])  # type: ignore[list-item]
    sent = fake.last.json()
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert "tools[0]" in raw.headers["x-gateway-ignored-params"]
    with pytest.raises(openai.NotFoundError):  # store: false keeps nothing
        gw.client().responses.retrieve(raw.parse().id)


def test_rate_limit_and_budget_refusals_in_the_openai_envelope(fake: FakeUpstream, gw: Gateway) -> None:
    client = gw.client("slow")
    client.responses.create(model="compat/gpt-4o", input="one")
    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model="compat/gpt-4o", input="two")
    assert refused.value.code == "rate_limit_exceeded"
    sent = len(fake.received)
    with pytest.raises(openai.RateLimitError) as broke:  # the worst case of a priced model exceeds the budget
        gw.client("broke").responses.create(model="anthropic/claude-sonnet-4-5", input="hi")
    assert broke.value.code == "budget_exceeded" and len(fake.received) == sent


# ---------------------------------------------------------------------------------------- Anthropic


def test_stream_from_anthropic(fake: FakeUpstream, gw: Gateway) -> None:
    fake.reply(sse_reply(fixture_bytes("anthropic/sdk-stream-basic_response.txt")))
    with gw.client().responses.stream(model="anthropic/claude-sonnet-4-5", input="Say hello") as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert fake.last.path == "/an/v1/messages" and fake.last.json()["stream"] is True
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    assert final.output_text == "Hello there!" and final.usage is not None and final.usage.output_tokens == 6
    assert _eventually(lambda: gw.client().responses.retrieve(final.id)).output_text == "Hello there!"


def test_encrypted_reasoning_round_trips_an_anthropic_signature(fake: FakeUpstream, gw: Gateway) -> None:
    """What Codex does: store false, the reasoning item comes back with its encrypted content next turn."""
    answer = recorded("anthropic/pydantic-ai-thinking-part-multiturn.json")
    signature = answer["content"][0]["signature"]
    fake.reply(json_reply(answer))
    client = gw.client()
    first = client.responses.create(model="anthropic/claude-sonnet-4-5", input="How do I cross the street?",
                                     store=False, include=["reasoning.encrypted_content"],
                                     reasoning={"effort": "low"})
    reasoning = next(item for item in first.output if item.type == "reasoning")
    assert reasoning.encrypted_content and signature not in reasoning.encrypted_content  # the gateway's format
    client.responses.create(
        model="anthropic/claude-sonnet-4-5", store=False, include=["reasoning.encrypted_content"],
        reasoning={"effort": "low"},
        input=[{"role": "user", "content": "How do I cross the street?"},
               *[item.model_dump(exclude_none=True) for item in first.output],
               {"role": "user", "content": "And at night?"}])  # type: ignore[list-item]
    assistant = next(m for m in fake.last.json()["messages"] if m["role"] == "assistant")
    assert assistant["content"][0] == {"type": "thinking", "thinking": answer["content"][0]["thinking"],
                                       "signature": signature}
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="anthropic/claude-sonnet-4-5", input=[
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "not-ours"},
            {"role": "user", "content": "hi"}])  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------- Gemini


def test_function_tool_round_trip_with_gemini(fake: FakeUpstream, gw: Gateway) -> None:
    fake.reply(json_reply(recorded("gemini/pydantic-ai-tool-choice-any.json")),
               json_reply(recorded("gemini/pydantic-ai-tool-choice-none.json")))
    client = gw.client()
    first = client.responses.create(model="google/gemini-2.5-flash", input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert fake.last.path == "/gg/v1beta/models/gemini-2.5-flash:generateContent"
    second = client.responses.create(model="google/gemini-2.5-flash", tools=[WEATHER], previous_response_id=first.id,  # type: ignore[list-item]
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "sunny"}])
    parts = [part for content in fake.last.json()["contents"] for part in content["parts"]]
    assert any(p.get("functionResponse", {}).get("name") == "get_weather" for p in parts)
    assert any("thoughtSignature" in p and "functionCall" in p for p in parts)  # restored from the stored turn
    assert second.status == "completed"


# ------------------------------------------------------------------------ same dialect: forwarded


def test_a_responses_server_gets_the_clients_body_with_only_model_rewritten(fake: FakeUpstream, gw: Gateway) -> None:
    answer = fixture_json("openai/synthetic-responses-text.json")
    fake.reply(json_reply(answer))
    body = (b'{"model": "native/gpt-4.1",  "input" : [{"role":"user","content":[{"type":"input_text","text":"Tell '
            b'me a story"}]}], "metadata":{ "trace" :"1" },"reasoning":{"summary":"auto"},"store":true,'
            b'"tools":[{"type":"web_search"}]}')
    reply = gw.post(body)
    assert reply.status_code == 200, reply.text
    assert fake.last.path == "/native/v1/responses"
    assert fake.last.body == (b'{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_text",'
                              b'"text":"Tell me a story"}]}],"metadata":{ "trace" :"1" },"reasoning":'
                              b'{"summary":"auto"},"store":true,"tools":[{"type":"web_search"}]}')
    assert "x-gateway-ignored-params" not in reply.headers  # the server runs its own tools: nothing left out
    got = reply.json()
    assert {k: v for k, v in got.items() if k not in ("usage", "gateway")} == \
        {k: v for k, v in answer.items() if k != "usage"}
    assert got["usage"]["input_tokens"] == 36 and "cost_usd_total" in got["usage"]
    assert reply.headers["x-gateway-provider"] == "native"
    assert gw.records(reply.headers["x-gateway-request-id"])[0][:5] == ("responses", 200, "native", 36, 87)
    stored = _eventually(lambda: gw.client().responses.retrieve(answer["id"]))
    assert stored.output_text == answer["output"][0]["content"][0]["text"]


def test_a_responses_server_stream_is_relayed_event_by_event(fake: FakeUpstream, gw: Gateway) -> None:
    recorded_stream = fixture_bytes("openai/synthetic-responses-stream-text.sse")
    fake.reply(sse_reply(recorded_stream))
    with gw.client().responses.stream(model="native/gpt-4.1", input="Say hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    upstream = [json.loads(block.split(b"data: ", 1)[1]) for block in recorded_stream.split(b"\n\n") if block]
    assert [e.type for e in events] == [e["type"] for e in upstream]
    assert [e.sequence_number for e in events] == [e["sequence_number"] for e in upstream]
    assert final.output_text == "Hi there!" and final.usage is not None and final.usage.input_tokens == 37
    assert fake.last.json()["stream"] is True and fake.last.path == "/native/v1/responses"
    # previous_response_id is the gateway's: the next turn is sent the stored conversation as items
    fake.reply(json_reply(fixture_json("openai/synthetic-responses-text.json")))
    _eventually(lambda: gw.client().responses.retrieve(final.id))
    gw.client().responses.create(model="native/gpt-4.1", input="Again", previous_response_id=final.id)
    sent = fake.last.json()
    assert "previous_response_id" not in sent
    assert [item.get("role") for item in sent["input"]] == ["user", "assistant", "user"]


def _eventually(get: Any) -> Any:
    """Stored responses are written behind the answer; another worker sees them once committed."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return get()
        except openai.NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ------------------------------------------------------------------------------------ mid-stream failure


def _events(gw: Gateway, body: dict[str, Any]) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    with httpx.stream("POST", f"{gw.base}/v1/responses", json=body, timeout=10,
                      headers={"authorization": f"Bearer {gw.keys['main']}"}) as reply:
        assert reply.status_code == 200
        raw = b"".join(reply.iter_bytes())
    return reply.headers, [json.loads(block.split(b"data: ", 1)[1]) for block in raw.split(b"\n\n")
                           if b"data: " in block]


@pytest.mark.parametrize("model, recorded_stream", [
    ("native/gpt-4.1", "openai/synthetic-responses-stream-text.sse"),
    ("anthropic/claude-sonnet-4-5", "anthropic/sdk-stream-basic_response.txt"),
])
def test_a_stream_cut_mid_way_ends_with_response_failed(fake: FakeUpstream, gw: Gateway, model: str,
                                                        recorded_stream: str) -> None:
    fake.reply(sse_reply(fixture_bytes(recorded_stream), cut_after=4))
    _, events = _events(gw, {"model": model, "input": "Say hi", "stream": True})
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["message"]
    numbers = [e["sequence_number"] for e in events]
    assert numbers == sorted(set(numbers))  # increasing, the failure numbered after the rest


def test_codex_first_turn_as_captured_runs_on_a_chat_only_server(fake: FakeUpstream, gw: Gateway) -> None:
    """Codex CLI 0.169's classic-profile request, verbatim but for the model: its built-in web_search is left
    out and reported, its function tools (namespace ones included) reach the chat server."""
    body = fixture_json("clients/codex/model-openai-gpt-4o.json")["exchanges"][0]["body"]
    headers, events = _events(gw, {**body, "model": "compat/gpt-4o"})
    assert events[-1]["type"] == "response.completed"
    assert "tools[8]" in headers["x-gateway-ignored-params"]
    sent = fake.last.json()
    assert fake.last.path == "/compat/v1/chat/completions"
    names = {tool["function"]["name"] for tool in sent["tools"]}
    assert "exec_command" in names and not any("web_search" in name for name in names)


def test_item_reference_to_a_stored_reasoning_item(fake: FakeUpstream, gw: Gateway) -> None:
    """What the AI SDK sends after a stored answer with reasoning: a reference in place of the item."""
    answer = recorded("anthropic/pydantic-ai-thinking-part-multiturn.json")
    fake.reply(json_reply(answer))
    client = gw.client()
    first = client.responses.create(model="anthropic/claude-sonnet-4-5", input="How do I cross the street?",
                                    reasoning={"effort": "low"})
    reasoning = next(item for item in first.output if item.type == "reasoning")
    text = next(item for item in first.output if item.type == "message")
    follow_up: Any = [{"role": "user", "content": "How do I cross the street?"},
                      {"type": "item_reference", "id": reasoning.id}, {"type": "item_reference", "id": text.id},
                      {"role": "user", "content": "And at night?"}]
    client.responses.create(model="anthropic/claude-sonnet-4-5", reasoning={"effort": "low"}, input=follow_up)
    assistant = next(m for m in fake.last.json()["messages"] if m["role"] == "assistant")
    assert assistant["content"][0]["signature"] == answer["content"][0]["signature"]
    with pytest.raises(openai.BadRequestError):  # another key's items cannot be referenced
        gw.client("other").responses.create(model="anthropic/claude-sonnet-4-5", input=follow_up)


def test_stream_a_function_call_from_gemini(fake: FakeUpstream, gw: Gateway) -> None:
    fake.reply(sse_reply(fixture_bytes("gemini/pydantic-ai-stream-tool-call-turn1.sse"), split=b"\r\n\r\n"))
    capital = {**WEATHER, "name": "get_capital",
               "parameters": {"type": "object", "properties": {"country": {"type": "string"}}}}
    with gw.client().responses.stream(model="google/gemini-2.5-flash", input="Capital of France?",
                                      tools=[capital]) as stream:  # type: ignore[list-item]
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert fake.last.path == "/gg/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert "response.function_call_arguments.done" in types and types[-1] == "response.completed"
    call = next(item for item in final.output if item.type == "function_call")
    assert (call.name, json.loads(call.arguments)) == ("get_capital", {"country": "France"})
    assert final.usage is not None and final.usage.input_tokens == 52
