"""Rate buckets, budget reservations and key changes shared by every process on one Redis.

``[state] backend = "redis"`` (docs/scaling.md). Admission is ONE script call that takes from every
bucket and reserves against every budget, or takes and reserves nothing; settlement is one more, run off
the request path. Both run inside Redis, one at a time, so N processes can neither overspend a budget
nor admit past a rate limit. The buckets and budgets mean what they mean in gateway/limits.py; the time
is Redis's own clock (``TIME``), so replicas with skewed clocks still share one bucket.

Key layout (``gw:`` prefix):
- ``gw:rate:<scope>``: hash ``t`` (tokens left), ``u`` (last refill); expires when it would be full anyway.
- ``gw:budget:<key|project>:<id>:<period start day>``: hash ``spent``, ``reserved`` and ``h:<hold id>`` (the
  amount each in-flight request holds); ``...:z``: hold id -> the time it lapses. A process renews its
  holds every ``hold_ttl_s / 3``; the holds of a process that died lapse after ``hold_ttl_s`` and are
  released by the next admission. A budget hash that is missing (a new period, a Redis restarted without
  persistence) is seeded from the store's record of the period's spend before it is used.
- ``gw:events``: the pub/sub channel on which a key's change and a failed admin login are announced to every
  process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.errors import StateUnavailable

log = logging.getLogger("gateway")

EVENTS_CHANNEL = "gw:events"
# A request waits at most this long for Redis before its key is treated as uncountable (503 or "allow").
SOCKET_TIMEOUT_S = 1.0
# Settlement is retried for a Redis blip; a hold it cannot release lapses after hold_ttl_s anyway.
SETTLE_ATTEMPTS = 5
MAX_CONNECTIONS = 32  # per process; one of them holds the announcements' subscription
RESUBSCRIBE_S = 0.5

# KEYS: n bucket hashes, then (budget hash, holds zset) per budget. ARGV: n buckets, n budgets, hold id,
# hold ttl, then (limit, amount) per bucket and (limit, cost, expire-at or 0) per budget.
# Returns {"ok", tokens left per bucket...} | {"rate", index, wait | "inf"} | {"budget", index, remaining}
# | {"seed", index}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local nb, ng, hold, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
for i = 1, ng do
  if redis.call('EXISTS', KEYS[nb + 2 * i - 1]) == 0 then return {'seed', i} end
end
local a = 5
local left = {}
for i = 1, nb do
  local limit, amount = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local v = redis.call('HMGET', KEYS[i], 't', 'u')
  local tokens, updated = tonumber(v[1]) or limit, tonumber(v[2]) or now
  if now > updated then tokens = tokens + (now - updated) * limit / 60 end
  tokens = math.min(tokens, limit)
  if tokens < amount then
    if amount > limit then return {'rate', i, 'inf'} end
    return {'rate', i, tostring((amount - tokens) * 60 / limit)}
  end
  left[i] = tokens - amount
end
local costs = {}
for i = 1, ng do
  local key, z = KEYS[nb + 2 * i - 1], KEYS[nb + 2 * i]
  local limit, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 3
  local lapsed = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, h in ipairs(lapsed) do
    local amount = tonumber(redis.call('HGET', key, 'h:' .. h) or '0')
    redis.call('HINCRBYFLOAT', key, 'reserved', -amount)
    redis.call('HDEL', key, 'h:' .. h)
    redis.call('ZREM', z, h)
  end
  if redis.call('ZCARD', z) == 0 then redis.call('HSET', key, 'reserved', 0) end
  local v = redis.call('HMGET', key, 'spent', 'reserved')
  local spent, reserved = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  if spent + reserved + cost > limit then
    return {'budget', i, tostring(math.max(limit - spent - reserved, 0))}
  end
  costs[i] = cost
end
for i = 1, nb do
  redis.call('HSET', KEYS[i], 't', tostring(left[i]), 'u', tostring(now))
  redis.call('EXPIRE', KEYS[i], 120)
end
a = 5 + 2 * nb
for i = 1, ng do
  local key, z = KEYS[nb + 2 * i - 1], KEYS[nb + 2 * i]
  local expire_at = tonumber(ARGV[a + 2])
  a = a + 3
  redis.call('HINCRBYFLOAT', key, 'reserved', costs[i])
  redis.call('HSET', key, 'h:' .. hold, tostring(costs[i]))
  redis.call('ZADD', z, now + ttl, hold)
  if expire_at > 0 then redis.call('EXPIREAT', z, expire_at) end
end
local out = {'ok'}
for i = 1, nb do out[#out + 1] = tostring(left[i]) end
return out
"""

# KEYS: n TPM bucket hashes, then (budget hash, holds zset) per budget. ARGV: n buckets, n budgets, hold id,
# tokens to give back (negative: take more), spent, then the limit per bucket.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local nb, ng, hold, delta, spent = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
for i = 1, nb do
  local limit = tonumber(ARGV[5 + i])
  local v = redis.call('HMGET', KEYS[i], 't', 'u')
  local tokens, updated = tonumber(v[1]) or limit, tonumber(v[2]) or now
  if now > updated then tokens = tokens + (now - updated) * limit / 60 end
  tokens = math.max(-limit, math.min(limit, tokens + delta))
  redis.call('HSET', KEYS[i], 't', tostring(tokens), 'u', tostring(now))
  redis.call('EXPIRE', KEYS[i], 180)
end
for i = 1, ng do
  local key, z = KEYS[nb + 2 * i - 1], KEYS[nb + 2 * i]
  -- A budget that vanished (Redis restarted) is seeded from the store again, this spend included.
  if redis.call('EXISTS', key) == 1 then
    local amount = redis.call('HGET', key, 'h:' .. hold)
    if amount then
      redis.call('HINCRBYFLOAT', key, 'reserved', -tonumber(amount))
      redis.call('HDEL', key, 'h:' .. hold)
      redis.call('ZREM', z, hold)
    end
    if redis.call('ZCARD', z) == 0 then redis.call('HSET', key, 'reserved', 0) end
    redis.call('HINCRBYFLOAT', key, 'spent', spent)
  end
end
return 1
"""

# KEYS: budget hash. ARGV: spent (from the store), expire-at or 0.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
  if tonumber(ARGV[2]) > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
end
return 1
"""

# KEYS: holds zsets; ARGV: ttl, then the hold id for each zset. Only holds still present are renewed.
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], 'XX', until_, ARGV[i + 1]) end
return 1
"""


@dataclass(frozen=True)
class Bucket:
    scope: str  # e.g. "key:key_ab12:rpm", "global:tpm"
    limit: int
    amount: int


@dataclass(frozen=True)
class BudgetRef:
    name: str  # "key:<id>" or "project:<name>"
    period_day: str
    limit: float
    cost: float
    expire_at: int  # 0: never (a "total" budget)

    @property
    def key(self) -> str:
        return f"gw:budget:{self.name}:{self.period_day}"


@dataclass(frozen=True)
class Admitted:
    left: list[float]  # tokens left in each bucket, in the order given


@dataclass(frozen=True)
class Limited:
    index: int
    wait: float  # math.inf: the amount can never fit


@dataclass(frozen=True)
class OverBudget:
    index: int
    remaining: float


@dataclass
class _Holds:
    """The holds this process still has open: renewed until settled, so only a dead process's lapse."""

    open: dict[str, list[str]] = field(default_factory=dict)  # hold id -> holds zset keys


class RedisState:
    def __init__(self, url: str, *, hold_ttl_s: float,
                 seed: Callable[[str, str], Awaitable[float]]) -> None:
        """``seed(name, period_day)``: the spend the store recorded for a budget since the day its period
        began (name is "key:<id>" or "project:<name>")."""
        # Bounded: a burst of admissions waits (up to the socket timeout) for a free connection instead of
        # opening one per request in flight.
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=SOCKET_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S, health_check_interval=10)
        self.client = redis.Redis.from_pool(pool)
        self.hold_ttl_s = hold_ttl_s
        self._seed = seed
        self._admit = self.client.register_script(_ADMIT)
        self._settle = self.client.register_script(_SETTLE)
        self._seed_script = self.client.register_script(_SEED)
        self._renew = self.client.register_script(_RENEW)
        self._holds = _Holds()
        self._pending: set[asyncio.Task[None]] = set()

    async def admit(self, buckets: Sequence[Bucket], budgets: Sequence[BudgetRef]) -> tuple[
            str, Admitted | Limited | OverBudget]:
        """Take from every bucket and hold ``cost`` on every budget, or nothing; returns the hold id.
        Raises StateUnavailable when Redis cannot be reached."""
        hold = secrets.token_hex(8)
        keys = [f"gw:rate:{b.scope}" for b in buckets]
        args: list[str | int | float] = [len(buckets), len(budgets), hold, self.hold_ttl_s]
        for bucket in buckets:
            args += [bucket.limit, bucket.amount]
        for budget in budgets:
            keys += [budget.key, budget.key + ":z"]
            args += [budget.limit, repr(budget.cost), budget.expire_at]
        try:
            return await self._admit_once(hold, keys, args, budgets)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(
                f"The gateway's shared state (Redis) is unreachable, so this key's limits cannot be counted "
                f"({type(exc).__name__}); try again shortly.") from None

    async def _admit_once(self, hold: str, keys: list[str], args: list[str | int | float],
                          budgets: Sequence[BudgetRef]) -> tuple[str, Admitted | Limited | OverBudget]:
        for _ in range(len(budgets) + 1):
            reply = await self._admit(keys=keys, args=args)
            kind = reply[0].decode()
            if kind == "seed":
                ref = budgets[int(reply[1]) - 1]
                spent = await self._seed(ref.name, ref.period_day)
                await self._seed_script(keys=[ref.key], args=[repr(spent), ref.expire_at])
                continue
            if kind == "rate":
                wait = reply[2].decode()
                return hold, Limited(int(reply[1]) - 1, math.inf if wait == "inf" else float(wait))
            if kind == "budget":
                return hold, OverBudget(int(reply[1]) - 1, float(reply[2]))
            if budgets:
                self._holds.open[hold] = [budget.key + ":z" for budget in budgets]
            return hold, Admitted([float(x) for x in reply[1:]])
        raise RedisError("budget counters vanished while being seeded")

    async def budget(self, name: str, period_day: str) -> tuple[float, float]:
        """(spent, reserved) of a budget as every process sees it; the store's record when Redis has none."""
        try:
            # redis-py types its commands for both clients (a list or an awaitable of one): this is the async one.
            spent, reserved = await cast(Awaitable[list[bytes | None]],
                                         self.client.hmget(f"gw:budget:{name}:{period_day}", ["spent", "reserved"]))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"The gateway's shared state (Redis) is unreachable ({type(exc).__name__}); "
                                   "try again shortly.") from None
        if spent is None:
            return await self._seed(name, period_day), 0.0
        return float(spent), float(reserved or 0)

    def settle(self, hold: str, tpm: Sequence[Bucket], give_back: int, budgets: Sequence[BudgetRef],
               spent: float) -> None:
        """Release the hold and count what was spent, off the request path; awaited by ``close``."""
        task = asyncio.get_running_loop().create_task(self._settle_now(hold, tpm, give_back, budgets, spent))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle_now(self, hold: str, tpm: Sequence[Bucket], give_back: int, budgets: Sequence[BudgetRef],
                          spent: float) -> None:
        keys = [f"gw:rate:{b.scope}" for b in tpm]
        for budget in budgets:
            keys += [budget.key, budget.key + ":z"]
        args: list[str | int | float] = [len(tpm), len(budgets), hold, give_back, repr(spent)]
        args += [b.limit for b in tpm]
        delay = 0.1
        try:
            for attempt in range(SETTLE_ATTEMPTS):
                try:
                    await self._settle(keys=keys, args=args)
                    return
                except RedisError as exc:
                    if attempt == SETTLE_ATTEMPTS - 1:
                        log.error("settling a reservation on Redis failed (%s): its hold lapses after %gs, and "
                                  "its spend of $%.6f is counted again when the budget is seeded from the store",
                                  exc, self.hold_ttl_s, spent)
                        return
                    await asyncio.sleep(delay)
                    delay *= 2
        finally:
            self._holds.open.pop(hold, None)

    async def renew_holds(self) -> None:
        """Keep this process's open holds from lapsing, every ``hold_ttl_s / 3`` until cancelled."""
        while True:
            await asyncio.sleep(self.hold_ttl_s / 3)
            keys: list[str] = []
            args: list[str | float] = [self.hold_ttl_s]
            for hold, zsets in list(self._holds.open.items()):
                for z in zsets:
                    keys.append(z)
                    args.append(hold)
            if keys:
                try:
                    await self._renew(keys=keys, args=args)
                except (RedisError, OSError) as exc:
                    log.warning("renewing %d budget holds on Redis failed (%s)", len(keys), exc)

    def publish_soon(self, message: str) -> None:
        """Announce to every process, off the request path (a lost announcement only loosens a throttle)."""
        task = asyncio.get_running_loop().create_task(self._publish(message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, message: str) -> None:
        try:
            await self.client.publish(EVENTS_CHANNEL, message)
        except (RedisError, OSError) as exc:
            log.warning("could not announce %r on Redis (%s)", message, exc)

    async def watch(self, heard: Callable[[str | None], Awaitable[None]]) -> None:
        """Call ``heard(announcement)`` for each announcement, and ``heard(None)`` after (re)subscribing,
        when some may have been missed. Runs until cancelled; reconnects by itself."""
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                await heard(None)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is not None:
                        await heard(message["data"].decode())
            except (RedisError, OSError) as exc:
                log.warning("Redis announcements interrupted (%s); resubscribing", exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            await asyncio.sleep(RESUBSCRIBE_S)

    async def close_pending(self) -> None:
        """Wait for the settlements and announcements in flight."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        await self.close_pending()
        await self.client.aclose()  # from_pool: closing the client closes its pool


async def announce(url: str, message: str) -> None:
    """Publish a key change ("revoke:<id>", "update:<id>") to every process, from the CLI or the admin page."""
    client = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S)
    try:
        await client.publish(EVENTS_CHANNEL, message)
    except (RedisError, OSError) as exc:
        log.warning("could not announce %r on Redis (%s): the other processes see it on their next reload "
                    "from the store", message, exc)
    finally:
        await client.aclose()
