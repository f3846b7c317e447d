"""The unified endpoint over an OpenAI-compatible upstream, driven by the official openai SDK against a
real `gateway serve` process and a fake upstream replaying recorded OpenAI traffic."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY, RunningGateway
from tests.fakes import FakeUpstream, Reply, fixture_bytes, fixture_json, json_reply, sse_reply

USER = [{"role": "user", "content": "Hello"}]


def recorded_completion() -> dict[str, object]:
    """The recorded OpenAI tool-call answer (pydantic-ai cassette, interaction 3)."""
    body: dict[str, object] = fixture_json("openai/pydantic-ai-multiple-tool-calls.json")["interactions"][2][
        "response"]["body"]
    return body


def test_non_streaming_chat(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply(recorded_completion()))
    raw = gateway.client().chat.completions.with_raw_response.create(model="fake/gpt-4o-mini", messages=USER)
    completion = raw.parse()
    assert completion.model == "fake/gpt-4o-mini"
    call = completion.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_SkEQ3ZGSJC8m6AvaIGNuuKdm", "get_capital", '{"country":"England"}')
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.total_tokens == 120
    assert raw.headers["x-gateway-provider"] == "fake"
    assert raw.headers["x-gateway-model"] == "gpt-4o-mini"
    assert raw.headers["x-gateway-attempts"] == "1"
    assert raw.headers["x-gateway-request-id"].startswith("req_")
    # What went upstream: the right path, our provider key (never the client's), model rewritten.
    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert gateway.key not in json.dumps(sent.headers)
    assert sent.json()["model"] == "gpt-4o-mini"
    assert sent.json()["messages"] == USER


def test_body_forwarded_byte_for_byte_except_model(gateway: RunningGateway, fake: FakeUpstream) -> None:
    body = (b'{"messages": [{"role": "user", "content": "caf\\u00e9 \xe2\x98\x95"}], "temperature": 0.50,'
            b' "model": "fake/m1", "x_vendor": {"deep": [1, 2.0, null]}, "top_p":1e0}')
    response = httpx.post(f"{gateway.base}/v1/chat/completions", content=body,
                          headers={"authorization": f"Bearer {gateway.key}", "content-type": "application/json"})
    assert response.status_code == 200
    sent = fake.last.body
    # Every member other than model keeps the client's exact bytes (escapes, number spelling, spacing).
    for fragment in (b'"content": "caf\\u00e9 \xe2\x98\x95"', b'"temperature":0.50', b'{"deep": [1, 2.0, null]}',
                     b'"top_p":1e0'):
        assert fragment in sent
    assert json.loads(sent)["model"] == "m1"
    assert response.json()["model"] == "fake/m1"


def test_unknown_fields_are_forwarded(gateway: RunningGateway, fake: FakeUpstream) -> None:
    gateway.client().chat.completions.create(
        model="fake/llama-3.3-70b-versatile", messages=USER,
        extra_body={"reasoning_format": "parsed", "provider": {"order": ["a", "b"]}},
    )
    sent = fake.last.json()
    assert sent["reasoning_format"] == "parsed"
    assert sent["provider"] == {"order": ["a", "b"]}


def test_streaming_text_with_usage(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse_reply(fixture_bytes("openai/openai-python-stream-text.sse")))
    stream = gateway.client().chat.completions.create(
        model="fake/gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("I'm unable to provide real-time weather updates.")
    assert all(c.model == "fake/gpt-4o" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 44
    assert fake.last.json()["stream_options"] == {"include_usage": True}


def test_streaming_parallel_tool_calls_arrive_intact_and_in_order(gateway: RunningGateway,
                                                                  fake: FakeUpstream) -> None:
    recorded = fixture_bytes("openai/openai-python-stream-parallel-tool-calls.sse")
    fake.reply(sse_reply(recorded))
    stream = gateway.client().chat.completions.create(model="fake/gpt-4o", messages=USER, stream=True)
    calls: dict[int, dict[str, str]] = {}
    order: list[int] = []
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            order.append(tc.index)
            entry["id"] += tc.id or ""
            entry["name"] += (tc.function.name or "") if tc.function else ""
            entry["arguments"] += (tc.function.arguments or "") if tc.function else ""
    # The expected values come from re-assembling the recording itself.
    expected: dict[int, dict[str, str]] = {}
    for line in recorded.decode().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                for tc in choice["delta"].get("tool_calls") or []:
                    entry = expected.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                    entry["id"] += tc.get("id") or ""
                    entry["name"] += tc.get("function", {}).get("name") or ""
                    entry["arguments"] += tc.get("function", {}).get("arguments") or ""
    assert calls == expected and len(calls) == 2
    assert order == sorted(order)
    assert {c["name"] for c in calls.values()} == {"GetWeatherArgs", "get_stock_price"}
    for entry in calls.values():
        json.loads(entry["arguments"])


def test_stream_is_relayed_as_it_arrives(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse_reply(fixture_bytes("openai/openai-python-stream-text.sse"), chunk_delay=0.15))
    stream = gateway.client().chat.completions.create(model="fake/gpt-4o", messages=USER, stream=True)
    started = time.monotonic()
    first = next(iter(stream))
    first_at = time.monotonic() - started
    rest = list(stream)
    total = time.monotonic() - started
    assert first.choices[0].delta.role == "assistant"
    assert len(rest) > 20
    # The recording has ~35 events at 150 ms apart (over 5 s in all): the first must not wait for the last.
    # It comes after ~0.2 s on a quiet machine; the bound is 10x that.
    assert first_at < 2.5 < total


def test_provider_extras_in_deltas_are_preserved(gateway: RunningGateway, fake: FakeUpstream) -> None:
    events = [
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-reasoner",
         "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Let me think"},
                      "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-reasoner",
         "choices": [{"index": 0, "delta": {"content": "42"}, "finish_reason": "stop"}], "x_extra": 7},
    ]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    fake.reply(sse_reply(body))
    with httpx.stream("POST", f"{gateway.base}/v1/chat/completions",
                      headers={"authorization": f"Bearer {gateway.key}"},
                      json={"model": "fake/deepseek-reasoner", "messages": USER, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    first, second = (json.loads(line[6:]) for line in lines[:2])
    assert first["choices"][0]["delta"]["reasoning_content"] == "Let me think"
    assert first["model"] == second["model"] == "fake/deepseek-reasoner"
    assert second["x_extra"] == 7


def test_models_lists_declared_models_with_catalog_facts(gateway: RunningGateway) -> None:
    models = {m.id: m.to_dict() for m in gateway.client().models.list()}
    assert {"listed/gpt-4o", "listed/gpt-4o-mini", "gpt-4o"} <= set(models)
    gpt4o = models["listed/gpt-4o"]
    assert gpt4o["owned_by"] == "listed" and gpt4o["providers"] == ["listed"]
    assert gpt4o["context_window"] == 128000
    assert gpt4o["pricing"]["input"] == 2.5 and gpt4o["pricing"]["output"] == 10.0
    assert gpt4o["capabilities"]["tools"] is True


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("key", ["sk-proxy-wrong", ""])
def test_bad_or_missing_key_is_401(gateway: RunningGateway, fake: FakeUpstream, key: str) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(f"{gateway.base}/v1/chat/completions", headers=headers,
                          json={"model": "fake/gpt-4o", "messages": USER})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert set(error) == {"message", "type", "param", "code"}
    assert fake.received == []


def test_sdk_raises_authentication_error(gateway: RunningGateway) -> None:
    client = openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="sk-proxy-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="fake/gpt-4o", messages=USER)


@pytest.mark.parametrize(("model", "fragment"), [
    ("nowhere/gpt-4o", "there is no provider 'nowhere'"),
    ("listed/gpt-5-imaginary", "provider 'listed' serves listed/gpt-4o, listed/gpt-4o-mini"),
    ("gpt-imaginary", "no configured provider serves it"),
])
def test_unknown_model_is_404(gateway: RunningGateway, fake: FakeUpstream, model: str, fragment: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        gateway.client().chat.completions.create(model=model, messages=USER)
    error = info.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert fragment in error["message"]
    assert fake.received == []


def test_plain_name_declared_by_a_provider_routes_there(gateway: RunningGateway, fake: FakeUpstream) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
    assert raw.headers["x-gateway-provider"] == "listed"
    assert raw.parse().model == "listed/gpt-4o-mini"


def test_upstream_429_surfaces_as_rate_limit_error(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(json_reply({"error": {"message": "Rate limit reached for gpt-4o", "type": "requests",
                                     "param": None, "code": "rate_limit_exceeded"}},
                          status=429, headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as info:
        gateway.client().chat.completions.create(model="fake/gpt-4o", messages=USER)
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.response.headers["x-gateway-provider"] == "fake"
    body = info.value.body
    assert isinstance(body, dict)
    assert body["message"] == "[fake] Rate limit reached for gpt-4o"
    assert body["code"] == "rate_limit_exceeded"


def test_upstream_400_keeps_status_param_and_message(gateway: RunningGateway, fake: FakeUpstream) -> None:
    recorded = fixture_json("openai/pydantic-ai-error-400-unsupported-value.json")["interactions"][0]["response"]
    fake.reply(json_reply(recorded["body"], status=400))
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model="fake/o1-mini", messages=USER)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == "messages[0].role" and body["code"] == "unsupported_value"
    assert "does not support 'system'" in body["message"] and body["message"].startswith("[fake] ")


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failure_is_502(gateway: RunningGateway, fake: FakeUpstream, status: int) -> None:
    fake.reply(json_reply({"error": {"message": "Incorrect API key provided: sk-upst****", "type":
                                     "invalid_request_error", "code": "invalid_api_key"}}, status=status))
    response = httpx.post(f"{gateway.base}/v1/chat/completions", headers={"authorization": f"Bearer {gateway.key}"},
                          json={"model": "fake/gpt-4o", "messages": USER})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_failed"
    assert "provider 'fake'" in response.json()["error"]["message"]


def test_non_json_upstream_error_is_wrapped(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(Reply(status=503, body=b"<html>Service Unavailable</html>", headers={"content-type": "text/html"}))
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="fake/gpt-4o", messages=USER)
    assert info.value.status_code == 503
    assert "Service Unavailable" in str(info.value.body)


def test_upstream_down_is_502(gateway: RunningGateway) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        gateway.client().chat.completions.create(model="down/gpt-4o", messages=USER)
    assert info.value.status_code == 502
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "upstream_unreachable"
    assert UPSTREAM_KEY not in json.dumps(body)


def test_upstream_timeout_is_504(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(Reply(delay=3.0, body=b"{}"))  # the provider's timeout is 1.5 s
    with pytest.raises(openai.APIStatusError) as info:
        gateway.client().chat.completions.create(model="fake/gpt-4o", messages=USER)
    assert info.value.status_code == 504
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "upstream_timeout"


def test_connection_cut_mid_stream_ends_with_error_event(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse_reply(fixture_bytes("openai/openai-python-stream-text.sse"), cut_after=5))
    stream = gateway.client().chat.completions.create(model="fake/gpt-4o", messages=USER, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="closed the connection mid-response"):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 5
    assert "stream from fake failed mid-way" in gateway.logs()


@pytest.mark.parametrize(("body", "param", "fragment"), [
    (b"{not json", None, "could not parse the JSON body"),
    (b"[1, 2]", None, "must be a JSON object"),
    (b"", None, "body is empty"),
    (b'{"model": "", "messages": [{"role": "user", "content": "x"}]}', "model", "non-empty"),
    (b'{"model": "fake/x"}', "messages", "Missing required parameter"),
    (b'{"model": 5, "messages": []}', "model", "Expected `str`, got `int`"),
    (b'{"model": "fake/x", "messages": []}', "messages", "at least one message"),
    (b'{"model": "fake/x", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role", "Invalid enum"),
    (b'{"model": "fake/x", "messages": [{"role": "user", "content": 7}]}', "messages[0].content", "Expected"),
    (b'{"model": "fake/x", "messages": [{"role": "user"}], "stream": "yes"}', "stream", "Expected `bool"),
    (b'{"model": "fake/x", "messages": [{"role": "user", "content": [{"text": "x"}]}]}',
     "messages[0].content[0].type", "Missing required parameter"),
])
def test_invalid_requests_are_400_with_param(gateway: RunningGateway, fake: FakeUpstream, body: bytes,
                                             param: str | None, fragment: str) -> None:
    response = httpx.post(f"{gateway.base}/v1/chat/completions", content=body,
                          headers={"authorization": f"Bearer {gateway.key}", "content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]
    assert fake.received == []


def test_unknown_route_and_method_use_the_envelope(gateway: RunningGateway) -> None:
    response = httpx.get(f"{gateway.base}/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert response.headers["x-gateway-request-id"]
    response = httpx.get(f"{gateway.base}/v1/chat/completions")
    assert response.status_code == 405 and response.json()["error"]["type"] == "invalid_request_error"


def test_incoming_request_id_is_kept(gateway: RunningGateway, fake: FakeUpstream) -> None:
    response = httpx.post(f"{gateway.base}/v1/chat/completions",
                          headers={"authorization": f"Bearer {gateway.key}", "x-request-id": "trace-abc.123"},
                          json={"model": "fake/gpt-4o", "messages": USER})
    assert response.headers["x-gateway-request-id"] == "trace-abc.123"
    deadline = time.monotonic() + 3  # the access line is written as the response completes
    while "trace-abc.123" not in gateway.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "trace-abc.123" in gateway.logs()
    hostile = httpx.post(f"{gateway.base}/v1/chat/completions",
                         headers={"authorization": f"Bearer {gateway.key}", "x-request-id": "a b\tc<script>"},
                         json={"model": "fake/gpt-4o", "messages": USER})
    assert hostile.headers["x-gateway-request-id"].startswith("req_")


def test_health_endpoints(gateway: RunningGateway) -> None:
    assert httpx.get(f"{gateway.base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.base}/readyz").json() == {"status": "ready"}


def test_logs_one_line_per_request_and_never_the_keys(gateway: RunningGateway, fake: FakeUpstream) -> None:
    gateway.client().chat.completions.create(model="fake/gpt-4o", messages=USER)
    time.sleep(0.2)
    logs = gateway.logs()
    assert "POST /v1/chat/completions 200" in logs
    assert UPSTREAM_KEY not in logs and gateway.key not in logs
