"""Routing: names, groups, auto, capability filtering, strategies, retries, fallback and health.

Pure parts (router, health, backoff) are stepped with an injected clock; the pipeline runs in-process
with the official async OpenAI SDK, a fake upstream on loopback and a recorded (not slept) backoff.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import openai
import pytest

from gateway.catalog import load_builtin
from gateway.config import RoutingConfig, load_config_file
from gateway.dialects.chat import parse_chat
from gateway.errors import InvalidRequest, ModelNotFound
from gateway.health import Circuit, HealthBook
from gateway.pipeline import backoff_delay, parse_retry_after
from gateway.router import Requirements, Router, RouteTable
from tests.fakes import FakeUpstream, Reply
from tests.inprocess import OK, by_provider, err, gateway_for, paths

CATALOG = load_builtin()
USER = [{"role": "user", "content": "Hello"}]


def table_for(tmp_path: Path, text: str) -> RouteTable:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return RouteTable(load_config_file(path), CATALOG)


def needs(body: dict[str, object], reasoning: str | None = None) -> Requirements:
    import json

    return Requirements.of(parse_chat(json.dumps(body).encode()), reasoning)


PROVIDERS = """
[providers.openai]
api_key = "k"
models = ["gpt-4o", "gpt-4o-mini"]

[providers.anthropic]
api_key = "k"
models = ["claude-sonnet-4-6"]

[providers.backup]
type = "openai"
base_url = "https://backup.example/v1"
models = ["gpt-4o", "my-finetune"]
"""


# ------------------------------------------------------------------------------------------ names


def test_names_resolve_to_providers(tmp_path: Path) -> None:
    table = table_for(tmp_path, PROVIDERS)
    group, provider = table.resolve("openai/gpt-4o")
    assert [d.key for d in group.members] == ["openai/gpt-4o"] and provider == "openai"
    group, provider = table.resolve("gpt-4o")
    assert [d.key for d in group.members] == ["openai/gpt-4o", "backup/gpt-4o"] and provider is None
    assert table.resolve("claude-sonnet-4-6")[0].members[0].upstream == "claude-sonnet-4-6"
    with pytest.raises(ModelNotFound, match="provider 'openai' serves openai/gpt-4o, openai/gpt-4o-mini"):
        table.resolve("openai/gpt-3.5-turbo")
    with pytest.raises(ModelNotFound, match="no configured provider serves it"):
        table.resolve("mystery")


def test_catalog_facts_and_unknown_models(tmp_path: Path) -> None:
    table = table_for(tmp_path, PROVIDERS + '\n[providers.groq]\ntype = "openai"\n'
                      'base_url = "https://api.groq.com/openai/v1"\n')
    gpt4o = table.lookup("openai/gpt-4o")
    assert gpt4o.entry is not None and gpt4o.entry.context_window == 128000
    assert gpt4o.entry.pricing.input == 2.5
    # groq serves its catalog models (matched by host) and any explicitly named model.
    assert "groq/llama-3.3-70b-versatile" in table.deployments
    unknown = table.lookup("groq/brand-new-model")
    assert unknown.entry is None
    assert unknown.capabilities.tools and unknown.capabilities.vision  # unknown: treated as capable
    assert table.resolve("groq/brand-new-model")[0].members[0].upstream == "brand-new-model"
    # A fine-tune the catalog does not know, declared by the provider: capable, unpriced.
    finetune = table.lookup("backup/my-finetune")
    assert finetune.entry is None


def test_config_models_add_and_override(tmp_path: Path) -> None:
    table = table_for(tmp_path, PROVIDERS + """
[[models]]
name = "cheap"
provider = "openai"
upstream_name = "gpt-4o-mini"
pricing = { input = 0.1 }

[[models]]
name = "gpt-4o"
provider = "backup"
context_window = 4096
capabilities = { vision = false }
""")
    cheap = table.lookup("openai/cheap")
    assert cheap.upstream == "gpt-4o-mini"
    assert cheap.entry is not None and cheap.entry.pricing.input == 0.1
    assert cheap.entry.pricing.output == table.lookup("openai/gpt-4o-mini").entry.pricing.output  # type: ignore[union-attr]
    backup = table.lookup("backup/gpt-4o")
    assert backup.entry is not None and backup.entry.context_window == 4096
    assert backup.capabilities.vision is False and backup.capabilities.tools is True


def test_groups_and_auto(tmp_path: Path) -> None:
    table = table_for(tmp_path, PROVIDERS + """
[routes.smart]
targets = ["anthropic/claude-sonnet-4-6", "openai/gpt-4o"]
""")
    assert [d.key for d in table.resolve("smart")[0].members] == ["anthropic/claude-sonnet-4-6", "openai/gpt-4o"]
    # auto: every model named in config, by default.
    assert {d.key for d in table.resolve("auto")[0].members} == {
        "openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4-6", "backup/gpt-4o", "backup/my-finetune"}
    limited = table_for(tmp_path, PROVIDERS + '[routes.auto]\ntargets = ["openai/*", "anthropic/claude-sonnet-4-6"]\n')
    assert {d.key for d in limited.resolve("auto")[0].members} == {
        "openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4-6"}


# ------------------------------------------------------------------------------------- capabilities


@pytest.mark.parametrize(("body", "reasoning", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, None, "tools"),
    ({"response_format": {"type": "json_object"}}, None, "response_format"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     None, "messages"),
    ({"max_tokens": 9000}, None, "max_tokens"),
    ({}, "high", "min_reasoning_level"),
])
def test_each_capability_filters_and_names_the_param(tmp_path: Path, body: dict[str, object],
                                                      reasoning: str | None, param: str) -> None:
    table = table_for(tmp_path, """
[providers.local]
type = "openai"
base_url = "http://127.0.0.1:1/v1"

[[models]]
name = "small"
provider = "local"
context_window = 8192
capabilities = { tools = false, json = false, vision = false, reasoning = "none" }

[[models]]
name = "big"
provider = "local"
""")
    router = Router(HealthBook(RoutingConfig()))
    full = {"model": "auto", "messages": USER, **body}
    # "big" is unknown to the catalog: treated as capable, so the plan keeps it and drops "small".
    plan = router.plan(table, "auto", needs(full, reasoning), now=0.0)
    assert [d.key for d in plan.deployments] == ["local/big"]
    with pytest.raises(InvalidRequest) as info:
        router.plan(table, "local/small", needs({**full, "model": "local/small"}, reasoning), now=0.0)
    assert info.value.param == param and info.value.code == "capability_unmet"


def test_chosen_capabilities_in_metadata_and_estimate_ignores_image_bytes(tmp_path: Path) -> None:
    image = "data:image/png;base64," + "A" * 400_000
    estimate = needs({"model": "x", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image}}]}]})
    assert estimate.vision and estimate.tokens < 2000


# ------------------------------------------------------------------------------------------ ordering


def group_table(tmp_path: Path, strategy: str, weights: str = "") -> RouteTable:
    return table_for(tmp_path, PROVIDERS + f"""
[routes.g]
targets = ["openai/gpt-4o", "backup/gpt-4o", "anthropic/claude-sonnet-4-6"]
strategy = "{strategy}"
{weights}
""")


def first_choices(router: Router, table: RouteTable, n: int) -> Counter[str]:
    body = needs({"model": "g", "messages": USER})
    return Counter(router.plan(table, "g", body, now=0.0).deployments[0].key for _ in range(n))


def test_fallback_keeps_order_and_skips_open_circuits(tmp_path: Path) -> None:
    table = group_table(tmp_path, "fallback")
    health = HealthBook(RoutingConfig(circuit_failures=2, circuit_cooldown_s=30))
    router = Router(health)
    body = needs({"model": "g", "messages": USER})
    assert [d.key for d in router.plan(table, "g", body, 0.0).deployments] == [
        "openai/gpt-4o", "backup/gpt-4o", "anthropic/claude-sonnet-4-6"]
    for t in (1.0, 2.0):
        health.circuit("openai/gpt-4o").record(t, False)
    assert router.plan(table, "g", body, 3.0).deployments[0].key == "backup/gpt-4o"
    assert "openai/gpt-4o" not in [d.key for d in router.plan(table, "g", body, 3.0).deployments]
    # After the cooldown the open circuit is offered again (as the half-open probe).
    assert router.plan(table, "g", body, 40.0).deployments[0].key == "openai/gpt-4o"
    # All open: tried anyway, in order, rather than refused without asking.
    for key in ("backup/gpt-4o", "anthropic/claude-sonnet-4-6"):
        for t in (41.0, 42.0):
            health.circuit(key).record(t, False)
    health.circuit("openai/gpt-4o").record(43.0, False)
    assert len(router.plan(table, "g", body, 44.0).deployments) == 3


def test_round_robin_spreads_evenly(tmp_path: Path) -> None:
    counts = first_choices(Router(HealthBook(RoutingConfig())), group_table(tmp_path, "round-robin"), 300)
    assert set(counts.values()) == {100}


def test_weighted_follows_weights(tmp_path: Path) -> None:
    router = Router(HealthBook(RoutingConfig()), rng=random.Random(1))
    counts = first_choices(router, group_table(tmp_path, "weighted", "weights = [6, 3, 1]"), 5000)
    assert 0.55 < counts["openai/gpt-4o"] / 5000 < 0.65
    assert 0.25 < counts["backup/gpt-4o"] / 5000 < 0.35
    assert 0.06 < counts["anthropic/claude-sonnet-4-6"] / 5000 < 0.14


def test_lowest_latency_prefers_the_fastest_measured(tmp_path: Path) -> None:
    health = HealthBook(RoutingConfig())
    router = Router(health)
    table = group_table(tmp_path, "lowest-latency")
    for key, latency in (("openai/gpt-4o", 300.0), ("backup/gpt-4o", 80.0), ("anthropic/claude-sonnet-4-6", 150.0)):
        health.circuit(key).record(0.0, True, latency)
    plan = router.plan(table, "g", needs({"model": "g", "messages": USER}), 1.0)
    assert [d.key for d in plan.deployments] == ["backup/gpt-4o", "anthropic/claude-sonnet-4-6", "openai/gpt-4o"]


# -------------------------------------------------------------------------------------------- health


def test_circuit_opens_half_opens_and_closes() -> None:
    circuit = Circuit(RoutingConfig(circuit_failures=3, circuit_cooldown_s=10, circuit_min_requests=0))
    for t in (0.0, 1.0):
        circuit.record(t, False)
    assert circuit.state == "closed"
    circuit.record(2.0, False)
    assert circuit.state == "open" and not circuit.available(5.0)
    assert circuit.available(12.0)
    circuit.acquire(12.0)
    assert circuit.state == "half_open" and not circuit.available(12.5)  # one probe at a time
    circuit.record(13.0, False)
    assert circuit.state == "open" and not circuit.available(20.0)
    circuit.acquire(23.5)
    circuit.record(24.0, True, latency_ms=50.0)
    assert circuit.state == "closed" and circuit.available(24.0)
    assert circuit.latency_ewma_ms == 50.0


def test_circuit_opens_on_error_rate_over_the_window() -> None:
    circuit = Circuit(RoutingConfig(circuit_failures=0, circuit_error_rate=0.5, circuit_window_s=60,
                                    circuit_min_requests=10))
    for i in range(10):
        circuit.record(float(i), i % 2 == 0)  # 50%: not over the threshold
    assert circuit.state == "closed"
    circuit.record(10.0, False)
    assert circuit.state == "open"
    fresh = Circuit(RoutingConfig(circuit_failures=0, circuit_window_s=5, circuit_min_requests=4))
    for t in (0.0, 1.0, 2.0):
        fresh.record(t, False)
    for t in (100.0, 101.0, 102.0):  # the old failures have left the window
        fresh.record(t, True)
    fresh.record(103.0, False)
    assert fresh.state == "closed" and fresh.error_rate(103.0) == 0.25


def test_latency_ewma() -> None:
    circuit = Circuit(RoutingConfig())
    for latency in (100.0, 200.0, 200.0):
        circuit.record(0.0, True, latency)
    assert circuit.latency_ewma_ms == pytest.approx(100 + 0.3 * 100 + 0.3 * (200 - 130))


def test_backoff_bounds_and_retry_after() -> None:
    cfg = RoutingConfig(backoff_initial_ms=200, backoff_max_ms=1000, retry_after_max_s=5)
    rng = random.Random(3)
    for attempt, (low, high) in enumerate([(0.1, 0.2), (0.2, 0.4), (0.4, 0.8), (0.5, 1.0), (0.5, 1.0)]):
        delays = [backoff_delay(attempt, None, cfg, rng) for _ in range(200)]
        assert all(d is not None and low <= d <= high for d in delays), attempt
    assert backoff_delay(0, 3.0, cfg, rng) == 3.0
    assert backoff_delay(0, 6.0, cfg, rng) is None  # beyond the cap: fall back instead of waiting


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Sun, 22 Nov 2026 10:00:30 GMT"}, now=1795341600.0) == 30.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


# ------------------------------------------------------------------------------ pipeline, end to end


async def test_fallback_in_order_with_metadata_and_headers(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=err(500), b=OK)
    async with gateway_for(fake, tmp_path, routing="retries = 0") as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(model="pair", messages=USER)
    body = raw.parse()
    assert paths(fake) == ["a", "b"]
    assert raw.headers["x-gateway-provider"] == "b" and raw.headers["x-gateway-attempts"] == "2"
    assert body.model == "b/m"
    meta = raw.http_response.json()["metadata"]
    assert meta["requested_model"] == "pair" and meta["requested_provider"] is None
    assert (meta["used_provider"], meta["used_model"]) == ("b", "m")
    assert [(r["provider"], r["status_code"], r["succeeded"]) for r in meta["routing"]] == [
        ("a", 500, False), ("b", 200, True)]
    assert meta["routing"][0]["error_type"] == "server_error"
    assert all(r["latency_ms"] >= 0 for r in meta["routing"])
    assert meta["capabilities"]["tools"] is True


async def test_retries_honour_retry_after_then_succeed(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(err(429, {"retry-after": "2"}), err(503), OK)
    async with gateway_for(fake, tmp_path, routing="retries = 2") as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(model="a/m", messages=USER)
    assert paths(fake) == ["a", "a", "a"]
    assert raw.headers["x-gateway-attempts"] == "3"
    assert gw.sleeps[0] == 2.0  # retry-after honoured
    assert 0.2 <= gw.sleeps[1] <= 0.4  # second retry: backoff 400 ms ceiling, equal jitter


async def test_retry_after_beyond_cap_falls_back_at_once(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=err(429, {"retry-after": "3600"}), b=OK)
    async with gateway_for(fake, tmp_path, routing="retries = 3") as gw:
        await gw.client.chat.completions.create(model="pair", messages=USER)
    assert paths(fake) == ["a", "b"] and gw.sleeps == []


async def test_client_errors_are_neither_retried_nor_fallen_back(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=err(400), b=OK)
    async with gateway_for(fake, tmp_path, routing="retries = 3") as gw:
        with pytest.raises(openai.BadRequestError) as info:
            await gw.client.chat.completions.create(model="pair", messages=USER)
    assert paths(fake) == ["a"]
    body = info.value.response.json()
    assert body["metadata"]["routing"][0]["status_code"] == 400
    assert info.value.response.headers["x-gateway-attempts"] == "1"


async def test_connect_errors_and_timeouts_retry_then_fall_back(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=Reply(delay=2.0, body=b"{}"), b=OK)
    async with gateway_for(fake, tmp_path, routing="retries = 1") as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(model="trio", messages=USER)
    meta = raw.http_response.json()["metadata"]
    assert [(r["provider"], r["status_code"], r["error_type"]) for r in meta["routing"]] == [
        ("dead", None, "upstream_error"), ("dead", None, "upstream_error"),
        ("a", None, "timeout_error"), ("a", None, "timeout_error"), ("b", 200, None)]
    assert len(gw.sleeps) == 2


async def test_total_failure_carries_the_trail(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=err(502), b=err(503))
    async with gateway_for(fake, tmp_path, routing="retries = 0") as gw:
        response = await gw.http.post("/v1/chat/completions", json={"model": "trio", "messages": USER},
                                      headers={"authorization": f"Bearer {gw.client.api_key}"})
    assert response.status_code == 503
    assert response.headers["x-gateway-attempts"] == "3"
    body = response.json()
    assert body["error"]["message"] == "[b] boom 503"
    assert [r["provider"] for r in body["metadata"]["routing"]] == ["dead", "a", "b"]
    assert body["metadata"]["used_provider"] is None


async def test_circuit_skips_a_failing_target(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=err(500), b=OK)
    async with gateway_for(fake, tmp_path, routing="retries = 0\ncircuit_failures = 2") as gw:
        for _ in range(5):
            await gw.client.chat.completions.create(model="pair", messages=USER)
    assert paths(fake) == ["a", "b", "a", "b", "b", "b", "b"]


async def test_provider_key_rejected_marks_it_unhealthy(fake: FakeUpstream, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    fake.default = by_provider(a=err(401), b=OK)
    async with gateway_for(fake, tmp_path, routing="retries = 2") as gw:
        for _ in range(4):
            await gw.client.chat.completions.create(model="pair", messages=USER)
    # Not retried; skipped once three requests saw the key refused (one request never marks it down).
    assert paths(fake) == ["a", "b", "a", "b", "a", "b", "b"]
    assert "provider 'a' rejected the gateway's key" in caplog.text


async def test_auto_spreads_over_healthy_targets(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=OK, b=OK)
    async with gateway_for(fake, tmp_path, extra='[routes.auto]\ntargets = ["a/m", "b/m"]\n') as gw:
        for _ in range(6):
            await gw.client.chat.completions.create(model="auto", messages=USER)
        response = await gw.http.post("/v1/chat/completions", json={"messages": USER},
                                      headers={"authorization": f"Bearer {gw.client.api_key}"})
    assert response.status_code == 200 and response.json()["metadata"]["requested_model"] == "auto"
    assert Counter(paths(fake)) == {"a": 4, "b": 3} or Counter(paths(fake)) == {"a": 3, "b": 4}


async def test_gateway_fields_are_not_forwarded_and_reasoning_header(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(OK)
    async with gateway_for(fake, tmp_path) as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(
            model="a/m", messages=USER, reasoning_effort="low",
            extra_body={"project_id": "p1", "min_reasoning_level": "low"})
    sent = fake.last.json()
    assert "project_id" not in sent and "min_reasoning_level" not in sent
    assert sent["reasoning_effort"] == "low"
    assert raw.headers["x-gateway-reasoning-effort"] == "low"


async def test_project_can_be_required(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=OK)
    async with gateway_for(fake, tmp_path, routing="require_project = true") as gw:
        with pytest.raises(openai.BadRequestError) as info:
            await gw.client.chat.completions.create(model="a/m", messages=USER)
        assert info.value.body["param"] == "project_id"  # type: ignore[index]
        await gw.client.chat.completions.create(model="a/m", messages=USER,
                                                extra_headers={"x-gateway-project-id": "p1"})


async def test_streaming_metadata_on_the_final_chunk(fake: FakeUpstream, tmp_path: Path) -> None:
    from tests.fakes import fixture_bytes, sse_reply

    fake.reply(err(500), sse_reply(fixture_bytes("openai/openai-python-stream-text.sse")))
    async with gateway_for(fake, tmp_path, routing="retries = 1") as gw:
        stream = await gw.client.chat.completions.create(model="a/m", messages=USER, stream=True,
                                                         stream_options={"include_usage": True})
        chunks = [c async for c in stream]
    finish = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    for chunk in (finish, chunks[-1]):
        meta = chunk.metadata  # typed Dict[str, str] by the SDK (stored-completion metadata): read as-is
        assert [r["status_code"] for r in meta["routing"]] == [500, 200]  # type: ignore[index]
    assert "metadata" not in (chunks[1].model_extra or {})
