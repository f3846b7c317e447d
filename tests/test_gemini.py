"""Gemini adapter, unit level: recorded Gemini traffic through the pure functions, field by field.

Golden requests compare ``build_request`` with the body pydantic-ai (via Google's SDK) really sent, after
normalising snake_case keys to camelCase (the API accepts both; see protocols.md §1.3). Golden responses
and streams replay real Gemini answers through ``parse_response`` and the stream translator.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gateway.config import Provider
from gateway.dialects.chat import parse_chat
from gateway.errors import GatewayError, InvalidRequest, UnsupportedParameter
from gateway.providers import gemini
from gateway.providers.base import ResponseContext, Target
from gateway.sse import SSEParser
from tests.fakes import fixture_bytes, fixture_json

PROVIDER = Provider(name="google", kind="gemini", base_url="https://generativelanguage.googleapis.com",
                    api_key="unused-in-unit-tests", models=None, connect_timeout=10, timeout=600, headers={})
CREATED = 1_700_000_000


def target(model: str = "gemini-2.5-flash") -> Target:
    return Target(provider=PROVIDER, model=model, public_model=f"google/{model}")


def build(body: dict[str, Any], model: str = "gemini-2.5-flash") -> tuple[str, dict[str, Any]]:
    """The (url, JSON body) ``build_request`` makes of an OpenAI request body."""
    call = parse_chat(json.dumps({"model": f"google/{model}", **body}).encode())
    request = gemini.build_request(call, target(model))
    assert request.body is not None
    assert request.headers == {"content-type": "application/json"}
    return request.url, json.loads(request.body)


def ctx(include_usage: bool = False, model: str = "gemini-2.5-flash") -> ResponseContext:
    return ResponseContext(request_id="req_golden1", provider="google", public_model=f"google/{model}",
                           include_usage=include_usage, created=CREATED)


def parse(body: Any, context: ResponseContext | None = None) -> tuple[dict[str, Any], Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    out, usage = gemini.parse_response(raw, context or ctx())
    return json.loads(out), usage


def frames(out: bytes) -> list[Any]:
    """OpenAI SSE bytes -> the JSON of each event, and the string "[DONE]"."""
    events = []
    for block in out.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith(b"data: ")
        data = block[len(b"data: "):]
        events.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return events


def translate(raw: bytes, context: ResponseContext) -> tuple[list[Any], gemini.GeminiStream]:
    """Replay an upstream SSE body through the parser and translator, as the pipeline does."""
    parser = SSEParser()
    translator = gemini.stream_translator(context)
    out = [f for event in parser.feed(raw) + parser.close() for f in translator.feed(event)]
    out += translator.close()
    return frames(b"".join(out)), translator


def camel(value: Any, opaque: bool = False) -> Any:
    """Recorded requests mix snake_case and camelCase keys; user data (args, response) is kept as is."""
    if opaque or not isinstance(value, dict | list):
        return value
    if isinstance(value, list):
        return [camel(v) for v in value]
    out = {}
    for key, item in value.items():
        head, *rest = key.split("_")
        name = head + "".join(w.title() for w in rest)
        if key == "properties":
            out[name] = {prop: camel(schema) for prop, schema in item.items()}
        else:
            out[name] = camel(item, opaque=key in ("args", "response"))
    return out


def recorded(name: str, i: int = 0) -> dict[str, Any]:
    interaction: dict[str, Any] = fixture_json(f"gemini/{name}")["interactions"][i]
    return interaction


def tool(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


WEATHER = tool("get_weather", "Get weather for a city",
               {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"})
TIME = tool("get_time", "Get time in a timezone",
            {"properties": {"timezone": {"type": "string"}}, "required": ["timezone"], "type": "object"})
PARIS = [{"role": "user", "content": "What's the weather in Paris?"}]


# ------------------------------------------------------------------------------- golden requests


@pytest.mark.fidelity("tool-choice", "gemini", "non-stream")
@pytest.mark.parametrize(("fixture", "tools", "tool_choice"), [
    ("pydantic-ai-tool-choice-allowed-names.json", [WEATHER, TIME],
     {"type": "function", "function": {"name": "get_weather"}}),
    ("pydantic-ai-tool-choice-any.json", [WEATHER], "required"),
    ("pydantic-ai-tool-choice-none.json",
     [tool("get_weather", "Get the current weather for a city.",
           {"additionalProperties": False, "properties": {"city": {"type": "string"}},
            "required": ["city"], "type": "object"})], "none"),
])
def test_tool_choice_requests_match_recordings(fixture: str, tools: list[Any], tool_choice: Any) -> None:
    url, body = build({"messages": PARIS, "tools": tools, "tool_choice": tool_choice, "modalities": ["text"]})
    rec = recorded(fixture)["request"]
    assert url == rec["uri"]
    assert body == camel(rec["body"])


@pytest.mark.fidelity("json-schema", "gemini", "non-stream")
def test_json_schema_request_matches_recording() -> None:
    rec = recorded("pydantic-ai-responseJsonSchema.json")["request"]
    schema = rec["body"]["generationConfig"]["responseJsonSchema"]
    url, body = build({"messages": [{"role": "user", "content": "What is the largest city in Mexico?"}],
                       "response_format": {"type": "json_schema",
                                           "json_schema": {"name": "CityLocation", "schema": schema, "strict": True}},
                       "modalities": ["text"]}, model="gemini-2.0-flash")
    assert url == rec["uri"]
    assert body == camel(rec["body"])


@pytest.mark.fidelity("system", "gemini", "non-stream")
def test_max_tokens_and_no_thinking_request_matches_recording() -> None:
    rec = recorded("pydantic-ai-max-tokens.json")["request"]
    url, body = build({"messages": [{"role": "system", "content": "You are a helpful chatbot."},
                                    {"role": "user", "content": "What is the capital of France?"}],
                       "max_tokens": 5, "reasoning_effort": "none", "modalities": ["text"]})
    assert url == rec["uri"]
    expected = camel(rec["body"])
    del expected["systemInstruction"]["role"]  # optional and ignored by Gemini; the gateway leaves it out
    assert body == expected


@pytest.mark.fidelity("multi-turn", "gemini", "stream")
@pytest.mark.fidelity("tool-results", "gemini", "stream")
def test_streamed_tool_conversation_request_matches_recording() -> None:
    rec = recorded("pydantic-ai-stream-tool-call-multiturn-functionResponse.json", 2)["request"]
    turns: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful chatbot."},
                                   {"role": "user", "content": "What is the temperature of the capital of France?"}]
    for call_id, name, args, result in [
        ("pyd_ai_0e1a07b3c2b64d2ab3ad2efbe18e1b97", "get_capital", '{"country": "France"}', "Paris"),
        ("pyd_ai_98b25d994c5648df82f683188629229d", "get_temperature", '{"city": "Paris"}', "30°C"),
    ]:
        turns.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]})
        turns.append({"role": "tool", "tool_call_id": call_id, "content": json.dumps({"return_value": result})})
    tools = [tool("get_capital", "Get the capital of a country.",
                  {"type": "object", "properties": {"country": {"type": "string", "description": "The country name."}},
                   "required": ["country"]}),
             tool("get_temperature", "Get the temperature in a city.",
                  {"type": "object", "properties": {"city": {"type": "string", "description": "The city name."}},
                   "required": ["city"]})]
    url, body = build({"messages": turns, "tools": tools, "stream": True}, model="gemini-2.0-flash")
    assert url == rec["uri"]
    expected = camel(rec["body"])
    assert body["contents"] == expected["contents"]
    assert body["systemInstruction"] == {"parts": [{"text": "You are a helpful chatbot."}]}
    # The recording used Gemini's OpenAPI-style `parameters`; the gateway sends the client's JSON Schema.
    declarations = body["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["get_capital", "get_temperature"]
    assert declarations[0]["parametersJsonSchema"] == tools[0]["function"]["parameters"]
    assert "generationConfig" not in body and "toolConfig" not in body


@pytest.mark.fidelity("reasoning-signature", "gemini", "non-stream")
@pytest.mark.fidelity("parallel-tools", "gemini", "non-stream")
@pytest.mark.fidelity("tool-results", "gemini", "non-stream")
def test_parallel_calls_and_signature_round_trip_rebuild_the_recorded_history() -> None:
    """Turn 1's real answer -> OpenAI message -> echoed back: the follow-up holds what Gemini expects."""
    first = recorded("pydantic-ai-parallel-functionCalls-multiturn.json", 0)
    completion, _ = parse(first["response"]["body"], ctx(model="gemini-3-flash-preview"))
    message = completion["choices"][0]["message"]
    calls = message["tool_calls"]
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in calls] == ["generate_topic"] * 3
    assert [c["function"]["arguments"] for c in calls] == ["{}"] * 3
    assert len({c["id"] for c in calls}) == 3 and all(c["id"].startswith("call_") for c in calls)
    signature = first["response"]["body"]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    assert message["reasoning_details"] == [{"type": "reasoning.encrypted", "data": signature,
                                             "format": "google-gemini-v1", "id": calls[0]["id"], "index": 0}]

    results = [{"role": "tool", "tool_call_id": c["id"], "content": json.dumps({"return_value": topic})}
               for c, topic in zip(calls, ["cars", "penguins", "cars"], strict=True)]
    _, body = build({"messages": [
        {"role": "system", "content": "Tell three jokes. Generate topics with the generate_topic tool."},
        {"role": "user", "content": ""}, message, *results]}, model="gemini-3-flash-preview")

    expected = camel(recorded("pydantic-ai-parallel-functionCalls-multiturn.json", 1)["request"]["body"])
    recorded_ids = [p["functionCall"]["id"] for p in expected["contents"][1]["parts"]]
    wire = json.dumps(expected["contents"])
    for theirs, ours in zip(recorded_ids, [c["id"] for c in calls], strict=True):
        wire = wire.replace(theirs, ours)
    contents = json.loads(wire)
    # Google's SDK re-sends the signature as URL-safe base64; the gateway sends back Gemini's own bytes.
    sent_sig = body["contents"][1]["parts"][0].pop("thoughtSignature")
    recorded_sig = contents[1]["parts"][0].pop("thoughtSignature")
    assert sent_sig == signature
    assert base64.b64decode(sent_sig) == base64.urlsafe_b64decode(recorded_sig)
    assert body["contents"] == contents
    assert body["systemInstruction"] == {"parts": [{"text": expected["systemInstruction"]["parts"][0]["text"]}]}


def test_thinking_request_keeps_recorded_history_shape() -> None:
    rec = camel(fixture_json("gemini/pydantic-ai-stream-with-thoughts.json")["interactions"][0]["request"])
    url, body = build({"messages": [{"role": "system", "content": "You are a helpful assistant."},
                                    {"role": "user", "content": "How do I cross the street?"}],
                       "tools": [tool("dummy", "", {"type": "object", "properties": {}})],
                       "reasoning_effort": "high", "stream": True}, model="gemini-2.5-pro")
    assert url == rec["uri"]
    assert body["contents"] == rec["body"]["contents"]
    assert body["generationConfig"] == {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 24576}}


# ------------------------------------------------------------------------------ request mapping


@pytest.mark.fidelity("system", "gemini", "non-stream")
@pytest.mark.fidelity("multi-turn", "gemini", "non-stream")
def test_system_and_developer_messages_go_to_system_instruction_in_order() -> None:
    _, body = build({"messages": [
        {"role": "system", "content": "One."},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": "again"}]},
        {"role": "developer", "content": [{"type": "text", "text": "Two."}, {"type": "text", "text": "Three."}]},
        {"role": "assistant", "content": "Hello"},
        {"role": "assistant", "content": [{"type": "text", "text": "there"}]},
        {"role": "user", "content": "Bye"},
    ]})
    assert body["systemInstruction"] == {"parts": [{"text": "One."}, {"text": "Two."}, {"text": "Three."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}, {"text": "again"}]},
        {"role": "model", "parts": [{"text": "Hello"}, {"text": "there"}]},
        {"role": "user", "parts": [{"text": "Bye"}]},
    ]


@pytest.mark.fidelity("json-object", "gemini", "non-stream")
def test_generation_parameters_are_mapped() -> None:
    _, body = build({"messages": PARIS, "max_completion_tokens": 100, "temperature": 0.2, "top_p": 0.9,
                     "stop": ["END", "STOP"], "n": 2, "seed": 7, "presence_penalty": 0.5,
                     "frequency_penalty": -0.5, "response_format": {"type": "json_object"},
                     "user": "end-user-1", "service_tier": "auto", "parallel_tool_calls": True,
                     "logprobs": False, "store": False})
    assert body["generationConfig"] == {
        "maxOutputTokens": 100, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END", "STOP"],
        "candidateCount": 2, "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": -0.5,
        "responseMimeType": "application/json"}


@pytest.mark.fidelity("stop", "gemini", "non-stream")
def test_a_single_stop_string_becomes_a_list() -> None:
    assert build({"messages": PARIS, "stop": "\n"})[1]["generationConfig"] == {"stopSequences": ["\n"]}


@pytest.mark.parametrize(("model", "effort", "config"), [
    ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
    ("gemini-2.5-flash", "minimal", {"thinkingBudget": 512, "includeThoughts": True}),
    ("gemini-2.5-flash", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("gemini-2.5-pro", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
    ("gemini-2.5-flash", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW", "includeThoughts": True}),
    ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "MINIMAL", "includeThoughts": True}),
    ("gemini-3-flash-preview", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
    ("gemini-3-pro-preview", "high", {"thinkingLevel": "HIGH", "includeThoughts": True}),
])
def test_reasoning_effort_table(model: str, effort: str, config: dict[str, Any]) -> None:
    _, body = build({"messages": PARIS, "reasoning_effort": effort}, model=model)
    assert body["generationConfig"] == {"thinkingConfig": config}


@pytest.mark.parametrize(("model", "effort"), [("gemini-3-pro-preview", "none"), ("gemini-2.5-flash", "xhigh")])
def test_reasoning_effort_gemini_cannot_express_is_refused(model: str, effort: str) -> None:
    with pytest.raises(UnsupportedParameter) as err:
        build({"messages": PARIS, "reasoning_effort": effort}, model=model)
    assert err.value.param == "reasoning_effort"


@pytest.mark.fidelity("vision-data-url", "gemini", "non-stream")
@pytest.mark.fidelity("vision-https-url", "gemini", "non-stream")
def test_images_audio_and_files_become_inline_or_file_data() -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    _, body = build({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/kiwi.JPG?size=2#x"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]}]})
    assert body["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": png}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a/kiwi.JPG?size=2#x"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


def test_an_image_url_without_a_known_extension_is_refused() -> None:
    with pytest.raises(InvalidRequest) as err:
        build({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/render?id=3"}}]}]})
    assert err.value.param == "messages[0].content[0].image_url.url"


@pytest.mark.fidelity("tools", "gemini", "non-stream")
def test_tool_schemas_keep_what_gemini_enforces_and_translate_const() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Args", "type": "object",
        "properties": {
            "kind": {"const": "search", "description": "always search"},
            "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 50, "default": 10},
            "where": {"$ref": "#/$defs/Place"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3,
                     "examples": [["a"]]},
        },
        "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}},
                            "additionalProperties": False, "required": ["city"]}},
        "required": ["kind"], "additionalProperties": False,
    }
    _, body = build({"messages": PARIS, "tools": [
        {"type": "function", "function": {"name": "find", "parameters": schema, "strict": True}}]})
    assert body["tools"] == [{"functionDeclarations": [{"name": "find", "parametersJsonSchema": {
        "title": "Args", "type": "object",
        "properties": {
            "kind": {"enum": ["search"], "description": "always search"},
            "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 50},
            "where": {"$ref": "#/$defs/Place"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3},
        },
        "$defs": schema["$defs"], "required": ["kind"], "additionalProperties": False,
    }}]}]
    # strict function calling is Gemini's VALIDATED mode.
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "VALIDATED"}}


P = "tools[0].function.parameters"


@pytest.mark.parametrize(("parameters", "sent", "ignored", "adjusted"), [
    ({"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}}},
     {"type": "object", "properties": {"code": {"type": "string", "description": '(pattern: "^[A-Z]+$")'}}},
     [f"{P}.properties.code.pattern"], {}),
    ({"type": "object", "allOf": [{"required": ["a"]}]},
     {"type": "object", "description": '(allOf: [{"required":["a"]}])'}, [f"{P}.allOf"], {}),
    # The nearest bound Gemini enforces, and the exact one in words.
    ({"type": "object", "properties": {"x": {"anyOf": [{"type": "integer", "exclusiveMinimum": 0,
                                                        "description": "How many."}]}}},
     {"type": "object", "properties": {"x": {"anyOf": [{"type": "integer", "minimum": 0,
                                                        "description": "How many. (greater than 0)"}]}}},
     [], {f"{P}.properties.x.anyOf[0].exclusiveMinimum": "minimum 0"}),
    ({"type": "object", "properties": {"n": {"type": "number", "maximum": 5, "exclusiveMaximum": 9}}},
     {"type": "object", "properties": {"n": {"type": "number", "maximum": 5, "description": "(less than 9)"}}},
     [], {f"{P}.properties.n.exclusiveMaximum": "maximum 5"}),
    ({"type": "object", "properties": {"flag": {"const": True}}},
     {"type": "object", "properties": {"flag": {"description": "(const: true)"}}}, [f"{P}.properties.flag.const"], {}),
    ({"type": "object", "properties": {"s": {"const": "deleted"}}},
     {"type": "object", "properties": {"s": {"enum": ["deleted"]}}}, [], {}),
    ({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
      "propertyNames": {"type": "string"}},
     {"type": "object", "description": '(propertyNames: {"type":"string"})'},
     [f"{P}.$schema", f"{P}.propertyNames"], {}),
])
def test_tool_schema_keywords_gemini_does_not_take_are_rewritten_and_reported(
        parameters: dict[str, Any], sent: dict[str, Any], ignored: list[str], adjusted: dict[str, str]) -> None:
    call = parse_chat(json.dumps({"model": "google/gemini-2.5-flash", "messages": PARIS,
                                  "tools": [{"type": "function", "function": {"name": "f",
                                                                             "parameters": parameters}}]}).encode())
    request = gemini.build_request(call, target())
    assert request.body is not None
    assert json.loads(request.body)["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == sent
    notes = request.notes
    assert (notes.ignored if notes else [], notes.adjusted if notes else {}) == (ignored, adjusted)


@pytest.mark.parametrize(("extra", "param"), [
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"store": True}, "store"),
    ({"metadata": {"a": "b"}}, "metadata"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"modalities": ["text", "audio"]}, "modalities[1]"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"messages": [{"role": "user", "content": "hi", "name": "alice"}]}, "messages[0].name"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
])
def test_parameters_gemini_cannot_express_are_refused_by_name(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as err:
        build({"messages": PARIS, **extra})
    assert err.value.param == param


def test_tool_result_names_are_looked_up_and_wrapped() -> None:
    _, body = build({"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
        {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": '{"temp": 21}'}]},
        {"role": "user", "content": "Thanks"},
    ], "tools": [WEATHER, TIME]})
    assert body["contents"][1] == {"role": "model", "parts": [
        {"text": "Checking."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_a"}},
        {"functionCall": {"name": "get_time", "args": {}, "id": "call_b"}}]}
    assert body["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}, "id": "call_b"}},
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}, "id": "call_a"}},
        {"text": "Thanks"}]}


def test_a_tool_result_for_an_unknown_call_is_refused() -> None:
    with pytest.raises(InvalidRequest) as err:
        build({"messages": [{"role": "user", "content": "x"},
                            {"role": "tool", "tool_call_id": "call_zzz", "content": "1"}]})
    assert err.value.param == "messages[1].tool_call_id"


def test_text_signatures_go_back_on_the_text_part() -> None:
    details = [{"type": "reasoning.encrypted", "data": "c2lnMQ==", "format": "google-gemini-v1", "id": None,
                "index": 0},
               {"type": "reasoning.encrypted", "data": "c2lnMg==", "format": "google-gemini-v1", "id": None,
                "index": 1},
               {"type": "reasoning.encrypted", "data": "other", "format": "anthropic-claude-v1", "id": None}]
    _, body = build({"messages": [{"role": "user", "content": "a"},
                                  {"role": "assistant", "content": "b", "reasoning_details": details,
                                   "reasoning_content": "thoughts are not sent back"},
                                  {"role": "user", "content": "c"}]})
    assert body["contents"][1] == {"role": "model", "parts": [
        {"text": "b", "thoughtSignature": "c2lnMQ=="}, {"text": "", "thoughtSignature": "c2lnMg=="}]}


@pytest.mark.fidelity("tool-choice", "gemini", "non-stream")
def test_tool_choice_auto_and_errors() -> None:
    assert build({"messages": PARIS, "tools": [WEATHER], "tool_choice": "auto"})[1]["toolConfig"] == {
        "functionCallingConfig": {"mode": "AUTO"}}
    assert "toolConfig" not in build({"messages": PARIS, "tool_choice": "none"})[1]
    with pytest.raises(InvalidRequest) as err:
        build({"messages": PARIS, "tools": [WEATHER],
               "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert err.value.param == "tool_choice.function.name"
    with pytest.raises(InvalidRequest):
        build({"messages": PARIS, "tool_choice": "required"})


def test_only_system_messages_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as err:
        build({"messages": [{"role": "system", "content": "x"}]})
    assert err.value.param == "messages"


# ------------------------------------------------------------------------------ golden responses


@pytest.mark.fidelity("finish-reason", "gemini", "non-stream")
@pytest.mark.fidelity("text", "gemini", "non-stream")
def test_max_tokens_response() -> None:
    body, usage = parse(recorded("pydantic-ai-max-tokens.json")["response"]["body"])
    assert body == {
        "id": "chatcmpl-golden1", "object": "chat.completion", "created": CREATED, "model": "google/gemini-2.5-flash",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "The capital of France is",
                                             "refusal": None},
                     "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20,
                  "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}, "reasoning_tokens": 0},
    }
    assert usage.total_tokens == 20


@pytest.mark.fidelity("json-schema", "gemini", "non-stream")
def test_json_schema_response_without_candidate_index() -> None:
    body, _ = parse(recorded("pydantic-ai-responseJsonSchema.json")["response"]["body"])
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert json.loads(choice["message"]["content"]) == {"city": "Mexico City", "country": "Mexico"}


@pytest.mark.fidelity("usage", "gemini", "non-stream")
@pytest.mark.fidelity("cached-tokens", "gemini", "non-stream")
@pytest.mark.fidelity("reasoning-signature", "gemini", "non-stream")
def test_usage_with_cached_and_thought_tokens() -> None:
    raw = fixture_json("gemini/pydantic-ai-usage-with-cachedContentTokenCount.json")["responses"][1]
    body, usage = parse(raw)
    assert body["usage"] == {
        "prompt_tokens": 373, "completion_tokens": 89 + 167, "total_tokens": 629,
        "prompt_tokens_details": {"cached_tokens": 204},
        "completion_tokens_details": {"reasoning_tokens": 167}, "reasoning_tokens": 167}
    message = body["choices"][0]["message"]
    part = raw["candidates"][0]["content"]["parts"][0]
    assert message["content"] == part["text"]
    assert message["reasoning_details"] == [{"type": "reasoning.encrypted", "data": part["thoughtSignature"],
                                             "format": "google-gemini-v1", "id": None, "index": 0}]
    assert "reasoning" not in message  # no thought summaries were asked for
    assert usage.prompt_tokens_details.cached_tokens == 204


@pytest.mark.fidelity("tools", "gemini", "non-stream")
@pytest.mark.fidelity("finish-reason", "gemini", "non-stream")
def test_function_call_turn_finishes_with_tool_calls() -> None:
    body, _ = parse(recorded("pydantic-ai-tool-choice-any.json")["response"]["body"])
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}


def test_gemini_function_call_ids_are_kept() -> None:
    body, _ = parse({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"id": "fc_123", "name": "f", "args": {"a": [1, "é"]}}}]}, "finishReason": "STOP"}]})
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call["id"] == "fc_123"
    assert json.loads(call["function"]["arguments"]) == {"a": [1, "é"]}


@pytest.mark.fidelity("reasoning", "gemini", "non-stream")
def test_thought_parts_become_reasoning_not_content() -> None:
    """The recorded stream's parts as one whole answer (what generateContent returns for the same turn)."""
    raw = fixture_bytes("gemini/pydantic-ai-stream-with-thoughts.sse")
    records = [json.loads(r[len(b"data: "):]) for r in raw.split(b"\r\n\r\n") if r.strip()]
    parts = [p for r in records for p in r["candidates"][0]["content"]["parts"]]
    whole = {**records[-1], "candidates": [{**records[-1]["candidates"][0],
                                            "content": {"role": "model", "parts": parts}}]}
    body, _ = parse(whole, ctx(model="gemini-2.5-pro"))
    message = body["choices"][0]["message"]
    thoughts = "".join(p["text"] for p in parts if p.get("thought"))
    assert message["reasoning"] == message["reasoning_content"] == thoughts
    assert message["content"] == "".join(p["text"] for p in parts if not p.get("thought"))
    assert [d["data"] for d in message["reasoning_details"]] == [parts[4]["thoughtSignature"]]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 787}


@pytest.mark.fidelity("image-output", "gemini", "non-stream")
def test_image_output() -> None:
    raw = fixture_json("gemini/synthetic-image-output.json")
    body, _ = parse(raw)
    message = body["choices"][0]["message"]
    data = raw["candidates"][0]["content"]["parts"][1]["inlineData"]["data"]
    assert message["content"] == "Here is a red dot."
    assert message["images"] == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]


@pytest.mark.fidelity("n", "gemini", "non-stream")
def test_several_candidates_become_several_choices() -> None:
    body, _ = parse(fixture_json("gemini/synthetic-two-candidates.json"))
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "Heads.", "stop"), (1, "Tails, and then some", "length")]


@pytest.mark.fidelity("finish-reason", "gemini", "non-stream")
def test_blocked_prompt_is_a_content_filter_choice() -> None:
    body, usage = parse(fixture_json("gemini/prompt-blocked.json"))
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": None},
                                "finish_reason": "content_filter", "logprobs": None}]
    assert usage.prompt_tokens == 9


@pytest.mark.parametrize(("reason", "tool_calls", "expected"), [
    ("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", True, "length"),
    ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
    ("BLOCKLIST", False, "content_filter"), ("PROHIBITED_CONTENT", False, "content_filter"),
    ("SPII", False, "content_filter"), ("IMAGE_SAFETY", False, "content_filter"), ("OTHER", False, "content_filter"),
    ("MALFORMED_FUNCTION_CALL", False, "stop"), ("SOMETHING_NEW", False, "stop"),
])
def test_finish_reason_table(reason: str, tool_calls: bool, expected: str) -> None:
    assert gemini.finish_reason(reason, tool_calls) == expected


def test_a_body_that_is_not_a_response_is_a_502() -> None:
    with pytest.raises(GatewayError) as err:
        gemini.parse_response(b"<html>oops</html>", ctx())
    assert err.value.status_code == 502


# -------------------------------------------------------------------------------- golden streams


def _check_envelope(events: list[Any], model: str) -> list[dict[str, Any]]:
    assert events[-1] == "[DONE]"
    chunks: list[dict[str, Any]] = events[:-1]
    assert {c["id"] for c in chunks} == {"chatcmpl-golden1"}
    assert {c["created"] for c in chunks} == {CREATED}
    assert {c["model"] for c in chunks} == {f"google/{model}"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    return chunks


@pytest.mark.fidelity("reasoning", "gemini", "stream")
@pytest.mark.fidelity("reasoning-signature", "gemini", "stream")
@pytest.mark.fidelity("text", "gemini", "stream")
@pytest.mark.fidelity("include-usage", "gemini", "stream")
@pytest.mark.fidelity("usage", "gemini", "stream")
def test_thinking_stream_golden() -> None:
    raw = fixture_bytes("gemini/pydantic-ai-stream-with-thoughts.sse")
    records = [json.loads(r[len(b"data: "):]) for r in raw.split(b"\r\n\r\n") if r.strip()]
    parts = [r["candidates"][0]["content"]["parts"][0] for r in records]
    events, translator = translate(raw, ctx(include_usage=True, model="gemini-2.5-pro"))
    chunks = _check_envelope(events, "gemini-2.5-pro")
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    thoughts = [p["text"] for p in parts if p.get("thought")]
    assert [d["reasoning"] for d in deltas if "reasoning" in d] == thoughts
    assert [d["reasoning_content"] for d in deltas if "reasoning_content" in d] == thoughts
    assert "".join(d.get("content", "") for d in deltas) == "".join(p["text"] for p in parts if not p.get("thought"))
    signed = [d for d in deltas if "reasoning_details" in d]
    assert len(signed) == 1 and signed[0]["content"].startswith("This is a great question!")
    assert signed[0]["reasoning_details"] == [{"type": "reasoning.encrypted", "data": parts[4]["thoughtSignature"],
                                               "format": "google-gemini-v1", "id": None, "index": 0}]
    finishes = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage = {"prompt_tokens": 34, "completion_tokens": 469 + 787, "total_tokens": 1290,
             "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 787},
             "reasoning_tokens": 787}
    assert chunks[-1] == {"id": "chatcmpl-golden1", "object": "chat.completion.chunk", "created": CREATED,
                          "model": "google/gemini-2.5-pro", "choices": [], "usage": usage}
    assert translator.usage is not None and translator.usage.total_tokens == 1290


def test_without_include_usage_there_is_no_usage_chunk_but_usage_is_counted() -> None:
    events, translator = translate(fixture_bytes("gemini/pydantic-ai-stream-with-thoughts.sse"), ctx())
    assert all(c["choices"] for c in events[:-1])
    assert translator.usage is not None and translator.usage.completion_tokens == 1256


@pytest.mark.fidelity("tools", "gemini", "stream")
@pytest.mark.fidelity("finish-reason", "gemini", "stream")
def test_streamed_function_call_golden() -> None:
    events, _ = translate(fixture_bytes("gemini/pydantic-ai-stream-tool-call-turn1.sse"), ctx(model="gemini-2.0-flash"))
    chunks = _check_envelope(events, "gemini-2.0-flash")
    assert len(chunks) == 2
    [call] = chunks[0]["choices"][0]["delta"]["tool_calls"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_capital", "arguments": '{"country":"France"}'}
    assert chunks[1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "tool_calls", "logprobs": None}]


@pytest.mark.fidelity("parallel-tools", "gemini", "stream")
def test_streamed_parallel_calls_are_indexed_in_order() -> None:
    body = recorded("pydantic-ai-parallel-functionCalls-multiturn.json")["response"]["body"]
    events, _ = translate(b"data: " + json.dumps(body).encode() + b"\r\n\r\n", ctx())
    calls = [tc for c in events[:-1] if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [tc["index"] for tc in calls] == [0, 1, 2]
    assert len({tc["id"] for tc in calls}) == 3
    first = next(c["choices"][0]["delta"] for c in events[:-1] if "reasoning_details" in c["choices"][0]["delta"])
    assert first["reasoning_details"][0]["id"] == first["tool_calls"][0]["id"]


@pytest.mark.fidelity("n", "gemini", "stream")
def test_streamed_candidates_keep_their_indexes() -> None:
    events, _ = translate(fixture_bytes("gemini/synthetic-stream-two-candidates.sse"), ctx(include_usage=True))
    chunks = _check_envelope(events, "gemini-2.5-flash")
    text: dict[int, str] = {}
    for c in chunks:
        for choice in c["choices"]:
            text[choice["index"]] = text.get(choice["index"], "") + choice["delta"].get("content", "")
    assert text == {0: "Heads.", 1: "Tails, and then some"}
    roles = [ch["index"] for c in chunks for ch in c["choices"] if "role" in ch["delta"]]
    assert roles == [0, 1]
    finishes = [(ch["index"], ch["finish_reason"]) for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == [(0, "stop"), (1, "length")]
    assert chunks[-1]["usage"]["total_tokens"] == 15


@pytest.mark.fidelity("finish-reason", "gemini", "stream")
def test_streamed_blocked_prompt() -> None:
    raw = b"data: " + fixture_bytes("gemini/prompt-blocked.json").strip() + b"\r\n\r\n"
    events, _ = translate(raw, ctx())
    assert [c["choices"] for c in events[:-1]] == [
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}],
        [{"index": 0, "delta": {}, "finish_reason": "content_filter", "logprobs": None}]]


@pytest.mark.fidelity("mid-stream-error", "gemini", "stream")
def test_a_stream_without_finish_reason_is_an_error_at_close() -> None:
    raw = fixture_bytes("gemini/pydantic-ai-stream-with-thoughts.sse")
    head = b"\r\n\r\n".join(raw.split(b"\r\n\r\n")[:6]) + b"\r\n\r\n"
    with pytest.raises(GatewayError) as err:
        translate(head, ctx())
    assert err.value.status_code == 502 and err.value.code == "upstream_stream_truncated"


@pytest.mark.fidelity("mid-stream-error", "gemini", "stream")
def test_an_error_record_in_the_stream_raises_the_mapped_error() -> None:
    with pytest.raises(GatewayError) as err:
        translate(fixture_bytes("gemini/synthetic-stream-error-record.sse"), ctx())
    assert err.value.status_code == 500
    assert err.value.message == "[google] Internal error encountered."


# ----------------------------------------------------------------------------------------- errors


@pytest.mark.fidelity("upstream-errors", "gemini", "non-stream")
@pytest.mark.parametrize(("fixture", "status", "out_status", "error_type", "code", "retry_after"), [
    ("error-429-resource-exhausted.json", 429, 429, "rate_limit_error", "rate_limit_exceeded", "35"),
    ("synthetic-error-503-unavailable.json", 503, 503, "overloaded_error", "upstream_overloaded", None),
    ("synthetic-error-500-internal.json", 500, 500, "api_error", "internal_error", None),
    ("synthetic-error-400-api-key-invalid.json", 400, 502, "upstream_error", "upstream_auth_failed", None),
])
def test_error_bodies_map_to_openai_errors(fixture: str, status: int, out_status: int, error_type: str, code: str,
                                           retry_after: str | None) -> None:
    body = fixture_bytes(f"gemini/{fixture}")
    error = gemini.parse_error(status, body, {}, "google")
    assert error.status_code == out_status
    detail = json.loads(error.body())["error"]
    assert detail["type"] == error_type and detail["code"] == code
    assert json.loads(body)["error"]["message"] in detail["message"]
    assert error.headers.get("retry-after") == retry_after


def test_error_status_mapping_and_header_retry_after() -> None:
    body = json.dumps({"error": {"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"}}).encode()
    error = gemini.parse_error(404, body, {"retry-after": "3"}, "google")
    assert (error.status_code, error.error_type, error.code) == (404, "invalid_request_error", "not_found")
    assert error.headers == {"retry-after": "3"}
    forbidden = gemini.parse_error(403, b'{"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}',
                                   {}, "google")
    assert forbidden.status_code == 502
    plain = gemini.parse_error(502, b"Bad Gateway", {}, "google")
    assert (plain.status_code, plain.message) == (502, "[google] Bad Gateway")
