"""`auto` (and a request naming no model) never reaches a model nobody named: with no models declared in
config and no [routes.auto], it reaches each configured provider's default models, marked `default = true`
in the built-in catalog; /v1/models, the start-up banner and the README say which."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.catalog import load_builtin
from gateway.config import load_config_file
from gateway.router import RouteTable, auto_pool
from gateway.server import banner
from tests.fakes import FakeUpstream
from tests.inprocess import gateway_for

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_builtin()
USER = [{"role": "user", "content": "Hello"}]
THREE = '[providers.openai]\napi_key = "k"\n[providers.anthropic]\napi_key = "k"\n[providers.google]\napi_key = "k"\n'


def table(tmp_path: Path, text: str) -> RouteTable:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return RouteTable(load_config_file(path), CATALOG)


def defaults() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in CATALOG.models:
        # Embedding models have defaults of their own: embeddings' `auto` (see tests/test_embeddings.py).
        if entry.default and not entry.capabilities.embedding:
            found.setdefault(entry.provider, []).append(entry.name)
    return found


def test_every_catalog_provider_has_one_cheap_default() -> None:
    marked = defaults()
    # Every provider with a priced model has a default (DeepSeek's prices could not be confirmed: none).
    assert set(marked) == {e.provider for e in CATALOG.models if e.pricing.output is not None}
    assert all(len(models) == 1 for models in marked.values())
    assert marked["openai"] == ["gpt-4o-mini"]
    assert marked["anthropic"] == ["claude-haiku-4-5"]
    assert marked["google"] == ["gemini-2.5-flash"]
    for entry in CATALOG.models:
        if entry.default and not entry.capabilities.embedding:
            assert entry.capabilities.tools and entry.context_window, entry.name
            # Priced, and no dearer than $5 per 1M output tokens: a budgeted key can use it, cheaply.
            assert entry.pricing.output is not None and entry.pricing.output <= 5.0, entry.name


def test_auto_without_declared_models_reaches_only_the_defaults(tmp_path: Path) -> None:
    auto = table(tmp_path, THREE).resolve("auto")[0]
    assert [d.key for d in auto.members] == [
        "openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "google/gemini-2.5-flash"]
    premium = {"o1", "o3", "o3-pro", "gpt-5.5-pro", "claude-opus-4-8", "gemini-2.5-pro"}
    assert not premium & {d.name for d in auto.members}
    # Declared models still win, and [routes.auto] over both.
    declared = table(tmp_path, THREE + '[providers.groq]\ntype = "openai"\nbase_url = "https://api.groq.com/openai/v1"\n'
                     'models = ["llama-3.1-8b-instant"]\n').resolve("auto")[0]
    assert [d.key for d in declared.members] == ["groq/llama-3.1-8b-instant"]
    routed = table(tmp_path, THREE + '[routes.auto]\ntargets = ["openai/o3"]\n').resolve("auto")[0]
    assert [d.key for d in routed.members] == ["openai/o3"]


def test_a_provider_matched_by_host_gets_its_defaults(tmp_path: Path) -> None:
    auto = table(tmp_path, '[providers.fast]\ntype = "openai"\nbase_url = "https://api.groq.com/openai/v1"\n')
    assert [d.key for d in auto.resolve("auto")[0].members] == [f"fast/{m}" for m in defaults()["groq"]]


def test_banner_names_what_auto_reaches(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text(THREE)
    config = load_config_file(config_path)
    lines = banner(config, first_start=True)
    (line,) = [line for line in lines if line.strip().startswith("auto:")]
    assert line.split(":", 1)[1].split("(")[0].strip() == ", ".join(auto_pool(RouteTable(config, CATALOG)))


def test_readme_says_exactly_what_auto_reaches() -> None:
    readme = (ROOT / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| `auto`")]
    named = dict(re.findall(r"`([\w.-]+)/([\w./-]+)`", row.split("default model", 1)[1]))
    assert named == {provider: models[0] for provider, models in defaults().items()}


async def test_requests_without_model_reach_the_defaults_only(fake: FakeUpstream, tmp_path: Path) -> None:
    """The newcomer's run: twelve requests naming no model (and twelve naming `auto`), through the real app.
    Before the fix they reached twelve models, o1 and o3-pro included."""
    extra = (f'[providers.openai]\nbase_url = "{fake.base}/openai/v1"\n'
             f'[providers.groq]\ntype = "openai"\nbase_url = "{fake.base}/groq/v1"\n')
    async with gateway_for(fake, tmp_path, extra=extra) as gw:
        listing = (await gw.http.get("/v1/models", headers={"authorization": f"Bearer {gw.key}"})).json()
        (auto,) = [m for m in listing["data"] if m["id"] == "auto"]
        expected = ["openai/gpt-4o-mini", *(f"groq/{m}" for m in defaults()["groq"])]
        assert auto["targets"] == expected
        for body in [{"messages": USER}] * 12 + [{"model": "auto", "messages": USER}] * 12:
            reply = await gw.http.post("/v1/chat/completions", json=body,
                                       headers={"authorization": f"Bearer {gw.key}"})
            assert reply.status_code == 200, reply.text
        reached = {f"{r.path.split('/')[1]}/{r.json()['model']}" for r in fake.received}
        assert reached == set(expected)


async def test_auto_with_no_default_and_nothing_declared_says_how_to_fix_it(fake: FakeUpstream,
                                                                            tmp_path: Path) -> None:
    async with gateway_for(fake, tmp_path) as gw:  # providers a and b: in no catalog, so no defaults
        reply = await gw.http.post("/v1/chat/completions", json={"messages": USER},
                                   headers={"authorization": f"Bearer {gw.key}"})
        assert reply.status_code == 404 and "routes.auto" in reply.json()["error"]["message"]
        assert not fake.received
