"""The model catalog: what each well-known model can do and what it costs.

The built-in catalog is a data file shipped in the package (``gateway/data/catalog.toml``, with its
sources and date); ``[[models]]`` entries in config.toml add models or override any field. A model
named explicitly as ``provider/model`` that no catalog knows still works: its capabilities are unknown
(treated as capable) and its price is unknown (cost reported as null, never invented).
"""

from __future__ import annotations

import math
import tomllib
from importlib.resources import files
from typing import Literal

import msgspec

ReasoningLevel = Literal["none", "low", "medium", "high"]
REASONING_ORDER: dict[str, int] = {"none": 0, "low": 1, "medium": 2, "high": 3}


class Pricing(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """USD per 1M tokens. ``None`` means unknown (never guessed)."""

    input: float | None = None
    output: float | None = None
    cached_input: float | None = None
    cache_write: float | None = None


class Capabilities(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    tools: bool = True
    json: bool = True
    vision: bool = True
    reasoning: ReasoningLevel = "none"  # the highest reasoning effort the model supports
    image_output: bool = False
    # An embedding model serves /v1/embeddings and nothing else; every other model serves chat (and the
    # dialects built on it) and never embeddings. The router keeps the two apart, ``auto`` included.
    embedding: bool = False


class CatalogEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str  # the model's API name at its provider
    provider: str  # the conventional provider name: openai, anthropic, google, groq, mistral, deepseek…
    kind: Literal["openai", "anthropic", "gemini"]
    host: str | None = None  # API host, so a provider configured under another name is still matched
    # The provider's default model: what `auto` reaches when config names no models (see router.py).
    default: bool = False
    context_window: int | None = None
    max_output_tokens: int | None = None
    dimensions: int | None = None  # embedding models: the length of the vectors they return by default
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)
    pricing: Pricing = msgspec.field(default_factory=Pricing)


class CatalogFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: str  # the date the prices were checked; recorded with every usage row
    sources: dict[str, str] = {}
    models: list[CatalogEntry] = []


def load_builtin() -> CatalogFile:
    text = files("gateway").joinpath("data", "catalog.toml").read_text(encoding="utf-8")
    return msgspec.convert(tomllib.loads(text), CatalogFile)


def format_usd(amount: float) -> str:
    """A USD amount as text with enough digits to be true: cents when they are exact, else up to six
    significant digits ($0.0001 never reads as $0.00, $3.2 reads as $3.20)."""
    if not math.isfinite(amount):
        return f"${amount}"
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount == 0 or abs(amount - round(amount, 2)) <= 1e-9 * max(amount, 1e-3):
        return f"{sign}${amount:.2f}"
    # Six significant digits, trailing zeros dropped, never fewer than two decimals.
    decimals = max(2, 5 - math.floor(math.log10(amount)))
    text = f"{amount:.{decimals}f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"
