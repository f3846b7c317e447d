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

from gateway.config import Config
from gateway.errors import AuthenticationFailed
from gateway.governance import Principal, config_principals
from gateway.limits import period_start_day
from gateway.store import DuplicateName, KeyLimits, KeyRow, Store

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
        self._rows: list[KeyRow] = []
        self._config_keys: list[tuple[str, Principal]] = []
        # Announced revocations ([state] backend = "redis"): refused at once, whatever a store says later.
        self._revoked: set[str] = set()
        self.last_used: dict[str, float] = {}
        self._data_version = -1

    @property
    def principals(self) -> list[Principal]:
        return [principal for _, principal in self._by_hash.values()]

    def set_config_keys(self, keys: list[tuple[str, Principal]]) -> None:
        """[[keys]] of config.toml: (secret, principal) pairs, kept across database reloads. Called again
        on a config reload, it rebuilds the ring at once: a deleted entry stops working, a new one works."""
        self._config_keys = [(hash_secret(secret), principal) for secret, principal in keys]
        self._rebuild()

    def load(self, rows: list[KeyRow]) -> None:
        self._rows = [row for row in rows if row.revoked_at is None]
        self._rebuild()

    def revoked(self, key_id: str) -> None:
        self._revoked.add(key_id)
        self._rebuild()

    def _rebuild(self) -> None:
        by_hash = {row.hash: (row.hash, principal_of(row)) for row in self._rows if row.id not in self._revoked}
        for digest, principal in self._config_keys:
            by_hash[digest] = (digest, principal)
        self._by_hash = by_hash  # one assignment: a request sees the old ring or the new one

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
                "Missing API key: send your gateway key (it starts with 'sk-proxy-') as 'Authorization: Bearer <key>'."
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


# ---------------------------------------------------------------------------------- operations
# The CLI and the admin page manage keys through these, so both behave the same.


class KeyOperationError(ValueError):
    """A key operation that cannot be done, with the reason for the person who asked."""


class KeyView(msgspec.Struct, kw_only=True):
    """A key as listed: never its secret."""

    id: str
    name: str
    source: str  # "cli" or "config"
    prefix: str | None
    created_at: float | None
    last_used_at: float | None
    revoked_at: float | None
    project: str | None
    budget_usd: float | None
    budget_period: str
    spent_usd: float
    rpm: int | None
    tpm: int | None
    models: list[str] | None
    expires_at: float | None


def validate_limits(limits: KeyLimits) -> KeyLimits:
    if limits.budget_usd is not None and limits.budget_usd < 0:
        raise KeyOperationError("--budget-usd must not be negative")
    if limits.budget_period not in ("day", "week", "month", "total"):
        raise KeyOperationError("--budget-period must be day, week, month or total")
    for name, value in (("--rpm", limits.rpm), ("--tpm", limits.tpm)):
        if value is not None and value <= 0:
            raise KeyOperationError(f"{name} must be a positive number (or 'none')")
    if limits.models is not None and not all(p.strip() for p in limits.models):
        raise KeyOperationError("--models needs comma-separated patterns, e.g. 'openai/*,smart'")
    return limits


def _single_worker_limits(config: Config, limits: KeyLimits) -> KeyLimits:
    """With [state] backend = "memory", budgets and rate limits are counted per worker process (see
    config.workers_refused)."""
    workers = config.server.workers
    limited = [f"--{name.replace('_', '-')}" for name in ("budget_usd", "rpm", "tpm")
               if getattr(limits, name) is not None]
    if workers > 1 and limited and config.state.backend == "memory":
        raise KeyOperationError(f"{', '.join(limited)} cannot be enforced with server.workers = {workers}: each "
                                "worker counts limits on its own; set server.workers = 1 first")
    return limits


async def create(store: Store, config: Config, name: str, limits: KeyLimits) -> tuple[str, KeyRow]:
    if any(k.name == name for k in config.keys):
        raise KeyOperationError(f"a key named {name!r} is declared in the config file")
    try:
        return await create_key(store, name, _single_worker_limits(config, validate_limits(limits)))
    except DuplicateName:
        raise KeyOperationError(f"a key named {name!r} already exists") from None


async def find_editable(store: Store, config: Config, name_or_id: str) -> KeyRow:
    if any(k.name == name_or_id or f"cfg_{k.name}" == name_or_id for k in config.keys):
        raise KeyOperationError(f"key {name_or_id!r} is declared in {config.path or 'the config file'}: edit it there")
    row = await store.find_key(name_or_id)
    if row is None:
        raise KeyOperationError(f"no key named or with id {name_or_id!r}")
    return row


async def update(store: Store, config: Config, name_or_id: str, changes: dict[str, object]) -> KeyRow:
    row = await find_editable(store, config, name_or_id)
    current = {f: getattr(row, f) for f in KeyLimits.__struct_fields__}
    limits = _single_worker_limits(config, validate_limits(msgspec.convert({**current, **changes}, KeyLimits)))
    await store.update_key(row.id, limits)
    await _announce(config, f"update:{row.id}")
    return msgspec.structs.replace(row, **msgspec.structs.asdict(limits))


async def revoke(store: Store, config: Config, name_or_id: str) -> tuple[KeyRow, bool]:
    """Returns the key and whether this call revoked it (False: it already was)."""
    row = await find_editable(store, config, name_or_id)
    if row.revoked_at is not None:
        return row, False
    await store.revoke_key(row.id)
    await _announce(config, f"revoke:{row.id}")
    return row, True


async def _announce(config: Config, message: str) -> None:
    """With [state] backend = "redis", every gateway process hears of the change within moments."""
    if config.state.backend == "redis" and config.state.redis_url:
        from gateway.shared_state import announce  # the Redis client is loaded only when configured

        await announce(config.state.redis_url, message)


async def list_keys(store: Store, config: Config, now: float) -> list[KeyView]:
    rows = await store.list_keys()
    principals = [(row, principal_of(row)) for row in rows] + [(None, p) for _, p in config_principals(config)]
    spend: dict[str, dict[str, float]] = {}
    for period in {p.budget_period for _, p in principals}:
        spend[period] = await store.spend_since(period_start_day(period, now), by="key_id")
    views = []
    for row, p in principals:
        views.append(KeyView(
            id=p.key_id, name=p.name, source=p.source, prefix=row.prefix if row else None,
            created_at=row.created_at if row else None, last_used_at=row.last_used_at if row else None,
            revoked_at=row.revoked_at if row else None, project=p.project, budget_usd=p.budget_usd,
            budget_period=p.budget_period, spent_usd=spend[p.budget_period].get(p.key_id, 0.0), rpm=p.rpm,
            tpm=p.tpm, models=list(p.models) if p.models is not None else None, expires_at=p.expires_at))
    return views
