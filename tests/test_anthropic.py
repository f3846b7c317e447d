"""The Anthropic adapter's pure functions, against recorded Anthropic traffic (tests/fixtures/anthropic/).

build_request is checked field by field on the JSON it produces (and, where a recording holds the
request an official SDK sent, against that request); parse_response and the stream translator are fed
the recorded answers. End-to-end runs through the gateway with the openai SDK are in
test_anthropic_e2e.py.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.config import Provider
from gateway.dialects.chat import parse_chat
from gateway.errors import GatewayError, UpstreamUnreachable
from gateway.providers import adapter_for
from gateway.providers import anthropic as adapter
from gateway.providers.base import ResponseContext, Target
from gateway.sse import SSEEvent, SSEParser
from tests.fakes import fixture_bytes, fixture_json

MODEL = "anthropic/claude-sonnet-4-6"
PROVIDER = Provider(name="anthropic", kind="anthropic", base_url="https://api.anthropic.com", api_key="sk-test",
                    models=None, connect_timeout=1.0, timeout=1.0, headers={})
TARGET = Target(provider=PROVIDER, model="claude-sonnet-4-6", public_model=MODEL)
USER = {"role": "user", "content": "Hi"}


def build(**fields: Any) -> dict[str, Any]:
    """The Anthropic JSON body build_request makes of an OpenAI request with these fields."""
    body = {"model": MODEL, "messages": [USER], **fields}
    request = adapter.build_request(parse_chat(json.dumps(body).encode()), TARGET)
    assert request.body is not None
    return json.loads(request.body)  # type: ignore[no-any-return]


def refused(**fields: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        build(**fields)
    assert info.value.status_code == 400
    return info.value


def ctx(include_usage: bool = False) -> ResponseContext:
    return ResponseContext(request_id="req_abc", provider="anthropic", public_model=MODEL,
                           include_usage=include_usage, created=1700000000)


def cassette(name: str) -> list[dict[str, Any]]:
    return fixture_json(f"anthropic/{name}")["interactions"]  # type: ignore[no-any-return]


def parse(body: Any) -> tuple[dict[str, Any], Any]:
    out, usage = adapter.parse_response(json.dumps(body).encode(), ctx())
    return json.loads(out), usage


def translate(raw: bytes, *, include_usage: bool = False) -> list[Any]:
    """Feed a recorded SSE body through the translator; the OpenAI frames' JSON ("[DONE]" as a string)."""
    translator = adapter.stream_translator(ctx(include_usage))
    parser = SSEParser()
    frames = [f for event in parser.feed(raw) for f in translator.feed(event)]
    frames += [f for event in parser.close() for f in translator.feed(event)]
    frames += translator.close()
    out: list[Any] = []
    for frame in b"".join(frames).split(b"\n\n"):
        if frame:
            assert frame.startswith(b"data: ")
            data = frame[len(b"data: "):]
            out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


def events(*items: dict[str, Any]) -> bytes:
    """A synthetic Anthropic SSE body (event name = type), for shapes no recording holds."""
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in items)


def deltas(chunks: list[Any]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if isinstance(c, dict) and c["choices"]]


def assert_stream_shape(chunks: list[Any]) -> None:
    """OpenAI's stream rules: one id and created, role first, exactly one finish chunk, [DONE] last."""
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert {c["id"] for c in body} == {"chatcmpl-abc"}
    assert {c["created"] for c in body} == {1700000000}
    assert {c["model"] for c in body} == {MODEL}
    assert {c["object"] for c in body} == {"chat.completion.chunk"}
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finishes = [c for c in body if c["choices"] and c["choices"][0]["finish_reason"] is not None]
    assert len(finishes) == 1
    assert finishes[0]["choices"][0]["delta"] == {}


def finish_reason(chunks: list[Any]) -> str:
    return next(c["choices"][0]["finish_reason"] for c in chunks
                if isinstance(c, dict) and c["choices"] and c["choices"][0]["finish_reason"])


def test_the_registry_serves_this_module_for_type_anthropic() -> None:
    assert adapter_for("anthropic") is adapter


# ------------------------------------------------------------------------------------- build_request


@pytest.mark.fidelity("text", "anthropic", "non-stream")
@pytest.mark.fidelity("system", "anthropic", "non-stream")
def test_request_url_headers_and_system_messages_in_order() -> None:
    request = adapter.build_request(parse_chat(json.dumps({"model": MODEL, "messages": [
        {"role": "system", "content": "First rule."},
        {"role": "user", "content": "Hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Second"}, {"type": "text", "text": "rule."}]},
    ]}).encode()), TARGET)
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers == {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    assert "x-api-key" not in request.headers  # upstream.py adds the key, nothing else does
    assert request.body is not None
    body = json.loads(request.body)
    assert body == {
        "model": "claude-sonnet-4-6",
        "max_tokens": adapter.DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "system": [{"type": "text", "text": "First rule."}, {"type": "text", "text": "Second"},
                   {"type": "text", "text": "rule."}],
    }


def test_default_max_tokens_comes_from_the_catalog_else_4096() -> None:
    assert adapter.DEFAULT_MAX_TOKENS == 4096
    known = msgspec.structs.replace(TARGET, max_output_tokens=64000)
    call = parse_chat(json.dumps({"model": "x", "messages": [{"role": "user", "content": "Hi"}]}).encode())
    assert json.loads(adapter.build_request(call, known).body or b"")["max_tokens"] == 64000
    thinking = parse_chat(json.dumps({"model": "x", "reasoning_effort": "low",
                                      "messages": [{"role": "user", "content": "Hi"}]}).encode())
    body = json.loads(adapter.build_request(thinking, known).body or b"")
    assert body["max_tokens"] == 64000 and body["thinking"]["budget_tokens"] < 64000


@pytest.mark.fidelity("multi-turn", "anthropic", "non-stream")
def test_consecutive_turns_of_one_role_merge_and_empty_text_is_left_out() -> None:
    body = build(messages=[
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "three"},
        {"role": "user", "content": "four"},
    ])
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "three"}]},
        {"role": "user", "content": [{"type": "text", "text": "four"}]},
    ]


def test_sampling_and_output_parameters() -> None:
    body = build(temperature=0.2, top_p=0.9, stop="END", user="user-42", max_completion_tokens=300,
                 max_tokens=999, n=1, service_tier="auto", stream=True)
    assert body["temperature"] == 0.2
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "user-42"}
    assert body["max_tokens"] == 300  # max_completion_tokens wins over the deprecated max_tokens
    assert body["service_tier"] == "auto"
    assert body["stream"] is True
    assert build(stop=["a", "b"], max_tokens=50)["stop_sequences"] == ["a", "b"]
    assert build(max_tokens=50)["max_tokens"] == 50
    assert build(service_tier="default")["service_tier"] == "standard_only"


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 2}, "n"),
    ({"seed": 7}, "seed"),
    ({"temperature": 1.5}, "temperature"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": -1}, "frequency_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"store": True}, "store"),
    ({"metadata": {"team": "a"}}, "metadata"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"reasoning_effort": "minimal"}, "reasoning_effort"),
    ({"reasoning_effort": "high", "max_completion_tokens": 4000}, "max_completion_tokens"),
    ({"messages": [{"role": "user", "content": "Hi", "name": "ann"}]}, "messages[0].name"),
    ({"messages": [USER, {"role": "function", "content": "x"}]}, "messages[1].role"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                  "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                   USER]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "data:image/bmp;base64,AAAA"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [USER, {"role": "tool", "content": "r"}]}, "messages[1].tool_call_id"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": adapter.JSON_TOOL}}]}, "tools[0].function.name"),
    ({"response_format": {"type": "json_object"},
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "response_format"),
    ({"response_format": {"type": "json_object"}, "reasoning_effort": "low"}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema"),
])
def test_what_anthropic_cannot_express_is_a_400_naming_the_parameter(fields: dict[str, Any], param: str) -> None:
    assert refused(**fields).param == param


def test_openai_no_op_defaults_are_accepted() -> None:
    body = build(n=1, presence_penalty=0, frequency_penalty=0, logprobs=False, seed=None, store=False,
                 modalities=["text"], reasoning_effort="none", parallel_tool_calls=True)
    assert set(body) == {"model", "max_tokens", "messages"}


@pytest.mark.fidelity("tools", "anthropic", "non-stream")
@pytest.mark.fidelity("parallel-tools", "anthropic", "non-stream")
@pytest.mark.fidelity("tool-results", "anthropic", "non-stream")
def test_tool_history_matches_the_request_the_anthropic_sdk_sent() -> None:
    """Recording: pydantic-ai's second turn, 4 parallel tool_use blocks and 4 tool_result blocks."""
    recorded = cassette("pydantic-ai-parallel-tool-calls-and-results.json")[1]["request"]["body"]
    first_answer = cassette("pydantic-ai-parallel-tool-calls-and-results.json")[0]["response"]["body"]
    assistant_text, *uses = first_answer["content"]
    results = [block["content"] for block in recorded["messages"][2]["content"]]
    tool = recorded["tools"][0]
    body = build(
        messages=[
            {"role": "system", "content": recorded["system"]},
            {"role": "user", "content": recorded["messages"][0]["content"][0]["text"]},
            {"role": "assistant", "content": assistant_text["text"], "tool_calls": [
                {"id": u["id"], "type": "function",
                 "function": {"name": u["name"], "arguments": json.dumps(u["input"])}} for u in uses]},
            *({"role": "tool", "tool_call_id": u["id"], "content": r} for u, r in zip(uses, results, strict=True)),
        ],
        tools=[{"type": "function", "function": {"name": tool["name"], "description": tool["description"],
                                                 "parameters": tool["input_schema"]}}],
        tool_choice="auto",
    )
    expected = recorded["messages"]
    for block in expected[2]["content"]:
        del block["is_error"]  # pydantic-ai's explicit default; the gateway leaves it out
    assert body["messages"] == expected
    assert body["system"] == [{"type": "text", "text": recorded["system"]}]
    assert body["tools"] == recorded["tools"]
    assert body["tool_choice"] == recorded["tool_choice"] == {"type": "auto"}


@pytest.mark.fidelity("tool-choice", "anthropic", "non-stream")
@pytest.mark.parametrize(("choice", "recording"), [
    ("required", "pydantic-ai-tool-choice-any.json"),
    ("none", "pydantic-ai-tool-choice-none.json"),
    ({"type": "function", "function": {"name": "get_weather"}}, "pydantic-ai-tool-choice-tool.json"),
])
def test_tool_choice_matches_the_recorded_wire_value(choice: Any, recording: str) -> None:
    recorded = cassette(recording)[0]["request"]["body"]
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                               "parameters": t["input_schema"]}} for t in recorded["tools"]]
    body = build(messages=[{"role": "user", "content": recorded["messages"][0]["content"][0]["text"]}],
                 tools=tools, tool_choice=choice)
    assert body["tool_choice"] == recorded["tool_choice"]
    assert body["tools"] == recorded["tools"]
    assert body["messages"] == recorded["messages"]


@pytest.mark.fidelity("parallel-tools", "anthropic", "non-stream")
def test_parallel_tool_calls_false_disables_parallel_use_on_the_tool_choice() -> None:
    tools = [{"type": "function", "function": {"name": "f", "strict": True}}]
    body = build(tools=tools, parallel_tool_calls=False)
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}, "strict": True}]
    assert build(tools=tools, tool_choice="required", parallel_tool_calls=False)["tool_choice"] == {
        "type": "any", "disable_parallel_tool_use": True}
    assert build(tools=tools, tool_choice="none", parallel_tool_calls=False)["tool_choice"] == {"type": "none"}
    assert "tool_choice" not in build(tool_choice="none")


def test_tool_call_arguments_become_objects_and_empty_arguments_an_empty_object() -> None:
    body = build(messages=[USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": ""}])
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]}
    assert body["messages"][2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}
    bad = refused(messages=[USER, {"role": "assistant", "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}])
    assert bad.param == "messages[1].tool_calls[0].function.arguments"


@pytest.mark.fidelity("vision-https-url", "anthropic", "non-stream")
def test_https_image_matches_the_recorded_url_source() -> None:
    recorded = cassette("pydantic-ai-image-url-input.json")[0]["request"]["body"]
    text, image = recorded["messages"][0]["content"]
    body = build(messages=[{"role": "user", "content": [
        {"type": "text", "text": text["text"]},
        {"type": "image_url", "image_url": {"url": image["source"]["url"], "detail": "high"}},
    ]}])
    assert body["messages"] == recorded["messages"]


@pytest.mark.fidelity("vision-data-url", "anthropic", "non-stream")
def test_data_url_image_becomes_a_base64_source_and_a_pdf_a_document() -> None:
    body = build(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]}])
    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.fidelity("json-schema", "anthropic", "non-stream")
def test_json_schema_uses_native_structured_output() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    body = build(response_format={"type": "json_schema",
                                  "json_schema": {"name": "place", "schema": schema, "strict": True}})
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "tools" not in body


@pytest.mark.fidelity("json-object", "anthropic", "non-stream")
def test_json_object_forces_the_reserved_json_tool() -> None:
    body = build(response_format={"type": "json_object"})
    assert body["tools"] == [{"name": adapter.JSON_TOOL, "description": "Give your complete answer as a JSON object.",
                              "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "tool", "name": adapter.JSON_TOOL}
    assert "tools" not in build(response_format={"type": "text"})


@pytest.mark.fidelity("reasoning", "anthropic", "non-stream")
@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 2048), ("high", 4096)])
def test_reasoning_effort_sets_a_thinking_budget_below_max_tokens(effort: str, budget: int) -> None:
    body = build(reasoning_effort=effort)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] == adapter.DEFAULT_MAX_TOKENS + budget  # the answer keeps its default room
    assert build(reasoning_effort=effort, max_completion_tokens=budget + 1)["max_tokens"] == budget + 1
    assert refused(reasoning_effort=effort, max_tokens=budget).param == "max_tokens"


@pytest.mark.fidelity("reasoning-signature", "anthropic", "non-stream")
def test_reasoning_details_returned_by_the_gateway_replay_as_the_recorded_thinking_turn() -> None:
    """Round trip: the gateway's answer to turn 1, sent back, must give the turn pydantic-ai sent."""
    turns = cassette("pydantic-ai-thinking-part-multiturn.json")
    answer, _ = parse(turns[0]["response"]["body"])
    message = answer["choices"][0]["message"]
    recorded = turns[1]["request"]["body"]
    body = build(messages=[
        {"role": "user", "content": recorded["messages"][0]["content"][0]["text"]},
        message,  # as the client got it: content, reasoning, reasoning_content and reasoning_details
        {"role": "user", "content": recorded["messages"][2]["content"][0]["text"]},
    ], reasoning_effort="low", max_completion_tokens=recorded["max_tokens"])
    assert body["messages"] == recorded["messages"]
    assert body["thinking"] == recorded["thinking"]
    assert body["max_tokens"] == recorded["max_tokens"]


def test_replayed_reasoning_details_keep_order_redaction_and_skip_other_providers() -> None:
    details = [
        {"type": "reasoning.encrypted", "data": "EooCCpsB", "format": "anthropic-claude-v1"},
        {"type": "reasoning.text", "text": "Gemini thought", "signature": "x", "format": "google-gemini-v1"},
        {"type": "reasoning.text", "text": "Let me think.", "signature": "Eu4C", "format": "anthropic-claude-v1"},
    ]
    body = build(messages=[USER, {"role": "assistant", "content": "Done.", "reasoning": "ignored",
                                  "reasoning_details": details}])
    assert body["messages"][1]["content"] == [
        {"type": "redacted_thinking", "data": "EooCCpsB"},
        {"type": "thinking", "thinking": "Let me think.", "signature": "Eu4C"},
        {"type": "text", "text": "Done."},
    ]
    unsigned = [{"type": "reasoning.text", "text": "t", "format": "anthropic-claude-v1"}]
    bad = refused(messages=[USER, {"role": "assistant", "content": "x", "reasoning_details": unsigned}])
    assert bad.param == "messages[1].reasoning_details[0]"


# ------------------------------------------------------------------------------------ parse_response


@pytest.mark.fidelity("tools", "anthropic", "non-stream")
@pytest.mark.fidelity("parallel-tools", "anthropic", "non-stream")
@pytest.mark.fidelity("finish-reason", "anthropic", "non-stream")
def test_parallel_tool_use_answer_becomes_tool_calls() -> None:
    recorded = cassette("pydantic-ai-parallel-tool-calls-and-results.json")[0]["response"]["body"]
    body, usage = parse(recorded)
    assert body["id"] == "chatcmpl-abc"
    assert body["object"] == "chat.completion"
    assert body["created"] == 1700000000
    assert body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == recorded["content"][0]["text"]
    assert choice["message"]["tool_calls"] == [
        {"id": b["id"], "type": "function", "function": {"name": "retrieve_entity_info",
                                                         "arguments": json.dumps(b["input"], separators=(",", ":"))}}
        for b in recorded["content"][1:]]
    assert choice["message"]["tool_calls"][0]["id"] == "toolu_0167cfEnoQaPviGdVXA95zcu"
    assert "reasoning" not in choice["message"]
    assert body["usage"] == {"prompt_tokens": 423, "completion_tokens": 202, "total_tokens": 625,
                             "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 0}, "reasoning_tokens": 0}
    assert usage.total_tokens == 625


@pytest.mark.fidelity("tool-choice", "anthropic", "non-stream")
def test_forced_tool_answer_has_null_content() -> None:
    body, _ = parse(cassette("pydantic-ai-tool-choice-any.json")[0]["response"]["body"])
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [{"id": "toolu_01Dxp8hdnkA8bsrVJJ8LB9q1", "type": "function",
                                      "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]


@pytest.mark.fidelity("text", "anthropic", "non-stream")
@pytest.mark.fidelity("finish-reason", "anthropic", "non-stream")
def test_text_answer() -> None:
    recorded = cassette("pydantic-ai-image-url-input.json")[0]["response"]["body"]
    body, _ = parse(recorded)
    assert body["choices"] == [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
        "role": "assistant", "content": recorded["content"][0]["text"], "refusal": None}}]
    assert body["usage"]["prompt_tokens"] == 296
    assert body["usage"]["completion_tokens"] == 91


@pytest.mark.fidelity("usage", "anthropic", "non-stream")
@pytest.mark.fidelity("cached-tokens", "anthropic", "non-stream")
def test_cached_prompt_tokens_are_counted_in_prompt_tokens() -> None:
    recorded = cassette("pydantic-ai-prompt-cache-usage.json")[1]["response"]["body"]
    assert recorded["usage"]["input_tokens"] == 3
    body, usage = parse(recorded)
    assert body["usage"] == {
        "prompt_tokens": 3 + 1111 + 418, "completion_tokens": 33, "total_tokens": 3 + 1111 + 418 + 33,
        "prompt_tokens_details": {"cached_tokens": 1111, "cache_write_tokens": 418},
        "completion_tokens_details": {"reasoning_tokens": 0}, "reasoning_tokens": 0,
    }
    assert usage.prompt_tokens == 1532


@pytest.mark.fidelity("reasoning", "anthropic", "non-stream")
@pytest.mark.fidelity("reasoning-signature", "anthropic", "non-stream")
def test_thinking_answer_carries_reasoning_and_its_signature() -> None:
    recorded = cassette("pydantic-ai-thinking-part-multiturn.json")[0]["response"]["body"]
    thinking, text = recorded["content"]
    body, _ = parse(recorded)
    message = body["choices"][0]["message"]
    assert message["content"] == text["text"]
    assert message["reasoning"] == message["reasoning_content"] == thinking["thinking"]
    assert message["reasoning_details"] == [{"type": "reasoning.text", "text": thinking["thinking"],
                                             "signature": thinking["signature"], "format": "anthropic-claude-v1",
                                             "index": 0}]
    # output_tokens includes the thinking, whose share Anthropic did not report: left out, not guessed.
    assert body["usage"] == {"prompt_tokens": 42, "completion_tokens": 332, "total_tokens": 374,
                             "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}}


def test_reported_thinking_tokens_and_redacted_thinking() -> None:
    body, _ = parse({"content": [{"type": "redacted_thinking", "data": "EooCCpsB"}, {"type": "text", "text": "ok"},
                                 {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}],
                     "stop_reason": "end_turn",
                     "usage": {"input_tokens": 5, "output_tokens": 50,
                               "output_tokens_details": {"thinking_tokens": 40}}})
    message = body["choices"][0]["message"]
    assert message["content"] == "ok"
    assert "reasoning" not in message
    assert message["reasoning_details"] == [{"type": "reasoning.encrypted", "data": "EooCCpsB",
                                             "format": "anthropic-claude-v1", "index": 0}]
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 40}
    assert body["usage"]["reasoning_tokens"] == 40


@pytest.mark.fidelity("json-object", "anthropic", "non-stream")
def test_json_tool_answer_becomes_content_with_finish_stop() -> None:
    body, _ = parse({"content": [{"type": "tool_use", "id": "toolu_9", "name": adapter.JSON_TOOL,
                                  "input": {"city": "Paris", "n": 2}}],
                     "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 9}})
    choice = body["choices"][0]
    assert choice["message"]["content"] == '{"city":"Paris","n":2}'
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"


@pytest.mark.fidelity("finish-reason", "anthropic", "non-stream")
@pytest.mark.fidelity("stop", "anthropic", "non-stream")
@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "length"), ("model_context_window_exceeded", "length"),
    ("something_new", "stop"), (None, "stop"),
])
def test_stop_reasons_map_to_finish_reasons(stop_reason: str | None, finish: str) -> None:
    body, _ = parse({"content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason,
                     "stop_sequence": "END" if stop_reason == "stop_sequence" else None, "usage": {}})
    assert body["choices"][0]["finish_reason"] == finish


def test_a_body_that_is_not_json_is_a_502() -> None:
    with pytest.raises(GatewayError) as info:
        adapter.parse_response(b"<html>", ctx())
    assert info.value.status_code == 502


# ---------------------------------------------------------------------------------------------- streams


@pytest.mark.fidelity("text", "anthropic", "stream")
@pytest.mark.fidelity("finish-reason", "anthropic", "stream")
def test_text_stream() -> None:
    chunks = translate(fixture_bytes("anthropic/sdk-stream-basic_response.txt"))
    assert_stream_shape(chunks)
    assert [d.get("content") for d in deltas(chunks)] == ["", "Hello", " there", "!", None]
    assert finish_reason(chunks) == "stop"
    assert all("usage" not in c for c in chunks[:-1])


@pytest.mark.fidelity("include-usage", "anthropic", "stream")
@pytest.mark.fidelity("usage", "anthropic", "stream")
def test_include_usage_adds_one_usage_chunk_before_done() -> None:
    chunks = translate(fixture_bytes("anthropic/sdk-stream-basic_response.txt"), include_usage=True)
    assert_stream_shape(chunks)
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17,
                                    "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                                    "completion_tokens_details": {"reasoning_tokens": 0}, "reasoning_tokens": 0}
    assert sum(1 for c in chunks[:-1] if "usage" in c) == 1


@pytest.mark.fidelity("tools", "anthropic", "stream")
@pytest.mark.fidelity("finish-reason", "anthropic", "stream")
def test_tool_use_stream_keeps_id_name_and_fragments() -> None:
    chunks = translate(fixture_bytes("anthropic/sdk-stream-tool_use_response.txt"), include_usage=True)
    assert_stream_shape(chunks)
    ds = deltas(chunks)
    assert "".join(d.get("content") or "" for d in ds) == "I'll check the current weather in Paris for you."
    calls = [d["tool_calls"] for d in ds if "tool_calls" in d]
    assert calls[0] == [{"index": 0, "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]
    # Anthropic's block index is 1 (the text is block 0); OpenAI's tool index is 0. Empty fragments dropped.
    assert calls[1:] == [[{"index": 0, "function": {"arguments": f}}] for f in ['{"locati', 'on": "P', "ar", 'is"}']]
    assert finish_reason(chunks) == "tool_calls"
    assert chunks[-2]["usage"]["prompt_tokens"] == 377
    assert chunks[-2]["usage"]["completion_tokens"] == 65


@pytest.mark.fidelity("finish-reason", "anthropic", "stream")
def test_stream_cut_at_max_tokens_finishes_with_length() -> None:
    chunks = translate(fixture_bytes("anthropic/sdk-stream-incomplete_partial_json_response.txt"))
    assert_stream_shape(chunks)
    calls = [d["tool_calls"][0] for d in deltas(chunks) if "tool_calls" in d]
    assert calls[0]["id"] == "toolu_01EKqbqmZrGRXy18eN7m9kvY"
    assert "".join(c["function"]["arguments"] for c in calls).startswith('{"filename": "taxes.txt", "lines_of_text"')
    assert finish_reason(chunks) == "length"


@pytest.mark.fidelity("finish-reason", "anthropic", "stream")
def test_refusal_stream_finishes_with_content_filter() -> None:
    chunks = translate(fixture_bytes("anthropic/sdk-stream-refusal_response.txt"))
    assert_stream_shape(chunks)
    assert finish_reason(chunks) == "content_filter"


@pytest.mark.fidelity("reasoning", "anthropic", "stream")
@pytest.mark.fidelity("reasoning-signature", "anthropic", "stream")
def test_thinking_stream_carries_reasoning_deltas_and_the_signed_block() -> None:
    raw = fixture_bytes("anthropic/pydantic-ai-thinking-stream.sse")
    chunks = translate(raw, include_usage=True)
    assert_stream_shape(chunks)
    recorded = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    thinking = "".join(e["delta"].get("thinking", "") for e in recorded if e["type"] == "content_block_delta")
    text = "".join(e["delta"].get("text", "") for e in recorded if e["type"] == "content_block_delta")
    signature = next(e["delta"]["signature"] for e in recorded if e["type"] == "content_block_delta"
                     and e["delta"]["type"] == "signature_delta")
    ds = deltas(chunks)
    assert "".join(d.get("reasoning", "") for d in ds) == thinking
    assert all(d.get("reasoning") == d.get("reasoning_content") for d in ds)
    assert "".join(d.get("content") or "" for d in ds) == text
    details = [x for d in ds for x in d.get("reasoning_details", [])]
    assert details == [{"type": "reasoning.text", "text": thinking, "signature": signature,
                        "format": "anthropic-claude-v1", "index": 0}]
    # The signed block is complete before the first answer text.
    first_text = next(i for i, d in enumerate(ds) if d.get("content"))
    assert next(i for i, d in enumerate(ds) if "reasoning_details" in d) < first_text
    assert chunks[-2]["usage"] == {"prompt_tokens": 43, "completion_tokens": 277, "total_tokens": 320,
                                   "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}}


START = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                                               "model": "claude-sonnet-4-6", "stop_reason": None,
                                               "usage": {"input_tokens": 10, "cache_read_input_tokens": 200,
                                                         "cache_creation_input_tokens": 30, "output_tokens": 1}}}
STOP = {"type": "message_stop"}


def _block(index: int, block: dict[str, Any], *fragments: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "content_block_start", "index": index, "content_block": block},
            *({"type": "content_block_delta", "index": index, "delta": f} for f in fragments),
            {"type": "content_block_stop", "index": index}]


def _end(stop_reason: str, **usage: int) -> dict[str, Any]:
    return {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": 40, **usage}}


@pytest.mark.fidelity("parallel-tools", "anthropic", "stream")
@pytest.mark.fidelity("cached-tokens", "anthropic", "stream")
def test_parallel_tool_calls_stream_with_openai_indexes_and_cached_usage() -> None:
    def use(i: int, tool_id: str, *parts: str) -> list[dict[str, Any]]:
        return _block(i, {"type": "tool_use", "id": tool_id, "name": "lookup", "input": {}},
                      *({"type": "input_json_delta", "partial_json": p} for p in parts))
    chunks = translate(events(START, {"type": "ping"}, *_block(0, {"type": "text", "text": ""},
                                                               {"type": "text_delta", "text": "Checking."}),
                              *use(1, "toolu_A", "", '{"q": ', '"a"}'), {"type": "ping"},
                              *use(2, "toolu_B", '{"q": "b"}'), *use(3, "toolu_C", ""),
                              {"type": "some_future_event", "index": "x"},
                              _end("tool_use", input_tokens=12), STOP), include_usage=True)
    assert_stream_shape(chunks)
    calls = [d["tool_calls"][0] for d in deltas(chunks) if "tool_calls" in d]
    assert calls == [
        {"index": 0, "id": "toolu_A", "type": "function", "function": {"name": "lookup", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"q": '}},
        {"index": 0, "function": {"arguments": '"a"}'}},
        {"index": 1, "id": "toolu_B", "type": "function", "function": {"name": "lookup", "arguments": ""}},
        {"index": 1, "function": {"arguments": '{"q": "b"}'}},
        {"index": 2, "id": "toolu_C", "type": "function", "function": {"name": "lookup", "arguments": ""}},
        {"index": 2, "function": {"arguments": "{}"}},  # no arguments streamed: still valid JSON
    ]
    # message_delta's input_tokens (12) replaces message_start's (10); cache counts carry over.
    assert chunks[-2]["usage"] == {"prompt_tokens": 12 + 200 + 30, "completion_tokens": 40, "total_tokens": 282,
                                   "prompt_tokens_details": {"cached_tokens": 200, "cache_write_tokens": 30},
                                   "completion_tokens_details": {"reasoning_tokens": 0}, "reasoning_tokens": 0}


@pytest.mark.fidelity("json-object", "anthropic", "stream")
def test_json_tool_stream_becomes_content() -> None:
    chunks = translate(events(START, *_block(0, {"type": "tool_use", "id": "toolu_J", "name": adapter.JSON_TOOL,
                                                 "input": {}},
                                             {"type": "input_json_delta", "partial_json": ""},
                                             {"type": "input_json_delta", "partial_json": '{"ok": '},
                                             {"type": "input_json_delta", "partial_json": "true}"}),
                              _end("tool_use"), STOP))
    assert_stream_shape(chunks)
    ds = deltas(chunks)
    assert "".join(d.get("content") or "" for d in ds) == '{"ok": true}'
    assert not any("tool_calls" in d for d in ds)
    assert finish_reason(chunks) == "stop"


def test_redacted_thinking_streams_as_an_encrypted_reasoning_detail() -> None:
    chunks = translate(events(START, *_block(0, {"type": "redacted_thinking", "data": "EooCCpsB"}),
                              *_block(1, {"type": "text", "text": ""}, {"type": "text_delta", "text": "Hi"}),
                              _end("end_turn"), STOP))
    details = [x for d in deltas(chunks) for x in d.get("reasoning_details", [])]
    assert details == [{"type": "reasoning.encrypted", "data": "EooCCpsB", "format": "anthropic-claude-v1",
                        "index": 0}]


@pytest.mark.fidelity("mid-stream-error", "anthropic", "stream")
def test_error_event_raises_the_mapped_error() -> None:
    translator = adapter.stream_translator(ctx())
    assert translator.feed(SSEEvent(data=json.dumps(START).encode(), event="message_start"))
    error = {"type": "error", "error": {"details": None, "type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(GatewayError) as info:
        translator.feed(SSEEvent(data=json.dumps(error).encode() + b"      ", event="error"))
    assert info.value.status_code == 503
    assert info.value.error_type == "overloaded_error"
    assert info.value.message == "[anthropic] Overloaded"


def test_a_stream_that_ends_before_message_stop_is_an_error() -> None:
    translator = adapter.stream_translator(ctx())
    translator.feed(SSEEvent(data=json.dumps(START).encode(), event="message_start"))
    with pytest.raises(UpstreamUnreachable):
        translator.close()


def test_a_stream_event_that_is_not_json_is_an_error() -> None:
    with pytest.raises(GatewayError) as info:
        adapter.stream_translator(ctx()).feed(SSEEvent(data=b"{oops", event="content_block_delta"))
    assert info.value.status_code == 502


def test_translator_reports_usage_for_the_pipeline_even_without_include_usage() -> None:
    translator = adapter.stream_translator(ctx())
    for event in SSEParser().feed(fixture_bytes("anthropic/sdk-stream-tool_use_response.txt") + b"\n\n"):
        translator.feed(event)
    assert translator.usage is not None
    assert (translator.usage.prompt_tokens, translator.usage.completion_tokens) == (377, 65)


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.fidelity("upstream-errors", "anthropic", "non-stream")
@pytest.mark.parametrize(("recording", "status", "error_type"), [
    ("pydantic-ai-error-400.json", 400, "invalid_request_error"),
    ("pydantic-ai-error-404-count-tokens.json", 404, "not_found_error"),
])
def test_recorded_error_bodies(recording: str, status: int, error_type: str) -> None:
    response = cassette(recording)[0]["response"]
    assert response["status"] == status
    error = adapter.parse_error(status, json.dumps(response["body"]).encode(), {}, "anthropic")
    assert error.status_code == status
    assert error.error_type == error_type
    assert error.message == f"[anthropic] {response['body']['error']['message']}"


@pytest.mark.fidelity("upstream-errors", "anthropic", "non-stream")
@pytest.mark.parametrize(("status", "error_type", "client_status", "client_type"), [
    (401, "authentication_error", 502, "upstream_error"),
    (403, "permission_error", 502, "upstream_error"),
    (413, "request_too_large", 413, "request_too_large"),
    (429, "rate_limit_error", 429, "rate_limit_error"),
    (500, "api_error", 500, "api_error"),
    (529, "overloaded_error", 503, "overloaded_error"),
])
def test_error_statuses_map_and_retry_after_is_kept(status: int, error_type: str, client_status: int,
                                                    client_type: str) -> None:
    body = msgspec.json.encode({"type": "error", "error": {"type": error_type, "message": "Nope"},
                                "request_id": "req_1"})
    error = adapter.parse_error(status, body, {"retry-after": "7"}, "anthropic")
    assert error.status_code == client_status
    assert error.error_type == client_type
    if status not in (401, 403):
        assert error.headers["retry-after"] == "7"
        assert error.message == "[anthropic] Nope"


def test_an_error_body_that_is_not_json_keeps_its_text() -> None:
    error = adapter.parse_error(502, b"<html>Bad gateway</html>", {}, "anthropic")
    assert error.status_code == 502
    assert "Bad gateway" in error.message
