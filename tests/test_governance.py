"""Keys, rate limits, budgets, usage and cost: pure parts with an injected clock, then the real app."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path

import httpx
import openai
import pytest

from gateway.catalog import load_builtin
from gateway.config import load_config_file
from gateway.errors import BudgetExceeded, KeyExpired
from gateway.governance import Governor, Principal
from gateway.limits import Budget, TokenBucket, format_reset, period_end, period_start
from gateway.store import RequestRecord, SqliteStore
from gateway.usage import cost, with_cost
from gateway.wire.openai import CompletionTokensDetails, PromptTokensDetails, Usage
from tests.fakes import FakeUpstream, Reply, fixture_bytes, json_reply, sse_reply
from tests.inprocess import OK, Harness, by_provider, gateway_for

USER = [{"role": "user", "content": "Hello"}]
CATALOG = {(e.provider, e.name): e for e in load_builtin().models}


def ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


# ------------------------------------------------------------------------------------------- windows


def test_token_bucket_window_edges() -> None:
    bucket = TokenBucket(60, now=0.0)  # 60 a minute: one a second
    for _ in range(60):
        assert bucket.try_take(1, 0.0) == 0.0
    assert bucket.try_take(1, 0.0) == pytest.approx(1.0)  # empty: the next one in a second
    assert bucket.try_take(1, 0.5) == pytest.approx(0.5)
    assert bucket.try_take(1, 1.0) == 0.0
    assert bucket.remaining(1.0) == 0 and bucket.reset_seconds(1.0) == pytest.approx(60.0)
    assert bucket.remaining(31.0) == 30
    assert bucket.remaining(1000.0) == 60  # never more than a minute's worth
    assert bucket.try_take(61, 1000.0) == float("inf")  # can never fit
    bucket.adjust(-100, 1000.0)  # settled above the estimate: below zero, paid back over time
    assert bucket.try_take(1, 1000.0) == pytest.approx(41.0)


def test_format_reset() -> None:
    assert (format_reset(0.02), format_reset(1.5), format_reset(360)) == ("20ms", "1.5s", "6m0s")


@pytest.mark.parametrize(("period", "now", "start", "end"), [
    ("day", "2026-11-22T23:59:59", "2026-11-22T00:00:00", "2026-11-23T00:00:00"),
    ("week", "2026-11-22T10:00:00", "2026-11-16T00:00:00", "2026-11-23T00:00:00"),  # ISO weeks start Monday
    ("month", "2026-12-31T12:00:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
])
def test_period_boundaries_are_utc(period: str, now: str, start: str, end: str) -> None:
    assert period_start(period, ts(now)).timestamp() == ts(start)
    assert period_end(period, ts(now)) == ts(end)
    assert period_end("total", ts(now)) is None


def test_budget_reserves_settles_and_resets_on_the_boundary() -> None:
    now = ts("2026-11-22T23:00:00")
    budget = Budget(1.0, "day", spent=0.7, now=now)
    assert budget.try_reserve(0.2, now)
    assert not budget.try_reserve(0.2, now)  # 0.7 spent + 0.2 reserved + 0.2 > 1.0
    budget.settle(0.2, 0.05, now)
    assert budget.spent == pytest.approx(0.75) and budget.reserved == 0.0
    assert budget.remaining(now) == pytest.approx(0.25)
    assert budget.remaining(ts("2026-11-23T00:00:01")) == 1.0  # a new day, a new budget
    total = Budget(1.0, "total", spent=0.9, now=now)
    assert total.remaining(ts("2030-01-01T00:00:00")) == pytest.approx(0.1)


def governor(tmp_path: Path, extra: str = "") -> Governor:
    path = tmp_path / "config.toml"
    path.write_text(extra)
    clock = [ts("2026-11-22T12:00:00")]
    gov = Governor(load_config_file(path), clock=lambda: clock[0])
    gov.now = clock  # type: ignore[attr-defined]
    return gov


def test_rate_limits_refuse_with_headers_and_give_back(tmp_path: Path) -> None:
    gov = governor(tmp_path)
    key = Principal(key_id="k", name="k", rpm=2, tpm=1000)
    gov.configure_key(key)
    gov.admit(key, None, 100, None)
    admission = gov.admit(key, None, 100, None)
    assert admission.headers["x-ratelimit-limit-requests"] == "2"
    assert admission.headers["x-ratelimit-remaining-requests"] == "0"
    assert admission.headers["x-ratelimit-remaining-tokens"] == "800"
    with pytest.raises(Exception) as info:
        gov.admit(key, None, 100, None)
    assert info.value.status_code == 429 and info.value.headers["retry-after"] == "30"  # type: ignore[attr-defined]
    # The refused request took nothing: its tokens are still there.
    assert gov.headers(key, gov.clock())["x-ratelimit-remaining-tokens"] == "800"
    admission.settle(tokens=20, cost_usd=None)  # used 20 of the 100 estimated: 80 come back
    assert gov.headers(key, gov.clock())["x-ratelimit-remaining-tokens"] == "880"
    big = Principal(key_id="big", name="big", tpm=1000)
    gov.configure_key(big)
    with pytest.raises(Exception, match="Request too large: about 5000 tokens"):
        gov.admit(big, None, 5000, None)


def test_budget_refusal_is_insufficient_quota_with_remaining(tmp_path: Path) -> None:
    gov = governor(tmp_path, '[projects.p]\nbudget_usd = 1.0\n')
    key = Principal(key_id="k", name="k", budget_usd=0.10, project="p")
    gov.configure_key(key)
    first = gov.admit(key, "p", 10, 0.06)
    with pytest.raises(BudgetExceeded) as info:
        gov.admit(key, "p", 10, 0.06)
    assert info.value.status_code == 429 and info.value.error_type == "insufficient_quota"
    assert info.value.code == "budget_exceeded" and "$0.04 of $0.10 remains" in info.value.message
    assert gov.project_budget("p").reserved == pytest.approx(0.06)  # type: ignore[union-attr]
    first.settle(tokens=10, cost_usd=0.01)
    first.settle(tokens=10, cost_usd=0.01)  # settling twice changes nothing
    assert gov.budget_of("k").spent == pytest.approx(0.01)  # type: ignore[union-attr]
    assert gov.project_budget("p").spent == pytest.approx(0.01)  # type: ignore[union-attr]
    with pytest.raises(Exception, match="no known price"):
        gov.admit(key, "p", 10, None)


def test_expired_key_and_allow_list() -> None:
    key = Principal(key_id="k", name="k", models=("openai/*", "smart"), expires_at=ts("2026-12-01T00:00:00"))
    key.check_expiry(ts("2026-11-30T23:59:59"))
    with pytest.raises(KeyExpired, match="expired on 2026-12-01"):
        key.check_expiry(ts("2026-12-01T00:00:00"))
    assert key.allows("openai/gpt-4o") and key.allows("smart")
    assert not key.allows("anthropic/claude-sonnet-4-6") and not key.allows("smarter")


# ----------------------------------------------------------------------------------------------- cost


def test_cost_of_each_providers_usage_shape() -> None:
    gpt = CATALOG[("openai", "gpt-4o")].pricing
    openai_usage = Usage(prompt_tokens=1000, completion_tokens=200, total_tokens=1200,
                         prompt_tokens_details=PromptTokensDetails(cached_tokens=400))
    c = cost(openai_usage, gpt)
    assert c is not None
    assert c.input == pytest.approx(600 * gpt.input / 1e6)  # type: ignore[operator]
    assert c.cached_input == pytest.approx(400 * gpt.cached_input / 1e6)  # type: ignore[operator]
    assert c.output == pytest.approx(200 * gpt.output / 1e6)  # type: ignore[operator]
    claude = CATALOG[("anthropic", "claude-sonnet-4-6")].pricing
    # Anthropic, translated: prompt = input 100 + cache read 2000 + cache write 500.
    anthropic_usage = Usage(prompt_tokens=2600, completion_tokens=50, total_tokens=2650,
                            prompt_tokens_details=PromptTokensDetails(cached_tokens=2000, cache_write_tokens=500))
    c = cost(anthropic_usage, claude)
    assert c is not None
    assert c.input == pytest.approx(100 * 3.0 / 1e6)
    assert c.cached_input == pytest.approx(2000 * 0.30 / 1e6)
    assert c.cache_write == pytest.approx(500 * 3.75 / 1e6)
    assert c.output == pytest.approx(50 * 15.0 / 1e6)
    gemini = CATALOG[("google", "gemini-2.5-flash")].pricing
    # Gemini, translated: completion includes 167 thinking tokens, billed as output.
    gemini_usage = Usage(prompt_tokens=258, completion_tokens=371, total_tokens=629,
                         prompt_tokens_details=PromptTokensDetails(cached_tokens=204),
                         completion_tokens_details=CompletionTokensDetails(reasoning_tokens=167))
    c = cost(gemini_usage, gemini)
    assert c is not None
    assert c.output == pytest.approx(371 * gemini.output / 1e6)  # type: ignore[operator]
    assert c.total == pytest.approx(c.input + c.cached_input + c.output)
    assert cost(openai_usage, None) is None
    unknown = with_cost(openai_usage, None)
    assert unknown.cost_usd_total is None and unknown.cost_usd_output is None


# ------------------------------------------------------------------------------------ end to end

PRICED = """
[[models]]
name = "m"
provider = "a"
pricing = { input = 1000.0, output = 2000.0 }   # USD per 1M tokens: $0.001 and $0.002 a token
"""


async def rows(gw: Harness, count: int) -> list[RequestRecord]:
    for _ in range(100):
        if gw.state.usage.written >= count:
            break
        await asyncio.sleep(0.05)
    async with gw.store._conn.execute("SELECT request_id, status, prompt_tokens, completion_tokens, cost_total, "
                                      "mode, stream, error_type, key_name FROM requests ORDER BY id") as cur:
        found = await cur.fetchall()
    return [RequestRecord(ts=0, request_id=r[0], status=r[1], prompt_tokens=r[2], completion_tokens=r[3],
                          cost_total=r[4], mode=r[5], stream=bool(r[6]), error_type=r[7], key_id="", key_name=r[8],
                          project=None, requested_model=None, provider=None, model=None, attempts=0) for r in found]


def completion_with(prompt: int, completion: int) -> Reply:
    return json_reply({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion}})


async def test_usage_carries_cost_and_lands_in_the_store(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = lambda received: completion_with(10, 5)
    async with gateway_for(fake, tmp_path, extra=PRICED) as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(model="a/m", messages=USER)
        body = raw.http_response.json()
        unpriced = (await gw.client.chat.completions.with_raw_response.create(model="b/m", messages=USER))
        found = await rows(gw, 2)
    assert body["usage"]["cost_usd_total"] == pytest.approx(0.02)  # 10 × $0.001 + 5 × $0.002
    assert body["usage"]["cost_usd_input"] == pytest.approx(0.01)
    assert body["usage"]["cost_usd_output"] == pytest.approx(0.01)
    assert body["usage"]["cost_usd_cached_input"] == 0.0
    assert unpriced.http_response.json()["usage"]["cost_usd_total"] is None
    assert [(r.status, r.prompt_tokens, r.completion_tokens, r.mode) for r in found] == [
        (200, 10, 5, "unified"), (200, 10, 5, "unified")]
    assert found[0].cost_total == pytest.approx(0.02) and found[1].cost_total is None


async def test_concurrent_requests_cannot_overspend(fake: FakeUpstream, tmp_path: Path) -> None:
    """50 requests at once against a budget with room for about 12: none may push spend past it."""
    # The provider reports fewer prompt tokens than the gateway's estimate (~20 for this body) and at most
    # max_tokens of output, as a real provider does: each settles at or below its reservation.
    fake.default = lambda received: Reply(delay=0.05, body=completion_with(10, 50).body)
    async with gateway_for(fake, tmp_path, extra=PRICED) as gw:
        # Worst case per request: ~20 × $0.001 + max_tokens 50 × $0.002 ≈ $0.12; real cost $0.11.
        client = await gw.new_key("tight", budget_usd=1.5)
        results = await asyncio.gather(*(client.chat.completions.create(
            model="a/m", messages=USER, max_tokens=50) for _ in range(50)), return_exceptions=True)
        ok = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(ok) + len(refused) == 50
        assert refused and all(r.code == "budget_exceeded" for r in refused)  # type: ignore[union-attr]
        budget = gw.state.governor.budget_of(next(p.key_id for p in gw.state.keys.principals if p.name == "tight"))
        assert budget is not None
        spent = sum(r.usage.cost_usd_total for r in ok)  # type: ignore[union-attr,misc]
        assert spent <= 1.5
        assert budget.spent == pytest.approx(spent) and budget.reserved == 0.0
        assert len(ok) >= 5  # the refusals are not gratuitous: the budget was used


async def test_stream_settles_from_the_provider_usage_the_client_did_not_ask_for(fake: FakeUpstream,
                                                                                 tmp_path: Path) -> None:
    fake.reply(sse_reply(fixture_bytes("openai/openai-python-stream-text.sse")))
    async with gateway_for(fake, tmp_path, extra=PRICED) as gw:
        stream = await gw.client.chat.completions.create(model="a/m", messages=USER, stream=True)
        chunks = [c async for c in stream]
        found = await rows(gw, 1)
    assert fake.last.json()["stream_options"] == {"include_usage": True}  # asked on the key's behalf
    assert all(c.choices for c in chunks)  # ...and the usage chunk kept from the client that did not ask
    assert (found[0].prompt_tokens, found[0].completion_tokens) == (14, 30)  # the recording's usage
    assert found[0].cost_total == pytest.approx(14 * 0.001 + 30 * 0.002)
    assert found[0].stream


async def test_stream_with_include_usage_has_cost_in_the_last_chunk(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(sse_reply(fixture_bytes("openai/openai-python-stream-text.sse")))
    async with gateway_for(fake, tmp_path, extra=PRICED) as gw:
        stream = await gw.client.chat.completions.create(model="a/m", messages=USER, stream=True,
                                                         stream_options={"include_usage": True})
        last = [c async for c in stream][-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_extra["cost_usd_total"] == pytest.approx(0.074)  # type: ignore[index]


async def test_client_disconnect_settles_what_was_streamed(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply(sse_reply(fixture_bytes("openai/openai-python-stream-text.sse"), chunk_delay=0.05))
    async with gateway_for(fake, tmp_path, extra=PRICED) as gw:
        client = await gw.new_key("budgeted", budget_usd=10.0)
        stream = await client.chat.completions.create(model="a/m", messages=USER, stream=True, max_tokens=1000)
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.close()
        found = await rows(gw, 1)
        budget = gw.state.governor.budget_of(next(p.key_id for p in gw.state.keys.principals if p.name == "budgeted"))
        assert budget is not None and budget.reserved == 0.0  # the worst case was released...
        assert budget.spent == pytest.approx(found[0].cost_total)  # ...and what was streamed charged
    assert found[0].completion_tokens >= 3 and found[0].prompt_tokens > 0
    assert found[0].cost_total is not None and found[0].cost_total > 0


async def test_sdk_sees_403_429_and_401_envelopes_with_rate_headers(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=OK, b=OK)
    async with gateway_for(fake, tmp_path, extra=PRICED) as gw:
        limited = await gw.new_key("limited", rpm=2, tpm=100000, models=["a/*"])
        raw = await limited.chat.completions.with_raw_response.create(model="a/m", messages=USER)
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
        assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
        assert raw.headers["x-ratelimit-reset-requests"].endswith(("ms", "s"))
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await limited.chat.completions.create(model="b/m", messages=USER)
        assert denied.value.body["type"] == "permission_error"  # type: ignore[index]
        await limited.chat.completions.create(model="a/m", messages=USER)
        with pytest.raises(openai.RateLimitError) as info:
            await limited.chat.completions.create(model="a/m", messages=USER)
        assert info.value.response.headers["retry-after"] == "30"
        assert info.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
        expired = await gw.new_key("old", expires_at=ts("2020-01-01T00:00:00"))
        with pytest.raises(openai.AuthenticationError, match="expired on 2020-01-01"):
            await expired.chat.completions.create(model="a/m", messages=USER)
        found = await rows(gw, 4)
    # Refusals are recorded too (the admin counts them as errors).
    assert [r.status for r in found if r.key_name == "limited"] == [200, 403, 200, 429]


async def test_v1_usage_and_admin_aggregates(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = lambda received: completion_with(10, 5)
    admin = 'token = "admin-token-0123456789"'
    async with gateway_for(fake, tmp_path, extra=PRICED + f"\n[admin]\n{admin}\n") as gw:
        client = await gw.new_key("reporter", budget_usd=5.0, rpm=100)
        for _ in range(3):  # max_tokens keeps the worst case ($0.002 a token) inside the $5 budget
            await client.chat.completions.create(model="a/m", messages=USER, max_tokens=100)
        response = await client.get("/usage", cast_to=httpx.Response)
        mine = response.json()
        assert mine["key"] == "reporter" and mine["budget_usd"] == 5.0
        assert mine["spent_usd"] == pytest.approx(0.06) and mine["remaining_usd"] == pytest.approx(4.94)
        assert mine["rpm"] == 100 and mine["period"] == "month"
        await rows(gw, 3)
        headers = {"authorization": "Bearer admin-token-0123456789"}
        by_key = (await gw.http.get("/admin/api/usage?by=key", headers=headers)).json()
        assert by_key["data"][0]["group"] == "reporter" and by_key["data"][0]["requests"] == 3
        assert by_key["data"][0]["cost_usd"] == pytest.approx(0.06)
        by_model = (await gw.http.get("/admin/api/usage?by=model", headers=headers)).json()
        assert [r["group"] for r in by_model["data"]] == ["a/m"]
        csv_text = (await gw.http.get("/admin/api/usage?by=day&format=csv", headers=headers)).text
        assert csv_text.splitlines()[0].startswith("day,requests,errors")
        assert (await gw.http.get("/admin/api/usage", headers={"authorization": f"Bearer {gw.key}"})).status_code == 401
        bad = await gw.http.get("/admin/api/usage?since=yesterday", headers=headers)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"


async def test_config_declared_keys_work_with_their_limits(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=OK)
    extra = PRICED + '\n[[keys]]\nname = "ci"\nkey = "sk-proxy-from-config-0123456789"\nrpm = 1\nproject = "ci"\n'
    async with gateway_for(fake, tmp_path, extra=extra) as gw:
        client = openai.AsyncOpenAI(base_url="http://gateway/v1", api_key="sk-proxy-from-config-0123456789",
                                    http_client=gw.http, max_retries=0)
        await client.chat.completions.create(model="a/m", messages=USER)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="a/m", messages=USER)
        with pytest.raises(openai.PermissionDeniedError, match="belongs to project 'ci'"):
            await client.chat.completions.create(model="a/m", messages=USER, extra_body={"project_id": "other"})


async def test_retention_prunes_records_but_keeps_aggregates(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    base = dict(request_id="r", key_id="k", key_name="k", project=None, mode="unified", stream=False,
                requested_model="a/m", provider="a", model="m", attempts=1, status=200, error_type=None,
                prompt_tokens=10, completion_tokens=5, cost_total=0.5)
    await store.write_requests([RequestRecord(ts=ts("2026-01-01T00:00:00"), **base),  # type: ignore[arg-type]
                                RequestRecord(ts=ts("2026-11-22T00:00:00"), **base)])  # type: ignore[arg-type]
    assert await store.prune_requests(ts("2026-06-01T00:00:00")) == 1
    assert await store.count_requests() == 1
    days = await store.aggregate("day")
    assert [(d.group, d.requests, d.cost_usd) for d in days] == [("2026-01-01", 1, 0.5), ("2026-11-22", 1, 0.5)]
    await store.close()


def test_request_records_are_json_friendly() -> None:
    record = RequestRecord(ts=1.0, request_id="r", key_id="k", key_name="k", project=None, mode="unified",
                           stream=True, requested_model=None, provider=None, model=None, attempts=0, status=401,
                           error_type="authentication_error")
    assert json.loads(json.dumps({"status": record.status}))["status"] == 401


async def test_a_provider_over_its_limit_is_skipped_for_the_next_target(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=OK, b=OK)
    async with gateway_for(fake, tmp_path, extra="[limits.providers.a]\nrpm = 1\n") as gw:
        first = await gw.client.chat.completions.with_raw_response.create(model="pair", messages=USER)
        second = await gw.client.chat.completions.with_raw_response.create(model="pair", messages=USER)
        with pytest.raises(openai.RateLimitError, match="rate limit for provider 'a'"):
            await gw.client.chat.completions.create(model="a/m", messages=USER)
    assert first.headers["x-gateway-provider"] == "a" and second.headers["x-gateway-provider"] == "b"
    trail = second.http_response.json()["metadata"]["routing"]
    assert [(r["provider"], r["status_code"]) for r in trail] == [("a", 429), ("b", 200)]
