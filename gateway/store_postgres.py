"""The store on PostgreSQL, shared by every worker and replica: the SQL of ``Store`` on an asyncpg pool.

Imported only when ``[store] backend = "postgres"``, so the embedded install never loads the driver.
Statements are ``Store``'s, with its ``?`` placeholders numbered (``$1``…) once per statement text; request
rows go in with COPY. The schema version lives in a one-row table (SQLite keeps it in a pragma); the
migrations run under an advisory lock so that replicas starting together apply each one once.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import asyncpg

from gateway.store import MIGRATIONS, KeyRow, Store, StoreUnavailable, migration_statements, redact_url

# Any fixed number: the lock that serialises the migrations of replicas starting at the same time.
_MIGRATION_LOCK = 0x6761_7465
POOL_MAX = 4  # per process: the usage writer, the key poll and a few admin page reads at once
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """``?`` -> ``$1``, ``$2``…: the statements hold no other question mark (no literals, no JSON operators)."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", number, sql)


def _changed(status: str) -> int:
    """Rows a command changed, from its status tag ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


# A row's text form tells NULL from an empty string: (5,) vs (5,"").
_KEYS_DIGEST = ("SELECT md5(COALESCE(string_agg(ROW("
                + ", ".join(c for c in KeyRow.__struct_fields__ if c != "last_used_at")
                + ")::text, ',' ORDER BY id), '')) FROM keys")


class _PostgresTransaction:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _changed(await self._conn.execute(_numbered(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(_numbered(sql), rows)

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        # COPY: one round trip for the whole batch, the fastest way rows enter PostgreSQL.
        await self._conn.copy_records_to_table(table, records=rows, columns=list(columns))


class PostgresStore(Store):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=POOL_MAX, timeout=CONNECT_TIMEOUT,
                                             command_timeout=COMMAND_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {redact_url(url)}: {exc}\n"
                                   "  hint: start PostgreSQL, or check the URL ([store] postgres_url)") from exc
        store = cls(pool)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_PostgresTransaction]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PostgresTransaction(conn)

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _changed(await self._pool.execute(_numbered(sql), *params))

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Sequence[Any]]:
        rows: list[asyncpg.Record] = await self._pool.fetch(_numbered(sql), *params)
        return rows

    async def _migrate(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            version = await conn.fetchval("SELECT version FROM schema_version")
            if version is None:
                await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = 0
            for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in migration_statements(sql, "postgres"):
                    await conn.execute(statement)
                await conn.execute("UPDATE schema_version SET version = $1", number)

    def unreachable(self, exc: BaseException) -> bool:
        # No connection (refused, reset, timed out), or the server going down or not up yet (SQLSTATE class
        # 08, which includes a pooled connection the restart broke, and 57: admin shutdown, cannot connect now).
        return isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError
                          | asyncpg.exceptions.OperatorInterventionError)

    async def schema_version(self) -> int:
        return int(await self._scalar("SELECT version FROM schema_version") or 0)

    async def data_version(self) -> int:
        """A digest of every key's columns but its last-used time: any key created, updated or revoked (by
        any replica or the CLI) changes it, the write-behind of last-used times does not (no reload for it)."""
        digest = await self._scalar(_KEYS_DIGEST)
        return int(digest, 16)

    async def columns(self, table: str) -> tuple[str, ...]:
        rows = await self._fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position", (table,))
        return tuple(str(row[0]) for row in rows)

    async def after_import(self) -> None:
        await self._write("SELECT setval(pg_get_serial_sequence('requests', 'id'), "
                          "COALESCE((SELECT MAX(id) FROM requests), 0) + 1, false)")

