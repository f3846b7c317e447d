"""Keeping secrets off the admin page: the config with its secrets masked, and free text (a provider's
error message, a reload error) with any secret it may quote cut out.

Masked: providers' ``api_key``, ``keys[].key``, ``admin.token``, and header values whose name or value
looks like a credential. Free text goes through ``gateway.redaction`` (every configured secret, then
anything credential-shaped), with the page's own mask.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from gateway import redaction
from gateway.config import Config
from gateway.redaction import header_is_secret

MASK = "••••••••"


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


class Redactor(redaction.Redactor):
    """Cuts the secrets of one config (and credential-shaped words) out of text shown on the page."""

    def __init__(self, config: Config) -> None:
        super().__init__(redaction.config_secrets(config), mask=MASK)

    def __call__(self, text: str | None) -> str:
        # Errors arrive already cut where the gateway raised them; one mask on the page, whoever cut.
        return super().__call__(text).replace(redaction.REDACTED, MASK)


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
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a float field holding 90 was written 90: show it so, not 90.0
    return msgspec.json.encode(value).decode()
