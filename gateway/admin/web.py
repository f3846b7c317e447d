"""The admin page's templates and static files, read from the ``web/`` folder ``gateway.assets`` finds.

``gateway.assets`` finds it the same way wherever the package lives: a clone, an installed wheel, an
editable install, a PyInstaller bundle. Autoescaping is on for every template, so anything shown (a key's
name, a model, a provider's error) is text, never markup. Static files are few and small: read once,
served from memory with an ETag.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import math
from typing import Any

import jinja2
import msgspec

from gateway.assets import WEB

_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".svg": "image/svg+xml"}


class StaticFile(msgspec.Struct, frozen=True):
    body: bytes
    media_type: str
    etag: str


def _load_template(name: str) -> str | None:
    resource = WEB / "templates" / name
    return resource.read_text(encoding="utf-8") if resource.is_file() else None


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FunctionLoader(_load_template), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(usd=usd, num=num, when=when, day=day, ago=ago, ms=ms, pct=pct)
    return env


def render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)


@functools.cache
def static_files() -> dict[str, StaticFile]:
    files = {}
    for resource in (WEB / "static").iterdir():
        suffix = "." + resource.name.rpartition(".")[2]
        if resource.is_file() and suffix in _STATIC_TYPES:
            body = resource.read_bytes()
            files[resource.name] = StaticFile(body, _STATIC_TYPES[suffix],
                                              '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    return files


# --------------------------------------------------------------------------------------------- filters


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "$0.00"
    if abs(value) < 0.01:
        return f"${value:.4f}"
    return f"${value:,.2f}"


def num(value: float | None) -> str:
    """Counts as people read them: 950, 12.3k, 4.5M."""
    if value is None:
        return "—"
    size = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if size >= limit * 10:
            return f"{value / limit:,.0f}{suffix}"
        if size >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def day(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d")


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    seconds = max(now - ts, 0.0)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{math.floor(seconds / size)} {unit} ago"
    return "just now"


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def pct(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.1f}%" if 0 < value < 0.1 else f"{value * 100:.0f}%"
