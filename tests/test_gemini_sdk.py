"""Gemini adapter end to end: the official OpenAI SDK -> a real gateway process -> a fake Gemini replaying
recorded answers. Each test also checks what reached "Gemini" (path, query, key header, body)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, RunningGateway
from tests.fakes import FakeUpstream, Reply, fixture_bytes, fixture_json, json_reply, sse_reply
from tests.test_gemini import PARIS, WEATHER, camel, recorded

MODEL = "google/gemini-2.5-flash"
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


def sse(name: str, **kwargs: Any) -> Reply:
    return sse_reply(fixture_bytes(f"gemini/{name}"), split=b"\r\n\r\n", **kwargs)


def sent(fake: FakeUpstream, path: str = GENERATE, stream: bool = False) -> dict[str, Any]:
    """The request that reached the fake Gemini, checked for route and auth; its JSON body."""
    last = fake.last
    assert (last.method, last.path) == ("POST", path)
    assert last.query == ({"alt": "sse"} if stream else {})
    assert last.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert "authorization" not in last.headers  # the client's gateway key never travels upstream
    body: dict[str, Any] = last.json()
    return body


def extra(obj: Any, name: str) -> Any:
    """A non-standard field the SDK keeps in ``model_extra``."""
    return (obj.model_extra or {}).get(name)


# ------------------------------------------------------------------------------------------- text


@pytest.mark.fidelity("text", "gemini", "non-stream")
@pytest.mark.fidelity("system", "gemini", "non-stream")
@pytest.mark.fidelity("finish-reason", "gemini", "non-stream")
@pytest.mark.fidelity("usage", "gemini", "non-stream")
def test_text(gateway: RunningGateway, fake: FakeUpstream) -> None:
    rec = recorded("pydantic-ai-max-tokens.json")
    fake.reply(json_reply(rec["response"]["body"]))
    result = gateway.client().chat.completions.create(
        model=MODEL, max_tokens=5, reasoning_effort="none", modalities=["text"],  # type: ignore[arg-type]
        messages=[{"role": "system", "content": "You are a helpful chatbot."},
                  {"role": "user", "content": "What is the capital of France?"}])
    expected = camel(rec["request"]["body"])
    del expected["systemInstruction"]["role"]
    assert sent(fake) == expected
    assert result.object == "chat.completion" and result.model == MODEL
    assert result.id.startswith("chatcmpl-")
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content == "The capital of France is"
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (15, 5, 20)


@pytest.mark.fidelity("text", "gemini", "stream")
@pytest.mark.fidelity("reasoning", "gemini", "stream")
@pytest.mark.fidelity("include-usage", "gemini", "stream")
@pytest.mark.fidelity("usage", "gemini", "stream")
def test_stream_with_thoughts_and_usage(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse("pydantic-ai-stream-with-thoughts.sse"))
    stream = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "How do I cross the street?"}],
        reasoning_effort="high", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    body = sent(fake, STREAM, stream=True)
    assert body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": True}}
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert {c.model for c in chunks} == {MODEL}
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join(extra(d, "reasoning") or "" for d in deltas)
    assert reasoning.startswith("**Clarifying User Goals**")
    assert reasoning == "".join(extra(d, "reasoning_content") or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert content.startswith("This is a great question!") and "**Clarifying" not in content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (34, 1256, 1290)
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 787


# ------------------------------------------------------------------------------------------ tools


@pytest.mark.fidelity("parallel-tools", "gemini", "non-stream")
@pytest.mark.fidelity("tool-results", "gemini", "non-stream")
@pytest.mark.fidelity("tool-choice", "gemini", "non-stream")
@pytest.mark.fidelity("reasoning-signature", "gemini", "non-stream")
@pytest.mark.fidelity("multi-turn", "gemini", "non-stream")
def test_parallel_tool_calls_then_results(gateway: RunningGateway, fake: FakeUpstream) -> None:
    first, second = (recorded("pydantic-ai-parallel-functionCalls-multiturn.json", i)["response"]["body"]
                     for i in (0, 1))
    fake.reply(json_reply(first), json_reply(second))
    client = gateway.client()
    topic_tool = {"type": "function", "function": {"name": "generate_topic", "description": "",
                                                   "parameters": {"type": "object", "properties": {}}}}
    messages: list[Any] = [{"role": "system", "content": "Tell three jokes. Generate topics with the tool."},
                           {"role": "user", "content": "Go"}]
    result = client.chat.completions.create(model=MODEL, messages=messages, tools=[topic_tool],
                                            tool_choice="required")
    assert sent(fake)["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    message = result.choices[0].message
    assert result.choices[0].finish_reason == "tool_calls"
    calls = message.tool_calls or []
    assert len(calls) == 3 and len({c.id for c in calls}) == 3
    assert all(c.function.name == "generate_topic" and json.loads(c.function.arguments) == {} for c in calls)

    messages.append(message)  # the SDK echoes the whole message, reasoning_details included
    messages += [{"role": "tool", "tool_call_id": c.id, "content": topic}
                 for c, topic in zip(calls, ["cars", "penguins", "cars"], strict=True)]
    client.chat.completions.create(model=MODEL, messages=messages, tools=[topic_tool])
    contents = sent(fake)["contents"]
    signature = first["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    assert contents[1] == {"role": "model", "parts": [
        {"functionCall": {"name": "generate_topic", "args": {}, "id": calls[0].id}, "thoughtSignature": signature},
        {"functionCall": {"name": "generate_topic", "args": {}, "id": calls[1].id}},
        {"functionCall": {"name": "generate_topic", "args": {}, "id": calls[2].id}}]}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "generate_topic", "response": {"output": topic}, "id": c.id}}
        for c, topic in zip(calls, ["cars", "penguins", "cars"], strict=True)]}


@pytest.mark.fidelity("tools", "gemini", "stream")
@pytest.mark.fidelity("tool-results", "gemini", "stream")
@pytest.mark.fidelity("multi-turn", "gemini", "stream")
def test_streamed_tool_call_then_answer(gateway: RunningGateway, fake: FakeUpstream) -> None:
    final = recorded("pydantic-ai-stream-tool-call-multiturn-functionResponse.json", 2)["response"]["body"]
    fake.reply(sse("pydantic-ai-stream-tool-call-turn1.sse"),
               sse_reply(final.encode(), split=b"\r\n\r\n"))
    client = gateway.client()
    capital = {"type": "function", "function": {"name": "get_capital", "parameters": {
        "type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]}}}
    messages: list[Any] = [{"role": "user", "content": "What is the temperature of the capital of France?"}]
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, tools=[capital], stream=True))
    assert sent(fake, STREAM, stream=True)["tools"] == [{"functionDeclarations": [
        {"name": "get_capital", "parametersJsonSchema": capital["function"]["parameters"]}]}]
    [call] = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or []]
    assert call.index == 0 and call.id and call.type == "function"
    assert call.function is not None and call.function.name == "get_capital"
    assert json.loads(call.function.arguments or "") == {"country": "France"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": call.id, "type": "function",
                      "function": {"name": "get_capital", "arguments": call.function.arguments}}]},
                 {"role": "tool", "tool_call_id": call.id, "content": "Paris"}]
    answer = list(client.chat.completions.create(model=MODEL, messages=messages, tools=[capital], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in answer) == "The temperature in Paris is 30°C.\n"
    assert sent(fake, STREAM, stream=True)["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_capital", "response": {"output": "Paris"}, "id": call.id}}]}


@pytest.mark.fidelity("tool-choice", "gemini", "non-stream")
def test_named_tool_choice(gateway: RunningGateway, fake: FakeUpstream) -> None:
    rec = recorded("pydantic-ai-tool-choice-allowed-names.json")
    fake.reply(json_reply(rec["response"]["body"]))
    result = gateway.client().chat.completions.create(
        model=MODEL, messages=PARIS, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert sent(fake)["toolConfig"] == camel(rec["request"]["body"])["toolConfig"]
    assert result.choices[0].message.tool_calls is not None
    assert result.choices[0].message.tool_calls[0].function.arguments == '{"city":"Paris"}'


# ------------------------------------------------------------------------------ vision and output


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


@pytest.mark.fidelity("vision-data-url", "gemini", "non-stream")
@pytest.mark.fidelity("vision-https-url", "gemini", "non-stream")
def test_vision(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply(recorded("pydantic-ai-max-tokens.json")["response"]["body"]))
    gateway.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in these images?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/kiwi.webp"}}]}])
    assert sent(fake)["contents"] == [{"role": "user", "parts": [
        {"text": "What is in these images?"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/kiwi.webp"}}]}]


@pytest.mark.fidelity("json-schema", "gemini", "non-stream")
def test_json_schema(gateway: RunningGateway, fake: FakeUpstream) -> None:
    rec = recorded("pydantic-ai-responseJsonSchema.json")
    fake.reply(json_reply(rec["response"]["body"]))
    schema = rec["request"]["body"]["generationConfig"]["responseJsonSchema"]
    result = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the largest city in Mexico?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "CityLocation", "schema": schema}})
    assert sent(fake)["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    assert json.loads(result.choices[0].message.content or "") == {"city": "Mexico City", "country": "Mexico"}


@pytest.mark.fidelity("json-object", "gemini", "stream")
def test_json_object_stream(gateway: RunningGateway, fake: FakeUpstream) -> None:
    body = recorded("pydantic-ai-responseJsonSchema.json")["response"]["body"]
    fake.reply(sse_reply(b"data: " + json.dumps(body).encode() + b"\r\n\r\n", split=b"\r\n\r\n"))
    chunks = list(gateway.client().chat.completions.create(
        model=MODEL, messages=PARIS, response_format={"type": "json_object"}, stream=True))
    assert sent(fake, STREAM, stream=True)["generationConfig"] == {"responseMimeType": "application/json"}
    assert json.loads("".join(c.choices[0].delta.content or "" for c in chunks)) == {
        "city": "Mexico City", "country": "Mexico"}


@pytest.mark.fidelity("image-output", "gemini", "non-stream")
def test_image_output(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply(fixture_json("gemini/synthetic-image-output.json")))
    result = gateway.client().chat.completions.create(
        model="google/gemini-2.5-flash-image", modalities=["text", "image"],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Draw a red dot"}])
    assert sent(fake, "/v1beta/models/gemini-2.5-flash-image:generateContent")["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"]}
    message = result.choices[0].message
    assert message.content == "Here is a red dot."
    assert extra(message, "images") == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]


@pytest.mark.fidelity("cached-tokens", "gemini", "non-stream")
def test_cached_tokens(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply(fixture_json("gemini/pydantic-ai-usage-with-cachedContentTokenCount.json")["responses"][1]))
    usage = gateway.client().chat.completions.create(model=MODEL, messages=PARIS).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 204
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (373, 256, 629)


@pytest.mark.fidelity("n", "gemini", "non-stream")
@pytest.mark.fidelity("stop", "gemini", "non-stream")
def test_n_and_stop(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply(fixture_json("gemini/synthetic-two-candidates.json")))
    result = gateway.client().chat.completions.create(model=MODEL, messages=PARIS, n=2, stop=["\n\n"])
    assert sent(fake)["generationConfig"] == {"candidateCount": 2, "stopSequences": ["\n\n"]}
    assert [(c.index, c.message.content, c.finish_reason) for c in result.choices] == [
        (0, "Heads.", "stop"), (1, "Tails, and then some", "length")]


# ----------------------------------------------------------------------------------- reasoning


@pytest.mark.fidelity("reasoning-signature", "gemini", "stream")
@pytest.mark.fidelity("reasoning", "gemini", "stream")
def test_streamed_signature_round_trip(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse("pydantic-ai-stream-with-thoughts.sse"),
               json_reply(recorded("pydantic-ai-max-tokens.json")["response"]["body"]))
    client = gateway.client()
    question = {"role": "user", "content": "How do I cross the street?"}
    chunks = list(client.chat.completions.create(model=MODEL, messages=[question], reasoning_effort="low",
                                                 stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    details = [entry for d in deltas for entry in extra(d, "reasoning_details") or []]
    reasoning = "".join(extra(d, "reasoning") or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert len(details) == 1 and details[0]["format"] == "google-gemini-v1" and details[0]["id"] is None
    client.chat.completions.create(model=MODEL, messages=[
        question,
        {"role": "assistant", "content": content, "reasoning": reasoning,  # type: ignore[misc]
         "reasoning_details": details},
        {"role": "user", "content": "Thanks!"}])
    raw = fixture_bytes("gemini/pydantic-ai-stream-with-thoughts.sse")
    signature = json.loads(raw.split(b"\r\n\r\n")[4][len(b"data: "):])["candidates"][0]["content"]["parts"][0][
        "thoughtSignature"]
    assert sent(fake)["contents"][1] == {"role": "model", "parts": [{"text": content, "thoughtSignature": signature}]}


# -------------------------------------------------------------------------------------- errors


@pytest.mark.fidelity("upstream-errors", "gemini", "non-stream")
def test_rate_limit(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(Reply(status=429, body=fixture_bytes("gemini/error-429-resource-exhausted.json")))
    with pytest.raises(openai.RateLimitError) as err:
        gateway.client().chat.completions.create(model=MODEL, messages=PARIS)
    assert err.value.status_code == 429
    assert err.value.response.headers["retry-after"] == "35"
    error = err.value.response.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "You exceeded your current quota" in error["message"]


@pytest.mark.fidelity("upstream-errors", "gemini", "stream")
@pytest.mark.parametrize(("fixture", "status"), [("synthetic-error-500-internal.json", 500),
                                                 ("synthetic-error-503-unavailable.json", 503)])
def test_server_errors(gateway: RunningGateway, fake: FakeUpstream, fixture: str, status: int) -> None:
    fake.reply(Reply(status=status, body=fixture_bytes(f"gemini/{fixture}")))
    with pytest.raises(openai.InternalServerError) as err:
        gateway.client().chat.completions.create(model=MODEL, messages=PARIS, stream=True)
    assert err.value.status_code == status
    assert json.loads(fixture_bytes(f"gemini/{fixture}"))["error"]["message"] in err.value.message


@pytest.mark.fidelity("upstream-errors", "gemini", "non-stream")
def test_refused_parameters_never_reach_gemini(gateway: RunningGateway, fake: FakeUpstream) -> None:
    client = gateway.client()
    for kwargs, param in [({"logprobs": True}, "logprobs"), ({"extra_body": {"top_k": 3}}, "top_k")]:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=MODEL, messages=PARIS, **kwargs)  # type: ignore[call-overload]
        assert err.value.param == param and err.value.code == "unsupported_parameter"
    assert fake.received == []


@pytest.mark.fidelity("mid-stream-error", "gemini", "stream")
def test_cut_connection_mid_stream(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse("pydantic-ai-stream-with-thoughts.sse", cut_after=6))
    stream = gateway.client().chat.completions.create(model=MODEL, messages=PARIS, stream=True)
    seen = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            seen.append(chunk)
    assert seen and all(c.choices[0].finish_reason is None for c in seen if c.choices)


@pytest.mark.fidelity("mid-stream-error", "gemini", "stream")
def test_error_record_mid_stream(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse("synthetic-stream-error-record.sse"))
    stream = gateway.client().chat.completions.create(model=MODEL, messages=PARIS, stream=True)
    with pytest.raises(openai.APIError) as err:
        list(stream)
    assert "Internal error encountered." in err.value.message
