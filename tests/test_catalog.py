"""The built-in model catalog (gateway/data/catalog.toml): it decodes, is complete and consistent,
and a few figures checked against the providers' price lists stay as they were read."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date

import pytest

from gateway.catalog import CatalogEntry, CatalogFile, load_builtin

PROVIDERS = {"openai", "anthropic", "google", "groq", "mistral", "deepseek", "together", "xai"}
HOSTS = {
    "openai": "api.openai.com",
    "anthropic": "api.anthropic.com",
    "google": "generativelanguage.googleapis.com",
    "groq": "api.groq.com",
    "mistral": "api.mistral.ai",
    "deepseek": "api.deepseek.com",
    "together": "api.together.xyz",
    "xai": "api.x.ai",
}
KINDS = {"anthropic": "anthropic", "google": "gemini"}  # every other provider speaks OpenAI's API


@pytest.fixture(scope="module")
def catalog() -> CatalogFile:
    return load_builtin()


def find(catalog: CatalogFile, provider: str, name: str) -> CatalogEntry:
    matches = [m for m in catalog.models if m.provider == provider and m.name == name]
    assert len(matches) == 1, f"{provider}/{name}: {len(matches)} entries"
    return matches[0]


def test_builtin_decodes(catalog: CatalogFile) -> None:
    assert len(catalog.models) >= 40
    assert {m.provider for m in catalog.models} == PROVIDERS


def test_version_is_a_date(catalog: CatalogFile) -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", catalog.version)
    date.fromisoformat(catalog.version)


def test_every_provider_has_a_source(catalog: CatalogFile) -> None:
    assert set(catalog.sources) == PROVIDERS
    for provider, source in catalog.sources.items():
        assert re.search(r"\d{4}-\d{2}-\d{2}", source), f"{provider}: source has no date"


def test_every_model_is_complete(catalog: CatalogFile) -> None:
    for m in catalog.models:
        label = f"{m.provider}/{m.name}"
        assert m.name and m.name == m.name.strip(), label
        assert m.provider in PROVIDERS, label
        assert m.kind == KINDS.get(m.provider, "openai"), label
        assert m.host == HOSTS[m.provider], label
        assert m.context_window is not None and m.context_window > 0, label
        if m.capabilities.embedding:  # no answer to limit: a vector of `dimensions` floats instead
            assert m.max_output_tokens is None and m.dimensions is not None and m.dimensions > 0, label
            continue
        assert m.max_output_tokens is not None and m.max_output_tokens > 0, label
        assert m.max_output_tokens <= m.context_window, label


def test_names_unique_per_provider(catalog: CatalogFile) -> None:
    counts = Counter((m.provider, m.name) for m in catalog.models)
    assert [key for key, n in counts.items() if n > 1] == []


def test_prices_are_sane(catalog: CatalogFile) -> None:
    for m in catalog.models:
        label = f"{m.provider}/{m.name}"
        p = m.pricing
        for value in (p.input, p.output, p.cached_input, p.cache_write):
            assert value is None or value >= 0, label
        if m.capabilities.embedding:  # embeddings bill input only
            assert p.output in (None, 0.0), label
        elif p.input is not None and p.output is not None:
            assert p.output >= p.input, label
        if p.input is not None and p.cached_input is not None:
            assert p.cached_input <= p.input, label
        if p.input is not None and p.cache_write is not None:
            assert p.cache_write >= p.input, label


def test_no_cache_write_price_outside_anthropic(catalog: CatalogFile) -> None:
    # OpenAI, Gemini and the OpenAI-compatible hosts have no cache-write price to record.
    for m in catalog.models:
        if m.provider != "anthropic":
            assert m.pricing.cache_write is None, f"{m.provider}/{m.name}"


def test_image_output_only_where_expected(catalog: CatalogFile) -> None:
    assert {(m.provider, m.name) for m in catalog.models if m.capabilities.image_output} == {
        ("google", "gemini-2.5-flash-image")
    }


@pytest.mark.parametrize(
    ("provider", "name", "input", "output", "cached_input", "cache_write"),
    [
        ("openai", "gpt-4o", 2.50, 10.00, 1.25, None),
        ("openai", "gpt-4o-mini", 0.15, 0.60, 0.075, None),
        ("openai", "gpt-4.1", 2.00, 8.00, 0.50, None),
        ("openai", "o3", 2.00, 8.00, 0.50, None),
        ("openai", "gpt-5", 1.25, 10.00, 0.125, None),
        ("openai", "gpt-5-mini", 0.25, 2.00, 0.025, None),
        ("openai", "gpt-5.5", 5.00, 30.00, 0.50, None),
        ("anthropic", "claude-sonnet-4-20250514", 3.00, 15.00, 0.30, 3.75),
        ("anthropic", "claude-sonnet-4-6", 3.00, 15.00, 0.30, 3.75),
        ("anthropic", "claude-opus-4-1", 15.00, 75.00, 1.50, 18.75),
        ("anthropic", "claude-opus-4-8", 5.00, 25.00, 0.50, 6.25),
        ("anthropic", "claude-haiku-4-5", 1.00, 5.00, 0.10, 1.25),
        ("anthropic", "claude-3-5-haiku-20241022", 0.80, 4.00, 0.08, 1.00),
        ("anthropic", "claude-fable-5", 10.00, 50.00, 1.00, 12.50),
        ("google", "gemini-2.5-pro", 1.25, 10.00, 0.125, None),
        ("google", "gemini-2.5-flash", 0.30, 2.50, 0.03, None),
        ("google", "gemini-2.5-flash-lite", 0.10, 0.40, 0.01, None),
        ("google", "gemini-3.1-pro-preview", 2.00, 12.00, 0.20, None),
        ("groq", "openai/gpt-oss-120b", 0.15, 0.60, 0.075, None),
        ("mistral", "mistral-large-latest", 0.50, 1.50, None, None),
        ("xai", "grok-4.3", 1.25, 2.50, 0.20, None),
    ],
)
def test_spot_check_prices(
    catalog: CatalogFile,
    provider: str,
    name: str,
    input: float,
    output: float,
    cached_input: float | None,
    cache_write: float | None,
) -> None:
    p = find(catalog, provider, name).pricing
    assert p.input == pytest.approx(input)
    assert p.output == pytest.approx(output)
    assert p.cached_input == (None if cached_input is None else pytest.approx(cached_input))
    assert p.cache_write == (None if cache_write is None else pytest.approx(cache_write))


def test_unverified_prices_stay_unknown(catalog: CatalogFile) -> None:
    # Sources disagreed on these: the catalog must not guess.
    for provider, name in [("deepseek", "deepseek-v4-flash"), ("mistral", "mistral-small-latest")]:
        p = find(catalog, provider, name).pricing
        assert (p.input, p.output) == (None, None), f"{provider}/{name}"


def test_spot_check_capabilities(catalog: CatalogFile) -> None:
    assert find(catalog, "openai", "gpt-4o").capabilities.reasoning == "none"
    assert find(catalog, "openai", "o3").capabilities.reasoning == "high"
    assert find(catalog, "openai", "o3-mini").capabilities.vision is False
    assert find(catalog, "openai", "gpt-5").capabilities.reasoning == "high"
    assert find(catalog, "anthropic", "claude-sonnet-4-6").capabilities.reasoning == "high"
    assert find(catalog, "anthropic", "claude-3-5-haiku-20241022").capabilities.reasoning == "none"
    assert find(catalog, "google", "gemini-2.5-flash").capabilities.reasoning == "high"
    assert find(catalog, "google", "gemini-2.0-flash").capabilities.reasoning == "none"
    assert find(catalog, "deepseek", "deepseek-reasoner").capabilities.reasoning == "high"
    assert find(catalog, "deepseek", "deepseek-reasoner").capabilities.tools is False
    assert find(catalog, "groq", "llama-3.3-70b-versatile").capabilities.vision is False


def test_spot_check_limits(catalog: CatalogFile) -> None:
    gpt41 = find(catalog, "openai", "gpt-4.1")
    assert (gpt41.context_window, gpt41.max_output_tokens) == (1047576, 32768)
    sonnet = find(catalog, "anthropic", "claude-sonnet-4-6")
    assert (sonnet.context_window, sonnet.max_output_tokens) == (1_000_000, 64000)
    flash = find(catalog, "google", "gemini-2.5-flash")
    assert (flash.context_window, flash.max_output_tokens) == (1048576, 65536)
