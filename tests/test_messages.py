"""/v1/messages translation, pure functions both ways: Messages request -> OpenAI chat call, and OpenAI
answers (whole or streamed) -> Messages answers. Recorded traffic where it exists (docs/messages.md)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.dialects.messages import (
    FOREIGN_REASONING_PREFIX,
    STOP_REASONS,
    MessagesStream,
    effort_for_budget,
    message_from_completion,
    parse_request,
    to_chat_call,
)
from gateway.errors import GatewayError, InvalidRequest, RateLimited, UnsupportedParameter, UpstreamTimeout
from gateway.providers.anthropic import (
    THINKING_BUDGETS,
    AnthropicStreamTranslator,
    error_body,
)
from gateway.providers.base import ResponseContext
from gateway.sse import SSEEvent, SSEParser
from tests.fakes import fixture_bytes

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
SIGNED = {"type": "reasoning.text", "text": "Let me think.", "signature": "sig-1", "format": "anthropic-claude-v1"}
GEMINI_SIGNATURE = {"type": "reasoning.encrypted", "data": "CiQB", "format": "google-gemini-v1", "id": "call_1",
                    "index": 0}


def chat_body(request: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI body the pipeline would run for this Messages request."""
    body: dict[str, Any] = json.loads(to_chat_call(parse_request(json.dumps(request).encode())).body)
    return body


def refused(request: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        chat_body(request)
    return info.value


def events(frames: list[bytes]) -> list[dict[str, Any]]:
    parser = SSEParser()
    out = []
    for sse in parser.feed(b"".join(frames)):
        data = json.loads(sse.data)
        assert sse.event == data["type"]  # the event line names the JSON type, as Anthropic's do
        out.append(data)
    return out


def relay(raw: bytes, stream: MessagesStream | None = None, split: bytes = b"\n\n") -> list[dict[str, Any]]:
    """OpenAI SSE bytes through the stream translator, fed one frame at a time as the pipeline relays them."""
    stream = stream or MessagesStream(msg_id="msg_1", model="m", prompt_estimate=7)
    frames = [stream.start()]
    for piece in raw.split(split):
        if piece.strip():
            frames += stream.feed(piece + split)
    frames += stream.close()
    return events(frames)


# -------------------------------------------------------------------------------------------- request


def test_a_whole_conversation_becomes_the_openai_call() -> None:
    body = chat_body({
        "model": "openai/gpt-4o", "max_tokens": 1000, "stream": True,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Use tools."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": "a"}},
                {"type": "tool_use", "id": "toolu_2", "name": "look", "input": {}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Thanks."},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "not found"}]}]},
        ],
        "tools": [{"name": "look", "description": "Look.", "input_schema": {"type": "object"}, "strict": True,
                   "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 3000},
        "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 40,
        "metadata": {"user_id": "u-1"}, "service_tier": "standard_only",
    })
    assert body == {
        "model": "openai/gpt-4o",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."},
                                           {"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is here?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
            {"role": "assistant", "content": "Checking.",
             "tool_calls": [
                 {"id": "toolu_1", "type": "function", "function": {"name": "look", "arguments": '{"q":"a"}'}},
                 {"id": "toolu_2", "type": "function", "function": {"name": "look", "arguments": "{}"}}],
             "reasoning_details": [SIGNED]},
            # Tool results first, in order, then the rest of the user's turn.
            {"role": "tool", "content": "a cat", "tool_call_id": "toolu_1"},
            {"role": "tool", "content": "Error: not found", "tool_call_id": "toolu_2"},  # is_error, carried
            {"role": "user", "content": "Thanks."},
        ],
        "stream": True, "stream_options": {"include_usage": True},
        "max_completion_tokens": 1000, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "user": "u-1",
        "tools": [{"type": "function", "function": {"name": "look", "description": "Look.",
                                                    "parameters": {"type": "object"}, "strict": True}}],
        "tool_choice": "required", "parallel_tool_calls": False, "reasoning_effort": "medium",
        "service_tier": "default",
        "top_k": 40,  # no OpenAI member: passed on for the target to take or refuse by name
    }


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "look"}, {"tool_choice": {"type": "function", "function": {"name": "look"}}}),
    ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
])
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    body = chat_body({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                      "tools": [{"name": "look", "input_schema": {"type": "object"}}], "tool_choice": choice})
    assert {k: body[k] for k in ("tool_choice", "parallel_tool_calls") if k in body} == expected


def test_budget_tokens_round_down_to_an_effort_and_the_adapter_budgets_round_trip() -> None:
    for effort, budget in THINKING_BUDGETS.items():
        assert effort_for_budget(budget) == effort  # an Anthropic target gets the very same budget back
    assert [effort_for_budget(b) for b in (1024, 2047, 2048, 4095, 4096, 31999)] == [
        "low", "low", "medium", "medium", "high", "high"]
    with pytest.raises(InvalidRequest) as info:
        effort_for_budget(1023)
    assert info.value.param == "thinking.budget_tokens"


@pytest.mark.parametrize(("thinking", "output", "effort"), [
    ({"type": "adaptive"}, None, "medium"),
    ({"type": "adaptive"}, {"effort": "high"}, "high"),
    (None, {"effort": "low"}, "low"),
    ({"type": "disabled"}, None, None),
    ({"type": "enabled", "budget_tokens": 1024, "display": "summarized"}, None, "low"),
])
def test_thinking_and_effort(thinking: dict[str, Any] | None, output: dict[str, Any] | None,
                             effort: str | None) -> None:
    request: dict[str, Any] = {"model": "m", "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}]}
    if thinking:
        request["thinking"] = thinking
    if output:
        request["output_config"] = output
    assert chat_body(request).get("reasoning_effort") == effort


def test_output_format_is_a_strict_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = chat_body({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                      "output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "response", "schema": schema, "strict": True}}


def test_a_pdf_document_becomes_a_file_part() -> None:
    body = chat_body({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf",
                                                           "data": "JVBERi0="}}]}]})
    assert body["messages"][0]["content"] == [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}]


BASE: dict[str, Any] = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("change", "param", "kind"), [
    ({"container": "c"}, "container", UnsupportedParameter),
    ({"inference_geo": "us"}, "inference_geo", UnsupportedParameter),  # where it runs is not a hint
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "zz": 1}]}]},
     "messages[0].content[0].zz", UnsupportedParameter),
    ({"messages": [{"role": "user", "content": [{"type": "server_tool_use", "id": "s"}]}]},
     "messages[0].content[0].type", InvalidRequest),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]}]},
     "messages[0].content[0].type", InvalidRequest),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a", "citations": [{"type": "char_location"}]}]}]},
     "messages[0].content[0].citations", UnsupportedParameter),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages[0].content[0].source.type", InvalidRequest),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}, "tools[0].type",
     UnsupportedParameter),
    ({"tools": [{"name": "t", "input_schema": {}, "input_examples": [{}]}]}, "tools[0].input_examples",
     UnsupportedParameter),
    ({"tools": [{"name": "t"}]}, "tools[0].input_schema", InvalidRequest),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name", InvalidRequest),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048, "display": "omitted"}}, "thinking.display",
     UnsupportedParameter),
    ({"thinking": {"type": "between_tools"}}, "thinking.type", InvalidRequest),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}, "output_config": {"effort": "high"}},
     "output_config.effort", UnsupportedParameter),
    ({"max_tokens": "many"}, "max_tokens", InvalidRequest),
    ({"messages": []}, "messages", InvalidRequest),
    ({"messages": [{"role": "assistant", "content": [{"type": "redacted_thinking",
                                                      "data": FOREIGN_REASONING_PREFIX + "bm90IGpzb24"}]}]},
     "messages[0].content[0].data", InvalidRequest),
])
def test_what_cannot_be_translated_is_a_400_naming_it(change: dict[str, Any], param: str,
                                                      kind: type[GatewayError]) -> None:
    error = refused({**BASE, **change})
    assert (type(error), error.status_code, error.param) == (kind, 400, param)


def test_max_tokens_is_required_except_for_count_tokens() -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with pytest.raises(InvalidRequest) as info:
        parse_request(body)
    assert (info.value.param, info.value.code) == ("max_tokens", "missing_required_parameter")
    assert parse_request(body, count_only=True).model == "m"


# --------------------------------------------------------------------------------------------- answer


def answer(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "x",
                  "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}]}
    if usage is not None:
        completion["usage"] = usage
    out: dict[str, Any] = json.loads(message_from_completion(json.dumps(completion).encode(), msg_id="msg_1",
                                                             model="asked/model", prompt_estimate=11))
    return out


def test_a_completion_becomes_a_message() -> None:
    message = answer({"content": "Here.", "reasoning": "Let me think.", "reasoning_content": "Let me think.",
                      "reasoning_details": [SIGNED, GEMINI_SIGNATURE],
                      "tool_calls": [{"id": "call_1", "type": "function",
                                      "function": {"name": "look", "arguments": '{"q": "a"}'}}]},
                     finish="tool_calls",
                     usage={"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                            "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 10},
                            "completion_tokens_details": {"reasoning_tokens": 5}})
    foreign = message["content"].pop()
    assert message == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "asked/model",
        "content": [{"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"},
                    {"type": "text", "text": "Here."},
                    {"type": "tool_use", "id": "call_1", "name": "look", "input": {"q": "a"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 60, "output_tokens": 20, "cache_creation_input_tokens": 10,
                  "cache_read_input_tokens": 30, "output_tokens_details": {"thinking_tokens": 5}},
    }
    # Gemini's signature rides last in a redacted_thinking block, and comes back as the very same entry.
    assert foreign["type"] == "redacted_thinking" and foreign["data"].startswith(FOREIGN_REASONING_PREFIX)
    back = chat_body({**BASE, "messages": [{"role": "assistant", "content": [foreign]}]})
    assert back["messages"][0]["reasoning_details"] == [GEMINI_SIGNATURE]


def test_unsigned_reasoning_refusal_and_unknown_usage() -> None:
    message = answer({"content": None, "refusal": "I can't.", "reasoning_content": "Hmm."})
    assert message["content"] == [{"type": "thinking", "thinking": "Hmm.", "signature": ""},
                                  {"type": "text", "text": "I can't."}]
    assert message["stop_reason"] == "refusal"
    assert message["usage"]["input_tokens"] == 11 and message["usage"]["output_tokens"] == 0  # the estimate


def test_finish_reasons_invert_the_adapter_table() -> None:
    assert STOP_REASONS == {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                            "content_filter": "refusal"}
    assert [answer({"content": "x"}, finish)["stop_reason"] for finish in ("stop", "length", "function_call")] == [
        "end_turn", "max_tokens", "end_turn"]


def test_tool_arguments_that_are_not_an_object_are_a_502() -> None:
    with pytest.raises(GatewayError) as info:
        answer({"tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]})
    assert info.value.status_code == 502


# ---------------------------------------------------------------------------------------------- stream


def test_openai_parallel_tool_call_stream() -> None:
    out = relay(fixture_bytes("openai/openai-python-stream-parallel-tool-calls.sse"))
    assert [e["type"] for e in out[:3]] == ["message_start", "content_block_start", "content_block_delta"]
    assert out[0]["message"]["usage"] == {"input_tokens": 7, "output_tokens": 0, "cache_creation_input_tokens": 0,
                                          "cache_read_input_tokens": 0, "output_tokens_details": None}
    starts = [e for e in out if e["type"] == "content_block_start"]
    assert [(e["index"], e["content_block"]["type"], e["content_block"]["name"]) for e in starts] == [
        (0, "tool_use", "GetWeatherArgs"), (1, "tool_use", "get_stock_price")]
    for index in (0, 1):
        fragments = [e["delta"]["partial_json"] for e in out if e["type"] == "content_block_delta"
                     and e["index"] == index]
        assert len(fragments) > 1  # passed on as they came, not buffered
        json.loads("".join(fragments))
    stops = [e["index"] for e in out if e["type"] == "content_block_stop"]
    assert stops == [0, 1]
    delta = out[-2]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0 and out[-1] == {"type": "message_stop"}


def anthropic_through_the_gateway(raw: bytes) -> bytes:
    """An Anthropic stream as the pipeline relays it: the adapter's OpenAI chunks (with the usage chunk)."""
    translator = AnthropicStreamTranslator(ResponseContext(request_id="r", provider="an", public_model="an/m",
                                                           include_usage=True))
    frames: list[bytes] = []
    for sse in parse_all(raw):
        frames += translator.feed(sse)
    return b"".join(frames)


def parse_all(raw: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    return parser.feed(raw) + parser.close()


def original_events(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(sse.data) for sse in parse_all(raw) if sse.event != "ping"]


@pytest.mark.parametrize("name", ["pydantic-ai-thinking-stream.sse", "sdk-stream-tool_use_response.txt"])
def test_an_anthropic_stream_survives_the_round_trip(name: str) -> None:
    """Anthropic events -> the adapter's OpenAI chunks -> this translator: the same blocks and deltas again."""
    raw = fixture_bytes(f"anthropic/{name}")
    ours = relay(anthropic_through_the_gateway(raw))
    theirs = original_events(raw)

    def shape(evs: list[dict[str, Any]]) -> list[Any]:
        keep = []
        for e in evs:
            if e["type"] == "content_block_start":
                # The recording's tool_use carries Anthropic's newer "caller", which OpenAI's format has not.
                keep.append((e["index"], {k: v for k, v in e["content_block"].items() if k != "caller"}))
            elif e["type"] == "content_block_delta" and any(v for k, v in e["delta"].items() if k != "type"):
                keep.append((e["index"], e["delta"]))
            elif e["type"] in ("content_block_stop", "message_stop"):
                keep.append((e["type"], e.get("index")))
            elif e["type"] == "message_delta":
                keep.append(e["delta"]["stop_reason"])
        return keep

    assert shape(ours) == shape(theirs)
    assert ours[-2]["usage"]["output_tokens"] == theirs[-2]["usage"]["output_tokens"]


def test_an_error_frame_mid_stream_becomes_an_error_event() -> None:
    frames = (b'data: {"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
              + b'data: ' + UpstreamTimeout("too slow").body() + b"\n\n")
    out = relay(frames)
    assert [e["type"] for e in out] == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert out[-1] == {"type": "error", "error": {"type": "timeout_error", "message": "too slow"}}


def test_a_stream_that_stops_without_finishing_is_an_error() -> None:
    out = relay(b'data: {"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')
    assert out[-1]["type"] == "error" and out[-1]["error"]["type"] == "api_error"


def test_gemini_style_whole_tool_calls_and_foreign_signatures() -> None:
    chunk = {"id": "c", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {
        "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "look", "arguments": "{}"}}],
        "reasoning_details": [GEMINI_SIGNATURE]}}]}
    finish = {"id": "c", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {},
                                                                   "finish_reason": "tool_calls"}]}
    out = relay(b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in (chunk, finish)) + b"data: [DONE]\n\n")
    blocks = [e["content_block"] for e in out if e["type"] == "content_block_start"]
    assert blocks[0] == {"type": "tool_use", "id": "call_1", "name": "look", "input": {}}
    assert blocks[1]["type"] == "redacted_thinking" and blocks[1]["data"].startswith(FOREIGN_REASONING_PREFIX)
    assert out[-2]["delta"]["stop_reason"] == "tool_use"


# ---------------------------------------------------------------------------------------------- errors


def test_error_body_is_anthropic_shaped() -> None:
    assert msgspec.json.decode(error_body(RateLimited("slow down"))) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
