"""The store on PostgreSQL: the same contract as SQLite (every store test below runs on both engines), the
migration of an existing install (`gateway migrate-store`), no usage row lost when PostgreSQL restarts under
load, and replicas sharing one database showing the same numbers. PostgreSQL is a real server (tests/engines.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
import pytest

from gateway.keys import create_key
from gateway.store import TABLES, DuplicateName, KeyLimits, RequestRecord, SqliteStore, Store
from tests import engines
from tests.conftest import gateway_config, gateway_env, run_cli, wait_ready
from tests.engines import Postgres
from tests.fakes import FakeUpstream, free_port

postgres, postgres_url = engines.postgres, engines.postgres_url  # the fixtures, for this module's tests

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
DAY = 86_400.0
Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a store (a new connection each call) on one engine's empty database."""
    if request.param == "sqlite":
        return lambda: SqliteStore.open(tmp_path)
    from gateway.store_postgres import PostgresStore

    url = request.getfixturevalue("postgres_url")
    return lambda: PostgresStore.open(url)


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[Store]:
    opened = await opener()
    yield opened
    await opened.close()


def record(i: int, *, ts: float, key: str = "k1", project: str | None = None, model: str = "m", status: int = 200,
           cost: float | None = 0.25, stream: bool = False) -> RequestRecord:
    return RequestRecord(ts=ts, request_id=f"r{i}", key_id=key, key_name=f"name-{key}", project=project,
                         mode="unified", stream=stream, requested_model=f"a/{model}", provider="a", model=model,
                         attempts=1, status=status, error_type="upstream_error" if status >= 400 else None,
                         prompt_tokens=10 + i, completion_tokens=5, cached_tokens=2, reasoning_tokens=1,
                         cost_total=cost, latency_ms=100.0 + i, routing='[{"target": "a/m"}]',
                         request_body='{"q": 1}' if i == 0 else None, estimated=i == 1)


# A fixed instant well inside a UTC day and hour, so the day and hour buckets below are known.
T0 = 1_700_000_000.0 - (1_700_000_000.0 % DAY) + 3 * 3600 + 60
BATCH = [
    record(0, ts=T0), record(1, ts=T0 + 1, stream=True), record(2, ts=T0 + 2, key="k2", project="p"),
    record(3, ts=T0 + 3, status=502, cost=None), record(4, ts=T0 + 4, cost=None, model="other"),
    record(5, ts=T0 + DAY, key="k2", project="p"), record(6, ts=T0 + DAY + 3600),
]


# ------------------------------------------------------------------------------------ the store contract


async def test_keys_are_created_found_updated_touched_and_revoked(store: Store, opener: Opener) -> None:
    secret, row = await create_key(store, "alpha")
    assert secret.startswith("sk-proxy-") and row.hash not in secret
    await store.create_key(id="k_b", name="beta", prefix="sk-proxy-b", hash="h-b",
                           limits=KeyLimits(budget_usd=2.5, budget_period="day", rpm=7, tpm=900, models=["a/*"],
                                            expires_at=T0, project="p"))
    with pytest.raises(DuplicateName):
        await store.create_key(id="k_c", name="beta", prefix="x", hash="h-c", limits=KeyLimits())
    assert [k.name for k in await store.list_keys()] == ["alpha", "beta"]
    beta = await store.find_key("beta")
    assert beta is not None and beta == await store.find_key("k_b")
    assert (beta.budget_usd, beta.budget_period, beta.rpm, beta.tpm, beta.models, beta.expires_at, beta.project) \
        == (2.5, "day", 7, 900, ["a/*"], T0, "p")
    assert await store.find_key("nobody") is None

    # Another connection (the CLI, another replica) sees a change by its data version.
    other = await opener()
    try:
        before = await other.data_version()
        limits = KeyLimits(budget_usd=9.0, models=["b/*", "c"])
        await store.update_key("k_b", limits)
        assert await other.data_version() != before
        assert await other.find_key("beta") == msgspec.structs.replace(beta, **msgspec.structs.asdict(limits))
    finally:
        await other.close()

    await store.touch_keys({"k_b": 50.0})
    await store.touch_keys({"k_b": 40.0})  # an older time never moves last_used_at back
    await store.revoke_key("k_b")
    first = (await store.find_key("k_b")).revoked_at  # type: ignore[union-attr]
    await store.revoke_key("k_b")
    found = await store.find_key("k_b")
    assert found is not None and found.last_used_at == 50.0 and found.revoked_at == first is not None


async def test_usage_records_and_their_aggregates(store: Store) -> None:
    await store.write_requests(BATCH[:4])
    await store.write_requests(BATCH[4:])
    day0, day1 = time.strftime("%Y-%m-%d", time.gmtime(T0)), time.strftime("%Y-%m-%d", time.gmtime(T0 + DAY))
    assert await store.count_requests() == 7

    by_key = {a.group: a for a in await store.aggregate("key")}
    assert by_key["name-k1"].requests == 5 and by_key["name-k1"].errors == 1 and by_key["name-k1"].unpriced == 1
    assert by_key["name-k1"].cost_usd == pytest.approx(0.75) and by_key["name-k2"].cost_usd == pytest.approx(0.5)
    assert by_key["name-k1"].prompt_tokens == 10 + 11 + 13 + 14 + 16
    assert [a.group for a in await store.aggregate("day")] == [day0, day1]
    assert {a.group for a in await store.aggregate("model")} == {"a/m", "a/other"}
    assert {a.group: a.requests for a in await store.aggregate("project")} == {"": 5, "p": 2}
    assert [a.requests for a in await store.aggregate("key", since=day1, key_id="k1")] == [1]
    assert [a.requests for a in await store.aggregate("model", until=day0, model="a/other")] == [1]
    assert sorted((d, a.group, a.requests) for d, a in
                  await store.aggregate_by_day("key", since=day0, until=day1)) == [
        (day0, "name-k1", 4), (day0, "name-k2", 1), (day1, "name-k1", 1), (day1, "name-k2", 1)]
    assert sorted((k, m, a.requests) for k, m, a in await store.key_model_totals(day0)) == [
        ("name-k1", "a/m", 4), ("name-k1", "a/other", 1), ("name-k2", "a/m", 2)]
    hour0 = int(T0 // 3600)
    assert [(h.hour - hour0, h.requests, h.errors) for h in await store.hourly(hour0)] == [
        (0, 5, 1), (24, 1, 0), (25, 1, 0)]
    dims = await store.usage_dimensions(day0, day1)
    assert (dims.keys, dims.models, dims.projects) == (
        [("k1", "name-k1"), ("k2", "name-k2")], ["a/m", "a/other"], ["p"])
    assert await store.spend_since(day1, by="key_id") == {"k1": 0.25, "k2": 0.25}
    assert await store.spend_since(day0, by="project") == {"p": 0.5}

    newest = await store.list_requests(limit=3)
    assert [r["request_id"] for r in newest] == ["r6", "r5", "r4"]
    older = await store.list_requests(before_id=newest[-1]["id"], key_id="k1", limit=10)
    assert [r["request_id"] for r in older] == ["r3", "r1", "r0"]
    detail = await store.get_request(older[-1]["id"])
    assert detail is not None and detail["request_body"] == '{"q": 1}' and detail["routing"] == '[{"target": "a/m"}]'
    assert detail["stream"] == 0 and (await store.get_request(older[-2]["id"]) or {})["stream"] == 1
    assert await store.get_request(10**9) is None
    assert [(p, m) for p, m, _ in await store.recent_latencies(T0 + DAY, 5)] == [("a", "m"), ("a", "m")]

    await store.add_auth_refusals({(hour0, "/v1/models", "no key"): 2})
    await store.add_auth_refusals({(hour0, "/v1/models", "no key"): 3, (hour0 + 30, "/openai", "wrong key"): 1})
    assert await store.auth_refusals(hour0) == [(hour0, "/v1/models", "no key", 5),
                                                (hour0 + 30, "/openai", "wrong key", 1)]

    # Retention: old request rows (and refusal counts) go, in batches; the aggregates stay.
    assert await store.prune_requests(T0 + DAY, batch=2) == 5
    assert await store.count_requests() == 2
    assert await store.auth_refusals(0) == [(hour0 + 30, "/openai", "wrong key", 1)]
    assert sum(a.requests for a in await store.aggregate("key")) == 7


async def test_admin_settings_and_sessions(store: Store) -> None:
    assert await store.admin_setting("signing_key") is None
    assert await store.init_admin_setting("signing_key", "one") is True
    assert await store.init_admin_setting("signing_key", "two") is False  # the first writer wins
    assert await store.admin_setting("signing_key") == "one"
    await store.create_admin_session("old", 100.0, 200.0)
    await store.create_admin_session("s1", 300.0, 400.0)  # also sweeps the expired one
    assert await store.admin_session_live("s1", 350.0) and not await store.admin_session_live("s1", 400.0)
    assert await store.count_rows("admin_sessions") == 1
    await store.delete_admin_session("s1")
    assert not await store.admin_session_live("s1", 350.0)


async def test_concurrent_writers_lose_nothing(store: Store) -> None:
    """The usage writer, the last-used flush and admin logins at once (on PostgreSQL each on its own pooled
    connection, adding to the same aggregate rows)."""
    _, row = await create_key(store, "k")
    rounds = 60
    for i in range(rounds):
        await asyncio.gather(
            store.write_requests([record(2 * i, ts=T0, key=row.id), record(2 * i + 1, ts=T0, key=row.id)]),
            store.write_requests([record(1000 + i, ts=T0, key=row.id)]),
            store.touch_keys({row.id: 1000.0 + i}),
            store.create_admin_session(f"s{i}", time.time(), time.time() + 60),
        )
    assert await store.count_requests() == 3 * rounds
    (total,) = await store.aggregate("key")
    assert total.requests == 3 * rounds
    assert (await store.find_key(row.id)).last_used_at == 1000.0 + rounds - 1  # type: ignore[union-attr]


async def test_both_engines_answer_every_read_alike(tmp_path: Path, postgres_url: str) -> None:
    from gateway.store_postgres import PostgresStore

    lite, pg = await SqliteStore.open(tmp_path), await PostgresStore.open(postgres_url)
    try:
        day0, day1 = time.strftime("%Y-%m-%d", time.gmtime(T0)), time.strftime("%Y-%m-%d", time.gmtime(T0 + DAY))
        answers = []
        for s in (lite, pg):
            await s.create_key(id="k1", name="one", prefix="p", hash="h1", limits=KeyLimits(models=["x"]))
            await s.write_requests(BATCH)
            answers.append([
                [k.name for k in await s.list_keys()],
                *[await s.aggregate(by) for by in ("key", "model", "project", "day")],
                sorted(await s.aggregate_by_day("model", since=day0, until=day1), key=str),
                sorted(await s.key_model_totals(day0), key=str), await s.hourly(0),
                await s.usage_dimensions(day0, day1), await s.spend_since(day0, by="key_id"),
                await s.list_requests(limit=100), await s.get_request(1), await s.recent_latencies(0, 10),
            ])
        assert answers[0] == answers[1]
        assert await lite.schema_version() == await pg.schema_version() > 0
    finally:
        await lite.close()
        await pg.close()


# ------------------------------------------------------------------------------- real gateway processes


@contextmanager
def serving(config: Path, *, port: int | None = None) -> Iterator[tuple[str, Path]]:
    port = port or free_port()
    log = config.parent / f"gateway-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=gateway_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, log
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()[-3000:]


def write_config(fake: FakeUpstream, root: Path, *, postgres_url: str | None = None) -> Path:
    config = root / "config.toml"
    text = gateway_config(fake, root / "data") + f'\n[admin]\ntoken = "{ADMIN_TOKEN}"\n'
    if postgres_url:
        text += f'\n[store]\nbackend = "postgres"\npostgres_url = "{postgres_url}"\n'
    config.write_text(text)
    return config


def create_cli_key(config: Path, name: str, *extra: str) -> str:
    created = run_cli("keys", "create", "--name", name, *extra, "--config", str(config))
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def chat(base: str, key: str, *, stream: bool = False, model: str = "listed/gpt-4o") -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})


def usage_report(base: str, by: str = "key") -> list[dict[str, object]]:
    reply = httpx.get(f"{base}/admin/api/usage", params={"by": by},
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert reply.status_code == 200, reply.text
    data: list[dict[str, object]] = reply.json()["data"]
    return data


async def test_migrate_store_copies_every_row_and_aggregate(fake: FakeUpstream, tmp_path: Path,
                                                            postgres_url: str) -> None:
    from gateway.store_postgres import PostgresStore

    config = write_config(fake, tmp_path)
    key = create_cli_key(config, "alpha", "--budget-usd", "5", "--rpm", "1000")
    unlimited = create_cli_key(config, "gamma", "--project", "lab")
    revoked = create_cli_key(config, "beta")
    assert run_cli("keys", "revoke", "beta", "--config", str(config)).returncode == 0
    with serving(config) as (base, _):
        for i in range(12):
            # A key with a budget may use priced models only; the other one makes unpriced rows.
            reply = chat(base, key, stream=i % 3 == 0) if i % 2 else chat(base, unlimited, model="fake/m")
            assert reply.status_code == 200, reply.text
        assert chat(base, revoked).status_code == 401  # counted as a refusal
        assert httpx.post(f"{base}/admin/login", data={"token": ADMIN_TOKEN}, timeout=10).status_code < 500
    source = tmp_path / "data"

    done = run_cli("migrate-store", "--from", f"sqlite:{source}", "--to", postgres_url)
    assert done.returncode == 0, done.stderr
    assert "requests: 12 rows" in done.stdout and "keys: 3 rows" in done.stdout

    lite, pg = await SqliteStore.open(source), await PostgresStore.open(postgres_url)
    try:
        for table in TABLES:
            rows = [[row async for row in s.table_rows(table)] for s in (lite, pg)]
            assert rows[0] == rows[1], table
        assert await lite.count_rows("auth_refusals") >= 1 and await lite.count_rows("admin_settings") >= 1
        for by in ("key", "model", "project", "day"):
            assert await lite.aggregate(by) == await pg.aggregate(by)  # type: ignore[arg-type]
    finally:
        await lite.close()
        await pg.close()

    # A second run refuses to copy twice; the migrated install serves its keys and new rows get new ids.
    again = run_cli("migrate-store", "--from", f"sqlite:{source}", "--to", postgres_url)
    assert again.returncode == 1 and "empty database only" in again.stderr
    pg_config = write_config(fake, tmp_path, postgres_url=postgres_url)
    with serving(pg_config) as (base, _):
        assert chat(base, key).status_code == 200
        assert chat(base, revoked).status_code == 401
        deadline = time.monotonic() + 10
        while sum(int(r["requests"]) for r in usage_report(base)) != 13:  # type: ignore[call-overload]
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_migrate_store_refuses_bad_arguments(tmp_path: Path) -> None:
    missing = run_cli("migrate-store", "--from", f"sqlite:{tmp_path}/nothing.db", "--to", "postgres://x/y")
    assert missing.returncode == 2 and "no SQLite database" in missing.stderr
    wrong = run_cli("migrate-store", "--from", "mysql:x", "--to", "redis://x")
    assert wrong.returncode == 2 and "sqlite:PATH" in wrong.stderr


def test_an_unreachable_database_stops_the_start_naming_it_without_its_password(fake: FakeUpstream,
                                                                              tmp_path: Path) -> None:
    config = write_config(fake, tmp_path, postgres_url=f"postgres://gateway:hunter2@127.0.0.1:{free_port()}/gw")
    done = run_cli("serve", "--config", str(config))
    assert done.returncode == 1
    assert "cannot reach PostgreSQL at postgres://gateway:***@127.0.0.1" in done.stderr, done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_the_embedded_install_never_loads_the_postgres_driver(tmp_path: Path) -> None:
    probe = ("import asyncio, sys; import gateway.server, gateway.app, gateway.state; "
             "from gateway.config import load_config; from gateway.store import SqliteStore, open_store\n"
             "async def main():\n"
             "    store = await open_store(load_config(None))\n"
             "    assert isinstance(store, SqliteStore), store\n"
             "    await store.close()\n"
             "asyncio.run(main()); print('asyncpg' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                           env=gateway_env())
    assert found.returncode == 0 and found.stdout.strip() == "False", found.stdout + found.stderr


def test_the_compose_replicas_config_is_valid() -> None:
    config = Path(__file__).parent.parent / "packaging" / "compose" / "config.toml"
    env = gateway_env(OPENAI_API_KEY="sk-x", GATEWAY_ADMIN_TOKEN="a" * 24, REDIS_URL="redis://redis:6379/0",
                      DATABASE_URL="postgres://gateway:pw@postgres:5432/gateway")
    done = run_cli("check-config", "--config", str(config), env=env)
    assert done.returncode == 0, done.stderr


def test_a_postgres_restart_under_load_loses_no_usage_row(fake: FakeUpstream, tmp_path: Path) -> None:
    """PostgreSQL stops mid-load and comes back: requests keep being served (keys are in memory), their
    records wait in the usage queue, and every answered request has its row once the database returns."""
    server = Postgres()
    server.start()
    try:
        config = write_config(fake, tmp_path, postgres_url=server.create_database("gateway"))
        key = create_cli_key(config, "load")
        answered: list[str] = []
        failed: list[str] = []
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                reply = chat(base, key, stream=i % 2 == 1)
                (answered if reply.status_code == 200 else failed).append(reply.text[:200])
                i += 1

        with serving(config) as (base, log):
            threads = [threading.Thread(target=load) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            before_stop = len(answered)
            server.stop()
            time.sleep(2.5)
            during = len(answered) - before_stop
            server.start()
            time.sleep(1.0)
            stop.set()
            for t in threads:
                t.join(30)
            assert not failed, failed[:3]
            assert before_stop > 5 and during > 5, (before_stop, during)
            deadline = time.monotonic() + 30
            while (total := sum(int(r["requests"]) for r in usage_report(base))) != len(answered):  # type: ignore[call-overload]
                assert time.monotonic() < deadline, (total, len(answered))
                time.sleep(0.2)
            assert "the store is unreachable" in log.read_text()

        async def rows() -> int:
            from gateway.store_postgres import PostgresStore

            store = await PostgresStore.open(server.url("gateway"))
            try:
                return await store.count_requests()
            finally:
                await store.close()

        assert asyncio.run(rows()) == len(answered)
    finally:
        server.close()


def test_replicas_on_one_database_show_the_same_usage(fake: FakeUpstream, tmp_path: Path,
                                                      postgres_url: str) -> None:
    config = write_config(fake, tmp_path, postgres_url=postgres_url)
    key = create_cli_key(config, "shared")
    with serving(config) as (first, _), serving(config) as (second, _):
        for i in range(7):
            assert chat(first, key, stream=i % 2 == 0).status_code == 200
        for _ in range(5):
            assert chat(second, key).status_code == 200
        deadline = time.monotonic() + 10
        while True:
            reports = [usage_report(base, by) for base in (first, second) for by in ("key", "model", "day")]
            if sum(int(r["requests"]) for r in reports[0]) == 12:  # type: ignore[call-overload]
                break
            assert time.monotonic() < deadline, reports
            time.sleep(0.1)
        assert reports[:3] == reports[3:]
        assert reports[0][0]["group"] == "shared" and float(reports[0][0]["cost_usd"]) > 0  # type: ignore[arg-type]
        # A key revoked on one replica's CLI is refused by both once they reload the key ring.
        assert run_cli("keys", "revoke", "shared", "--config", str(config)).returncode == 0
        deadline = time.monotonic() + 10
        while chat(first, key).status_code != 401 or chat(second, key).status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.1)
