"""Issue 14: today's agent clients with their default settings, replayed from the captures.

Each test sends the exact request bodies a pinned real client sent (tests/fixtures/clients/, captured
2026-11-26) through the real app, in process, to fake upstreams of each kind that answer in the providers'
recorded formats, and checks the answer and what the gateway reports it left out or lowered
(``x-gateway-ignored-params`` / ``x-gateway-adjusted``; docs/messages.md has the classes).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.dialects import messages
from gateway.wire.openai import HINT_FIELDS, ChatRequest
from tests.fakes import FakeUpstream, Received, Reply, fixture_bytes, fixture_json, json_reply, sse_reply
from tests.inprocess import Harness, gateway_for

GPT_4O, GEMINI, CLAUDE = "openai/gpt-4o", "google/gemini-2.5-flash", "anthropic/claude-sonnet-4-5"
# Headers a Messages client sends that say what it is and what it may use; the key is the gateway's.
CLIENT_HEADERS = ("anthropic-version", "anthropic-beta", "user-agent", "x-app", "content-type")


def captured(name: str) -> list[dict[str, Any]]:
    """The POSTs of one capture, in order."""
    return [e for e in fixture_json(f"clients/{name}.json")["exchanges"] if e["method"] == "POST"]


def _openai_stream() -> Reply:
    """OpenAI's stream as it is sent when stream_options.include_usage is set (the gateway sets it to meter
    spend): "usage": null on every chunk, then a usage chunk with empty choices."""
    raw = fixture_bytes("openai/openai-python-stream-text.sse").decode()
    chunks = []
    for line in raw.splitlines():
        if line.startswith("data: {"):
            chunks.append("data: " + json.dumps({**json.loads(line[6:]), "usage": None}))
    last = json.loads(chunks[-1][6:])
    usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
             "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
    chunks.append("data: " + json.dumps({**last, "choices": [], "usage": usage}))
    chunks.append("data: [DONE]")
    return sse_reply("\n\n".join(chunks).encode() + b"\n\n")


def _gemini_stream() -> Reply:
    return sse_reply(fixture_bytes("gemini/pydantic-ai-stream-with-thoughts.sse"), split=b"\r\n\r\n")


def answer(received: Received) -> Reply:
    """A recorded answer of the provider kind the path names, streamed when the request streams."""
    kind = received.path.split("/")[1]
    if kind == "openai":
        return _openai_stream() if received.json().get("stream") else json_reply({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}})
    if kind == "google":
        if received.path.endswith(":streamGenerateContent"):
            return _gemini_stream()
        return json_reply({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                                           "finishReason": "STOP", "index": 0}],
                           "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6}})
    if received.json().get("stream"):
        return sse_reply(fixture_bytes("anthropic/pydantic-ai-thinking-stream.sse"))
    recorded = fixture_json("anthropic/pydantic-ai-thinking-part-multiturn.json")["interactions"][0]
    return json_reply(recorded["response"]["body"])


PROVIDERS = """
[providers.openai]
type = "openai"
base_url = "{base}/openai/v1"
api_key = "sk-upstream-openai"

[providers.google]
type = "gemini"
base_url = "{base}/google"
api_key = "upstream-google"

[providers.anthropic]
type = "anthropic"
base_url = "{base}/anthropic"
api_key = "upstream-anthropic"
"""


@pytest.fixture
async def gw(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[Harness]:
    fake.default = answer
    async with gateway_for(fake, tmp_path, extra=PROVIDERS.format(base=fake.base)) as harness:
        yield harness


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def keys(node: Any) -> set[str]:
    """Every member name in a JSON value, at any depth (a property called "const" would count too; Claude
    Code's tools have none)."""
    if isinstance(node, dict):
        return set(node).union(*(keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(keys(v) for v in node))
    return set()


def listed(value: str | None) -> list[str]:
    return value.split(", ") if value else []


async def post_messages(gw: Harness, exchange: dict[str, Any], model: str) -> Any:
    headers = {name: value for name, value in exchange["headers"] if name.lower() in CLIENT_HEADERS}
    query = "?" + "&".join(f"{k}={v}" for k, v in exchange["query"].items()) if exchange["query"] else ""
    return await gw.http.post(f"/v1/messages{query}", content=json.dumps({**exchange["body"], "model": model}),
                              headers={**headers, "x-api-key": gw.key})


def check_stream(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    out = events(response.text)
    assert out[0]["type"] == "message_start" and out[-1]["type"] == "message_stop"
    usage = out[0]["message"]["usage"]
    # Integers, as Anthropic sends them: clients add them up.
    assert isinstance(usage["cache_creation_input_tokens"], int) and isinstance(usage["cache_read_input_tokens"], int)
    return out


# ------------------------------------------------------------------------------------------ Claude Code


async def test_claude_code_defaults_reach_gpt_4o_lowered_and_reported(gw: Harness, fake: FakeUpstream) -> None:
    """The README's `claude --model openai/gpt-4o`: mid-conversation system message, context_management,
    adaptive thinking with effort high, max_tokens 32000 on a model with a 16,384-token limit."""
    title, *loop = captured("claude-code/model-openai-gpt-4o")
    for exchange in (title, *loop):
        response = await post_messages(gw, exchange, GPT_4O)
        check_stream(response)
        assert response.headers["x-gateway-adjusted"] == "max_tokens=16384"
        sent = fake.last.json()
        assert sent["max_completion_tokens"] == 16384 and "reasoning_effort" not in sent
    ignored = listed(response.headers.get("x-gateway-ignored-params"))
    assert {"context_management", "thinking", "output_config.effort", "system[1].cache_control"} <= set(ignored)
    # The mid-conversation system message stays where the client put it: OpenAI takes one anywhere.
    roles = [m["role"] for m in sent["messages"]]
    assert roles[:3] == ["system", "user", "system"]
    assert sent["messages"][2]["content"].startswith(loop[-1]["body"]["messages"][1]["content"][:40])
    # The session-title side call asks for JSON by schema: OpenAI's response_format.
    await post_messages(gw, title, GPT_4O)
    assert fake.last.json()["response_format"]["type"] == "json_schema"


async def test_claude_code_defaults_reach_gemini_with_its_tool_schemas_rewritten(gw: Harness,
                                                                                fake: FakeUpstream) -> None:
    exchange = captured("claude-code/tool-write-accept-edits")[1]
    response = await post_messages(gw, exchange, GEMINI)
    check_stream(response)
    sent = fake.last.json()
    declarations = {d["name"]: d["parametersJsonSchema"] for d in sent["tools"][0]["functionDeclarations"]}
    assert len(declarations) == len(exchange["body"]["tools"])
    assert not keys(declarations) & {"exclusiveMinimum", "propertyNames", "const", "$schema"}
    read = next(i for i, t in enumerate(exchange["body"]["tools"]) if t["name"] == "Read")
    assert declarations["Read"]["properties"]["limit"]["minimum"] == 0
    assert "greater than 0" in declarations["Read"]["properties"]["limit"]["description"]
    adjusted = listed(response.headers["x-gateway-adjusted"])
    assert f"tools[{read}].input_schema.properties.limit.exclusiveMinimum=minimum 0" in adjusted
    ignored = listed(response.headers["x-gateway-ignored-params"])
    assert "context_management" in ignored and "tools[0].input_schema.$schema" in ignored
    # Dozens of paths: the header keeps whole ones within its limit and says how many more there are.
    assert len(response.headers["x-gateway-ignored-params"]) <= 1024
    assert ignored[-1].startswith("+") and ignored[-1].endswith(" more")
    # Gemini takes one system instruction: the mid-conversation one is in it, after the top-level ones.
    assert exchange["body"]["messages"][1]["role"] == "system"
    assert sent["systemInstruction"]["parts"][-1]["text"] == exchange["body"]["messages"][1]["content"]


async def test_claude_code_defaults_reach_anthropic_with_hints_forwarded(gw: Harness, fake: FakeUpstream) -> None:
    exchange = captured("claude-code/tool-write-accept-edits")[1]
    assert "mid-conversation-system-2026-04-07" in dict(exchange["headers"])["anthropic-beta"]
    response = await post_messages(gw, exchange, CLAUDE)
    check_stream(response)
    sent = fake.last
    body = sent.json()
    assert body["context_management"] == exchange["body"]["context_management"]
    assert sent.headers["anthropic-beta"] == "context-management-2025-06-27,mid-conversation-system-2026-04-07"
    assert body["thinking"]["type"] == "enabled"
    # The client declared the beta, so its system turn stays where it stands.
    assert [m["role"] for m in body["messages"]] == ["user", "system"]
    assert body["messages"][1]["content"] == [{"type": "text", "text": exchange["body"]["messages"][1]["content"]}]
    ignored = listed(response.headers.get("x-gateway-ignored-params"))
    assert "context_management" not in ignored and "thinking" not in ignored


async def test_a_system_turn_without_the_beta_is_folded_into_system_for_anthropic(gw: Harness,
                                                                                 fake: FakeUpstream) -> None:
    exchange = captured("claude-code/tool-write-accept-edits")[1]
    headers = [(name, value) for name, value in exchange["headers"] if name.lower() != "anthropic-beta"]
    response = await post_messages(gw, {**exchange, "headers": headers}, CLAUDE)
    check_stream(response)
    body = fake.last.json()
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["system"][-1]["text"] == exchange["body"]["messages"][1]["content"]
    assert fake.last.headers["anthropic-beta"] == "context-management-2025-06-27"


async def test_claude_code_head_probe_is_not_a_server_error(gw: Harness) -> None:
    # Claude Code's connectivity preflight; it carries on after any 4xx (it gets 405: / answers GET only).
    response = await gw.http.head("/")
    assert response.status_code < 500


def every_capture(path: str) -> list[Any]:
    """(capture/seq, exchange) for every captured POST to ``path``."""
    out = []
    for file in sorted((Path(__file__).parent / "fixtures" / "clients").glob("*/*.json")):
        for exchange in json.loads(file.read_text())["exchanges"]:
            if exchange["method"] == "POST" and exchange["path"] == path:
                out.append(pytest.param(exchange, id=f"{file.parent.name}/{file.stem}/{exchange['seq']}"))
    return out


@pytest.mark.parametrize("exchange", every_capture("/v1/messages"))
async def test_every_captured_messages_request_is_answered_by_every_target_kind(gw: Harness,
                                                                               exchange: dict[str, Any]) -> None:
    """Claude Code, the AI SDK and LangChain, every request they sent, to each kind of target."""
    for model in (GPT_4O, GEMINI, CLAUDE):
        response = await post_messages(gw, exchange, model)
        if exchange["body"].get("stream"):
            check_stream(response)
        else:
            assert response.status_code == 200, (model, response.text)
            assert response.json()["type"] == "message"


@pytest.mark.parametrize("exchange", every_capture("/v1/chat/completions"))
async def test_every_captured_chat_request_is_answered_by_every_target_kind(gw: Harness,
                                                                           exchange: dict[str, Any]) -> None:
    for model in (GPT_4O, GEMINI, CLAUDE):
        response = await gw.http.post("/v1/chat/completions", json={**exchange["body"], "model": model},
                                      headers={"authorization": f"Bearer {gw.key}"})
        assert response.status_code == 200, (model, response.text)


# ---------------------------------------------------------------------------------------------- AI SDK


@pytest.mark.parametrize("model", [GPT_4O, GEMINI, CLAUDE])
async def test_ai_sdk_stream_object_eager_input_streaming_and_one_forced_call(gw: Harness, fake: FakeUpstream,
                                                                              model: str) -> None:
    """@ai-sdk/anthropic's streamObject on a model without native structured outputs: one `json` tool with
    eager_input_streaming, forced by tool_choice any with disable_parallel_tool_use."""
    exchange = captured("ai-sdk/anthropic-openai-gpt-4o-streamObject")[0]
    response = await post_messages(gw, exchange, model)
    check_stream(response)
    sent = fake.last.json()
    ignored = listed(response.headers.get("x-gateway-ignored-params"))
    adjusted = listed(response.headers.get("x-gateway-adjusted"))
    if model == CLAUDE:
        assert sent["tools"][0]["eager_input_streaming"] is True
        assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
        assert "tools[0].eager_input_streaming" not in ignored
    else:
        assert "tools[0].eager_input_streaming" in ignored
    if model == GEMINI:
        assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
        assert "tool_choice.disable_parallel_tool_use=first call only" in adjusted
    if model == GPT_4O:
        assert sent["parallel_tool_calls"] is False


async def test_gemini_answering_two_calls_of_the_forced_function_gives_the_first(gw: Harness,
                                                                                fake: FakeUpstream) -> None:
    """LangChain's with_structured_output(method="function_calling") on a google/ model."""
    exchange = captured("langchain/langchain-openai-chat-structured-fc")[0]
    calls = [{"functionCall": {"name": "Recipe", "args": {"name": name, "minutes": 10}}} for name in ("a", "b")]
    fake.reply(json_reply({"candidates": [{"content": {"role": "model", "parts": calls}, "finishReason": "STOP"}],
                           "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 9, "totalTokenCount": 14}}))
    response = await gw.http.post("/v1/chat/completions", json=exchange["body"],
                                  headers={"authorization": f"Bearer {gw.key}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert fake.last.json()["toolConfig"] == {"functionCallingConfig": {"mode": "ANY",
                                                                        "allowedFunctionNames": ["Recipe"]}}
    [call] = body["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"name": "a", "minutes": 10}
    assert response.headers["x-gateway-adjusted"] == "parallel_tool_calls=first call only"
    assert body["metadata"]["adjusted"] == {"parallel_tool_calls": "first call only"}


# ---------------------------------------------------------------------------------------- openai SDK


async def test_openai_stream_helper_on_an_anthropic_stream_with_two_thinking_blocks(gw: Harness,
                                                                                  fake: FakeUpstream) -> None:
    def event(data: dict[str, Any]) -> str:
        return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"

    usage = {"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    frames = [event({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage}})]
    blocks = [{"type": "thinking", "thinking": "", "signature": ""}, {"type": "redacted_thinking", "data": "EmwK"},
              {"type": "thinking", "thinking": "", "signature": ""}, {"type": "text", "text": ""}]
    for index, block in enumerate(blocks):
        frames.append(event({"type": "content_block_start", "index": index, "content_block": block}))
        if block["type"] == "thinking":
            frames += [event({"type": "content_block_delta", "index": index,
                              "delta": {"type": "thinking_delta", "thinking": f"step {index}"}}),
                       event({"type": "content_block_delta", "index": index,
                              "delta": {"type": "signature_delta", "signature": f"sig{index}"}})]
        if block["type"] == "text":
            frames.append(event({"type": "content_block_delta", "index": index,
                                 "delta": {"type": "text_delta", "text": "Done."}}))
        frames.append(event({"type": "content_block_stop", "index": index}))
    frames += [event({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                      "usage": {"output_tokens": 20}}), event({"type": "message_stop"})]
    fake.reply(Reply(chunks=[f.encode() for f in frames], headers={"content-type": "text/event-stream"}))
    async with gw.client.chat.completions.stream(model=CLAUDE, reasoning_effort="low", max_completion_tokens=2048,
                                                 messages=[{"role": "user", "content": "hi"}]) as stream:
        completion = await stream.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Done."
    details = (message.model_extra or {})["reasoning_details"]
    assert [(d["type"], d.get("signature") or d.get("data")) for d in details] == [
        ("reasoning.text", "sig0"), ("reasoning.encrypted", "EmwK"), ("reasoning.text", "sig2")]


async def test_unified_stream_chunks_carry_no_usage_unless_asked(gw: Harness) -> None:
    response = await gw.http.post("/v1/chat/completions", headers={"authorization": f"Bearer {gw.key}"}, json={
        "model": GPT_4O, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    chunks = [e for e in events(response.text.replace("data: [DONE]", ""))]
    assert chunks and all("usage" not in chunk for chunk in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# ---------------------------------------------------------------------------------------------- docs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def member_classes(doc: str) -> str:
    """The "Member classes" section of a doc: its heading to the next heading."""
    text = (DOCS / doc).read_text()
    start = text.index("# Member classes")
    end = text.find("\n#", start + 1)
    return text[start:end if end != -1 else None]


def unnamed(section: str, structs: list[type[msgspec.Struct]], extra: tuple[str, ...] = ()) -> list[str]:
    named = " ".join(re.findall(r"`([^`]+)`", section))
    members = {f for struct in structs for f in struct.__struct_fields__} | set(extra)
    return sorted(m for m in members if not re.search(rf"(?<![\w$]){re.escape(m)}(?!\w)", named))


def test_docs_classify_every_member() -> None:
    """The class tables name every member the request Structs know, so a new member cannot go unclassified."""
    inbound: list[type[msgspec.Struct]] = [
        messages.MessagesIn, messages.MessageIn, messages.ToolIn, messages.ToolChoiceIn, messages.ThinkingConfigIn,
        messages.OutputConfigIn, messages.MetadataIn, messages.CacheControl, messages.TextIn, messages.ImageIn,
        messages.DocumentIn, messages.ToolUseIn, messages.ToolResultIn, messages.ThinkingIn,
        messages.RedactedThinkingIn]
    assert unnamed(member_classes("messages.md"), inbound) == []
    hints = ("context_management", "eager_input_streaming", "defer_loading", *HINT_FIELDS)
    for doc in ("anthropic.md", "gemini.md"):
        assert unnamed(member_classes(doc), [ChatRequest], hints) == [], doc


@pytest.mark.parametrize("model", [GEMINI, CLAUDE])
async def test_openai_cache_and_safety_hints_are_reported_for_translated_targets(gw: Harness, fake: FakeUpstream,
                                                                                model: str) -> None:
    response = await gw.http.post("/v1/chat/completions", headers={"authorization": f"Bearer {gw.key}"}, json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], "prompt_cache_key": "session-1",
        "safety_identifier": "user-hash"})
    assert response.status_code == 200, response.text
    assert listed(response.headers["x-gateway-ignored-params"]) == ["prompt_cache_key", "safety_identifier"]
    assert response.json()["metadata"]["ignored_params"] == ["prompt_cache_key", "safety_identifier"]
    assert "prompt_cache_key" not in fake.last.body.decode()


async def test_context_management_clearing_thinking_is_reported_when_no_thinking_is_sent(gw: Harness,
                                                                                        fake: FakeUpstream) -> None:
    """Claude Code's edit on a turn without thinking (an Anthropic 400 if forwarded: nothing to clear)."""
    response = await gw.http.post("/v1/messages", headers={"x-api-key": gw.key}, json={
        "model": CLAUDE, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}})
    assert response.status_code == 200, response.text
    assert "context_management" not in fake.last.json()
    assert "anthropic-beta" not in fake.last.headers
    assert listed(response.headers["x-gateway-ignored-params"]) == ["context_management"]


@pytest.mark.parametrize("extra", [{"speed": "fast"}, {"diagnostics": {"trace": True}}], ids=["speed", "diagnostics"])
async def test_speed_and_diagnostics_are_reported_hints_not_errors(gw: Harness, fake: FakeUpstream,
                                                                    extra: dict[str, object]) -> None:
    response = await gw.http.post("/v1/messages", headers={"x-api-key": gw.key}, json={
        "model": CLAUDE, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **extra})
    assert response.status_code == 200, response.text
    (name,) = extra
    assert name not in fake.last.json()
    assert listed(response.headers["x-gateway-ignored-params"]) == [name]


@pytest.mark.parametrize("model", [CLAUDE, GEMINI])
async def test_image_detail_is_reported_where_the_target_sizes_images_itself(gw: Harness, fake: FakeUpstream,
                                                                             model: str) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
    response = await gw.http.post("/v1/chat/completions", headers={"authorization": f"Bearer {gw.key}"}, json={
        "model": model, "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]})
    assert response.status_code == 200, response.text
    assert "messages[0].content[1].image_url.detail" in listed(response.headers["x-gateway-ignored-params"])
