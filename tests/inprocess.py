"""The gateway in-process: the real app, store and upstream session, driven through the official async
OpenAI SDK over an ASGI transport, against the loopback fake upstream; backoff sleeps are recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

from gateway.app import RequestContext, create_app
from gateway.config import load_config_file
from gateway.keys import create_key
from gateway.state import GatewayState
from gateway.store import KeyLimits, SqliteStore, Store
from tests.fakes import FakeUpstream, Received, Reply, free_port, json_reply


@dataclass
class Harness:
    client: openai.AsyncOpenAI
    http: httpx.AsyncClient
    app: RequestContext
    store: Store
    key: str
    sleeps: list[float] = field(default_factory=list)

    @property
    def state(self) -> GatewayState:
        return self.app.state

    async def new_key(self, name: str, **limits: object) -> openai.AsyncOpenAI:
        secret, row = await create_key(self.store, name, KeyLimits(**limits))  # type: ignore[arg-type]
        await self.state.keys.refresh(self.store, force=True)
        self.state.governor.configure_key(next(p for p in self.state.keys.principals if p.key_id == row.id))
        return openai.AsyncOpenAI(base_url="http://gateway/v1", api_key=secret, http_client=self.http, max_retries=0)


def by_provider(**replies: Reply) -> Callable[[Received], Reply]:
    """A fake upstream answer chosen by the provider path prefix (/a/v1/..., /b/v1/...)."""
    def choose(received: Received) -> Reply:
        return replies[received.path.split("/")[1]]
    return choose


OK = json_reply({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def err(status: int, headers: dict[str, str] | None = None) -> Reply:
    return json_reply({"error": {"message": f"boom {status}", "type": "server_error"}}, status=status, headers=headers)


@asynccontextmanager
async def gateway_for(fake: FakeUpstream, tmp_path: Path, extra: str = "", routing: str = "") -> AsyncIterator[Harness]:
    dead = free_port()
    path = tmp_path / "config.toml"
    path.write_text(f"""
[server]
data_dir = "{tmp_path / 'data'}"

[routing]
circuit_cooldown_s = 30
{routing}

[providers.a]
type = "openai"
base_url = "{fake.base}/a/v1"
timeout = 1

[providers.b]
type = "openai"
base_url = "{fake.base}/b/v1"

[providers.dead]
type = "openai"
base_url = "http://127.0.0.1:{dead}/v1"

[routes.pair]
targets = ["a/m", "b/m"]

[routes.trio]
targets = ["dead/m", "a/m", "b/m"]
{extra}
""")
    store = await SqliteStore.open(tmp_path / "data")
    secret, _ = await create_key(store, "t")
    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    app = create_app(load_config_file(path), store=store, sleep=record_sleep)
    await app.state.start()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
    client = openai.AsyncOpenAI(base_url="http://gateway/v1", api_key=secret, http_client=http, max_retries=0)
    try:
        yield Harness(client=client, http=http, app=app, store=store, key=secret, sleeps=sleeps)
    finally:
        await http.aclose()
        await app.state.stop()
        await store.close()


def paths(fake: FakeUpstream) -> list[str]:
    return [r.path.split("/")[1] for r in fake.received]
