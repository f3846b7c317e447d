"""``POST /v1/embeddings`` and ``GET /v1/models/{id}`` on the unified endpoint, through a real `gateway serve`
driven by the official openai SDK, against a fake OpenAI server and a fake Gemini server on loopback.

OpenAI-compatible targets get the client's bytes with only ``model`` rewritten; Gemini targets get
``batchEmbedContents`` and their floats come back as OpenAI's ``float`` or ``base64`` (little-endian
float32); Anthropic has no embeddings API; ``auto`` keeps chat and embedding models apart.
"""

from __future__ import annotations

import base64
import json
import math
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.catalog import load_builtin
from gateway.config import load_config_file
from gateway.router import RouteTable
from tests.conftest import gateway_env, run_cli, wait_ready
from tests.fakes import FakeUpstream, Received, Reply, free_port, json_reply

GEMINI_VECTORS = [[3.0, 4.0, 0.0], [0.25, -0.5, 1.0]]


def vector(index: int, dims: int) -> list[float]:
    return [round((index + 1) * 0.001 * (i + 1), 6) for i in range(dims)]


def upstream(received: Received) -> Reply:
    """The fake provider: OpenAI's /embeddings and Gemini's :batchEmbedContents, as each really answers."""
    body = received.json()
    if received.path.endswith(":batchEmbedContents"):
        vectors = [GEMINI_VECTORS[i % 2][: r.get("outputDimensionality", 3)] for i, r in enumerate(body["requests"])]
        return json_reply({"embeddings": [{"values": v} for v in vectors]})
    if received.path.endswith("/embeddings"):
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs and isinstance(inputs[0], int):
            inputs = [inputs]
        dims = body.get("dimensions", 4)
        data = []
        for i in range(len(inputs)):
            floats = vector(i, dims)
            encoded: Any = (base64.b64encode(struct.pack(f"<{dims}f", *floats)).decode()
                            if body.get("encoding_format") == "base64" else floats)
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        return json_reply({"object": "list", "data": data, "model": body["model"],
                           "usage": {"prompt_tokens": 7 * len(inputs), "total_tokens": 7 * len(inputs)}})
    return json_reply({"error": {"message": f"unexpected {received.path}"}}, status=404)


CONFIG = """
[server]
data_dir = "{data}"

[routing]
retries = 0

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

[routes.vectors]
targets = ["google/gemini-embedding-001", "openai/text-embedding-3-small"]
strategy = "fallback"
"""


class Served:
    def __init__(self, base: str, key: str, budgeted: str, data: Path, config: Path) -> None:
        self.base, self.key, self.budgeted, self.data, self.config = base, key, budgeted, data, config

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key or self.key, max_retries=0)

    def rows(self, request_id: str) -> list[sqlite3.Row]:
        """The usage records of one request, once the batch writer has put them down."""
        deadline = time.monotonic() + 10
        while True:
            with sqlite3.connect(self.data / "gateway.db") as db:
                db.row_factory = sqlite3.Row
                rows = db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchall()
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


@pytest.fixture(scope="module")
def served(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("embeddings")
    config = root / "config.toml"
    config.write_text(CONFIG.format(data=root / "data", base=fake.base))
    keys = []
    for args in (("--name", "plain"), ("--name", "budgeted", "--budget-usd", "0.000001")):
        created = run_cli("keys", "create", *args, "--config", str(config))
        assert created.returncode == 0, created.stderr
        keys.append(created.stdout.strip())
    port = free_port()
    with (root / "gateway.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=gateway_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield Served(base, keys[0], keys[1], root / "data", config)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def fake_providers(fake: FakeUpstream) -> FakeUpstream:
    fake.default = upstream
    return fake


def test_openai_target_gets_the_clients_bytes_with_only_model_rewritten(served: Served,
                                                                        fake_providers: FakeUpstream) -> None:
    raw = served.client().embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float", dimensions=4,
        user="u-42", extra_body={"custom_member": {"kept": True}})
    sent = fake_providers.last
    assert sent.path == "/openai/v1/embeddings"
    assert sent.headers["authorization"] == "Bearer sk-upstream-openai"
    assert sent.json() == {"model": "text-embedding-3-small", "input": ["alpha", "beta"], "encoding_format": "float",
                           "dimensions": 4, "user": "u-42", "custom_member": {"kept": True}}
    answer = raw.parse()
    assert [d.embedding for d in answer.data] == [vector(0, 4), vector(1, 4)]
    assert answer.model == "openai/text-embedding-3-small"
    assert answer.usage.prompt_tokens == 14
    usage = json.loads(raw.content)["usage"]
    assert usage["cost_usd_total"] == pytest.approx(14 * 0.02 / 1e6)
    assert raw.headers["x-gateway-provider"] == "openai"
    assert raw.headers["x-gateway-model"] == "text-embedding-3-small"
    assert raw.headers["x-gateway-attempts"] == "1"
    assert json.loads(raw.content)["metadata"]["used_model"] == "text-embedding-3-small"
    rows = served.rows(raw.headers["x-gateway-request-id"])
    assert [(r["mode"], r["status"], r["provider"], r["prompt_tokens"], r["estimated"]) for r in rows] == [
        ("embeddings", 200, "openai", 14, 0)]
    assert rows[0]["cost_total"] == pytest.approx(14 * 0.02 / 1e6)


def test_openai_target_base64_and_token_arrays_pass_through(served: Served, fake_providers: FakeUpstream) -> None:
    # The SDK's default: it asks for base64 and decodes it itself.
    answer = served.client().embeddings.create(model="openai/text-embedding-3-large", input=[[1, 2, 3], [4, 5]])
    assert fake_providers.last.json()["encoding_format"] == "base64"
    assert fake_providers.last.json()["input"] == [[1, 2, 3], [4, 5]]
    assert [[round(x, 6) for x in d.embedding] for d in answer.data] == [vector(0, 4), vector(1, 4)]


def test_gemini_target_is_translated_to_batch_embed_contents(served: Served, fake_providers: FakeUpstream) -> None:
    raw = served.client().embeddings.with_raw_response.create(
        model="google/gemini-embedding-001", input=["one", "two"], encoding_format="float", dimensions=2, user="u-1")
    sent = fake_providers.last
    assert sent.path == "/google/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent.headers["x-goog-api-key"] == "upstream-google"
    assert sent.json() == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "one"}]}, "outputDimensionality": 2},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "two"}]}, "outputDimensionality": 2}]}
    answer = raw.parse()
    # Shortened Gemini vectors come back normalised, as OpenAI's shortened vectors are.
    assert [d.embedding for d in answer.data] == [[0.6, 0.8], pytest.approx([0.4472136, -0.8944272])]
    assert [d.index for d in answer.data] == [0, 1]
    assert answer.model == "google/gemini-embedding-001"
    assert raw.headers["x-gateway-ignored-params"] == "user"
    assert answer.usage.prompt_tokens == 2  # estimated: Gemini reports no count for embeddings
    assert json.loads(raw.content)["usage"]["cost_usd_total"] == pytest.approx(2 * 0.15 / 1e6)
    rows = served.rows(raw.headers["x-gateway-request-id"])
    assert [(r["mode"], r["provider"], r["model"], r["prompt_tokens"], r["estimated"]) for r in rows] == [
        ("embeddings", "google", "gemini-embedding-001", 2, 1)]


def test_gemini_floats_are_served_as_base64_float32(served: Served, fake_providers: FakeUpstream) -> None:
    raw = httpx.post(f"{served.base}/v1/embeddings", headers={"authorization": f"Bearer {served.key}"},
                     json={"model": "gemini-embedding-001", "input": "one", "encoding_format": "base64"})
    assert raw.status_code == 200, raw.text
    encoded = raw.json()["data"][0]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(encoded)) == (3.0, 4.0, 0.0)
    # And the SDK's own decoding of it (its default encoding_format is base64).
    answer = served.client().embeddings.create(model="gemini-embedding-001", input=["one", "two"])
    assert [d.embedding for d in answer.data] == [[3.0, 4.0, 0.0], [0.25, -0.5, 1.0]]


def test_gemini_refuses_token_arrays_and_unknown_members_by_name(served: Served, fake_providers: FakeUpstream) -> None:
    client = served.client()
    with pytest.raises(openai.BadRequestError) as tokens:
        client.embeddings.create(model="google/gemini-embedding-001", input=[1, 2, 3])
    assert tokens.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as unknown:
        client.embeddings.create(model="google/gemini-embedding-001", input="x", extra_body={"task": "q"})
    assert unknown.value.body["param"] == "task"  # type: ignore[index]
    assert fake_providers.received == []


def test_anthropic_models_have_no_embeddings(served: Served, fake_providers: FakeUpstream) -> None:
    client = served.client()
    for model in ("anthropic/claude-haiku-4-5", "anthropic/claude-not-in-any-catalog"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model=model, input="hello")
        assert refused.value.body["param"] == "model"  # type: ignore[index]
        assert model in refused.value.message
    assert fake_providers.received == []


def test_auto_keeps_chat_and_embedding_models_apart(served: Served, fake_providers: FakeUpstream) -> None:
    client = served.client()
    seen = set()
    for _ in range(4):
        raw = client.embeddings.with_raw_response.create(model="auto", input="hi", encoding_format="float")
        seen.add(f"{raw.headers['x-gateway-provider']}/{raw.headers['x-gateway-model']}")
    assert seen == {"openai/text-embedding-3-small", "google/gemini-embedding-001"}
    # A chat model named for embeddings, or an embedding model named for chat: a 400 naming the model.
    with pytest.raises(openai.BadRequestError) as chat_model:
        client.embeddings.create(model="openai/gpt-4o-mini", input="hi")
    assert chat_model.value.body["code"] == "capability_unmet"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as embedding_model:
        client.chat.completions.create(model="text-embedding-3-small", messages=[{"role": "user", "content": "hi"}])
    assert embedding_model.value.body["param"] == "model"  # type: ignore[index]
    assert fake_providers.received and all(r.path.endswith(("/embeddings", ":batchEmbedContents"))
                                           for r in fake_providers.received)


def test_groups_fall_back_between_embedding_targets(served: Served, fake_providers: FakeUpstream) -> None:
    fake_providers.reply(json_reply({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}},
                                    status=503))
    raw = served.client().embeddings.with_raw_response.create(model="vectors", input="hi", encoding_format="float")
    assert raw.headers["x-gateway-provider"] == "openai"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert [r["provider"] for r in json.loads(raw.content)["metadata"]["routing"]] == ["google", "openai"]


def test_door_refuses_malformed_inputs_by_name(served: Served, fake_providers: FakeUpstream) -> None:
    headers = {"authorization": f"Bearer {served.key}"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "text-embedding-3-small"}, "input"),
        ({"model": "text-embedding-3-small", "input": []}, "input"),
        ({"model": "text-embedding-3-small", "input": ""}, "input"),
        ({"model": "text-embedding-3-small", "input": ["a", 1]}, "input[1]"),
        ({"model": "text-embedding-3-small", "input": [[1, -2]]}, "input[0][1]"),
        ({"model": "text-embedding-3-small", "input": [1, True]}, "input[1]"),
        ({"model": "text-embedding-3-small", "input": [{"text": "a"}]}, "input[0]"),
        ({"model": "text-embedding-3-small", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "text-embedding-3-small", "input": "a", "dimensions": 10**30}, "dimensions"),
        ({"model": "text-embedding-3-small", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "bad name", "input": "a"}, "model"),
    ]
    for body, param in cases:
        answer = httpx.post(f"{served.base}/v1/embeddings", headers=headers, json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["param"] == param, (body, answer.text)
    for raw in (b"", b"[1]", b"{", b'{"input": "a"' + b"]" * 5):
        answer = httpx.post(f"{served.base}/v1/embeddings", headers=headers, content=raw)
        assert answer.status_code == 400, (raw, answer.text)
    assert fake_providers.received == []


def test_budget_refusal_is_recorded_as_an_embeddings_request(served: Served, fake_providers: FakeUpstream) -> None:
    client = served.client(served.budgeted)
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="x" * 4000)
    assert refused.value.body["code"] == "budget_exceeded"  # type: ignore[index]
    rows = served.rows(refused.value.response.headers["x-gateway-request-id"])
    assert [(r["mode"], r["status"], r["key_name"]) for r in rows] == [("embeddings", 429, "budgeted")]
    assert fake_providers.received == []
    # A short input fits the budget: reserved at the input price alone (embeddings have no output).
    answer = client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    assert answer.usage.prompt_tokens == 7


def test_models_retrieve_answers_the_listing_entry(served: Served, fake_providers: FakeUpstream) -> None:
    client = served.client()
    headers = {"authorization": f"Bearer {served.key}"}
    listing = {m["id"]: m for m in httpx.get(f"{served.base}/v1/models", headers=headers).json()["data"]}
    for name in ("text-embedding-3-small", "openai/text-embedding-3-small", "google/gemini-embedding-001",
                 "anthropic/claude-haiku-4-5", "vectors", "auto"):
        retrieved = client.models.with_raw_response.retrieve(name)
        assert json.loads(retrieved.content) == listing[name], name
        assert retrieved.parse().id == name
    assert listing["openai/text-embedding-3-small"]["dimensions"] == 1536
    assert listing["openai/text-embedding-3-small"]["capabilities"]["embedding"] is True
    encoded = httpx.get(f"{served.base}/v1/models/google%2Fgemini-embedding-001", headers=headers)
    assert encoded.status_code == 200 and encoded.json() == listing["google/gemini-embedding-001"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("openai/no-such-model")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert missing.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    unauthenticated = httpx.get(f"{served.base}/v1/models/auto")
    assert unauthenticated.status_code == 401


def test_catalog_marks_embedding_models_and_auto_pools_stay_apart(tmp_path: Path) -> None:
    catalog = load_builtin()
    embedding = {e.name: e for e in catalog.models if e.capabilities.embedding}
    assert set(embedding) >= {"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
                              "gemini-embedding-001", "text-embedding-004"}
    assert embedding["text-embedding-3-small"].pricing.input == 0.02
    assert embedding["gemini-embedding-001"].dimensions == 3072
    assert all(not (e.capabilities.tools or e.capabilities.json) for e in embedding.values())
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(data=tmp_path, base="http://127.0.0.1:9"))
    table = RouteTable(load_config_file(path), catalog)
    assert [d.key for d in table.auto_embeddings.members] == [
        "openai/text-embedding-3-small", "google/gemini-embedding-001"]
    assert not any(d.entry and d.entry.capabilities.embedding for d in table.auto.members)
    assert math.isclose(embedding["text-embedding-3-large"].pricing.input or 0, 0.13)
