"""Keeping secrets off the admin page: the config with its secrets masked, and free text (a provider's
error message, a reload error) with any secret it may quote cut out.

Masked: providers' ``api_key``, ``keys[].key``, ``admin.token``, and header values whose name or value
looks like a credential. Free text loses every configured secret verbatim, then anything shaped like a
key or a bearer token.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from gateway.config import Config

MASK = "••••••••"
_SECRET_HEADER = re.compile(r"auth|key|token|secret|password|cookie|signature|credential", re.I)
# Long unbroken runs of letters and digits (at least one of each) read as generated credentials.
_SECRET_VALUE = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_\-+/=.:]{24,}$")
_SECRET_TEXT = re.compile(
    r"\b(?:sk|pk|rk|gsk|ghp|xai)[-_][A-Za-z0-9_-]{12,}|\bAIza[A-Za-z0-9_-]{20,}"  # provider-style keys
    r"|\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]+"  # credentials in an Authorization header
    r"|(?<=[?&])(?:api[_-]?key|key|token|secret|password)=[^&\s\"']+",  # credentials in a query string
    re.I)


def header_is_secret(name: str, value: str) -> bool:
    return bool(_SECRET_HEADER.search(name) or _SECRET_VALUE.match(value.strip())
                or value.lower().startswith(("bearer ", "basic ")))


class Shown(str):
    """Text the config page shows as it is (a mask, a note), not as a TOML value."""


def _mask(value: str | None) -> Shown:
    return Shown(MASK if value else "(not set)")


def safe_url(url: str) -> str:
    """A URL without user info or query string, where credentials sometimes hide."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class Redactor:
    """Cuts the secrets of one config (and credential-shaped words) out of text shown on the page."""

    def __init__(self, config: Config) -> None:
        found = [p.api_key for p in config.providers.values()]
        found += [key.key for key in config.keys]
        found += [v for p in config.providers.values() for n, v in p.headers.items() if header_is_secret(n, v)]
        if config.admin.token:
            found.append(config.admin.token)
        # Longest first, so a secret that contains another is cut whole.
        self._secrets = sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str | None) -> str:
        if not text:
            return ""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return _SECRET_TEXT.sub(MASK, text)


def masked_config(config: Config) -> list[tuple[str, list[tuple[str, str]]]]:
    """The active config as sections of (dotted key, value as TOML-ish text), secrets masked."""
    providers = {}
    for name, p in config.providers.items():
        providers[name] = {
            "type": p.kind, "base_url": safe_url(p.base_url), "api_key": _mask(p.api_key), "models": p.models,
            "connect_timeout": p.connect_timeout, "timeout": p.timeout, "stream_usage": p.stream_usage,
            "headers": {n: (Shown(MASK) if header_is_secret(n, v) else v) for n, v in p.headers.items()},
        }
    keys = [{**msgspec.to_builtins(k), "key": _mask(k.key)} for k in config.keys]
    tables: dict[str, Any] = {
        "server": msgspec.to_builtins(config.server),
        "providers": providers,
        "routing": msgspec.to_builtins(config.routing),
        "routes": msgspec.to_builtins(config.routes),
        "models": msgspec.to_builtins(config.models),
        "keys": keys,
        "projects": msgspec.to_builtins(config.projects),
        "limits": msgspec.to_builtins(config.limits),
        "usage": msgspec.to_builtins(config.usage),
        "admin": {"token": _mask(config.admin.token) if config.admin.token
                  else Shown("(not set: generated at first start, stored hashed)")},
        "logging": msgspec.to_builtins(config.logging),
    }
    return [(name, _flatten(value, name)) for name, value in tables.items()]


def _flatten(value: Any, prefix: str) -> list[tuple[str, str]]:
    if isinstance(value, dict) and value:
        return [row for key, item in value.items() for row in _flatten(item, f"{prefix}.{key}")]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [row for i, item in enumerate(value) for row in _flatten(item, f"{prefix}[{i}]")]
    if isinstance(value, dict | list) and not value:
        return [(prefix, "(none)")]
    return [(prefix, _toml(value))]


def _toml(value: Any) -> str:
    if isinstance(value, Shown):
        return str(value)
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return msgspec.json.encode(value).decode()
