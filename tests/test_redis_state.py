"""[state] backend = "redis": limits and budgets shared by every worker and replica, on a real redis-server
(tests/engines.py) and real ``gateway serve`` processes (3 replicas x 2 workers, their store one database on a
real PostgreSQL, ``[store] backend = "postgres"``).

Figures the report quotes are printed (run with -s to see them)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis as redis_sync

from gateway.config import ConfigError, load_config_file
from gateway.errors import StateUnavailable
from gateway.shared_state import Admitted, Bucket, BudgetRef, Limited, OverBudget, RedisState, announce
from tests import engines
from tests.conftest import UPSTREAM_KEY, gateway_env, run_cli, wait_ready
from tests.engines import Postgres, Redis
from tests.fakes import FakeUpstream, Received, Reply, free_port, json_reply, sse_reply
from tests.inprocess import gateway_for

redis_server, postgres = engines.redis_server, engines.postgres  # the fixtures, for this module's tests
BUDGET = 1.50
HOLD_TTL_S = 2.0
# $1000 per 1M tokens in and out: the fake's answer (9 + 6 tokens) costs $0.015; a request reserves its
# prompt estimate plus max_tokens = 10 at that price, about $0.02.
PRICE = 1000.0


# ------------------------------------------------------------------------------------- the scripts alone


async def _no_spend(name: str, day: str) -> float:
    return 0.0


def _budget(cost: float, limit: float = 1.0, name: str = "key:k1") -> BudgetRef:
    return BudgetRef(name=name, period_day="2026-01-01", limit=limit, cost=cost, expire_at=0)


def _budget_state(server: Redis, key: str) -> tuple[float, float, int]:
    """(spent, reserved, holds) of a budget hash, read with a plain client."""
    client = redis_sync.Redis.from_url(server.url)
    got: list[bytes | None] = client.hmget(key, ["spent", "reserved"])  # type: ignore[assignment]
    holds: int = client.zcard(key + ":z")  # type: ignore[assignment]
    return float(got[0] or 0), float(got[1] or 0), holds


def test_many_processes_cannot_overspend_one_budget(redis_server: Redis) -> None:
    """Eight clients (as eight processes would) race 400 reservations of $0.01 against $1: exactly 100 fit,
    and settling all of them at $0.005 leaves $0.50 spent and nothing reserved."""
    redis_sync.Redis.from_url(redis_server.url).flushall()

    async def run() -> tuple[int, int]:
        states = [RedisState(redis_server.url, hold_ttl_s=30, seed=_no_spend) for _ in range(8)]
        try:
            outcomes = await asyncio.gather(*(states[i % 8].admit([], [_budget(0.01)]) for i in range(400)))
            admitted = [(hold, i) for i, (hold, o) in enumerate(outcomes) if isinstance(o, Admitted)]
            refused = sum(isinstance(o, OverBudget) for _, o in outcomes)
            for hold, i in admitted:
                states[i % 8].settle(hold, [], 0, [_budget(0.01)], 0.005)
        finally:
            for state in states:
                await state.close()
        return len(admitted), refused

    admitted, refused = asyncio.run(run())
    assert (admitted, refused) == (100, 300)
    spent, reserved, holds = _budget_state(redis_server, _budget(0).key)
    assert spent == pytest.approx(0.5)
    assert reserved == 0.0 and holds == 0


def test_rate_and_budget_are_all_or_nothing(redis_server: Redis) -> None:
    """A refusal by the budget leaves the rate bucket untouched, and a refusal by the bucket holds nothing."""
    redis_sync.Redis.from_url(redis_server.url).flushall()

    async def run() -> list[Admitted | Limited | OverBudget]:
        state = RedisState(redis_server.url, hold_ttl_s=30, seed=_no_spend)
        try:
            rpm = Bucket("key:k1:rpm", 2, 1)
            out = [(await state.admit([rpm], [_budget(0.8)]))[1]]
            out.append((await state.admit([rpm], [_budget(0.8)]))[1])  # over budget: the bucket keeps its 1
            out.append((await state.admit([rpm], [_budget(0.1)]))[1])  # takes the last request
            out.append((await state.admit([rpm], [_budget(0.01)]))[1])  # rate limited, nothing held
            return out
        finally:
            await state.close()

    first, over, last, limited = asyncio.run(run())
    assert isinstance(first, Admitted) and isinstance(last, Admitted)
    assert isinstance(over, OverBudget) and over.remaining == pytest.approx(0.2)
    assert isinstance(limited, Limited) and 0 < limited.wait <= 30
    assert _budget_state(redis_server, _budget(0).key)[1] == pytest.approx(0.9)


def test_holds_of_a_process_that_stops_renewing_lapse(redis_server: Redis) -> None:
    """A process killed mid-request never settles: its hold is released hold_ttl_s later, by the next
    admission on that budget. A live process's renewals keep its own hold."""
    redis_sync.Redis.from_url(redis_server.url).flushall()

    async def run() -> tuple[float, float]:
        dead = RedisState(redis_server.url, hold_ttl_s=0.5, seed=_no_spend)  # never renews: as if killed
        live = RedisState(redis_server.url, hold_ttl_s=0.5, seed=_no_spend)
        renewing = asyncio.create_task(live.renew_holds())
        try:
            await dead.admit([], [_budget(0.6)])
            _, kept = await live.admit([], [_budget(0.3)])
            assert isinstance(kept, Admitted)
            _, refused = await live.admit([], [_budget(0.6)])
            assert isinstance(refused, OverBudget)  # 0.6 + 0.3 held of 1.0
            await asyncio.sleep(1.5)  # three TTLs: the dead hold lapses, the renewed one does not
            _, after = await live.admit([], [_budget(0.6)])
            assert isinstance(after, Admitted)
            reserved = float(await live.client.hget(_budget(0).key, "reserved") or 0)
            return reserved, float(await live.client.zcard(_budget(0).key + ":z"))
        finally:
            renewing.cancel()
            await dead.close()
            await live.close()

    reserved, holds = asyncio.run(run())
    assert reserved == pytest.approx(0.9)  # the live 0.3 and the new 0.6; the dead 0.6 is gone
    assert holds == 2


def test_unreachable_redis_is_state_unavailable() -> None:
    async def run() -> None:
        state = RedisState(f"redis://127.0.0.1:{free_port()}/0", hold_ttl_s=30, seed=_no_spend)
        try:
            with pytest.raises(StateUnavailable):
                await state.admit([Bucket("global:rpm", 10, 1)], [])
        finally:
            await state.close()

    asyncio.run(run())


# ------------------------------------------------------------------------------- replicas on one Redis


@dataclass
class Replica:
    base: str
    proc: subprocess.Popen[bytes]

    def kill(self) -> None:
        """kill -9 of the replica and its workers (its own process group): nothing of it runs a finally."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)


def _query(url: str, sql: str, *args: object) -> list[Sequence[Any]]:
    """The rows of one statement, on a connection of its own (as an operator's psql would read them)."""
    import asyncpg  # only here: the tests of the scripts alone run without the driver

    async def run() -> list[Sequence[Any]]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return list(await conn.fetch(sql, *args, timeout=30))
        finally:
            await conn.close()

    return asyncio.run(run())


@dataclass
class Cluster:
    root: Path
    config: Path
    redis: Redis
    store_url: str  # the one PostgreSQL database every replica's store is on
    replicas: list[Replica]
    keys: dict[str, str]

    def start_replica(self) -> Replica:
        port = free_port()
        log = (self.root / f"replica-{port}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(self.config), "--port",
                                 str(port)], stdout=log, stderr=subprocess.STDOUT, env=gateway_env(),
                                start_new_session=True)
        replica = Replica(base=f"http://127.0.0.1:{port}", proc=proc)
        wait_ready(replica.base, proc, timeout=60)
        self.replicas.append(replica)
        return replica

    def budget(self, key_id: str) -> tuple[float, float, int]:
        """(spent, reserved, holds) of a key's budget, read from Redis (zeros before its first request)."""
        client = redis_sync.Redis.from_url(self.redis.url)
        names = [k.decode() for k in client.scan_iter(f"gw:budget:key:{key_id}:*") if not k.endswith(b":z")]
        assert len(names) <= 1, names
        return _budget_state(self.redis, names[0]) if names else (0.0, 0.0, 0)

    def key_id(self, name: str) -> str:
        return str(_query(self.store_url, "SELECT id FROM keys WHERE name = $1", name)[0][0])

    def recorded(self, key_id: str) -> float:
        """The cost of a key's usage rows in the shared database."""
        return float(_query(self.store_url, "SELECT COALESCE(SUM(cost_total), 0) FROM requests WHERE key_id = $1",
                            key_id)[0][0])

    def rows_of(self, request_ids: list[str]) -> dict[str, int]:
        """How many usage rows each of these requests has in the shared database (those with none are absent)."""
        found = _query(self.store_url, "SELECT request_id, COUNT(*) FROM requests WHERE request_id = ANY($1::text[]) "
                       "GROUP BY request_id", request_ids)
        return {str(row[0]): int(row[1]) for row in found}


def _answers(received: Received) -> Reply:
    """The fake upstream: a short pause, so requests overlap; streams trickle, so clients can leave mid-way;
    a prompt saying "slow" takes long enough to be killed in flight."""
    body = received.json()
    text = str(body.get("messages"))
    if "slow" in text:
        return dataclasses.replace(json_reply(_COMPLETION), delay=8.0)
    if body.get("stream"):
        return sse_reply(_STREAM, chunk_delay=0.05)
    return dataclasses.replace(json_reply(_COMPLETION), delay=0.1)


def _chunk(delta: dict[str, object], usage: dict[str, int] | None = None) -> bytes:
    choices = [{"index": 0, "delta": delta, "finish_reason": None}] if usage is None else []
    return b"data: " + json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                                   "model": "m", "choices": choices, "usage": usage}).encode() + b"\n\n"


# An answer within the request's max_tokens (10): what it reserved covers what it costs.
_STREAM = b"".join([_chunk({"role": "assistant", "content": ""}), *(_chunk({"content": "word "}) for _ in range(6)),
                    _chunk({}, {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}),
                    b"data: [DONE]\n\n"])

_COMPLETION = {
    "id": "chatcmpl-fake", "object": "chat.completion", "created": 1742842886, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello."}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
}


@pytest.fixture(scope="module")
def cluster(redis_server: Redis, postgres: Postgres, fake: FakeUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    store_url = postgres.create_database(root.name)  # fresh: "cluster0", "cluster1"... per run of this module
    config = root / "config.toml"
    config.write_text(f"""
[server]
data_dir = "{root / 'data'}"
workers = 2

[routing]
retries = 0

[state]
backend = "redis"
redis_url = "{redis_server.url}"
hold_ttl_s = {HOLD_TTL_S}

[store]
backend = "postgres"
postgres_url = "{store_url}"

[providers.fake]
type = "openai"
base_url = "{fake.base}/v1"
api_key = "{UPSTREAM_KEY}"
timeout = 30

[[models]]
name = "m"
provider = "fake"
pricing = {{ input = {PRICE}, output = {PRICE} }}
""")
    keys = {}
    for name, flags in (("budget", ["--budget-usd", str(BUDGET), "--budget-period", "day"]),
                        ("rpm", ["--rpm", "10"]), ("load", ["--budget-usd", "1000"]), ("free", []),
                        ("revoked", ["--rpm", "1000"]), ("steady", ["--budget-usd", "1000"])):
        created = run_cli("keys", "create", "--name", name, *flags, "--config", str(config))
        assert created.returncode == 0, created.stderr
        keys[name] = created.stdout.strip()
    made = Cluster(root=root, config=config, redis=redis_server, store_url=store_url, replicas=[], keys=keys)
    try:
        for _ in range(3):
            made.start_replica()
        yield made
    finally:
        for replica in made.replicas:
            replica.stop()


@pytest.fixture
def served(cluster: Cluster, fake: FakeUpstream) -> Cluster:
    fake.default = _answers
    return cluster


def _chat(kind: str, n: int) -> dict[str, object]:
    body: dict[str, object] = {"model": "fake/m", "max_tokens": 10,
                               "messages": [{"role": "user", "content": f"hello {n}"}]}
    if kind != "plain":
        body["stream"] = True
    return body


@dataclass
class Outcome:
    status: int
    request_id: str | None
    code: str | None = None


async def _one(http: httpx.AsyncClient, base: str, key: str, kind: str, n: int) -> Outcome:
    """A plain request, a stream read to its end, or a stream its client leaves after the first chunk."""
    headers = {"authorization": f"Bearer {key}"}
    async with http.stream("POST", f"{base}/v1/chat/completions", json=_chat(kind, n), headers=headers) as response:
        rid = response.headers.get("x-gateway-request-id")
        if response.status_code != 200:
            body = await response.aread()
            return Outcome(response.status_code, rid, httpx.Response(200, content=body).json()["error"]["code"])
        async for _ in response.aiter_bytes():
            if kind == "leave":
                break  # closing the stream here drops the connection mid-answer
        return Outcome(200, rid)


def _burst(cluster: Cluster, key: str, count: int, kinds: tuple[str, ...] = ("plain",)) -> list[Outcome]:
    async def run() -> list[Outcome]:
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            return await asyncio.gather(*(
                _one(http, cluster.replicas[i % 3].base, key, kinds[i % len(kinds)], i) for i in range(count)))
    return asyncio.run(run())


def _settled(cluster: Cluster, key_id: str, timeout: float = 10.0) -> tuple[float, float, int]:
    """The budget once every settlement has landed (they run off the request path)."""
    deadline = time.monotonic() + timeout
    while True:
        spent, reserved, holds = cluster.budget(key_id)
        if (reserved == 0 and holds == 0) or time.monotonic() > deadline:
            return spent, reserved, holds
        time.sleep(0.1)


def _rows_by_request(cluster: Cluster, request_ids: list[str], timeout: float = 10.0) -> dict[str, int]:
    """How many usage rows each request left, once the batch writers have flushed."""
    deadline = time.monotonic() + timeout
    while True:
        found = cluster.rows_of(request_ids)
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_three_replicas_share_one_budget(served: Cluster) -> None:
    """300 concurrent requests (plain, streamed, clients leaving mid-stream) over 3 replicas x 2 workers
    against one $1.50 budget: spend stays within it, nothing stays reserved, one usage row per answer."""
    key_id = served.key_id("budget")
    outcomes = _burst(served, served.keys["budget"], 300, ("plain", "stream", "leave"))
    ok = [o for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 429]
    assert {o.code for o in refused} == {"budget_exceeded"}
    assert len(ok) + len(refused) == 300
    assert 30 <= len(ok) < 300
    answered = [o.request_id for o in outcomes if o.request_id]
    assert len(answered) == 300
    # Then waves of 10 until one is refused whole: the budget is spent to within one request's reservation.
    while True:
        wave = _burst(served, served.keys["budget"], 10)
        answered += [o.request_id for o in wave if o.request_id]
        if all(o.status == 429 for o in wave):
            break
    spent, reserved, holds = _settled(served, key_id)
    rows = _rows_by_request(served, answered)
    recorded = served.recorded(key_id)
    print(f"\nshared budget: {len(ok)} of 300 concurrent admitted; in the end ${spent:.4f} spent (Redis), "
          f"${recorded:.4f} (usage rows) of ${BUDGET}, {reserved} reserved")
    assert spent <= BUDGET + 1e-9
    assert recorded == pytest.approx(spent)
    assert spent > BUDGET - 0.05  # the refusals came from a budget that was really spent (0.05 > one reservation)
    assert reserved == 0 and holds == 0
    assert set(rows) == set(answered) and set(rows.values()) == {1}
    # Every replica reports the key's spend as Redis counts it.
    for replica in served.replicas:
        report = httpx.get(f"{replica.base}/v1/usage", headers={"authorization": f"Bearer {served.keys['budget']}"},
                           timeout=30).json()
        assert report["spent_usd"] == pytest.approx(spent) and report["reserved_usd"] == 0


def test_rpm_is_counted_once_across_replicas(served: Cluster) -> None:
    started = time.monotonic()
    outcomes = _burst(served, served.keys["rpm"], 40)
    took = time.monotonic() - started
    statuses = [o.status for o in outcomes]
    print(f"\nRPM 10 over 3 replicas: {statuses.count(200)} of 40 admitted in {took:.2f}s")
    assert took < 6  # within 6 s the bucket refills less than one request
    assert statuses.count(200) == 10
    assert {o.code for o in outcomes if o.status != 200} == {"rate_limit_exceeded"}


def test_revoked_key_is_refused_by_every_replica(served: Cluster) -> None:
    key = served.keys["revoked"]

    def status(replica: Replica) -> int:
        return httpx.post(f"{replica.base}/v1/chat/completions", json=_chat("plain", 0),
                          headers={"authorization": f"Bearer {key}"}, timeout=30).status_code

    assert [status(r) for r in served.replicas] == [200, 200, 200]
    revoked = run_cli("keys", "revoke", "revoked", "--config", str(served.config))
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    pending = list(served.replicas)
    while pending and time.monotonic() - started < 10:
        pending = [r for r in pending if status(r) != 401]
    took = time.monotonic() - started
    print(f"\nrevocation seen by all 3 replicas within {took:.3f}s of the CLI's exit")
    assert not pending
    assert took < 10


def _steady_load(base: str, key: str, stop: threading.Event, answered: list[Outcome]) -> None:
    """One client asking a replica again and again (plain and streamed in turn) until told to stop; a
    failure to connect is recorded as status 0."""
    with httpx.Client(timeout=30) as http:
        i = 0
        while not stop.is_set():
            kind = ("plain", "stream")[i % 2]
            try:
                with http.stream("POST", f"{base}/v1/chat/completions", json=_chat(kind, i),
                                 headers={"authorization": f"Bearer {key}"}) as response:
                    response.read()
                    answered.append(Outcome(response.status_code, response.headers.get("x-gateway-request-id")))
            except httpx.HTTPError as exc:
                answered.append(Outcome(0, None, type(exc).__name__))
            i += 1


def test_killed_replica_releases_its_holds(served: Cluster) -> None:
    """kill -9 of a replica with requests in flight while the others are under load: the others keep
    serving, every request they answered has exactly one usage row in the shared database, and the killed
    replica's reservations lapse hold_ttl_s later and are released."""
    key_id = served.key_id("load")
    survivors = list(served.replicas)
    victim = served.start_replica()
    headers = {"authorization": f"Bearer {served.keys['load']}"}
    slow = {"model": "fake/m", "max_tokens": 10, "messages": [{"role": "user", "content": "slow"}]}

    # The load on the survivors runs on a key of its own, so the holds counted below are the victim's.
    stop_load = threading.Event()
    load: list[Outcome] = []
    loaders = [threading.Thread(target=_steady_load, args=(r.base, served.keys["steady"], stop_load, load))
               for r in survivors]
    for thread in loaders:
        thread.start()

    def in_flight() -> None:
        with pytest.raises(httpx.HTTPError):  # the connection dies with the replica
            httpx.post(f"{victim.base}/v1/chat/completions", json=slow, headers=headers, timeout=30)

    threads = [threading.Thread(target=in_flight) for _ in range(6)]
    answered: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while len(load) < 6 and time.monotonic() < deadline:  # the survivors are under load
            time.sleep(0.05)
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while served.budget(key_id)[2] < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        _, held, holds = served.budget(key_id)
        assert holds == 6 and held > 0
        before_kill = len(load)
        victim.kill()
        served.replicas.remove(victim)
        killed = time.monotonic()
        for thread in threads:
            thread.join(10)
        # The survivors serve on; each admission also releases holds that have lapsed.
        released_after = None
        while time.monotonic() - killed < 10 * HOLD_TTL_S:
            with ThreadPoolExecutor(3) as pool:
                replies = list(pool.map(lambda r: httpx.post(f"{r.base}/v1/chat/completions", json=_chat("plain", 1),
                                                             headers=headers, timeout=30), served.replicas))
            assert [r.status_code for r in replies] == [200, 200, 200]
            answered += [r.headers["x-gateway-request-id"] for r in replies]
            _, reserved, holds = _settled(served, key_id, timeout=2)
            if holds == 0 and reserved == 0:
                released_after = time.monotonic() - killed
                break
        after_kill = len(load) - before_kill
    finally:
        stop_load.set()
        for thread in loaders:
            thread.join(30)
    print(f"\nkilled replica's {6} holds released {released_after}s after kill -9 (hold_ttl_s = {HOLD_TTL_S}); "
          f"the survivors answered {len(load)} requests of steady load, {after_kill} after the kill")
    assert released_after is not None
    assert released_after >= HOLD_TTL_S * 0.5  # not before they lapsed (renewals stop with the process)
    assert not any(thread.is_alive() for thread in loaders)
    assert {o.status for o in load} == {200}, [o for o in load if o.status != 200][:3]
    assert before_kill > 0 and after_kill > 0  # the load ran through the kill
    # No row of the survivors is lost: one usage row per answer, once their writers have flushed.
    assert all(o.request_id for o in load)
    answered += [o.request_id for o in load if o.request_id]
    assert len(set(answered)) == len(answered)
    rows = _rows_by_request(served, answered)
    assert set(rows) == set(answered) and set(rows.values()) == {1}
    # Their settlements all landed too: nothing of the steady load stays reserved.
    spent, reserved, holds = _settled(served, served.key_id("steady"))
    assert reserved == 0 and holds == 0
    assert served.recorded(served.key_id("steady")) == pytest.approx(spent) and spent > 0


def test_wrong_admin_tokens_are_throttled_across_replicas(served: Cluster) -> None:
    """Five wrong admin tokens spread over the replicas block the address on every replica and worker:
    six processes do not give a guesser six times the tries."""
    def usage(replica: Replica) -> httpx.Response:
        return httpx.get(f"{replica.base}/admin/api/usage", headers={"authorization": "Bearer wrong-token-guess"},
                         timeout=30)

    for i in range(5):
        assert usage(served.replicas[i % 3]).status_code == 401
        time.sleep(0.2)  # announcements travel in milliseconds; this leaves them ample time
    time.sleep(0.5)
    refused = [usage(replica) for replica in served.replicas for _ in range(2)]  # whichever worker answers
    assert {r.status_code for r in refused} == {429}
    assert {r.json()["error"]["code"] for r in refused} == {"admin_token_throttled"}


def test_redis_outage_fails_closed_then_recovers(served: Cluster) -> None:
    """Redis stopped mid-load: keys with limits get 503 state_unavailable, keys without are served; Redis
    back (empty: no persistence): limited keys are served again without a restart, budgets seeded from the
    store."""
    def ask(key: str) -> tuple[int, str | None]:
        response = httpx.post(f"{served.replicas[0].base}/v1/chat/completions", json=_chat("plain", 2),
                              headers={"authorization": f"Bearer {key}"}, timeout=30)
        return response.status_code, response.json().get("error", {}).get("code")

    assert ask(served.keys["load"])[0] == 200
    served.redis.stop()
    try:
        for replica in served.replicas:
            response = httpx.post(f"{replica.base}/v1/chat/completions", json=_chat("plain", 3),
                                  headers={"authorization": f"Bearer {served.keys['load']}"}, timeout=30)
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "state_unavailable"
        assert ask(served.keys["free"]) == (200, None)
    finally:
        served.redis.start()
    started = time.monotonic()
    while ask(served.keys["load"])[0] != 200:
        assert time.monotonic() - started < 10
        time.sleep(0.1)
    print(f"\nserved again {time.monotonic() - started:.3f}s after Redis came back")
    # The budget spend is back from the store's records, not zero.
    recorded = served.recorded(served.key_id("load"))
    spent, _, _ = _settled(served, served.key_id("load"))
    assert spent == pytest.approx(recorded, abs=0.05) and spent > 0


# ----------------------------------------------------------------------------------- the failure policy


@pytest.mark.parametrize("policy", ["refuse", "allow"])
def test_unreachable_redis_policy(fake: FakeUpstream, tmp_path: Path, policy: str) -> None:
    """No Redis at all: "refuse" answers a key with a budget 503 state_unavailable, "allow" serves it
    unlimited; a key without limits is served either way, without waiting on Redis."""
    extra = f"""
[state]
backend = "redis"
redis_url = "redis://127.0.0.1:{free_port()}/0"
on_unavailable = "{policy}"

[[models]]
name = "m"
provider = "a"
pricing = {{ input = 1.0, output = 1.0 }}
"""

    async def run() -> None:
        async with gateway_for(fake, tmp_path, extra=extra) as h:
            budgeted = await h.new_key("budgeted", budget_usd=5.0)
            ask = {"model": "a/m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
            answer = await h.client.chat.completions.create(**ask)  # type: ignore[call-overload]
            assert answer.choices[0].message.content
            if policy == "allow":
                assert (await budgeted.chat.completions.create(**ask)).choices  # type: ignore[call-overload]
            else:
                with pytest.raises(openai.InternalServerError) as refused:
                    await budgeted.chat.completions.create(**ask)  # type: ignore[call-overload]
                assert refused.value.status_code == 503
                assert refused.value.code == "state_unavailable"

    asyncio.run(run())


def test_one_round_trip_to_admit_and_one_to_settle(redis_server: Redis, fake: FakeUpstream, tmp_path: Path) -> None:
    """A key with a budget, an RPM and a TPM limit, in a project with a budget, under global limits: each
    request costs Redis exactly two script calls, the admission and the settlement, and nothing else."""
    extra = f"""
[state]
backend = "redis"
redis_url = "{redis_server.url}"

[limits]
rpm = 100000
tpm = 100000000

[projects.p]
budget_usd = 100.0

[[models]]
name = "m"
provider = "a"
pricing = {{ input = 1.0, output = 1.0 }}
"""

    async def run() -> list[str]:
        async with gateway_for(fake, tmp_path, extra=extra) as h:
            client = await h.new_key("limited", budget_usd=5.0, rpm=1000, tpm=1_000_000, project="p")
            ask = {"model": "a/m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
            await client.chat.completions.create(**ask)  # type: ignore[call-overload]  # loads the scripts
            assert h.state.shared is not None
            shared = h.state.shared
            await shared.close_pending()
            sent: list[str] = []
            execute = shared.client.execute_command

            async def counted(*args: object, **options: object) -> object:
                sent.append(str(args[0]))
                return await execute(*args, **options)

            shared.client.execute_command = counted
            for _ in range(10):
                await client.chat.completions.create(**ask)  # type: ignore[call-overload]
            await shared.close_pending()
            return sent

    sent = asyncio.run(run())
    assert sent == ["EVALSHA"] * 20


def test_announced_revocation_needs_no_store(redis_server: Redis, fake: FakeUpstream, tmp_path: Path) -> None:
    """A revocation announced on Redis is refused at once even though this process's store never saw it
    (another replica's store, or a store this process polls slowly)."""
    extra = f'[state]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n'

    async def run() -> float:
        async with gateway_for(fake, tmp_path, extra=extra) as h:
            ask = {"model": "a/m", "messages": [{"role": "user", "content": "hi"}]}
            await h.client.chat.completions.create(**ask)  # type: ignore[call-overload]
            key_id = h.state.keys.principals[0].key_id
            await asyncio.sleep(0.2)  # subscribed
            await announce(redis_server.url, f"revoke:{key_id}")
            started = time.monotonic()
            while time.monotonic() - started < 10:
                try:
                    await h.client.chat.completions.create(**ask)  # type: ignore[call-overload]
                except openai.AuthenticationError:
                    return time.monotonic() - started
                await asyncio.sleep(0.01)
            raise AssertionError("the announced revocation was not applied")

    took = asyncio.run(run())
    print(f"\nannounced revocation applied within {took:.3f}s")
    assert took < 10


# ----------------------------------------------------------------------------------------------- config


def test_workers_need_shared_state_for_limits(tmp_path: Path) -> None:
    base = '[server]\nworkers = 2\n[[keys]]\nname = "k"\nkey = "sk-proxy-0123456789abcdef0123"\nrpm = 5\n'
    (tmp_path / "memory.toml").write_text(base)
    with pytest.raises(ConfigError) as refused:
        load_config_file(tmp_path / "memory.toml")
    assert refused.value.key == "server.workers" and 'backend = "redis"' in str(refused.value)
    shared = base + '[state]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:6379/0"\n'
    (tmp_path / "redis.toml").write_text(shared)
    assert load_config_file(tmp_path / "redis.toml").state.backend == "redis"
    provider = '[providers.openai]\napi_key = "sk-test"\n[limits.providers.openai]\nrpm = 5\n'
    (tmp_path / "provider.toml").write_text(shared + provider)
    with pytest.raises(ConfigError) as per_process:
        load_config_file(tmp_path / "provider.toml")
    assert "limits.providers.openai.rpm" in str(per_process.value)
    (tmp_path / "nourl.toml").write_text('[state]\nbackend = "redis"\n')
    with pytest.raises(ConfigError) as no_url:
        load_config_file(tmp_path / "nourl.toml")
    assert no_url.value.key == "state.redis_url"
