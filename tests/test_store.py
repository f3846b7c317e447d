"""The store's one connection is shared by the usage writer, the key-touch flush, the CLI-facing key
operations and the admin sessions: every transaction on it must be serialized."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.keys import create_key
from gateway.store import RequestRecord, SqliteStore
from tests.fakes import FakeUpstream
from tests.inprocess import gateway_for


def _record(i: int, key_id: str) -> RequestRecord:
    return RequestRecord(ts=time.time(), request_id=f"r{i}", key_id=key_id, key_name="k", project=None,
                         mode="unified", stream=False, requested_model="a/m", provider="a", model="m", attempts=1,
                         status=200, error_type=None, prompt_tokens=3, completion_tokens=4, cost_total=0.001)


async def test_key_touch_and_usage_writer_run_concurrently_without_losing_anything(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    try:
        _, row = await create_key(store, "k")
        rounds = 200
        for i in range(rounds):
            # The usage writer's batch, the key ring's last-used flush and an admin login at the same moment:
            # before the lock the second BEGIN failed with "cannot start a transaction within a transaction".
            await asyncio.gather(
                store.write_requests([_record(i, row.id), _record(i, row.id)]),
                store.touch_keys({row.id: 1000.0 + i}),
                store.create_admin_session(f"s{i}", time.time(), time.time() + 60),
                store.revoke_key("nobody"),
            )
        assert await store.count_requests() == 2 * rounds
        (found,) = [k for k in await store.list_keys() if k.id == row.id]
        assert found.last_used_at == 1000.0 + rounds - 1
        (total,) = await store.aggregate("key")
        assert total.requests == 2 * rounds
    finally:
        await store.close()


async def test_a_failed_transaction_rolls_back_and_frees_the_connection(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    try:
        _, row = await create_key(store, "k")
        bad = _record(0, row.id)
        bad.status = None  # type: ignore[assignment]  # NOT NULL: the insert fails
        results = await asyncio.gather(store.write_requests([bad]), store.touch_keys({row.id: 5.0}),
                                       return_exceptions=True)
        assert results[1] is None
        await store.write_requests([_record(1, row.id)])
        await store.touch_keys({row.id: 6.0})
        assert await store.count_requests() == 1
        assert (await store.find_key(row.id)).last_used_at == 6.0  # type: ignore[union-attr]
    finally:
        await store.close()


# --------------------------------------------------------------------- requests refused for their key


async def test_unauthenticated_attempts_are_counted_without_filling_the_disk(fake: FakeUpstream,
                                                                            tmp_path: Path) -> None:
    """The README says every request leaves a record; one refused for a missing or wrong key (401) is counted,
    per hour, route and reason, in one row however many a stranger sends and whatever paths they make up."""
    async with gateway_for(fake, tmp_path) as gw:
        routes = ["/v1/chat/completions", "/v1/models", "/v1/usage", "/v1/messages", "/admin/api/usage"]
        routes += [f"/native/a/v1/{'x' * i}" for i in range(40)] + [f"/openai/v1/{i}" for i in range(40)]
        sent = 0
        for i, path in enumerate(routes * 4):
            headers = {} if i % 2 else {"authorization": f"Bearer sk-proxy-guess-{i}"}
            method = "GET" if path in ("/v1/models", "/v1/usage", "/admin/api/usage") else "POST"
            reply = await gw.http.request(method, path, headers=headers, json={"model": "a/m"})
            assert reply.status_code == 401, (path, reply.text)
            sent += 1
        ok = await gw.http.get("/v1/models", headers={"authorization": f"Bearer {gw.key}"})
        assert ok.status_code == 200
        await gw.state.flush_behind()
        rows = await gw.store.auth_refusals(since_hour=0)
        assert sum(count for *_, count in rows) == sent
        # One row per (hour, route family, reason): bounded, whatever the paths.
        assert len(rows) <= 2 * 2 * 9, rows
        assert {(route, reason) for _, route, reason, _ in rows} >= {
            ("/v1/chat/completions", "no key"), ("/v1/chat/completions", "wrong key"),
            ("/native", "no key"), ("/openai", "wrong key"), ("/admin/api", "no key")}
        assert await gw.store.count_requests() == 0  # never a row per request
        # Pruned with the request records.
        await gw.store.prune_requests(time.time() + 7200)
        assert await gw.store.auth_refusals(since_hour=0) == []
