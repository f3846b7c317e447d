"""Proxy keys: generation, hashing, and the in-memory key ring the request path checks.

Secrets are ``sk-proxy-`` + 43 URL-safe characters (256 bits); only their SHA-256 is stored. The key
ring maps hash -> principal in memory; ``KeyRing.refresh`` reloads it from the store when another
process (the CLI) has committed, which the server polls for twice a second.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import msgspec

from gateway.errors import AuthenticationFailed
from gateway.store import KeyRow, Store

SECRET_PREFIX = "sk-proxy-"
DISPLAY_PREFIX_LEN = len(SECRET_PREFIX) + 4


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: what the rest of the request path knows about a key."""

    key_id: str
    name: str


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(store: Store, name: str) -> tuple[str, KeyRow]:
    """Returns the secret (shown once, never stored) and the stored row."""
    if not name.strip():
        raise ValueError("a key needs a non-empty name")
    secret = new_secret()
    row = await store.create_key(
        id="key_" + secrets.token_hex(6), name=name, prefix=secret[:DISPLAY_PREFIX_LEN],
        hash=hash_secret(secret),
    )
    return secret, row


class KeyRing:
    def __init__(self) -> None:
        self._by_hash: dict[str, tuple[str, Principal]] = {}
        self.last_used: dict[str, float] = {}
        self._data_version = -1

    def load(self, rows: list[KeyRow]) -> None:
        self._by_hash = {
            row.hash: (row.hash, Principal(key_id=row.id, name=row.name))
            for row in rows
            if row.revoked_at is None
        }

    async def refresh(self, store: Store, *, force: bool = False) -> bool:
        """Reload from the store when another connection committed since the last look."""
        version = await store.data_version()
        if not force and version == self._data_version:
            return False
        self._data_version = version
        self.load(await store.list_keys())
        return True

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthenticationFailed(
                "Missing API key: send your gateway key as 'Authorization: Bearer sk-proxy-...'."
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <gateway key>'.")
        return self.check_secret(token)

    def check_secret(self, token: str) -> Principal:
        digest = hash_secret(token)
        found = self._by_hash.get(digest)
        # The dict lookup is keyed on a hash of the secret; the final equality is constant-time anyway.
        if found is None or not hmac.compare_digest(found[0], digest):
            raise AuthenticationFailed("Incorrect API key provided: the key is unknown or was revoked.")
        principal = found[1]
        self.last_used[principal.key_id] = time.time()
        return principal

    def take_last_used(self) -> dict[str, float]:
        taken, self.last_used = self.last_used, {}
        return taken
