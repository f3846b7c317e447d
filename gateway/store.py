"""The store: every SQL statement of the gateway lives in this module, written once for both engines.

``SqliteStore`` (the embedded default: one file in data_dir, no server) and ``PostgresStore``
(gateway/store_postgres.py: shared by every worker and replica) implement one interface, ``Store``, and
run the same numbered migrations; ``open_store`` picks one from ``[store]``, and nothing else knows which.
Request records are written in batches (one transaction) together with the daily and hourly aggregates
they add to, so pruning old request records never loses spend.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiosqlite
import msgspec

if TYPE_CHECKING:
    from gateway.config import Config

DB_FILENAME = "gateway.db"

# Append only: each entry runs once, in order, and its index + 1 becomes the schema version. Both engines run
# this list: write SQL they share, with SQLite's types (migration_statements maps them for PostgreSQL).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        last_used_at REAL,
        revoked_at REAL
    );
    """,
    """
    ALTER TABLE keys ADD COLUMN budget_usd REAL;
    ALTER TABLE keys ADD COLUMN budget_period TEXT NOT NULL DEFAULT 'month';
    ALTER TABLE keys ADD COLUMN rpm INTEGER;
    ALTER TABLE keys ADD COLUMN tpm INTEGER;
    ALTER TABLE keys ADD COLUMN models TEXT;
    ALTER TABLE keys ADD COLUMN expires_at REAL;
    ALTER TABLE keys ADD COLUMN project TEXT;
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        request_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        key_name TEXT NOT NULL,
        project TEXT,
        mode TEXT NOT NULL,
        stream INTEGER NOT NULL,
        requested_model TEXT,
        provider TEXT,
        model TEXT,
        attempts INTEGER NOT NULL,
        status INTEGER NOT NULL,
        error_type TEXT,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost_input REAL,
        cost_cached_input REAL,
        cost_cache_write REAL,
        cost_output REAL,
        cost_total REAL,
        latency_ms REAL NOT NULL,
        ttft_ms REAL,
        price_version TEXT,
        routing TEXT
    );
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_key_ts ON requests (key_id, ts);
    CREATE INDEX requests_request_id ON requests (request_id);
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        key_id TEXT NOT NULL,
        key_name TEXT NOT NULL,
        project TEXT NOT NULL,
        model TEXT NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        unpriced INTEGER NOT NULL,
        PRIMARY KEY (day, key_id, project, model)
    );
    CREATE INDEX usage_daily_key ON usage_daily (key_id, day);
    CREATE INDEX usage_daily_project ON usage_daily (project, day);
    """,
    # The admin page: bodies kept when [logging] store_bodies is on; hourly aggregates (the requests
    # per hour chart without scanning request rows), backfilled from the rows already there (a
    # PostgreSQL store has none yet: it runs every migration at its creation, before any row); the
    # install's admin secrets (generated token hash, session signing key) and its login sessions;
    # the requests list filtered by key, newest first (rowid order within a key); a covering index so
    # that aggregates over a range of days read the index alone, never the table.
    """
    ALTER TABLE requests ADD COLUMN request_body TEXT;
    ALTER TABLE requests ADD COLUMN response_body TEXT;
    CREATE TABLE usage_hourly (
        hour INTEGER PRIMARY KEY,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL
    );
    INSERT INTO usage_hourly (hour, requests, errors, tokens, cost_usd)
        SELECT CAST(ts / 3600 AS INTEGER), COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END),
               SUM(prompt_tokens + completion_tokens),
               COALESCE(SUM(cost_total), 0)
        FROM requests GROUP BY 1;
    CREATE INDEX requests_key_id ON requests (key_id);
    CREATE INDEX usage_daily_covering ON usage_daily (day, key_id, project, model, key_name, requests, errors,
        prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_usd, unpriced);
    CREATE TABLE admin_settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE admin_sessions (
        id_hash TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
    # Requests whose provider reported no usage: their tokens and cost are the gateway's estimate.
    """
    ALTER TABLE requests ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
    """,
    # Requests refused for a missing or wrong key (401): counted per hour, route and reason, never one row
    # per request, so that a stranger's requests cannot fill the disk (see UsageRecorder.count_unauthenticated).
    """
    CREATE TABLE auth_refusals (
        hour INTEGER NOT NULL,
        route TEXT NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (hour, route, reason)
    );
    """,
    # Responses API conversation state (store: true): each response with its own input items, its output
    # items as kept (encrypted reasoning included even when the client did not ask to see it) and the response
    # it continued, so a previous_response_id chain is walked link by link and no row repeats the history.
    # Items are found by id (item_reference) through response_items. Owned by the key that made them; pruned
    # with the request records (usage.retention_days).
    """
    CREATE TABLE responses (
        id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        model TEXT NOT NULL,
        previous_response_id TEXT,
        response TEXT NOT NULL,
        input_items TEXT NOT NULL,
        output_items TEXT NOT NULL,
        PRIMARY KEY (key_id, id)
    );
    CREATE INDEX responses_created_at ON responses (created_at);
    CREATE TABLE response_items (
        key_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        response_id TEXT NOT NULL,
        PRIMARY KEY (key_id, item_id)
    );
    CREATE INDEX response_items_response ON response_items (key_id, response_id);
    """,
)


class KeyLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What ``keys create`` and ``keys update`` may set."""

    budget_usd: float | None = None
    budget_period: str = "month"
    rpm: int | None = None
    tpm: int | None = None
    models: list[str] | None = None
    expires_at: float | None = None
    project: str | None = None


class KeyRow(KeyLimits, frozen=True, kw_only=True):
    """A key as stored: its limits, and never its secret (only the secret's SHA-256)."""

    id: str
    name: str
    prefix: str
    hash: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


class RequestRecord(msgspec.Struct, kw_only=True):
    """One request, as the usage queue hands it to the writer."""

    ts: float
    request_id: str
    key_id: str
    key_name: str
    project: str | None
    mode: Literal["unified", "native", "messages", "embeddings", "responses"]
    stream: bool
    requested_model: str | None
    provider: str | None
    model: str | None
    attempts: int
    status: int
    error_type: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_input: float | None = None
    cost_cached_input: float | None = None
    cost_cache_write: float | None = None
    cost_output: float | None = None
    cost_total: float | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    price_version: str | None = None
    routing: str | None = None  # the routing trail, JSON
    # Only with [logging] store_bodies = true, and only for non-streamed chat requests.
    request_body: str | None = None
    response_body: str | None = None
    estimated: bool = False  # the provider reported no usage: tokens and cost are the gateway's estimate


_REQUEST_COLUMNS = RequestRecord.__struct_fields__
_KEY_COLUMNS = KeyRow.__struct_fields__
_json = msgspec.json.Encoder()
_models_decoder = msgspec.json.Decoder(list[str] | None)

AggregateBy = Literal["key", "model", "project", "day"]
_GROUP_COLUMN: dict[str, str] = {"key": "key_name", "model": "model", "project": "project", "day": "day"}


class Aggregate(msgspec.Struct, kw_only=True):
    group: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float
    unpriced: int  # requests whose cost is unknown (not in cost_usd)


class HourCount(msgspec.Struct, frozen=True, kw_only=True):
    hour: int  # hours since the epoch (UTC)
    requests: int
    errors: int


class Dimensions(msgspec.Struct, kw_only=True):
    """The values the usage filters can take: what the daily aggregates have seen."""

    keys: list[tuple[str, str]]  # (key id, key name)
    models: list[str]
    projects: list[str]


# The requests list shows these; the detail adds the bodies and the routing trail.
REQUEST_LIST_COLUMNS = ("id", "ts", "request_id", "key_id", "key_name", "project", "mode", "stream",
                        "requested_model", "provider", "model", "attempts", "status", "error_type", "prompt_tokens",
                        "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_total", "latency_ms",
                        "ttft_ms")
_REQUEST_DETAIL_COLUMNS = (*REQUEST_LIST_COLUMNS, "cost_input", "cost_cached_input", "cost_cache_write",
                           "cost_output", "cache_write_tokens", "price_version", "routing", "request_body",
                           "response_body")


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True):
    """One stored Responses API answer. ``response`` is the Response object as answered; ``input_items`` and
    ``output_items`` are JSON arrays of this turn's own items (earlier turns are in ``previous_response_id``'s
    row); ``item_ids`` are the ids those items carry (written to the item index, not read back)."""

    id: str
    key_id: str
    created_at: float
    model: str  # the target that answered, provider/model
    previous_response_id: str | None
    response: bytes
    input_items: bytes
    output_items: bytes
    item_ids: tuple[str, ...]


class DuplicateName(Exception):
    pass


class StoreNotEmpty(Exception):
    pass


class StoreUnavailable(Exception):
    """The store cannot be opened: its server is out of reach, or its driver is missing (the message says
    which and what to do, and never shows a password)."""


# Every table and its primary key, in the order ``gateway migrate-store`` copies them (it pages through each
# in key order). Adding a table is two steps: append its CREATE TABLE to MIGRATIONS (both stores run the same
# list) and add it here, so that it is migrated; its queries are methods of ``Store``, written once.
TABLES: dict[str, tuple[str, ...]] = {
    "keys": ("id",), "requests": ("id",), "usage_daily": ("day", "key_id", "project", "model"),
    "usage_hourly": ("hour",), "admin_settings": ("name",), "admin_sessions": ("id_hash",),
    "auth_refusals": ("hour", "route", "reason"), "responses": ("key_id", "id"),
    "response_items": ("key_id", "item_id"),
}


class Transaction(Protocol):
    """The statements a store runs inside one of its transactions."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Many rows into one table, by the engine's fastest bulk path."""


class Store(abc.ABC):
    """Every SQL statement of the gateway, written once in the SQL that SQLite and PostgreSQL both speak
    (``?`` placeholders, ``ON CONFLICT``, ``CASE``); a subclass brings the connection, the placeholder
    syntax and what differs between the engines (migrations' column types, the schema version, the change
    counter). Sums are converted with ``int()``/``float()`` here: PostgreSQL returns a BIGINT sum as NUMERIC."""

    # ---------------------------------------------------------------------------------- the engine seam

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    @abc.abstractmethod
    async def data_version(self) -> int:
        """Changes whenever someone else (the CLI, another worker or replica) changed the keys."""

    @abc.abstractmethod
    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Sequence[Any]]: ...

    @abc.abstractmethod
    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """A single-statement write outside any transaction; the number of rows it changed."""

    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """One transaction, rolled back if its body fails."""

    def unreachable(self, exc: BaseException) -> bool:
        """Whether a failed statement failed because the store's server is out of reach (worth waiting
        for), not because of the statement. An embedded file has no server."""
        return False

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._fetch(sql, params)
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------------------------------ keys

    async def list_keys(self) -> list[KeyRow]:
        rows = await self._fetch(f"SELECT {', '.join(_KEY_COLUMNS)} FROM keys ORDER BY created_at")
        return [_key_row(row) for row in rows]

    async def create_key(self, *, id: str, name: str, prefix: str, hash: str, limits: KeyLimits) -> KeyRow:
        row = KeyRow(id=id, name=name, prefix=prefix, hash=hash, created_at=time.time(), last_used_at=None,
                     revoked_at=None, **msgspec.structs.asdict(limits))
        values = [_column_value(getattr(row, c)) for c in _KEY_COLUMNS]
        inserted = await self._write(
            f"INSERT INTO keys ({', '.join(_KEY_COLUMNS)}) VALUES ({', '.join('?' * len(_KEY_COLUMNS))}) "
            "ON CONFLICT DO NOTHING", values)
        if not inserted:
            raise DuplicateName(name)
        return row

    async def update_key(self, key_id: str, limits: KeyLimits) -> None:
        fields = msgspec.structs.asdict(limits)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self._write(f"UPDATE keys SET {assignments} WHERE id = ?",
                          [*(_column_value(v) for v in fields.values()), key_id])

    async def find_key(self, name_or_id: str) -> KeyRow | None:
        rows = await self._fetch(
            f"SELECT {', '.join(_KEY_COLUMNS)} FROM keys WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
            (name_or_id, name_or_id, name_or_id),
        )
        return _key_row(rows[0]) if rows else None

    async def revoke_key(self, key_id: str) -> None:
        await self._write("UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id))

    async def touch_keys(self, last_used: dict[str, float]) -> None:
        """Write-behind of the in-memory last-used times, in one transaction."""
        if not last_used:
            return
        async with self._transaction() as tx:
            await tx.executemany(
                "UPDATE keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                [(ts, key_id, ts) for key_id, ts in sorted(last_used.items())],
            )

    # ----------------------------------------------------------------------------------------- usage

    async def add_auth_refusals(self, counts: dict[tuple[int, str, str], int]) -> None:
        """Add to the per-hour counts of requests refused for their key (hour, route, reason -> count)."""
        if not counts:
            return
        async with self._transaction() as tx:
            await tx.executemany(
                """
                INSERT INTO auth_refusals (hour, route, reason, count) VALUES (?, ?, ?, ?)
                ON CONFLICT (hour, route, reason) DO UPDATE SET count = auth_refusals.count + excluded.count
                """,
                [(*bucket, count) for bucket, count in sorted(counts.items())],
            )

    async def auth_refusals(self, since_hour: int) -> list[tuple[int, str, str, int]]:
        """(hour since the epoch, route, reason, count) from ``since_hour`` on, oldest first."""
        rows = await self._fetch(
            "SELECT hour, route, reason, count FROM auth_refusals WHERE hour >= ? ORDER BY hour, route, reason",
            (since_hour,),
        )
        return [(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    async def write_requests(self, records: Sequence[RequestRecord]) -> None:
        """One transaction: the request rows and the daily and hourly aggregates they add to. The
        aggregate rows go in sorted order, so that two replicas adding to the same rows lock them in the
        same order and never deadlock."""
        if not records:
            return
        async with self._transaction() as tx:
            # Every column is a plain SQL value already: msgspec's C-level astuple is enough.
            await tx.insert_rows("requests", _REQUEST_COLUMNS, [msgspec.structs.astuple(r) for r in records])
            await tx.executemany(
                """
                INSERT INTO usage_daily (day, key_id, key_name, project, model, requests, errors, prompt_tokens,
                    completion_tokens, cached_tokens, reasoning_tokens, cost_usd, unpriced)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (day, key_id, project, model) DO UPDATE SET
                    key_name = excluded.key_name,
                    requests = usage_daily.requests + excluded.requests,
                    errors = usage_daily.errors + excluded.errors,
                    prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens,
                    cached_tokens = usage_daily.cached_tokens + excluded.cached_tokens,
                    reasoning_tokens = usage_daily.reasoning_tokens + excluded.reasoning_tokens,
                    cost_usd = usage_daily.cost_usd + excluded.cost_usd,
                    unpriced = usage_daily.unpriced + excluded.unpriced
                """,
                _daily_rows(records),
            )
            await tx.executemany(
                """
                INSERT INTO usage_hourly (hour, requests, errors, tokens, cost_usd) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (hour) DO UPDATE SET
                    requests = usage_hourly.requests + excluded.requests,
                    errors = usage_hourly.errors + excluded.errors,
                    tokens = usage_hourly.tokens + excluded.tokens,
                    cost_usd = usage_hourly.cost_usd + excluded.cost_usd
                """,
                _hourly_rows(records),
            )

    async def spend_since(self, day: str, *, by: Literal["key_id", "project"]) -> dict[str, float]:
        """USD spent from ``day`` (YYYY-MM-DD, UTC) on, per key id or per project."""
        rows = await self._fetch(
            f"SELECT {by}, SUM(cost_usd) FROM usage_daily WHERE day >= ? AND {by} != '' GROUP BY {by}", (day,))
        return {str(name): float(total) for name, total in rows}

    async def aggregate(self, by: AggregateBy, *, since: str | None = None, until: str | None = None,
                        key_id: str | None = None, project: str | None = None,
                        model: str | None = None) -> list[Aggregate]:
        """Totals per key, model, project or day from the daily aggregates (days as YYYY-MM-DD, UTC)."""
        column = _GROUP_COLUMN[by]
        where, params = _filters(since=since, until=until, key_id=key_id, project=project, model=model)
        order = "g" if by == "day" else "cost DESC, g"
        rows = await self._fetch(f"""
            SELECT {column} AS g, {_SUMS} AS cost
            FROM usage_daily {where} GROUP BY {column} ORDER BY {order}
        """, params)
        return [_aggregate(str(r[0]), r[1:], digits=10) for r in rows]

    async def aggregate_by_day(self, by: AggregateBy, *, since: str, until: str, key_id: str | None = None,
                               project: str | None = None, model: str | None = None) -> list[tuple[str, Aggregate]]:
        """(day, totals) per day and key, model, project or day: one pass that a table and a chart per day
        can both be summed from."""
        column = _GROUP_COLUMN[by]
        where, params = _filters(since=since, until=until, key_id=key_id, project=project, model=model)
        rows = await self._fetch(f"SELECT day, {column}, {_SUMS} FROM usage_daily {where} GROUP BY day, {column}",
                                 params)
        return [(str(r[0]), _aggregate(str(r[1]), r[2:])) for r in rows]

    async def key_model_totals(self, since: str) -> list[tuple[str, str, Aggregate]]:
        """(key name, model, totals) from ``since`` on: one pass that both a per-key and a per-model ranking
        can be summed from."""
        rows = await self._fetch(
            f"SELECT key_name, model, {_SUMS} FROM usage_daily WHERE day >= ? GROUP BY key_name, model", (since,))
        return [(str(r[0]), str(r[1]), _aggregate("", r[2:])) for r in rows]

    async def hourly(self, since_hour: int) -> list[HourCount]:
        rows = await self._fetch(
            "SELECT hour, requests, errors FROM usage_hourly WHERE hour >= ? ORDER BY hour", (since_hour,))
        return [HourCount(hour=int(r[0]), requests=int(r[1]), errors=int(r[2])) for r in rows]

    async def usage_dimensions(self, since: str, until: str) -> Dimensions:
        """The keys, models and projects the daily aggregates hold between two days, in one pass."""
        rows = await self._fetch(
            """
            SELECT key_id, MAX(key_name), model, project FROM usage_daily
            WHERE day >= ? AND day <= ? GROUP BY key_id, model, project
            """,
            (since, until),
        )
        names = {str(r[0]): str(r[1]) for r in rows}
        return Dimensions(keys=sorted(names.items(), key=lambda item: (item[1], item[0])),
                          models=sorted({str(r[2]) for r in rows if r[2]}),
                          projects=sorted({str(r[3]) for r in rows if r[3]}))

    async def recent_latencies(self, since: float, limit: int) -> list[tuple[str, str, float]]:
        """(provider, model, latency ms) of the latest successful requests since ``since``, newest first."""
        rows = await self._fetch(
            """
            SELECT provider, model, latency_ms FROM requests
            WHERE ts >= ? AND status < 400 AND provider IS NOT NULL
            ORDER BY ts DESC LIMIT ?
            """,
            (since, limit),
        )
        return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    async def list_requests(self, *, before_id: int | None = None, key_id: str | None = None,
                            limit: int = 50) -> list[dict[str, Any]]:
        """The latest request records, newest first; ``before_id`` pages back (keyset, not OFFSET)."""
        clauses: list[str] = []
        params: list[Any] = []
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        if key_id is not None:
            clauses.append("key_id = ?")
            params.append(key_id)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self._fetch(
            f"SELECT {', '.join(REQUEST_LIST_COLUMNS)} FROM requests {where} ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [dict(zip(REQUEST_LIST_COLUMNS, row, strict=True)) for row in rows]

    async def get_request(self, row_id: int) -> dict[str, Any] | None:
        rows = await self._fetch(f"SELECT {', '.join(_REQUEST_DETAIL_COLUMNS)} FROM requests WHERE id = ?", (row_id,))
        return dict(zip(_REQUEST_DETAIL_COLUMNS, rows[0], strict=True)) if rows else None

    # ----------------------------------------------------------------------------------------- admin

    async def admin_setting(self, name: str) -> str | None:
        value = await self._scalar("SELECT value FROM admin_settings WHERE name = ?", (name,))
        return str(value) if value is not None else None

    async def init_admin_setting(self, name: str, value: str) -> bool:
        """Store ``value`` unless the setting exists; True if this call stored it (workers race at start)."""
        return await self._write("INSERT INTO admin_settings (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                 (name, value)) == 1

    async def create_admin_session(self, id_hash: str, now: float, expires_at: float) -> None:
        async with self._transaction() as tx:
            await tx.execute("DELETE FROM admin_sessions WHERE expires_at <= ?", (now,))
            await tx.execute("INSERT INTO admin_sessions (id_hash, created_at, expires_at) VALUES (?, ?, ?)",
                             (id_hash, now, expires_at))

    async def admin_session_live(self, id_hash: str, now: float) -> bool:
        return await self._scalar("SELECT 1 FROM admin_sessions WHERE id_hash = ? AND expires_at > ?",
                                  (id_hash, now)) is not None

    async def delete_admin_session(self, id_hash: str) -> None:
        await self._write("DELETE FROM admin_sessions WHERE id_hash = ?", (id_hash,))

    async def count_requests(self) -> int:
        return int(await self._scalar("SELECT COUNT(*) FROM requests") or 0)

    async def prune_requests(self, before: float, *, batch: int = 5000) -> int:
        """Delete request records (and the counts of refused ones) older than ``before`` in small batches;
        the aggregates stay."""
        await self._write("DELETE FROM auth_refusals WHERE hour < ?", (int(before // 3600),))
        deleted = 0
        while True:
            count = await self._write(
                "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE ts < ? LIMIT ?)", (before, batch))
            deleted += count
            if count < batch:
                return deleted

    # ------------------------------------------------------------------------------------- responses

    async def write_responses(self, rows: Sequence[StoredResponse]) -> None:
        if not rows:
            return
        async with self._transaction() as tx:
            await tx.executemany(
                "INSERT INTO responses (id, key_id, created_at, model, previous_response_id, response, input_items, "
                "output_items) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key_id, id) DO UPDATE SET "
                "created_at = excluded.created_at, model = excluded.model, "
                "previous_response_id = excluded.previous_response_id, response = excluded.response, "
                "input_items = excluded.input_items, output_items = excluded.output_items",
                [(r.id, r.key_id, r.created_at, r.model, r.previous_response_id, r.response.decode(),
                  r.input_items.decode(), r.output_items.decode()) for r in rows])
            await tx.executemany(
                "INSERT INTO response_items (key_id, item_id, response_id) VALUES (?, ?, ?) "
                "ON CONFLICT (key_id, item_id) DO UPDATE SET response_id = excluded.response_id",
                [(r.key_id, item_id, r.id) for r in rows for item_id in r.item_ids])

    async def get_response(self, response_id: str, key_id: str) -> StoredResponse | None:
        """The response, if this key made it (another key's id reads as unknown)."""
        rows = await self._fetch(f"SELECT {_RESPONSE_COLUMNS} FROM responses WHERE id = ? AND key_id = ?",
                                 (response_id, key_id))
        return _stored_response(rows[0]) if rows else None

    async def response_with_item(self, item_id: str, key_id: str) -> StoredResponse | None:
        """The response of this key that holds the input or output item ``item_id``."""
        rows = await self._fetch(
            f"SELECT {_RESPONSE_COLUMNS} FROM responses WHERE key_id = ? AND id = "
            "(SELECT response_id FROM response_items WHERE key_id = ? AND item_id = ?)", (key_id, key_id, item_id))
        return _stored_response(rows[0]) if rows else None

    # Deletes are single autocommit statements, not a transaction: a route handler may be cancelled (its client
    # left) while it waits, and a BEGIN cancelled in flight would still run on aiosqlite's thread and leave a
    # transaction open on the shared connection. An item row left without its response finds nothing.

    async def delete_response(self, response_id: str, key_id: str) -> bool:
        deleted = await self._write("DELETE FROM responses WHERE key_id = ? AND id = ?", (key_id, response_id))
        await self._write("DELETE FROM response_items WHERE key_id = ? AND response_id = ?", (key_id, response_id))
        return deleted > 0

    async def prune_responses(self, before: float) -> int:
        await self._write("DELETE FROM response_items WHERE (key_id, response_id) IN "
                          "(SELECT key_id, id FROM responses WHERE created_at < ?)", (before,))
        return await self._write("DELETE FROM responses WHERE created_at < ?", (before,))

    # ------------------------------------------------------------------------------------ migrate-store

    async def table_rows(self, table: str, *, chunk: int = 500) -> AsyncIterator[tuple[tuple[str, ...], list[Any]]]:
        """Every row of a table of TABLES, as (column names, rows) chunks in primary-key order (keyset
        pages: each one is an index seek, however large the table). Small chunks: a request row may carry
        up to 2 MiB of stored bodies."""
        columns = await self.columns(table)
        key = TABLES[table]
        positions = [columns.index(name) for name in key]
        select = f"SELECT {', '.join(columns)} FROM {table}"
        order = f"ORDER BY {', '.join(key)} LIMIT ?"
        after: tuple[Any, ...] | None = None
        while True:
            if after is None:
                rows = await self._fetch(f"{select} {order}", (chunk,))
            else:
                rows = await self._fetch(f"{select} WHERE ({', '.join(key)}) > ({', '.join('?' * len(key))}) {order}",
                                         (*after, chunk))
            if not rows:
                return
            yield columns, [tuple(row) for row in rows]
            after = tuple(rows[-1][i] for i in positions)

    @abc.abstractmethod
    async def columns(self, table: str) -> tuple[str, ...]:
        """The columns of a table, in their order."""

    async def count_rows(self, table: str) -> int:
        return int(await self._scalar(f"SELECT COUNT(*) FROM {table}") or 0)

    async def copy_from(self, source: Store) -> dict[str, int]:
        """Copy every row of ``source`` into this store, which must hold none yet, in one transaction (all
        rows or none); the number of rows copied per table."""
        for table in TABLES:
            if await self.count_rows(table):
                raise StoreNotEmpty(f"the target store already has rows in {table!r}: migrate-store copies into "
                                    "an empty database only, so that no row is copied twice")
        copied = dict.fromkeys(TABLES, 0)
        async with self._transaction() as tx:
            for table in TABLES:
                async for columns, rows in source.table_rows(table):
                    await tx.insert_rows(table, columns, rows)
                    copied[table] += len(rows)
        await self.after_import()
        return copied

    @abc.abstractmethod
    async def after_import(self) -> None:
        """What an engine needs once rows came in with their ids (PostgreSQL: move the id sequence on)."""


_SUMS = ("SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), "
         "SUM(reasoning_tokens), SUM(cost_usd), SUM(unpriced)")


def _aggregate(group: str, sums: Sequence[Any], *, digits: int | None = None) -> Aggregate:
    cost = float(sums[6])
    return Aggregate(group=group, requests=int(sums[0]), errors=int(sums[1]), prompt_tokens=int(sums[2]),
                     completion_tokens=int(sums[3]), cached_tokens=int(sums[4]), reasoning_tokens=int(sums[5]),
                     cost_usd=round(cost, digits) if digits is not None else cost, unpriced=int(sums[7]))


class _SqliteTransaction:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self._conn.execute(sql, params)
        return cur.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)


class SqliteStore(Store):
    """WAL journal with ``synchronous=NORMAL``; one connection (aiosqlite runs it on its own thread) is the
    one writer of this process; numbered migrations are applied at open. The usage writer, the key-touch
    flush, key operations and admin sessions all share that connection, so every write on it holds
    ``_lock``: a BEGIN of one coroutine never meets the open transaction of another, and a single statement
    never lands inside (or is rolled back with) someone else's transaction. The CLI and the server open the
    same file; ``busy_timeout`` lets them take turns."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, data_dir: Path) -> SqliteStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        return await cls.open_file(data_dir / DB_FILENAME)

    @classmethod
    async def open_file(cls, path: Path) -> SqliteStore:
        conn = await aiosqlite.connect(path, isolation_level=None)
        await conn.execute("PRAGMA busy_timeout = 5000")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        store = cls(conn, path)
        await store._migrate()
        return store

    async def close(self) -> None:
        async with self._lock:  # a transaction in flight ends before the connection does
            await self._conn.close()

    @contextlib.asynccontextmanager
    async def _transaction(self, begin: str = "BEGIN") -> AsyncIterator[_SqliteTransaction]:
        async with self._lock:
            await self._conn.execute(begin)
            try:
                yield _SqliteTransaction(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._lock:  # kept out of any other coroutine's transaction
            cur = await self._conn.execute(sql, params)
            return cur.rowcount

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Sequence[Any]]:
        async with self._conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _migrate(self) -> None:
        async with self._transaction("BEGIN IMMEDIATE"):
            version = await self.schema_version()
            for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in migration_statements(sql, "sqlite"):
                    await self._conn.execute(statement)
                await self._conn.execute(f"PRAGMA user_version = {number}")

    async def schema_version(self) -> int:
        return int(await self._scalar("PRAGMA user_version") or 0)

    async def data_version(self) -> int:
        """Changes whenever another connection (the CLI, another worker) commits to the file."""
        return int(await self._scalar("PRAGMA data_version") or 0)

    async def columns(self, table: str) -> tuple[str, ...]:
        return tuple(str(row[1]) for row in await self._fetch(f"PRAGMA table_info({table})"))

    async def after_import(self) -> None:
        """Nothing: a new rowid is always past the largest id present."""


async def open_store(config: Config) -> Store:
    """The store the config names: the SQLite file in data_dir, or PostgreSQL (its driver imported only then)."""
    if config.store.backend == "postgres":
        return await open_postgres(config.store.postgres_url or "")  # config.py checked it is set
    return await SqliteStore.open(config.data_dir)


async def open_postgres(url: str) -> Store:
    try:
        from gateway.store_postgres import PostgresStore
    except ImportError as exc:
        raise StoreUnavailable(f'[store] backend = "postgres" needs its driver, asyncpg ({exc})\n'
                               "  hint: pip install 'gateway[postgres]'") from exc
    return await PostgresStore.open(url)


def redact_url(url: str) -> str:
    """postgres://user:secret@host/db -> postgres://user:***@host/db: the URL is safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def migration_statements(sql: str, engine: str) -> list[str]:
    """A migration's statements in an engine's dialect: the one place the two differ in DDL. The migrations
    are written for SQLite; PostgreSQL needs 64-bit integers where SQLite's INTEGER always is (token totals
    of a busy day overflow 32 bits), DOUBLE PRECISION where SQLite's REAL is (PostgreSQL's REAL is 32-bit)
    and an identity column where SQLite's INTEGER PRIMARY KEY is the rowid."""
    statements = [part.strip() for part in sql.split(";") if part.strip()]
    if engine == "sqlite":
        return statements
    return [_POSTGRES_TYPES.sub(lambda m: _POSTGRES_TYPE[m.group(0)], statement) for statement in statements]


_POSTGRES_TYPE = {
    "id INTEGER PRIMARY KEY": "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    "INTEGER": "BIGINT",
    "REAL": "DOUBLE PRECISION",
}
_POSTGRES_TYPES = re.compile("|".join(rf"\b{re.escape(word)}\b" for word in _POSTGRES_TYPE))


_RESPONSE_COLUMNS = "id, key_id, created_at, model, previous_response_id, response, input_items, output_items"


def _stored_response(row: Sequence[Any]) -> StoredResponse:
    return StoredResponse(id=row[0], key_id=row[1], created_at=row[2], model=row[3], previous_response_id=row[4],
                          response=row[5].encode(), input_items=row[6].encode(), output_items=row[7].encode(),
                          item_ids=())


def _filters(**values: str | None) -> tuple[str, list[str]]:
    clauses, params = [], []
    for name, value in values.items():
        if value is None:
            continue
        if name == "since":
            clauses.append("day >= ?")
        elif name == "until":
            clauses.append("day <= ?")
        else:
            clauses.append(f"{name} = ?")
        params.append(value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _daily_rows(records: Iterable[RequestRecord]) -> list[tuple[Any, ...]]:
    """Sum a batch per (day, key, project, model) before it meets SQLite: fewer upserts."""
    totals: dict[tuple[str, str, str, str], list[Any]] = {}
    for r in records:
        day = time.strftime("%Y-%m-%d", time.gmtime(r.ts))
        model = f"{r.provider}/{r.model}" if r.provider and r.model else (r.requested_model or "")
        key = (day, r.key_id, r.project or "", model)
        row = totals.setdefault(key, [r.key_name, 0, 0, 0, 0, 0, 0, 0.0, 0])
        row[1] += 1
        row[2] += 1 if r.status >= 400 else 0
        row[3] += r.prompt_tokens
        row[4] += r.completion_tokens
        row[5] += r.cached_tokens
        row[6] += r.reasoning_tokens
        if r.cost_total is None:
            row[8] += 1 if r.status < 400 else 0
        else:
            row[7] += r.cost_total
    # In key order: see write_requests.
    return [(*key[:2], values[0], *key[2:], *values[1:]) for key, values in sorted(totals.items())]


def _hourly_rows(records: Iterable[RequestRecord]) -> list[tuple[int, int, int, int, float]]:
    totals: dict[int, list[Any]] = {}
    for r in records:
        row = totals.setdefault(int(r.ts // 3600), [0, 0, 0, 0.0])
        row[0] += 1
        row[1] += 1 if r.status >= 400 else 0
        row[2] += r.prompt_tokens + r.completion_tokens
        row[3] += r.cost_total or 0.0
    return [(hour, *values) for hour, values in sorted(totals.items())]


def _column_value(value: Any) -> Any:
    if isinstance(value, list):
        return _json.encode(value).decode()
    if isinstance(value, bool):
        return int(value)
    return value


def _key_row(row: Iterable[Any]) -> KeyRow:
    values = dict(zip(_KEY_COLUMNS, row, strict=True))
    models = values["models"]
    values["models"] = _models_decoder.decode(models) if models else None
    return msgspec.convert(values, KeyRow)
