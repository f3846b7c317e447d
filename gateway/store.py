"""The embedded SQLite store: every SQL statement of the gateway lives in this module.

WAL journal with ``synchronous=NORMAL``; one connection (aiosqlite runs it on its own thread) is the
one writer of this process; numbered migrations are applied at open. The CLI and the server open the
same file; ``busy_timeout`` lets them take turns.
"""

from __future__ import annotations

import time
from pathlib import Path

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
)


class KeyRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    prefix: str
    hash: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


_KEY_COLUMNS = "id, name, prefix, hash, created_at, last_used_at, revoked_at"


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
        await conn.execute("PRAGMA foreign_keys = ON")
        store = cls(conn, path)
        await store._migrate()
        return store

    async def close(self) -> None:
        await self._conn.close()

    async def _migrate(self) -> None:
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            async with self._conn.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
            version = int(row[0]) if row else 0
            for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(sql):
                    await self._conn.execute(statement)
                await self._conn.execute(f"PRAGMA user_version = {number}")
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._conn.execute("ROLLBACK")
            raise

    async def schema_version(self) -> int:
        async with self._conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def data_version(self) -> int:
        """Changes whenever another connection (the CLI, another worker) commits to the file."""
        async with self._conn.execute("PRAGMA data_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------------------------------ keys

    async def list_keys(self) -> list[KeyRow]:
        async with self._conn.execute(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created_at") as cur:
            rows = await cur.fetchall()
        return [_key_row(row) for row in rows]

    async def create_key(self, *, id: str, name: str, prefix: str, hash: str) -> KeyRow:
        now = time.time()
        try:
            await self._conn.execute(
                "INSERT INTO keys (id, name, prefix, hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (id, name, prefix, hash, now),
            )
        except aiosqlite.IntegrityError as exc:
            raise DuplicateName(name) from exc
        return KeyRow(id=id, name=name, prefix=prefix, hash=hash, created_at=now, last_used_at=None,
                      revoked_at=None)

    async def find_key(self, name_or_id: str) -> KeyRow | None:
        async with self._conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
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


def _statements(sql: str) -> list[str]:
    return [part.strip() for part in sql.split(";") if part.strip()]


def _key_row(row: aiosqlite.Row | tuple[object, ...]) -> KeyRow:
    id_, name, prefix, hash_, created, last_used, revoked = tuple(row)
    return KeyRow(
        id=str(id_), name=str(name), prefix=str(prefix), hash=str(hash_), created_at=float(created),
        last_used_at=None if last_used is None else float(last_used),
        revoked_at=None if revoked is None else float(revoked),
    )
