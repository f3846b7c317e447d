"""Keeping credentials out of every byte the gateway writes about an error: the bodies it renders or relays,
its log lines, the admin page.

An upstream that refuses a key often quotes it (``Incorrect API key provided: sk-…``), a URL can carry one in
its user info or query, and a traceback can show either. A ``Redactor`` cuts out every secret of the
configured providers (and the config's own proxy keys and admin token) verbatim, then anything shaped like
a credential: provider-style keys, ``Bearer``/``Basic`` values, ``x-api-key:``-style headers, ``key=``
query members, ``"api_key": "…"`` JSON members and URL user info.

The active redactor is process-wide (``install`` is called with each config loaded, at start and on reload)
because errors are rendered far from any request's state; it keeps the previous config's secrets too, so a
rotated key is still cut from answers that were in flight when it changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Config

REDACTED = "[REDACTED]"
# Shorter configured values are not cut verbatim: "k" or "test" as a key would shred every message.
MIN_SECRET_LENGTH = 8

SECRET_HEADER = re.compile(r"auth|key|token|secret|password|cookie|signature|credential", re.I)
# Long unbroken runs of letters and digits (at least one of each) read as generated credentials.
SECRET_VALUE = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_\-+/=.:]{24,}$")

# Each pattern keeps its group 1 (the name) and replaces the rest of the match with the mask.
_NAMED = re.compile(
    # Authorization-style credentials: "Bearer sk-…", "Basic dXNlcj…"
    r"\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"
    # header-style: "x-api-key: …", "Authorization=…", 'x-goog-api-key": "…'
    r"|\b((?:x-api-key|x-goog-api-key|api-key|authorization|proxy-authorization)[\"']?\s*[:=]\s*[\"']?)"
    r"(?!bearer\b|basic\b)[^\s\"',;&]+"
    # query or form members: "?key=…", "&api_key=…", "token=…"
    r"|\b((?:api[_-]?key|key|token|access_token|secret|password)=)[^&\s\"'<>]+"
    # JSON members: "api_key": "…", "apiKey": "…"
    r"|(\"(?:api[_-]?key|apiKey|x-api-key|x-goog-api-key|access_token|secret|password)\"\s*:\s*\")(?:[^\"\\]|\\.)*"
    # URL user info: https://user:password@host
    r"|(://)[^/\s@\"'<>]+(?=@)",
    re.I)
# Provider-style keys, wherever they appear: sk-…, sk-ant-…, gsk_…, AIza…
_SHAPED = re.compile(r"\b(?:sk|pk|rk|gsk|ghp|xai)[-_][A-Za-z0-9_-]{12,}|\bAIza[A-Za-z0-9_-]{20,}")


def header_is_secret(name: str, value: str) -> bool:
    return bool(SECRET_HEADER.search(name) or SECRET_VALUE.match(value.strip())
                or value.lower().startswith(("bearer ", "basic ")))


def config_secrets(config: Config) -> list[str]:
    """Every credential a config holds: provider keys and secret-looking provider headers, the proxy keys
    declared in it, the admin and metrics tokens."""
    found = [p.api_key for p in config.providers.values()]
    found += [v for p in config.providers.values() for n, v in p.headers.items() if header_is_secret(n, v)]
    found += [key.key for key in config.keys]
    if config.admin.token:
        found.append(config.admin.token)
    if config.metrics.token:
        found.append(config.metrics.token)
    return found


class Redactor:
    """Cuts the given secrets, then anything credential-shaped, out of text."""

    def __init__(self, secrets: Iterable[str] = (), mask: str = REDACTED) -> None:
        # Longest first, so a secret that contains another is cut whole.
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True))
        self.mask = mask
        self._encoded = tuple((s.encode(), mask.encode()) for s in self.secrets)

    def __call__(self, text: str | None) -> str:
        if not text:
            return ""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, self.mask)
        text = _NAMED.sub(self._keep_name, text)
        return _SHAPED.sub(self.mask, text)

    def _keep_name(self, match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        return name + self.mask

    def data(self, body: bytes) -> bytes:
        """Bytes as they go to a client: redacted as UTF-8 text; bytes that are not UTF-8 are kept as they are
        (surrogate escapes), so nothing but the secrets changes."""
        for secret, mask in self._encoded:
            if secret in body:
                body = body.replace(secret, mask)
        text = body.decode("utf-8", "surrogateescape")
        cleaned = self(text)
        return body if cleaned == text else cleaned.encode("utf-8", "surrogateescape")


_active = Redactor()
_installed: list[str] = []  # the secrets of the config installed last


def install(config: Config) -> None:
    """Make ``config``'s secrets, and those of the config before it, the ones cut from errors and logs."""
    global _active, _installed
    current = config_secrets(config)
    _active = Redactor([*current, *_installed])
    _installed = current


def active() -> Redactor:
    return _active


def redact(text: str) -> str:
    return _active(text)


def redact_bytes(body: bytes) -> bytes:
    return _active.data(body)
