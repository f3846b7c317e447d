"""Who may open the admin: the admin token, login sessions, CSRF tokens and wrong-token throttling (the
login form and the /admin/api bearer share one book of failures per address).

The token is ``[admin] token`` from the config or, when none is set, one generated on the first start:
printed once on the console, only its SHA-256 kept (in ``admin_settings``). A login makes a session: a
random id, stored hashed in ``admin_sessions`` (so logout really ends it), sent as the cookie
``id.expiry.signature``. The signature and the per-session CSRF token are HMACs under a key derived
from a per-install secret and the current token's hash: changing the token ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config import Config
from gateway.store import Store

if TYPE_CHECKING:
    from gateway.shared_state import RedisState

log = logging.getLogger("gateway.admin")

SESSION_COOKIE = "gateway_admin"
LOGIN_COOKIE = "gateway_admin_login"  # the login form's CSRF nonce, set when the form is shown
SESSION_SECONDS = 12 * 3600
LOGIN_FORM_SECONDS = 3600
# Failed logins: after this many from one address within the window, it is refused until they age out.
LOGIN_FAILURES = 5
LOGIN_WINDOW_SECONDS = 300.0
_TRACKED_ADDRESSES = 10_000  # bounds the failure book against a flood of spoofed sources

_TOKEN_HASH = "token_hash"
_INSTALL_SECRET = "session_secret"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    expires_at: float


class AdminAuth:
    def __init__(self, clock: Callable[[], float] = time.time, shared: RedisState | None = None) -> None:
        self.clock = clock
        # With [state] backend = "redis", every wrong token is announced to the other processes, which count
        # it in their books too: N workers or replicas do not give a guesser N times the tries.
        self._shared = shared
        self._origin = secrets.token_hex(4)  # this process: its own announcements are already counted
        self._generated_hash: str | None = None
        self._install_secret = ""
        self._failures: dict[str, deque[float]] = {}

    async def load(self, store: Store, config: Config) -> None:
        """At start: the install secret (made once) and the generated token (made when none is configured).
        Workers race through this together; the database decides which one's values win."""
        await store.init_admin_setting(_INSTALL_SECRET, secrets.token_hex(32))
        self._install_secret = await store.admin_setting(_INSTALL_SECRET) or ""
        if config.admin.token is None:
            token = secrets.token_urlsafe(32)
            if await store.init_admin_setting(_TOKEN_HASH, _sha256(token)):
                _announce(token, config)
        # Kept even while a token is configured: removing it from the file falls back to this one.
        self._generated_hash = await store.admin_setting(_TOKEN_HASH)

    # ------------------------------------------------------------------------------------------- token

    def _token_hash(self, config: Config) -> str | None:
        return _sha256(config.admin.token) if config.admin.token is not None else self._generated_hash

    def enabled(self, config: Config) -> bool:
        return self._token_hash(config) is not None

    def check_token(self, config: Config, given: str) -> bool:
        expected = self._token_hash(config)
        # Both sides are hashes of the same length: the comparison time says nothing about the token.
        return expected is not None and bool(given) and hmac.compare_digest(_sha256(given), expected)

    def _key(self, config: Config) -> bytes:
        return hashlib.sha256(f"{self._install_secret}|{self._token_hash(config) or ''}".encode()).digest()

    def _mac(self, config: Config, purpose: str, value: str) -> str:
        return hmac.new(self._key(config), f"{purpose}|{value}".encode(), hashlib.sha256).hexdigest()

    # ---------------------------------------------------------------------------------------- sessions

    async def open_session(self, store: Store, config: Config) -> tuple[Session, str]:
        """A new session and its cookie value."""
        now = self.clock()
        sid = secrets.token_urlsafe(24)
        expires = int(now + SESSION_SECONDS)
        await store.create_admin_session(_sha256(sid), now, expires)
        payload = f"{sid}.{expires}"
        cookie = f"{payload}.{self._mac(config, 'session', payload)}"
        return Session(id=sid, csrf=self._mac(config, "csrf", sid), expires_at=expires), cookie

    async def session(self, store: Store, config: Config, cookie: str | None) -> Session | None:
        """The live session a cookie names, or None (unsigned, tampered, expired or logged out)."""
        if not cookie or not self.enabled(config):
            return None
        sid, _, rest = cookie.partition(".")
        expires_text, _, signature = rest.partition(".")
        payload = f"{sid}.{expires_text}"
        # As bytes: a str with a non-ASCII character makes compare_digest raise instead of saying no.
        if not hmac.compare_digest(signature.encode(), self._mac(config, "session", payload).encode()):
            return None
        expires = float(expires_text) if expires_text.isdigit() else 0.0
        now = self.clock()
        if expires <= now or not await store.admin_session_live(_sha256(sid), now):
            return None
        return Session(id=sid, csrf=self._mac(config, "csrf", sid), expires_at=expires)

    async def close_session(self, store: Store, session: Session) -> None:
        await store.delete_admin_session(_sha256(session.id))

    # ------------------------------------------------------------------------------------------ CSRF

    def login_csrf(self, config: Config, nonce: str) -> str:
        """The login form's token, bound to the nonce cookie the form was served with."""
        return self._mac(config, "login", nonce)

    @staticmethod
    def csrf_ok(expected: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())

    # --------------------------------------------------------------------------------- failed logins

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try to log in again (0: it may now)."""
        now = self.clock()
        failures = self._failures.get(address)
        if failures is None:
            return 0.0
        while failures and failures[0] <= now - LOGIN_WINDOW_SECONDS:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return 0.0
        if len(failures) < LOGIN_FAILURES:
            return 0.0
        return failures[0] + LOGIN_WINDOW_SECONDS - now

    def login_failed(self, address: str, what: str = "login") -> None:
        """A wrong token from ``address``: through the login form, or (``what="API token"``) as the bearer
        of an /admin/api call. Both count in one book, so neither way guesses faster than the other."""
        count = self._count_failure(address)
        if self._shared is not None:
            self._shared.publish_soon(f"admin-failed:{self._origin}:{address}")
        log.warning("admin %s failed from %s (%d failure(s) in the last %d s)", what, address, count,
                    LOGIN_WINDOW_SECONDS)

    def failed_elsewhere(self, announcement: str) -> None:
        """``origin:address`` announced by a process that saw a wrong token ([state] backend = "redis")."""
        origin, _, address = announcement.partition(":")
        if origin != self._origin and address:
            self._count_failure(address)

    def _count_failure(self, address: str) -> int:
        now = self.clock()
        if len(self._failures) >= _TRACKED_ADDRESSES and address not in self._failures:
            self._failures = {a: f for a, f in self._failures.items() if f and f[-1] > now - LOGIN_WINDOW_SECONDS}
        failures = self._failures.setdefault(address, deque())
        failures.append(now)
        return len(failures)

    def login_succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
        log.info("admin login from %s", address)

    def token_accepted(self, address: str) -> None:
        """An /admin/api call with the right token: its address's earlier mistakes are forgiven (not logged:
        scripts call often)."""
        self._failures.pop(address, None)


def _announce(token: str, config: Config) -> None:
    """The one time the generated token is shown: on the console, not in the log file's usual lines."""
    where = f"http://{config.server.host}:{config.server.port}/admin"
    print(f"\ngateway: generated the admin token (shown once, only its hash is kept):\n\n    {token}\n\n"
          f"  log in at {where}, or send it as 'Authorization: Bearer <token>' to /admin/api/*;\n"
          f"  set [admin] token in config.toml to choose your own.\n", file=sys.stderr, flush=True)
    log.warning("generated an admin token and printed it on the console (it is not shown again)")
