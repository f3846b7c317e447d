"""Every route of the gateway, served with the shipped config.example.toml, answers without a 5xx.

The routes are listed from the app itself (Litestar's routes plus the plain-ASGI hot path), so a new
route is covered without touching this file. Each is called with every method it takes, as a stranger,
as the example's proxy key, and as the admin (token and session), with an empty and a small JSON body.
The example's provider URLs point at the loopback fake upstream: nothing leaves the machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from gateway.admin.auth import SESSION_COOKIE
from gateway.app import FAST_ROUTES, create_app
from gateway.config import load_config_file
from gateway.store import SqliteStore
from tests.fakes import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-proxy-example-config-route-test-0123456789"
ADMIN = "admin-token-for-the-example-config-test"
SAMPLES = {"key_id": "cfg_ci", "row_id": "1", "name": "admin.css", "provider": "openai", "path": "v1/models",
           "model_id": "openai/gpt-4o", "response_id": "resp_unknown"}


def example_config(fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    text = (ROOT / "config.example.toml").read_text()
    for url in ("https://api.openai.com/v1", "https://api.groq.com/openai/v1", "http://127.0.0.1:11434/v1"):
        text = text.replace(f'"{url}"', f'"{fake.base}/v1"')
    # anthropic and google take the built-in URLs: give them the fake's too, as a real operator would.
    text = text.replace('[providers.anthropic]\n', f'[providers.anthropic]\nbase_url = "{fake.base}"\n')
    text = text.replace('[providers.google]\n', f'[providers.google]\nbase_url = "{fake.base}"\n')
    text = text.replace('data_dir = "./data"', f'data_dir = "{tmp_path / "data"}"')
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY"):
        monkeypatch.setenv(var, "sk-upstream-example")
    monkeypatch.setenv("CI_GATEWAY_KEY", KEY)
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", lambda m: SAMPLES[m.group(1)], path)


async def test_every_route_with_the_shipped_example_config(
        fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config_file(example_config(fake, tmp_path, monkeypatch))
    assert config.routes and "auto" in config.routes  # the shape that broke /v1/models
    store = await SqliteStore.open(config.data_dir)
    app = create_app(config, store=store)
    await app.state.start()
    _, cookie = await app.state.admin.open_session(store, config)
    routes = [(method, concrete(route.path)) for route in app.app.routes  # type: ignore[attr-defined]
              for method in sorted(route.methods)]
    routes += [(method, path) for method, path in FAST_ROUTES]
    assert len(routes) > 40
    callers: dict[str, dict[str, str]] = {
        "stranger": {}, "key": {"authorization": f"Bearer {KEY}"},
        "admin": {"authorization": f"Bearer {ADMIN}", "cookie": f"{SESSION_COOKIE}={cookie}"}}
    failures: list[str] = []
    calls = 0
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            for method, path in routes:
                for who, headers in callers.items():
                    for body in (b"", b'{"model": "smart", "messages": [{"role": "user", "content": "hi"}]}'):
                        fake.reset()
                        answer = await http.request(method, path, headers={**headers, "content-type":
                                                                            "application/json"}, content=body)
                        calls += 1
                        if answer.status_code >= 500:
                            failures.append(f"{method} {path} as {who}: {answer.status_code} {answer.text[:200]}")
    finally:
        await app.state.stop()
        await store.close()
    assert failures == []
    assert calls == len(routes) * 6


async def test_models_listing_puts_auto_first_then_groups_by_name(
        fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config_file(example_config(fake, tmp_path, monkeypatch))
    store = await SqliteStore.open(config.data_dir)
    app = create_app(config, store=store)
    await app.state.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            answer = await http.get("/v1/models", headers={"authorization": f"Bearer {KEY}"})
    finally:
        await app.state.stop()
        await store.close()
    assert answer.status_code == 200, answer.text
    groups = [m["id"] for m in answer.json()["data"] if m["owned_by"] == "gateway"]
    assert groups == ["auto", "smart"]
