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

from gateway.errors import AuthenticationFailed
from gateway.governance import Principal
from gateway.store import KeyLimits, KeyRow, Store

SECRET_PREFIX = "sk-proxy-"
DISPLAY_PREFIX_LEN = len(SECRET_PREFIX) + 4


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(store: Store, name: str, limits: KeyLimits | None = None) -> tuple[str, KeyRow]:
    """Returns the secret (shown once, never stored) and the stored row."""
    if not name.strip():
        raise ValueError("a key needs a non-empty name")
    secret = new_secret()
    row = await store.create_key(
        id="key_" + secrets.token_hex(6), name=name, prefix=secret[:DISPLAY_PREFIX_LEN],
        hash=hash_secret(secret), limits=limits or KeyLimits(),
    )
    return secret, row


def principal_of(row: KeyRow) -> Principal:
    return Principal(
        key_id=row.id, name=row.name, project=row.project, budget_usd=row.budget_usd,
        budget_period=row.budget_period, rpm=row.rpm, tpm=row.tpm,
        models=tuple(row.models) if row.models is not None else None, expires_at=row.expires_at,
    )


class KeyRing:
    def __init__(self) -> None:
        self._by_hash: dict[str, tuple[str, Principal]] = {}
        self._config_keys: list[tuple[str, Principal]] = []
        self.last_used: dict[str, float] = {}
        self._data_version = -1

    @property
    def principals(self) -> list[Principal]:
        return [principal for _, principal in self._by_hash.values()]

    def set_config_keys(self, keys: list[tuple[str, Principal]]) -> None:
        """[[keys]] of config.toml: (secret, principal) pairs, kept across database reloads."""
        self._config_keys = [(hash_secret(secret), principal) for secret, principal in keys]

    def load(self, rows: list[KeyRow]) -> None:
        by_hash = {row.hash: (row.hash, principal_of(row)) for row in rows if row.revoked_at is None}
        for digest, principal in self._config_keys:
            by_hash[digest] = (digest, principal)
        self._by_hash = by_hash

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
        now = time.time()
        principal.check_expiry(now)
        self.last_used[principal.key_id] = now
        return principal

    def take_last_used(self) -> dict[str, float]:
        taken, self.last_used = self.last_used, {}
        return taken
