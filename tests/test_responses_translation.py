"""The Responses dialect's pure translation (gateway/dialects/responses*.py), with real traffic.

Requests: every Responses body the real clients sent (tests/fixtures/clients/: Codex CLI, the Agents SDK,
the AI SDK, LangChain) is parsed to the common chat call and built into each provider's body by its
adapter. Answers: recorded provider answers and streams (tests/fixtures/{openai,anthropic,gemini}/) go
through each adapter's translator and then this dialect's, and what comes out is validated by the
openai SDK's own Responses types. Route-level and SDK end-to-end tests live with the routes.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec
import openai.types.responses as sdk
import pydantic
import pytest

from gateway.config import Provider
from gateway.dialects.responses import SEAL_PREFIX, ResponsesCall, parse_responses, seal
from gateway.dialects.responses_answer import ResponsesStream, response_from_completion
from gateway.errors import GatewayError, UpstreamError
from gateway.providers import adapter_for
from gateway.providers.base import ResponseContext, Target
from gateway.sse import SSEParser
from gateway.wire.openai import NamedToolChoice
from tests.fakes import fixture_bytes, fixture_json

FIXTURES = Path(__file__).parent / "fixtures"
RID = "resp_test1"


def provider(kind: Literal["openai", "anthropic", "gemini"]) -> Provider:
    return Provider(name=kind, kind=kind, base_url="http://127.0.0.1:9", api_key="sk-test", models=None,
                    connect_timeout=1.0, timeout=1.0, headers={})


TARGETS = {
    "openai": Target(provider=provider("openai"), model="gpt-4.1", public_model="openai/gpt-4.1"),
    "anthropic": Target(provider=provider("anthropic"), model="claude-sonnet-4-6",
                        public_model="anthropic/claude-sonnet-4-6"),
    "gemini": Target(provider=provider("gemini"), model="gemini-2.5-flash", public_model="google/gemini-2.5-flash"),
}


class History:
    """An in-memory ResponseHistory, as the route's store implements it."""

    def __init__(self, conversations: dict[str, list[dict[str, Any]]] | None = None,
                 items: dict[str, dict[str, Any]] | None = None) -> None:
        self.conversations = conversations or {}
        self.items = items or {}

    async def conversation(self, response_id: str) -> list[bytes] | None:
        found = self.conversations.get(response_id)
        return None if found is None else [json.dumps(item).encode() for item in found]

    async def item(self, item_id: str) -> bytes | None:
        found = self.items.get(item_id)
        return None if found is None else json.dumps(found).encode()


def parse(body: dict[str, Any], history: History | None = None) -> ResponsesCall:
    return asyncio.run(parse_responses(json.dumps(body).encode(), history))


def refused(body: dict[str, Any], history: History | None = None) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse(body, history)
    assert info.value.status_code == 400, info.value.message
    return info.value


def upstream_body(call: ResponsesCall, kind: str) -> dict[str, Any]:
    request = adapter_for(kind).build_request(call.chat, TARGETS[kind])
    assert request.body is not None
    return json.loads(request.body)  # type: ignore[no-any-return]


def ctx(kind: str) -> ResponseContext:
    return ResponseContext(request_id="req_test1", provider=kind, public_model=TARGETS[kind].public_model,
                           include_usage=True, created=1_700_000_000)


# -------------------------------------------------------------------------------- captured requests


def captured() -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for path in sorted((FIXTURES / "clients").glob("*/*.json")):
        for exchange in json.loads(path.read_text())["exchanges"]:
            if exchange["path"].endswith("/responses"):
                out.append((f"{path.parent.name}/{path.stem}", exchange["seq"], exchange["body"]))
    return out


CAPTURED = captured()
# What the captured state-dependent requests refer to, as the store would hand it back.
ANTHROPIC_THINKING = {"type": "reasoning.text", "text": "Let me think.", "signature": "sig-abc",
                      "format": "anthropic-claude-v1"}


def history_for(body: dict[str, Any]) -> History:
    history = History()
    if isinstance(body.get("previous_response_id"), str):
        history.conversations[body["previous_response_id"]] = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is 2+2?"}]},
            {"type": "message", "id": "msg_x", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "4", "annotations": []}]}]
    for item in body["input"] if isinstance(body["input"], list) else ():
        if item.get("type") == "item_reference":
            history.items[item["id"]] = {"type": "reasoning", "id": item["id"], "summary": [],
                                         "encrypted_content": seal([ANTHROPIC_THINKING])}
    return history


def resealed(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of a captured body whose reasoning items carry a gateway seal: the capture server's fake
    encrypted content is not the gateway's, and would be refused."""
    body = json.loads(json.dumps(body))
    for item in body["input"] if isinstance(body["input"], list) else ():
        if item.get("type") == "reasoning" and item.get("encrypted_content"):
            item["encrypted_content"] = seal([ANTHROPIC_THINKING])
    return body


def test_every_responses_client_is_captured() -> None:
    clients = {name.split("/")[0] for name, _, _ in CAPTURED}
    assert clients == {"codex", "openai-agents", "ai-sdk", "langchain"}
    assert len(CAPTURED) >= 40


@pytest.mark.parametrize(("name", "seq", "body"), CAPTURED, ids=[f"{n}#{s}" for n, s, _ in CAPTURED])
def test_captured_request_translates_for_every_provider(name: str, seq: int, body: dict[str, Any]) -> None:
    body = resealed(body)
    call = parse(body, history_for(body))
    chat = call.chat.request
    assert chat.model == body["model"]
    assert chat.messages, name
    # Every function the client offered is offered upstream, under one flat name each.
    offered = {tool.function.name for tool in chat.tools or ()}
    assert offered == set(call.tools)
    assert bool(chat.stream) == bool(body.get("stream"))
    # Each client message and tool output is one chat message, in order; the instructions come first.
    items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
    items = [*history_for(body).conversations.get(body.get("previous_response_id") or "", []), *items]
    said = [("system", body["instructions"])] if body.get("instructions") else []
    said += [(item["role"], None) for item in items
             if item.get("type", "message") == "message" and item["role"] != "assistant"]
    said += [("tool", item["call_id"]) for item in items if item.get("type", "").endswith("_call_output")]
    got = [(m.role, m.content if m.role == "system" else m.tool_call_id if m.role == "tool" else None)
           for m in chat.messages if m.role != "assistant"]
    assert sorted(got, key=str) == sorted(said, key=str) and got[0] == said[0]
    for kind in TARGETS:
        out = upstream_body(call, kind)
        if kind == "openai":
            assert out["model"] == "gpt-4.1" and out["messages"]
        elif kind == "anthropic":
            assert out["messages"] and len(out.get("tools", ())) == len(offered)
        else:
            declarations = [d for group in out.get("tools", ()) for d in group.get("functionDeclarations", ())]
            assert len(declarations) == len(offered)


@pytest.mark.parametrize(("name", "seq", "body"), CAPTURED[::3], ids=[f"{n}#{s}" for n, s, _ in CAPTURED[::3]])
def test_answer_to_a_captured_request_is_a_valid_response(name: str, seq: int, body: dict[str, Any]) -> None:
    """The settings echoed back (Codex's namespace, custom and web_search tools included) fit the SDK."""
    call = parse(resealed(body), history_for(body))
    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [{
        "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Done."}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    answer = response_from_completion(json.dumps(completion).encode(), call, resp_id=RID, model="m")
    response = Response.validate_json(answer.body)
    assert response.output_text == "Done."
    assert json.loads(answer.body)["store"] is (body.get("store") is not False)


def capture(name: str, seq: int = 1) -> dict[str, Any]:
    return next(body for n, s, body in CAPTURED if n == name and s == seq)


def test_agents_sdk_tool_round_trip_common_form_is_exact() -> None:
    body = capture("openai-agents/agents-runner-tool", 2)
    call = parse(body)
    (tool,) = body["tools"]
    fc, out = body["input"][1], body["input"][2]
    assert msgspec.to_builtins(call.chat.request) == {
        "model": body["model"],
        "messages": [
            {"role": "system", "content": body["instructions"]},
            {"role": "user", "content": body["input"][0]["content"]},
            {"role": "assistant", "tool_calls": [
                {"id": fc["call_id"], "type": "function",
                 "function": {"name": fc["name"], "arguments": fc["arguments"]}}]},
            {"role": "tool", "content": out["output"], "tool_call_id": out["call_id"]},
        ],
        "tools": [{"type": "function", "function": {
            "name": tool["name"], "description": tool["description"], "parameters": tool["parameters"],
            "strict": True}}],
        "reasoning_effort": "none",
    }
    assert call.chat.notes.ignored == ["text.verbosity"]
    assert upstream_body(call, "anthropic")["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": fc["call_id"], "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": out["call_id"],
                                      "content": out["output"]}]}]


def test_codex_default_profile_offers_its_namespaces_and_custom_exec() -> None:
    body = capture("codex/exec-default-model-tool", 1)
    call = parse(body)
    names = set(call.tools)
    assert {"functions__exec", "functions__wait", "clock__sleep", "collaboration__spawn_agent"} <= names
    exec_tool = next(t for t in call.chat.request.tools or () if t.function.name == "functions__exec")
    parameters = exec_tool.function.parameters
    assert isinstance(parameters, dict)
    assert parameters["required"] == ["input"]
    assert "lark" in parameters["properties"]["input"]["description"]
    ignored = call.chat.notes.ignored
    assert "input[0].tools[0].tools[0].format" in ignored  # the grammar: described, not enforced
    for hint in ("prompt_cache_key", "client_metadata", "text.verbosity", "reasoning.context"):
        assert hint in ignored
    assert call.store is False and call.include_encrypted
    # The developer messages stay developer messages, in order; the tools item is not a message.
    roles = [m.role for m in call.chat.request.messages]
    assert roles[:4] == ["developer"] * 4 and roles[-1] == "user"
    anthropic = upstream_body(call, "anthropic")
    assert "functions__exec" in {tool["name"] for tool in anthropic["tools"]}
    assert anthropic["thinking"]["type"] == "enabled"  # reasoning.effort low


def test_codex_classic_profile_reports_web_search_and_flattens_multi_agent() -> None:
    body = capture("codex/model-gpt-4.1", 1)
    call = parse(body)
    web = next(k for k, tool in enumerate(body["tools"]) if tool["type"] == "web_search")
    assert f"tools[{web}]" in call.chat.notes.ignored
    assert "multi_agent_v1__spawn_agent" in call.tools
    assert call.tools["multi_agent_v1__spawn_agent"].namespace == "multi_agent_v1"
    assert call.chat.request.parallel_tool_calls is True


def test_codex_second_turn_replays_the_custom_tool_call_and_its_output() -> None:
    call = parse(resealed(capture("codex/exec-default-model-tool", 2)))
    assistant = next(m for m in call.chat.request.messages if m.role == "assistant")
    assert assistant.reasoning_details == [ANTHROPIC_THINKING]
    assert isinstance(assistant.tool_calls, list) and len(assistant.tool_calls) == 1
    tool_call = assistant.tool_calls[0]
    assert tool_call.function.name == "functions__exec"  # echoed without its namespace: the one offered
    assert json.loads(tool_call.function.arguments)["input"].startswith("const r = await tools.exec_command")
    tool = next(m for m in call.chat.request.messages if m.role == "tool")
    assert tool.tool_call_id == tool_call.id and isinstance(tool.content, str) and "Script completed" in tool.content
    blocks = upstream_body(call, "anthropic")["messages"]
    turn = next(m for m in blocks if m["role"] == "assistant")
    assert turn["content"][0] == {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"}


def test_agents_sdk_previous_response_id_prepends_the_stored_conversation() -> None:
    body = capture("openai-agents/agents-two-turns-previous-response", 3)
    call = parse(body, history_for(body))
    messages = call.chat.request.messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2].content == "4"
    error = refused(body, History())
    assert error.param == "previous_response_id" and error.code == "previous_response_not_found"
    assert refused(body).param == "previous_response_id"  # no store behind it


def test_ai_sdk_item_reference_resolves_to_the_stored_reasoning() -> None:
    name = next(n for n, _, b in CAPTURED if n.startswith("ai-sdk/") and any(
        i.get("type") == "item_reference" for i in b["input"] if isinstance(b["input"], list)))
    body = next(b for n, _, b in CAPTURED if n == name and any(
        i.get("type") == "item_reference" for i in b["input"]))
    call = parse(body, history_for(body))
    assistant = next(m for m in call.chat.request.messages if m.role == "assistant")
    assert assistant.reasoning_details == [ANTHROPIC_THINKING]
    stored = [json.loads(item) for item in call.input_items]
    assert all(item["type"] != "item_reference" for item in stored)
    assert all(isinstance(item.get("id"), str) for item in stored)
    ref = next(i for i, item in enumerate(body["input"]) if item.get("type") == "item_reference")
    assert refused(body, History()).param == f"input[{ref}].id"


def test_langchain_forced_function_and_json_schema() -> None:
    forced = next(b for n, _, b in CAPTURED if n == "langchain/langchain-openai-responses-structured-fc")
    call = parse(forced)
    choice = call.chat.request.tool_choice
    assert isinstance(choice, NamedToolChoice) and choice.function.name == "Recipe"
    assert call.chat.request.parallel_tool_calls is False
    assert upstream_body(call, "anthropic")["tool_choice"] == {"type": "tool", "name": "Recipe",
                                                               "disable_parallel_tool_use": True}
    schema = next(b for n, _, b in CAPTURED if n == "langchain/langchain-openai-responses-structured-default")
    fmt = parse(schema).chat.request.response_format
    assert fmt and fmt.type == "json_schema" and fmt.json_schema.name == "Recipe"


# ------------------------------------------------------------------------------------ the door


BASE: dict[str, Any] = {"model": "anthropic/claude-sonnet-4-6", "input": "Hi"}


@pytest.mark.parametrize(("extra", "param"), [
    ({"background": True}, "background"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"temperature": 3}, "temperature"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "bad model"}, "model"),
    ({"tool_choice": {"type": "web_search"}, "tools": [{"type": "web_search"}]}, "tool_choice"),
    ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"tools": [{"type": "wormhole"}]}, "tools[0].type"),
    ({"tools": [{"type": ["function"]}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "name": "f", "parameters": ["x"]}]}, "tools[0].parameters"),
    ({"tools": [{"type": "namespace", "name": "n", "tools": [{"type": "function", "name": "f", "strict": "yes"}]}]},
     "tools[0].tools[0].strict"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": [{"type": "computer_call", "call_id": "c"}]}, "input[0].type"),
    ({"input": [{"type": "message", "role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"type": "reasoning", "summary": [], "encrypted_content": "gAAAAopenai"}]},
     "input[0].encrypted_content"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
])
def test_what_cannot_be_honoured_is_a_400_naming_it(extra: dict[str, Any], param: str) -> None:
    assert refused({**BASE, **extra}).param == param


def test_hints_are_reported_not_refused() -> None:
    call = parse({**BASE, "prompt_cache_key": "k", "truncation": "auto", "include": [
        "reasoning.encrypted_content", "web_search_call.action.sources"], "tools": [
        {"type": "file_search", "vector_store_ids": ["vs"]}, {"type": "function", "name": "f"}]})
    assert call.chat.notes.ignored == ["prompt_cache_key", "truncation", "include[1]", "tools[0]"]
    assert [t.function.name for t in call.chat.request.tools or ()] == ["f"]


def test_allowed_tools_narrows_the_offer() -> None:
    call = parse({**BASE, "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
                  "tool_choice": {"type": "allowed_tools", "mode": "required",
                                  "tools": [{"type": "function", "name": "b"}]}})
    assert call.chat.request.tool_choice == "required"
    assert [t.function.name for t in call.chat.request.tools or ()] == ["b"]


def test_tampered_seal_is_refused() -> None:
    good = seal([ANTHROPIC_THINKING])
    assert good.startswith(SEAL_PREFIX)
    body = {**BASE, "input": [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": good[:-4]},
                              {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                              {"type": "function_call_output", "call_id": "c1", "output": "ok"}]}
    assert refused(body).param == "input[0].encrypted_content"
    forged = SEAL_PREFIX + base64.urlsafe_b64encode(b'{"v":2,"details":[]}').decode()
    body["input"][0]["encrypted_content"] = forged
    assert refused(body).param == "input[0].encrypted_content"


# ------------------------------------------------------------------------------------ the answers

Response = pydantic.TypeAdapter(sdk.Response)
# Each SDK event class by its ``type`` (validating against the whole union hides the real mismatch).
EVENTS: dict[str, type[pydantic.BaseModel]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in get_args(get_args(sdk.ResponseStreamEvent)[0])
}


def sse_events(frames: list[bytes]) -> list[dict[str, Any]]:
    out = []
    parser = SSEParser()
    for event in parser.feed(b"".join(frames)) + parser.close():
        data = json.loads(event.data)
        assert event.event == data["type"]
        EVENTS[data["type"]].model_validate(data)  # the SDK's own event types accept it
        out.append(data)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    # Each item keeps the id it was added with, and is done once, at the index it was added.
    added = {e["output_index"]: e["item"]["id"] for e in out if e["type"] == "response.output_item.added"}
    done = {e["output_index"]: e["item"]["id"] for e in out if e["type"] == "response.output_item.done"}
    assert added == done
    return out


def stream_through(kind: str, raw: bytes, call: ResponsesCall) -> tuple[list[dict[str, Any]], ResponsesStream]:
    """A recorded upstream stream through the adapter's translator, then the Responses stream, one event at
    a time as the pipeline relays them."""
    translator = adapter_for(kind).stream_translator(ctx(kind))
    stream = ResponsesStream(call, resp_id=RID, model=TARGETS[kind].public_model, created_at=1_700_000_000)
    frames = stream.start()
    parser = SSEParser()
    for event in parser.feed(raw) + parser.close():
        for chunk in translator.feed(event):
            frames += stream.feed(chunk)
    for chunk in translator.close():
        frames += stream.feed(chunk)
    frames += stream.close()
    assert stream.done
    return sse_events(frames), stream


def final(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events[0]["type"] == "response.created" and events[1]["type"] == "response.in_progress"
    last = events[-1]
    assert last["type"] in ("response.completed", "response.incomplete")
    Response.validate_python(last["response"])
    return last["response"]  # type: ignore[no-any-return]


def deltas(events: list[dict[str, Any]], kind: str) -> str:
    return "".join(e["delta"] for e in events if e["type"] == kind)


STREAM_CALL = {**BASE, "stream": True, "include": ["reasoning.encrypted_content"],
               "reasoning": {"effort": "low", "summary": "auto"}}


@pytest.mark.parametrize(("kind", "fixture"), [
    ("openai", "openai/openai-python-stream-text.sse"),
    ("anthropic", "anthropic/sdk-stream-basic_response.txt"),
    ("gemini", "gemini/pydantic-ai-stream-with-thoughts.sse"),
])
def test_text_stream_per_provider(kind: str, fixture: str) -> None:
    events, _ = stream_through(kind, fixture_bytes(fixture), parse(STREAM_CALL))
    response = final(events)
    message = next(item for item in response["output"] if item["type"] == "message")
    text = message["content"][0]["text"]
    assert text and text == deltas(events, "response.output_text.delta")
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == text
    assert response["usage"]["input_tokens"] > 0 and response["usage"]["output_tokens"] > 0
    kinds = [e["type"] for e in events]
    assert kinds.index("response.content_part.added") < kinds.index("response.output_text.delta")


@pytest.mark.parametrize(("kind", "fixture", "count"), [
    ("openai", "openai/openai-python-stream-parallel-tool-calls.sse", 2),
    ("anthropic", "anthropic/sdk-stream-tool_use_response.txt", 1),
    ("gemini", "gemini/pydantic-ai-stream-tool-call-turn1.sse", 1),
])
def test_tool_call_stream_per_provider(kind: str, fixture: str, count: int) -> None:
    events, stream = stream_through(kind, fixture_bytes(fixture), parse(STREAM_CALL))
    response = final(events)
    calls = [item for item in response["output"] if item["type"] == "function_call"]
    assert len(calls) == count
    for call in calls:
        assert call["call_id"] and call["name"] and call["id"].startswith("fc_")
        json.loads(call["arguments"])
        done = next(e for e in events if e["type"] == "response.function_call_arguments.done"
                    and e["item_id"] == call["id"])
        assert done["arguments"] == call["arguments"]
        streamed = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
                           and e["item_id"] == call["id"])
        assert streamed == call["arguments"]
    assert len(stream.stored_output) == len(response["output"])


def test_anthropic_thinking_stream_round_trips_its_signature() -> None:
    raw = fixture_bytes("anthropic/pydantic-ai-thinking-stream.sse")
    events, _ = stream_through("anthropic", raw, parse(STREAM_CALL))
    response = final(events)
    reasoning = response["output"][0]
    assert reasoning["type"] == "reasoning" and reasoning["encrypted_content"].startswith(SEAL_PREFIX)
    summary = reasoning["summary"][0]["text"]
    assert summary == deltas(events, "response.reasoning_summary_text.delta")
    signature = "".join(json.loads(e.data)["delta"].get("signature", "") for e in SSEParser().feed(raw)
                        if e.event == "content_block_delta")
    assert signature
    # The next turn sends the items back (as Codex does, store false): Anthropic gets the block exactly.
    turn = {**BASE, "input": ["user", *response["output"], "user"]}
    turn["input"][0] = {"role": "user", "content": "Hi"}
    turn["input"][-1] = {"role": "user", "content": "And then?"}
    blocks = upstream_body(parse(turn), "anthropic")["messages"][1]["content"]
    assert blocks[0] == {"type": "thinking", "thinking": summary, "signature": signature}
    # Without include, the client's copy carries no encrypted content; the stored copy always does.
    plain = stream_through("anthropic", raw, parse({**STREAM_CALL, "include": []}))
    assert final(plain[0])["output"][0]["encrypted_content"] is None
    assert json.loads(plain[1].stored_output[0])["encrypted_content"] == reasoning["encrypted_content"]


def test_gemini_thought_signature_round_trips() -> None:
    raw = fixture_bytes("gemini/pydantic-ai-stream-with-thoughts.sse")
    events, _ = stream_through("gemini", raw, parse(STREAM_CALL))
    response = final(events)
    sealed = [item for item in response["output"] if item["type"] == "reasoning" and item["encrypted_content"]]
    assert sealed
    turn = {**BASE, "model": "google/gemini-2.5-flash",
            "input": [{"role": "user", "content": "Hi"}, *response["output"], {"role": "user", "content": "More"}]}
    contents = upstream_body(parse(turn), "gemini")["contents"]
    model_parts = next(c for c in contents if c["role"] == "model")["parts"]
    assert any(part.get("thoughtSignature") for part in model_parts)
    recorded = [p["thoughtSignature"] for line in raw.split(b"\n") if line.startswith(b"data: ")
                for c in json.loads(line[6:]).get("candidates", ()) for p in c["content"].get("parts", ())
                if "thoughtSignature" in p]
    assert [p["thoughtSignature"] for p in model_parts if "thoughtSignature" in p] == recorded


@pytest.mark.parametrize(("kind", "fixture", "index"), [
    ("anthropic", "anthropic/pydantic-ai-thinking-part-multiturn.json", 0),
    ("anthropic", "anthropic/pydantic-ai-parallel-tool-calls-and-results.json", 0),
    ("gemini", "gemini/pydantic-ai-parallel-functionCalls-multiturn.json", 0),
    ("gemini", "gemini/pydantic-ai-max-tokens.json", 0),
])
def test_answer_per_provider_is_a_valid_response(kind: str, fixture: str, index: int) -> None:
    recorded = fixture_json(fixture)["interactions"][index]["response"]["body"]
    completion, _ = adapter_for(kind).parse_response(json.dumps(recorded).encode(), ctx(kind))
    call = parse({**BASE, "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"},
                  "metadata": {"team": "a"}})
    answer = response_from_completion(completion, call, resp_id=RID, model=TARGETS[kind].public_model,
                                      gateway={"routing": [{"provider": kind}]})
    response = Response.validate_json(answer.body)
    assert response.id == RID and response.metadata == {"team": "a"}
    chat = json.loads(completion)
    said = chat["choices"][0]["message"]
    assert response.output_text == (said.get("content") or "")
    calls = [item for item in response.output if item.type == "function_call"]
    assert [c.call_id for c in calls] == [c["id"] for c in said.get("tool_calls") or ()]
    assert response.usage is not None and response.usage.input_tokens == chat["usage"]["prompt_tokens"]
    if chat["choices"][0]["finish_reason"] == "length":
        assert response.status == "incomplete" and response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    else:
        assert response.status == "completed"
    assert json.loads(answer.body)["gateway"] == {"routing": [{"provider": kind}]}


def test_namespaced_and_custom_calls_go_back_as_the_client_offered_them() -> None:
    call = parse({**BASE, "tools": [
        {"type": "namespace", "name": "ns", "description": "d", "tools": [{"type": "function", "name": "f"}]},
        {"type": "custom", "name": "exec", "format": {"type": "grammar", "syntax": "lark", "definition": "s"}}]})
    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "ns__f", "arguments": "{\"a\":1}"}},
            {"id": "call_2", "type": "function", "function": {"name": "exec", "arguments": "{\"input\":\"ls\"}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    answer = response_from_completion(json.dumps(completion).encode(), call, resp_id=RID, model="m")
    response = Response.validate_json(answer.body)
    fn, custom = response.output
    assert fn.type == "function_call" and (fn.name, fn.namespace, fn.call_id) == ("f", "ns", "call_1")
    assert custom.type == "custom_tool_call" and (custom.name, custom.input) == ("exec", "ls")
    # The stream gives the same items.
    chunks = [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{
        "index": 0, "delta": {"tool_calls": [tc | {"index": k}]}}]}
        for k, tc in enumerate(completion["choices"][0]["message"]["tool_calls"])]  # type: ignore[index]
    stream = ResponsesStream(call, resp_id=RID, model="m")
    frames = stream.start()
    for chunk in chunks:
        frames += stream.feed(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    frames += stream.feed(b"data: [DONE]\n\n")
    events = sse_events(frames)
    streamed = final(events)["output"]
    assert [json.loads(item) for item in stream.stored_output] == streamed
    assert [item["type"] for item in streamed] == ["function_call", "custom_tool_call"]
    assert streamed[1]["input"] == "ls" and streamed[0]["namespace"] == "ns"
    assert any(e["type"] == "response.custom_tool_call_input.done" for e in events)


def test_mid_stream_failure_ends_with_response_failed() -> None:
    stream = ResponsesStream(parse(STREAM_CALL), resp_id=RID, model="m")
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "Hel"}}]}
    frames = stream.start() + stream.feed(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    frames.append(stream.fail(UpstreamError("upstream reset", status=502, error_type="upstream_error")))
    events = sse_events(frames)
    assert events[-1]["type"] == "response.failed"
    failed = Response.validate_python(events[-1]["response"])
    assert failed.status == "failed" and failed.error is not None and failed.error.message == "upstream reset"
    # A stream that stops before its finish is a failure too, never a silent "completed".
    cut = ResponsesStream(parse(STREAM_CALL), resp_id=RID, model="m")
    tail = sse_events(cut.start() + cut.feed(b"data: " + json.dumps(chunk).encode() + b"\n\n") + cut.close())
    assert tail[-1]["type"] == "response.failed"


def test_events_are_emitted_per_chunk_not_buffered() -> None:
    stream = ResponsesStream(parse(STREAM_CALL), resp_id=RID, model="m")
    stream.start()
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "Hel"}}]}
    first = stream.feed(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    assert [f.split(b"\n")[0] for f in first] == [b"event: response.output_item.added",
                                                  b"event: response.content_part.added",
                                                  b"event: response.output_text.delta"]
    assert [f.split(b"\n")[0] for f in stream.feed(b"data: " + json.dumps(chunk).encode() + b"\n\n")] == [
        b"event: response.output_text.delta"]


def test_refusal_and_content_filter() -> None:
    call = parse(STREAM_CALL)
    stream = ResponsesStream(call, resp_id=RID, model="m")
    frames = stream.start()
    for delta, finish in (({"content": "I can"}, None), ({"refusal": "not help"}, None), ({}, "content_filter")):
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        frames += stream.feed(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events = sse_events(frames + stream.feed(b"data: [DONE]\n\n"))
    response = final(events)
    assert events[-1]["type"] == "response.incomplete"
    assert response["incomplete_details"] == {"reason": "content_filter"}
    (message,) = response["output"]
    assert message["status"] == "incomplete"
    assert message["content"] == [{"type": "output_text", "text": "I can", "annotations": [], "logprobs": []},
                                  {"type": "refusal", "refusal": "not help"}]
    assert next(e for e in events if e["type"] == "response.refusal.done")["refusal"] == "not help"


def test_gemini_image_output_is_an_image_generation_call() -> None:
    recorded = fixture_json("gemini/synthetic-image-output.json")
    data = recorded["candidates"][0]["content"]["parts"][1]["inlineData"]["data"]
    completion, _ = adapter_for("gemini").parse_response(json.dumps(recorded).encode(), ctx("gemini"))
    answer = response_from_completion(completion, parse(BASE), resp_id=RID, model="google/gemini-2.5-flash")
    response = Response.validate_json(answer.body)
    assert response.output_text == "Here is a red dot."
    image = response.output[-1]
    assert image.type == "image_generation_call" and image.result == data and image.output_format == "png"
    # A later turn carrying that record is served, the record reported as left out.
    turn = parse({**BASE, "input": [{"role": "user", "content": "Draw"}, *json.loads(answer.body)["output"],
                                    {"role": "user", "content": "Thanks"}]})
    assert turn.chat.notes.ignored == ["input[2]"]


def test_streamed_image_is_added_and_done_at_once() -> None:
    stream = ResponsesStream(parse(STREAM_CALL), resp_id=RID, model="m")
    frames = stream.start()
    for delta in ({"content": "A dot:"}, {"images": [{"type": "image_url", "image_url": {
            "url": "data:image/webp;base64,AAAA"}}]}):
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        frames += stream.feed(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events = sse_events(frames + stream.feed(b"data: [DONE]\n\n"))
    message, image = final(events)["output"]
    assert message["content"][0]["text"] == "A dot:"
    assert image == {"type": "image_generation_call", "id": "ig_test1_1", "status": "completed", "result": "AAAA",
                     "output_format": "webp"}


def test_anthropic_answer_round_trips_to_the_recorded_next_request() -> None:
    """pydantic-ai's recording: a thinking answer, then the request that carried it back. Through the
    Responses dialect (encrypted content, store false), the next turn's assistant blocks are the recorded
    ones exactly."""
    first, second = fixture_json("anthropic/pydantic-ai-thinking-part-multiturn.json")["interactions"]
    completion, _ = adapter_for("anthropic").parse_response(json.dumps(first["response"]["body"]).encode(),
                                                              ctx("anthropic"))
    call = parse({**BASE, "store": False, "include": ["reasoning.encrypted_content"]})
    output = json.loads(response_from_completion(completion, call, resp_id=RID, model="m").body)["output"]
    recorded = second["request"]["body"]["messages"]
    question, follow_up = recorded[0]["content"][0]["text"], recorded[2]["content"][0]["text"]
    turn = parse({**BASE, "store": False, "input": [
        {"role": "user", "content": question}, *output, {"role": "user", "content": follow_up}]})
    sent = upstream_body(turn, "anthropic")["messages"]
    assert sent[1]["content"] == recorded[1]["content"]
