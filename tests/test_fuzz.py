"""Fuzzing the door on a real ``gateway serve``: schemathesis against the routes the gateway describes at
/openapi.json, and a corpus of hostile bodies on chat, Messages and the native routes.

Every answer must be below 500, within the time bound, and a refusal must be an error envelope in the
route's own shape (OpenAI's, Anthropic's, Google's). The fake upstream answers each provider correctly,
so any 5xx is the gateway's own doing. Bounded to about two minutes on a quiet two-core machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from tests.conftest import UPSTREAM_KEY, gateway_env, wait_ready
from tests.fakes import FakeUpstream, Received, Reply, fixture_bytes, free_port, json_reply, sse_reply

KEY = "sk-proxy-fuzz-0123456789abcdef"
TIMEOUT = 15.0  # per request: a quiet machine answers each of these in milliseconds; more is a hang
USER = [{"role": "user", "content": "Hello"}]

ANTHROPIC_MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                     "content": [{"type": "text", "text": "Hi."}], "stop_reason": "end_turn",
                     "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 2}}
GEMINI_ANSWER = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi."}]}, "finishReason": "STOP",
                                 "index": 0}],
                 "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7},
                 "modelVersion": "gemini-x"}


def _upstream(received: Received) -> Reply:
    """Each provider's correct answer, whatever was asked: a 5xx can then only come from the gateway."""
    try:
        body = json.loads(received.body) if received.body else {}
    except ValueError:
        body = {}
    stream = isinstance(body, dict) and body.get("stream") is True
    if received.path.endswith("/messages"):
        if stream:
            return sse_reply(fixture_bytes("anthropic/sdk-stream-basic_response.txt"))
        return json_reply(ANTHROPIC_MESSAGE)
    if ":streamGenerateContent" in received.path:
        return sse_reply(b"data: " + json.dumps(GEMINI_ANSWER).encode() + b"\n\n")
    if ":generateContent" in received.path:
        return json_reply(GEMINI_ANSWER)
    if stream:
        return sse_reply(fixture_bytes("openai/openai-python-stream-text.sse"))
    model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else "m"
    return json_reply({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "Hi."}}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})


@dataclass
class Fuzzed:
    base: str
    log: Path


@pytest.fixture(scope="module")
def fuzzed(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    root = tmp_path_factory.mktemp("fuzz")
    config = root / "config.toml"
    config.write_text(f"""
[server]
data_dir = "{root / 'data'}"

[routing]
retries = 0

[limits]
tpm = 100000000

[providers.openai]
type = "openai"
base_url = "{fake.base}/v1"
api_key = "{UPSTREAM_KEY}"
timeout = 5

[providers.anthropic]
type = "anthropic"
base_url = "{fake.base}"
api_key = "{UPSTREAM_KEY}"
timeout = 5

[providers.google]
type = "gemini"
base_url = "{fake.base}"
api_key = "{UPSTREAM_KEY}"
timeout = 5

[[models]]
name = "gpt-4o-mini"
provider = "openai"
pricing = {{ input = 0.15, output = 0.6 }}

[[keys]]
name = "fuzz"
key = "{KEY}"
tpm = 100000000
""")
    port = free_port()
    log = root / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=gateway_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield Fuzzed(base=base, log=log)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(autouse=True)
def _answering(fake: FakeUpstream) -> None:
    fake.default = _upstream


# ------------------------------------------------------------------------------------- the checks


def shape_of(path: str) -> str:
    if path.startswith(("/v1/messages", "/anthropic/")):
        return "anthropic"
    if path.startswith("/gemini/"):
        return "google"
    return "openai"


def problem(path: str, status: int, body: bytes) -> str | None:
    """What is wrong with this answer, or None: no 5xx, and every refusal in the route's error shape."""
    if status >= 500:
        return f"{status}: {body[:200]!r}"
    if status < 400:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return f"{status} is not JSON: {body[:200]!r}"
    error = parsed.get("error") if isinstance(parsed, dict) else None
    shape = shape_of(path)
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return f"{status} has no error envelope: {body[:200]!r}"
    if shape == "anthropic" and not (parsed.get("type") == "error" and isinstance(error.get("type"), str)):
        return f"{status} is not in Anthropic's shape: {body[:200]!r}"
    if shape == "google" and not (isinstance(error.get("code"), int) and isinstance(error.get("status"), str)):
        return f"{status} is not in Google's shape: {body[:200]!r}"
    if shape == "openai" and not isinstance(error.get("type"), str):
        return f"{status} is not in OpenAI's shape: {body[:200]!r}"
    return None


# ------------------------------------------------------------------------------- schemathesis


@pytest.fixture(scope="module")
def described(fuzzed: Fuzzed) -> Any:
    schema = schemathesis.openapi.from_url(f"{fuzzed.base}/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=40)
    return schema


schema = schemathesis.pytest.from_fixture("described")


@schema.parametrize()
@settings(deadline=None, database=None, suppress_health_check=list(HealthCheck), max_examples=40)
def test_described_routes_never_fail_on_what_a_client_sends(case: Any) -> None:
    response = case.call(headers={"authorization": f"Bearer {KEY}"}, timeout=TIMEOUT)
    found = problem(case.path, response.status_code, response.content)
    assert found is None, f"{case.method} {case.formatted_path}: {found}"


# ------------------------------------------------------------------------------------ the corpus

ROUTES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "openai/gpt-4o-mini", "messages": USER, "max_tokens": 5},
    "/v1/messages": {"model": "anthropic/claude-x", "max_tokens": 5, "messages": USER},
    "/v1/messages/count_tokens": {"model": "anthropic/claude-x", "messages": USER},
    "/openai/v1/chat/completions": {"model": "gpt-4o-mini", "messages": USER, "max_tokens": 5},
    "/anthropic/v1/messages": {"model": "claude-x", "max_tokens": 5, "messages": USER},
    "/gemini/v1beta/models/gemini-x:generateContent": {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
                                                       "generationConfig": {"maxOutputTokens": 5}},
}
NUMBERS = {"/v1/chat/completions": ["max_tokens", "max_completion_tokens", "n", "temperature", "top_p",
                                    "top_logprobs", "presence_penalty"],
           "/v1/messages": ["max_tokens", "temperature", "top_p", "top_k"],
           "/v1/messages/count_tokens": ["max_tokens", "top_k"],
           "/openai/v1/chat/completions": ["max_tokens", "max_completion_tokens", "n"],
           "/anthropic/v1/messages": ["max_tokens"],
           "/gemini/v1beta/models/gemini-x:generateContent": []}

Mutation = Callable[[str, dict[str, Any]], bytes]


def _dump(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _with(**members: Any) -> Mutation:
    return lambda path, base: _dump({**base, **members})


def _raw(text: bytes) -> Mutation:
    return lambda path, base: text


def _splice(marker: str, raw: bytes) -> Mutation:
    """The base body with one member's JSON replaced by raw bytes (for what json.dumps cannot write)."""
    def mutate(path: str, base: dict[str, Any]) -> bytes:
        return _dump({**base, marker: "@@"}).replace(b'"@@"', raw)
    return mutate


def _invalid_text(bad: bytes) -> Mutation:
    """The base body with invalid UTF-8 inside its text (the prompt, or Gemini's part)."""
    def mutate(path: str, base: dict[str, Any]) -> bytes:
        body = _dump(base)
        return body.replace(b"Hello", b"He" + bad + b"llo") if b"Hello" in body else body.replace(b"Hi", bad)
    return mutate


def _model(name: str) -> Mutation:
    return _with(model=name)


BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\x80", b"\xe6\x97", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
            b"\xf4\x90\x80\x80", b"caf\xe9", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc",
            b"\xfc\xa1\xa1\xa1\xa1\xa1", b"\xef\xbf", b"\x00\xff"]

CORPUS: dict[str, Mutation] = {
    "empty": _raw(b""), "spaces": _raw(b"   \n"), "null": _raw(b"null"), "array": _raw(b"[]"), "number": _raw(b"42"),
    "string": _raw(b'"hello"'), "truncated": _raw(b'{"model": "a'), "bom": lambda p, b: b"\xef\xbb\xbf" + _dump(b),
    **{f"utf8-value-{i}": _invalid_text(bad) for i, bad in enumerate(BAD_UTF8)},
    "utf8-key": lambda p, b: _dump(b)[:-1] + b', "\xff\xfe": 1}',
    **{f"deep-list-{n}": _splice("metadata", b"[" * n + b"]" * n) for n in (129, 1000, 5000, 100_000)},
    **{f"deep-object-{n}": _splice("metadata", b'{"a":' * n + b"1" + b"}" * n) for n in (129, 1000, 5000, 100_000)},
    "deep-messages": _splice("messages", b"[" * 2000 + b"]" * 2000),
    "deep-contents": _splice("contents", b"[" * 2000 + b"]" * 2000),
    "nan": _splice("temperature", b"NaN"), "infinity": _splice("temperature", b"Infinity"),
    "minus-infinity": _splice("top_p", b"-Infinity"), "float-overflow": _splice("temperature", b"1e400"),
    "huge-int-digits": _splice("max_tokens", b"9" * 5000), "huge-negative": _splice("max_tokens", b"-" + b"9" * 400),
    "huge-exponent": _splice("max_tokens", b"1e999999"), "tiny-float": _splice("temperature", b"1e-400"),
    "dup-keys": lambda p, b: _dump(b)[:-1] + b', "max_tokens": -1000000, "model": "x\\r\\ny"}',
    "wrong-messages": _with(messages="hello"), "wrong-model-int": _with(model=5), "wrong-model-list": _with(model=[]),
    "wrong-model-null": _with(model=None), "wrong-max-tokens-str": _with(max_tokens="5"),
    "wrong-max-tokens-bool": _with(max_tokens=True), "wrong-max-tokens-float": _with(max_tokens=5.5),
    "wrong-stream": _with(stream="yes"), "wrong-contents": _with(contents={"a": 1}),
    "wrong-content-part": _with(messages=[{"role": "user", "content": [{"type": 5}]}]),
    "wrong-role": _with(messages=[{"role": "wizard", "content": "x"}]),
    "huge-content": _with(messages=[{"role": "user", "content": "x" * 5_000_000}]),
    "many-messages": _with(messages=[{"role": "user", "content": "x"}] * 20_000),
    "model-japanese": _model("openai/日本"), "model-crlf": _model("openai/gpt\r\nx-injected: 1"),
    "model-lf": _model("openai/gpt\n"), "model-nul": _model("openai/gpt\x00"), "model-del": _model("openai/gpt\x7f"),
    "model-u2028": _model("openai/gpt\u2028"), "model-surrogate": _splice("model", b'"openai/gpt\\ud800"'),
    "model-long": _model("openai/" + "m" * 100_000), "model-empty": _model(""), "model-space": _model("openai/gpt 4o"),
    "model-escape": _model("openai/\x1b[31mred"),
    "model-dots": _model("../../admin"), "model-percent": _model("%2e%2e/%00"),
    **{f"negative-{field}": _with(**{field: -1_000_000})
       for field in ("max_tokens", "max_completion_tokens", "n", "temperature", "top_p", "top_k", "top_logprobs")},
    "negative-budget": _with(thinking={"type": "enabled", "budget_tokens": -1_000_000}),
    "negative-gemini-max": _with(generationConfig={"maxOutputTokens": -1_000_000, "candidateCount": -3}),
    "huge-gemini-max": _with(generationConfig={"maxOutputTokens": 10**30}),
}


# What the door refuses on every route: bodies that are not UTF-8 JSON objects of sane depth, and numbers
# JSON cannot hold. The gateway's own routes also refuse names no header can carry and absurd numbers
# (native routes pass those to the provider, which judges its own parameters).
_REFUSED = ("empty", "spaces", "null", "array", "number", "string", "truncated", "utf8-", "deep-", "nan",
            "infinity", "minus-infinity", "huge-exponent")
_REFUSED_OWN = ("model-japanese", "model-crlf", "model-lf", "model-nul", "model-del", "model-u2028",
                "model-surrogate", "model-long", "model-empty", "model-space", "model-escape", "float-overflow",
                "huge-int-digits", "huge-negative", "dup-keys", "negative-max_tokens")


def must_refuse(path: str, name: str) -> bool:
    return name.startswith(_REFUSED + _REFUSED_OWN if path.startswith("/v1/") else _REFUSED)


def test_hostile_bodies_are_refused_cleanly_on_every_route(fuzzed: Fuzzed) -> None:
    failures: list[str] = []
    tried = 0
    started = time.monotonic()
    with httpx.Client(base_url=fuzzed.base, timeout=TIMEOUT) as http:
        for path, base in ROUTES.items():
            for name, mutate in CORPUS.items():
                tried += 1
                body = mutate(path, base)
                try:
                    response = http.post(path, content=body, headers={
                        "authorization": f"Bearer {KEY}", "content-type": "application/json",
                        "anthropic-version": "2023-06-01"})
                except httpx.HTTPError as exc:  # a hang (timeout) or a dropped connection
                    failures.append(f"{path} {name}: {type(exc).__name__}")
                    continue
                found = problem(path, response.status_code, response.content)
                if found is None and response.status_code < 400 and must_refuse(path, name):
                    found = f"{response.status_code}: accepted, sent upstream"
                if found:
                    failures.append(f"{path} {name}: {found}")
    assert tried == len(ROUTES) * len(CORPUS)
    assert not failures, f"{len(failures)} of {tried} hostile bodies failed:\n" + "\n".join(failures)
    assert time.monotonic() - started < 120


def test_numbers_are_refused_by_name_on_every_route(fuzzed: Fuzzed) -> None:
    """Negative and absurd values of each numeric member: a 400 whose message names it, on each route."""
    failures: list[str] = []
    with httpx.Client(base_url=fuzzed.base, timeout=TIMEOUT) as http:
        for path, fields in NUMBERS.items():
            for field in fields:
                for value in (-1_000_000, 10**30):
                    response = http.post(path, content=_dump({**ROUTES[path], field: value}), headers={
                        "authorization": f"Bearer {KEY}", "content-type": "application/json"})
                    if response.status_code != 400 or f"'{field}'" not in response.text:
                        failures.append(f"{path} {field}={value}: {response.status_code} {response.text[:160]}")
    assert not failures, "\n".join(failures)
