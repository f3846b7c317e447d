"""The door (gateway/door.py): hostile bodies, numbers and model names are 400s in each route's own error
shape, and the buckets and budgets behind it cannot be moved by negative or absurd amounts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.door import (
    MAX_DEPTH,
    check_body,
    check_int,
    check_model_name,
    decode_raw_object,
    header_value,
    json_depth,
)
from gateway.errors import InvalidRequest
from gateway.governance import Governor, Principal
from gateway.limits import Budget, TokenBucket
from tests.fakes import FakeUpstream, Received, Reply, fixture_bytes, json_reply, sse_reply
from tests.inprocess import OK, Harness, gateway_for

USER = [{"role": "user", "content": "Hello"}]
PRICED = """
[[models]]
name = "m"
provider = "a"
pricing = { input = 1000.0, output = 2000.0 }   # USD per 1M tokens: $0.001 and $0.002 a token
"""
DEEP = b'{"model":"a/m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"metadata":' + \
    b"[" * 1000 + b"]" * 1000 + b"}"
BAD_UTF8 = b'{"model":"a/m","max_tokens":5,"messages":[{"role":"user","content":"caf\xe9 \xff\xfe"}]}'
BAD_NAMES = ["fake/日本", "a/m\r\nx-injected: 1", "a/m\n", "a/\x00m", "a/" + "m" * 300, "a/ m", "a/m\x7f"]


async def chat(gw: Harness, body: bytes | dict[str, Any], key: str | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await gw.http.post("/v1/chat/completions", content=content,
                              headers={"authorization": f"Bearer {key or gw.key}", "content-type": "application/json"})


async def messages(gw: Harness, body: bytes | dict[str, Any]) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await gw.http.post("/v1/messages", content=content,
                              headers={"x-api-key": gw.key, "content-type": "application/json",
                                       "anthropic-version": "2023-06-01"})


def openai_400(response: httpx.Response, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error
    return error


def anthropic_400(response: httpx.Response, names: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
    if names is not None:
        assert f"'{names}'" in body["error"]["message"], body
    return body


# ------------------------------------------------------------------------------------------ pure parts


@pytest.mark.parametrize("body", [b"", b"  ", b"\xff\xfe{}", b"[1]", b'{"a":', b"[" * 5000 + b"]" * 5000,
                                  b'{"a":' + b"{\"b\":" * 200 + b"1" + b"}" * 201, BAD_UTF8, b'{"a":NaN}'],
                         ids=["empty", "spaces", "bad-utf8", "array", "truncated", "deep-list", "deep-object",
                              "bad-utf8-in-text", "nan"])
def test_decode_raw_object_refuses_every_bad_body_with_a_400(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_raw_object(body)


def test_depth_counts_structure_not_text() -> None:
    assert bytes(decode_raw_object(b'{"a":"' + b"[" * 5000 + b'"}')["a"]) == b'"' + b"[" * 5000 + b'"'
    assert json_depth(b'{"a":"\\"[[[[' + b"[" * 500 + b'"}') == 1
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert json_depth(nested) == MAX_DEPTH
    assert decode_raw_object(b'{"a":' + nested[1:-1] + b"}")  # exactly the limit: accepted


def _reference_depth(value: object, depth: int = 0) -> int:
    if isinstance(value, list):
        return max((_reference_depth(item, depth + 1) for item in value), default=depth + 1)
    if isinstance(value, dict):
        return max((_reference_depth(item, depth + 1) for item in value.values()), default=depth + 1)
    return depth


def test_depth_matches_a_decoder_on_strings_full_of_brackets_quotes_and_escapes() -> None:
    rnd = random.Random(12)
    texts = ["a[", "\\", '"', '\\"]', "{}", "", "x\\[", '"[', "]]"]

    def value(depth: int) -> object:
        roll = rnd.random()
        if depth > 8 or roll < 0.3:
            return rnd.choice([*texts, 1, None])
        if roll < 0.65:
            return [value(depth + 1) for _ in range(rnd.randint(0, 3))]
        return {rnd.choice(texts) + str(i): value(depth + 1) for i in range(rnd.randint(0, 3))}

    for _ in range(3000):
        made = value(0)
        assert json_depth(json.dumps(made).encode()) == _reference_depth(made), made


@pytest.mark.parametrize("body", [b"[" * 200 + b'\\"' * 1_000_000, b"[" * 200 + b'"' * 2_000_000,
                                  b"[" + b'["["],' * 300_000 + b"[]]", (b"[" * 127 + b"]" * 127) * 8000],
                         ids=["escaped-quotes", "quotes", "bracket-strings", "brackets"])
def test_depth_is_linear_on_hostile_bodies(body: bytes) -> None:
    """An escaped-quote run made the first string pattern retry from every quote: 38 s for 80 kB."""
    started = time.perf_counter()
    with contextlib.suppress(InvalidRequest):
        check_body(body)
    assert time.perf_counter() - started < 2.0  # about 0.1 s on a quiet machine


@pytest.mark.parametrize("value", [-1, 0, 10**40, -(10**400), True, 1.5, "5", None])
def test_check_int_names_the_parameter(value: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_int("max_tokens", value, low=1, high=1000)
    assert info.value.param == "max_tokens" and len(info.value.message) < 200


@pytest.mark.parametrize("name", [*BAD_NAMES, ""])
def test_model_names_that_cannot_be_headers_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_model_name(name)
    assert info.value.param == "model"
    header_value(info.value.message).encode("ascii")  # even the message can be a header


@pytest.mark.parametrize("text", ["fake/日本", "a\r\nset-cookie: x", "\x00", "\udcff", "x" * 5000, "ok/model-1"])
def test_header_values_are_always_printable_ascii(text: str) -> None:
    value = header_value(text)
    assert value.isascii() and value.isprintable() and len(value) <= 1024
    assert header_value("openai/gpt-4o-mini") == "openai/gpt-4o-mini"


def test_buckets_ignore_negative_and_nan_amounts() -> None:
    bucket = TokenBucket(100_000, now=0.0)
    assert bucket.try_take(-1_000_000, 0.0) == 0.0
    assert bucket.remaining(0.0) == 100_000  # never more than the limit
    bucket.adjust(-1_000_000_000, 0.0)
    assert bucket.try_take(1, 0.0) <= 120.0  # one minute's debt at most: full again within two
    bucket.adjust(float("nan"), 0.0)
    assert bucket.remaining(200.0) == 100_000


def test_budgets_ignore_negative_reservations_and_refunds() -> None:
    budget = Budget(1.0, "total", spent=0.0, now=0.0)
    assert budget.try_reserve(-5.0, 0.0) and budget.reserved == 0.0
    assert not budget.try_reserve(float("nan"), 0.0)
    assert budget.try_reserve(0.5, 0.0)
    budget.settle(100.0, -3.0, 0.0)  # releases only what is held; a negative cost is no refund
    assert budget.reserved == 0.0 and budget.spent == 0.0
    assert budget.try_reserve(0.5, 0.0)
    budget.settle(0.5, float("inf"), 0.0)  # an impossible cost counts as what was reserved
    assert budget.spent == 0.5


def test_governor_admission_cannot_drain_or_overspend(tmp_path: Path) -> None:
    from gateway.config import load_config_file
    path = tmp_path / "config.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path}"\n[limits]\ntpm = 100000\n')
    gov = Governor(load_config_file(path), clock=lambda: 0.0)
    key = Principal(key_id="k", name="k", budget_usd=1.0, tpm=100_000)
    gov.configure_key(key)
    hostile = gov.admit(key, None, -1_000_000, -5.0)
    assert hostile.tokens == 0 and hostile.reserved_usd == 0.0
    hostile.settle(tokens=-1_000_000, cost_usd=-10.0)
    assert gov.headers(key, 0.0)["x-ratelimit-remaining-tokens"] == "100000"
    budget = gov.budget_of("k")
    assert budget is not None and budget.spent == 0.0 and budget.reserved == 0.0
    honest = gov.admit(key, None, 50, 0.5)
    honest.settle(tokens=40, cost_usd=0.4)
    assert budget.spent == pytest.approx(0.4) and budget.reserved == 0.0


# ------------------------------------------------------------------------------------ through the app


@pytest.mark.parametrize(("field", "value"), [
    ("max_tokens", -1_000_000), ("max_tokens", 0), ("max_tokens", 10**30), ("max_completion_tokens", -1),
    ("n", 0), ("n", -3), ("n", 10_000), ("temperature", -1), ("temperature", 1e308), ("top_p", 2),
    ("top_logprobs", -1), ("presence_penalty", 9), ("frequency_penalty", -9), ("seed", 2**70),
])
async def test_chat_numbers_out_of_range_are_400_naming_them(fake: FakeUpstream, tmp_path: Path, field: str,
                                                             value: object) -> None:
    fake.reply(OK)
    async with gateway_for(fake, tmp_path) as gw:
        openai_400(await chat(gw, {"model": "a/m", "messages": USER, field: value}), field)
    assert not fake.received


async def test_negative_max_tokens_cannot_lock_everyone_out(fake: FakeUpstream, tmp_path: Path) -> None:
    """The issue's repro: with [limits] tpm, one max_tokens -1000000 drained the gateway's bucket for a week."""
    fake.default = lambda received: OK
    async with gateway_for(fake, tmp_path, extra="[limits]\ntpm = 100000\n") as gw:
        openai_400(await chat(gw, {"model": "a/m", "messages": USER, "max_tokens": -1_000_000}), "max_tokens")
        ok = await chat(gw, {"model": "a/m", "messages": USER})
        assert ok.status_code == 200, ok.text


async def test_negative_numbers_reserve_nothing_and_overspend_nothing(fake: FakeUpstream, tmp_path: Path) -> None:
    """200 concurrent requests against a $1 budget, plain, streamed and hostile mixed: the hostile ones are
    refused at the door, and nothing is spent past the budget or left reserved."""
    stream = fixture_bytes("openai/openai-python-stream-text.sse")  # usage: 14 + 30 tokens, about $0.074
    fake.default = lambda received: sse_reply(stream) if received.json().get("stream") else OK
    async with gateway_for(fake, tmp_path, extra=PRICED) as gw:
        client = await gw.new_key("tight", budget_usd=1.0)
        secret = client.api_key
        honest: list[dict[str, Any]] = [
            {"model": "a/m", "messages": USER, "max_tokens": 50},
            {"model": "a/m", "messages": USER, "max_tokens": 50, "stream": True},
        ]
        hostile: list[dict[str, Any]] = [
            {"model": "a/m", "messages": USER, "max_tokens": -1_000_000},
            {"model": "a/m", "messages": USER, "max_completion_tokens": -5, "stream": True},
            {"model": "a/m", "messages": USER, "n": -1},
            {"model": "a/m", "messages": USER, "max_tokens": 10**25},
            {"model": "a/m", "messages": USER, "max_tokens": 50, "n": 10**6},
            {"model": "a/m", "messages": USER, "temperature": -1e308},
        ]
        bodies = honest * 2 + hostile
        answers = await asyncio.gather(*(chat(gw, bodies[i % len(bodies)], secret) for i in range(200)))
        for i, answer in enumerate(answers):
            sent = bodies[i % len(bodies)]
            assert answer.status_code in ((400,) if sent in hostile else (200, 429)), answer.text
        assert any(a.status_code == 200 for a in answers) and any(a.status_code == 429 for a in answers)
        budget = gw.state.governor.budget_of(next(p.key_id for p in gw.state.keys.principals if p.name == "tight"))
        assert budget is not None and budget.reserved == 0.0
        assert 0.0 < budget.spent <= 1.0


async def test_bad_utf8_and_deep_json_are_400_in_each_routes_shape(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(OK)
    async with gateway_for(fake, tmp_path) as gw:
        for body in (BAD_UTF8, DEEP, b"\xff", b"[" * 100_000):
            openai_400(await chat(gw, body))
            anthropic_400(await messages(gw, body))
        count = await gw.http.post("/v1/messages/count_tokens", content=DEEP,
                                   headers={"x-api-key": gw.key, "content-type": "application/json"})
        anthropic_400(count)
    assert not fake.received


@pytest.mark.parametrize(("field", "value"), [
    ("max_tokens", -1_000_000), ("max_tokens", 0), ("max_tokens", 10**30), ("temperature", 3),
    ("top_p", -0.5), ("top_k", -1), ("thinking.budget_tokens", -5), ("thinking.budget_tokens", 10**20),
])
async def test_messages_numbers_out_of_range_are_400_naming_them(fake: FakeUpstream, tmp_path: Path, field: str,
                                                                 value: object) -> None:
    fake.reply(OK)
    body: dict[str, Any] = {"model": "a/m", "max_tokens": 100, "messages": USER}
    if field.startswith("thinking."):
        body["thinking"] = {"type": "enabled", "budget_tokens": value}
    else:
        body[field] = value
    async with gateway_for(fake, tmp_path) as gw:
        anthropic_400(await messages(gw, body), field)
    assert not fake.received


async def test_model_names_are_checked_at_the_door(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = lambda received: OK
    async with gateway_for(fake, tmp_path) as gw:
        for name in BAD_NAMES:
            openai_400(await chat(gw, {"model": name, "messages": USER}), "model")
            anthropic_400(await messages(gw, {"model": name, "max_tokens": 5, "messages": USER}), "model")
        ok = await chat(gw, {"model": "a/m", "messages": USER})
        assert ok.status_code == 200 and ok.headers["x-gateway-model"] == "m"
    assert len(fake.received) == 1


async def test_names_from_the_config_are_encoded_in_headers(fake: FakeUpstream, tmp_path: Path) -> None:
    """A configured upstream name no header can carry as it is still answers, its header percent-encoded."""
    fake.default = lambda received: OK
    async with gateway_for(fake, tmp_path, extra='[routes.jp]\ntargets = ["a/日本"]\n') as gw:
        ok = await chat(gw, {"model": "jp", "messages": USER, "reasoning_effort": "low\r\nx-injected: 1"})
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-gateway-model"] == "%E6%97%A5%E6%9C%AC"
        answer = await messages(gw, {"model": "jp", "max_tokens": 5, "messages": USER})
        assert answer.status_code == 200 and answer.headers["x-gateway-model"] == "%E6%97%A5%E6%9C%AC"
    assert fake.last.json()["model"] == "日本"


async def test_n_choices_are_reserved_for_each_choice(fake: FakeUpstream, tmp_path: Path) -> None:
    """n = 10 answers cost ten times one: the reservation must hold that much, or concurrent requests overspend."""
    def ten_answers(received: Received) -> Reply:
        return json_reply({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                           "choices": [{"index": i, "message": {"role": "assistant", "content": "ok"},
                                        "finish_reason": "length"} for i in range(10)],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 500, "total_tokens": 510}},
                          ) if received.json().get("n") == 10 else OK
    fake.default = lambda received: Reply(delay=0.05, body=ten_answers(received).body)
    async with gateway_for(fake, tmp_path, extra=PRICED) as gw:
        client = await gw.new_key("tight", budget_usd=5.0)
        secret = client.api_key
        body = {"model": "a/m", "messages": USER, "max_tokens": 50, "n": 10}  # up to 500 tokens: ~$1.02
        answers = await asyncio.gather(*(chat(gw, body, secret) for _ in range(40)))
        ok = [a for a in answers if a.status_code == 200]
        assert ok and all(a.status_code in (200, 429) for a in answers)
        budget = gw.state.governor.budget_of(next(p.key_id for p in gw.state.keys.principals if p.name == "tight"))
        assert budget is not None and budget.reserved == 0.0
        assert budget.spent <= 5.0, f"{len(ok)} answered, ${budget.spent:.2f} spent of $5"


async def test_upstream_header_values_never_make_an_answer_raise(fake: FakeUpstream, tmp_path: Path) -> None:
    """A provider's retry-after no header can carry is relayed percent-encoded on every route, not a 500."""
    fake.default = lambda received: json_reply({"error": {"message": "slow down", "type": "rate_limit"}},
                                               status=429, headers={"retry-after": "日本\u2028x"})
    async with gateway_for(fake, tmp_path, routing="retries = 0") as gw:
        answers = [
            await chat(gw, {"model": "a/m", "messages": USER}),
            await messages(gw, {"model": "a/m", "max_tokens": 5, "messages": USER}),
            await gw.http.post("/native/a/v1/chat/completions", content=json.dumps({"model": "m", "messages": USER}),
                               headers={"authorization": f"Bearer {gw.key}"}),
        ]
    for answer in answers:
        assert answer.status_code == 429, answer.text
        assert answer.headers["retry-after"] == "%E6%97%A5%E6%9C%AC%E2%80%A8x"


async def test_openapi_json_describes_the_routes_and_the_door(fake: FakeUpstream, tmp_path: Path) -> None:
    async with gateway_for(fake, tmp_path) as gw:
        answer = await gw.http.get("/openapi.json")  # public, like /healthz: no key, no config in it
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    doc = answer.json()
    assert {"/v1/chat/completions", "/v1/messages", "/openai/v1/chat/completions", "/anthropic/v1/messages",
            "/gemini/v1beta/models/{model}:generateContent"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert {"type": "integer", "minimum": 1, "maximum": 100_000_000} in \
        schemas["ChatRequest"]["properties"]["max_tokens"]["anyOf"]
    assert schemas["ThinkingConfigIn"]["properties"]["budget_tokens"]["minimum"] == 0
    assert schemas["MessagesIn"]["properties"]["model"]["maxLength"] == 256
