"""The embedded SQLite store: every SQL statement of the gateway lives in this module.

WAL journal with ``synchronous=NORMAL``; one connection (aiosqlite runs it on its own thread) is the
one writer of this process; numbered migrations are applied at open. The CLI and the server open the
same file; ``busy_timeout`` lets them take turns. Request records are written in batches (one
transaction, ``executemany``) together with the daily aggregates they add to, so pruning old request
records never loses spend.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import msgspec

DB_FILENAME = "gateway.db"

# Append only: each entry runs once, in order, and its index + 1 becomes the schema version.
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
)


class KeyRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    prefix: str
    hash: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    budget_usd: float | None = None
    budget_period: str = "month"
    rpm: int | None = None
    tpm: int | None = None
    models: list[str] | None = None
    expires_at: float | None = None
    project: str | None = None


class KeyLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What ``keys create`` and ``keys update`` may set."""

    budget_usd: float | None = None
    budget_period: str = "month"
    rpm: int | None = None
    tpm: int | None = None
    models: list[str] | None = None
    expires_at: float | None = None
    project: str | None = None


class RequestRecord(msgspec.Struct, kw_only=True):
    """One request, as the usage queue hands it to the writer."""

    ts: float
    request_id: str
    key_id: str
    key_name: str
    project: str | None
    mode: Literal["unified", "native", "messages"]
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


class DuplicateName(Exception):
    pass


class Store:
    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    async def open(cls, data_dir: Path) -> Store:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / DB_FILENAME
        conn = await aiosqlite.connect(path, isolation_level=None)
        await conn.execute("PRAGMA busy_timeout = 5000")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        store = cls(conn, path)
        await store._migrate()
        return store

    async def close(self) -> None:
        await self._conn.close()

    async def _migrate(self) -> None:
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            version = await self.schema_version()
            for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(sql):
                    await self._conn.execute(statement)
                await self._conn.execute(f"PRAGMA user_version = {number}")
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._conn.execute("ROLLBACK")
            raise

    async def schema_version(self) -> int:
        return int(await self._scalar("PRAGMA user_version") or 0)

    async def data_version(self) -> int:
        """Changes whenever another connection (the CLI, another worker) commits to the file."""
        return int(await self._scalar("PRAGMA data_version") or 0)

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._conn.execute(sql, params) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------------------------------ keys

    async def list_keys(self) -> list[KeyRow]:
        async with self._conn.execute(f"SELECT {', '.join(_KEY_COLUMNS)} FROM keys ORDER BY created_at") as cur:
            rows = await cur.fetchall()
        return [_key_row(row) for row in rows]

    async def create_key(self, *, id: str, name: str, prefix: str, hash: str, limits: KeyLimits) -> KeyRow:
        row = KeyRow(id=id, name=name, prefix=prefix, hash=hash, created_at=time.time(), last_used_at=None,
                     revoked_at=None, **msgspec.structs.asdict(limits))
        values = [_column_value(getattr(row, c)) for c in _KEY_COLUMNS]
        try:
            await self._conn.execute(
                f"INSERT INTO keys ({', '.join(_KEY_COLUMNS)}) VALUES ({', '.join('?' * len(_KEY_COLUMNS))})",
                values)
        except aiosqlite.IntegrityError as exc:
            raise DuplicateName(name) from exc
        return row

    async def update_key(self, key_id: str, limits: KeyLimits) -> None:
        fields = msgspec.structs.asdict(limits)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self._conn.execute(f"UPDATE keys SET {assignments} WHERE id = ?",
                                 [*(_column_value(v) for v in fields.values()), key_id])

    async def find_key(self, name_or_id: str) -> KeyRow | None:
        async with self._conn.execute(
            f"SELECT {', '.join(_KEY_COLUMNS)} FROM keys WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
            (name_or_id, name_or_id, name_or_id),
        ) as cur:
            row = await cur.fetchone()
        return _key_row(row) if row else None

    async def revoke_key(self, key_id: str) -> None:
        await self._conn.execute(
            "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)
        )

    async def touch_keys(self, last_used: dict[str, float]) -> None:
        """Write-behind of the in-memory last-used times, in one transaction."""
        if not last_used:
            return
        await self._conn.execute("BEGIN")
        await self._conn.executemany(
            "UPDATE keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
            [(ts, key_id) for key_id, ts in last_used.items()],
        )
        await self._conn.execute("COMMIT")

    # ----------------------------------------------------------------------------------------- usage

    async def write_requests(self, records: Sequence[RequestRecord]) -> None:
        """One transaction: the request rows and the daily aggregates they add to."""
        if not records:
            return
        columns = ", ".join(_REQUEST_COLUMNS)
        marks = ", ".join("?" * len(_REQUEST_COLUMNS))
        await self._conn.execute("BEGIN")
        try:
            await self._conn.executemany(
                f"INSERT INTO requests ({columns}) VALUES ({marks})",
                [tuple(_column_value(getattr(r, c)) for c in _REQUEST_COLUMNS) for r in records],
            )
            await self._conn.executemany(
                """
                INSERT INTO usage_daily (day, key_id, key_name, project, model, requests, errors, prompt_tokens,
                    completion_tokens, cached_tokens, reasoning_tokens, cost_usd, unpriced)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (day, key_id, project, model) DO UPDATE SET
                    key_name = excluded.key_name,
                    requests = requests + excluded.requests,
                    errors = errors + excluded.errors,
                    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = completion_tokens + excluded.completion_tokens,
                    cached_tokens = cached_tokens + excluded.cached_tokens,
                    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
                    cost_usd = cost_usd + excluded.cost_usd,
                    unpriced = unpriced + excluded.unpriced
                """,
                _daily_rows(records),
            )
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._conn.execute("ROLLBACK")
            raise

    async def spend_since(self, day: str, *, by: Literal["key_id", "project"]) -> dict[str, float]:
        """USD spent from ``day`` (YYYY-MM-DD, UTC) on, per key id or per project."""
        async with self._conn.execute(
            f"SELECT {by}, SUM(cost_usd) FROM usage_daily WHERE day >= ? AND {by} != '' GROUP BY {by}", (day,)
        ) as cur:
            rows = await cur.fetchall()
        return {str(name): float(total) for name, total in rows}

    async def aggregate(self, by: AggregateBy, *, since: str | None = None, until: str | None = None,
                        key_id: str | None = None, project: str | None = None,
                        model: str | None = None) -> list[Aggregate]:
        """Totals per key, model, project or day from the daily aggregates (days as YYYY-MM-DD, UTC)."""
        column = _GROUP_COLUMN[by]
        where, params = _filters(since=since, until=until, key_id=key_id, project=project, model=model)
        order = "g" if by == "day" else "cost DESC, g"
        sql = f"""
            SELECT {column} AS g, SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens),
                   SUM(cached_tokens), SUM(reasoning_tokens), SUM(cost_usd) AS cost, SUM(unpriced)
            FROM usage_daily {where} GROUP BY g ORDER BY {order}
        """
        async with self._conn.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [Aggregate(group=str(r[0]), requests=r[1], errors=r[2], prompt_tokens=r[3], completion_tokens=r[4],
                          cached_tokens=r[5], reasoning_tokens=r[6], cost_usd=round(float(r[7]), 10),
                          unpriced=r[8]) for r in rows]

    async def count_requests(self) -> int:
        return int(await self._scalar("SELECT COUNT(*) FROM requests") or 0)

    async def prune_requests(self, before: float, *, batch: int = 5000) -> int:
        """Delete request records older than ``before`` in small batches; the aggregates stay."""
        deleted = 0
        while True:
            cur = await self._conn.execute(
                "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE ts < ? LIMIT ?)", (before, batch))
            deleted += cur.rowcount
            if cur.rowcount < batch:
                return deleted


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
    return [(*key[:2], values[0], *key[2:], *values[1:]) for key, values in totals.items()]


def _column_value(value: Any) -> Any:
    if isinstance(value, list):
        return _json.encode(value).decode()
    if isinstance(value, bool):
        return int(value)
    return value


def _statements(sql: str) -> list[str]:
    return [part.strip() for part in sql.split(";") if part.strip()]


def _key_row(row: Iterable[Any]) -> KeyRow:
    values = dict(zip(_KEY_COLUMNS, row, strict=True))
    models = values["models"]
    values["models"] = _models_decoder.decode(models) if models else None
    return msgspec.convert(values, KeyRow)
