"""Config hot reload on a real `gateway serve` process: under load, with a broken file, and on SIGHUP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import gateway_env, run_cli, wait_ready
from tests.fakes import FakeUpstream, free_port

pytestmark = pytest.mark.slow


def config_text(fake: FakeUpstream, data: Path, *, extra: str = "", interval: float = 0.2) -> str:
    return f"""
[server]
data_dir = "{data}"

[routing]
reload_interval_s = {interval}

[providers.a]
type = "openai"
base_url = "{fake.base}/a/v1"
models = ["m1"]
{extra}
"""


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_hot_reload_under_load_invalid_file_and_sighup(fake: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text(fake, tmp_path / "data"))
    key = run_cli("keys", "create", "--name", "reload", "--config", str(path)).stdout.strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=gateway_env())
    headers = {"authorization": f"Bearer {key}"}

    def status(model: str) -> int:
        return httpx.post(f"{base}/v1/chat/completions", headers=headers, timeout=10,
                          json={"model": model, "messages": [{"role": "user", "content": "hi"}]}).status_code

    failures: list[int] = []
    sent = [0]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                code = client.post(f"{base}/v1/chat/completions", headers=headers,
                                   json={"model": "a/m1", "messages": [{"role": "user", "content": "hi"}]}).status_code
                sent[0] += 1
                if code != 200:
                    failures.append(code)

    try:
        wait_ready(base, proc)
        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        assert status("b/m2") == 404
        # 1. A valid edit: a new provider appears without a restart, while the load keeps flowing.
        path.write_text(config_text(fake, tmp_path / "data", extra=f"""
[providers.b]
type = "openai"
base_url = "{fake.base}/b/v1"
models = ["m2"]
"""))
        eventually(lambda: status("b/m2") == 200)
        # 2. A broken edit is refused with the key named; the previous config keeps serving.
        path.write_text(config_text(fake, tmp_path / "data") + "\n[providers.a.extra]\n")
        eventually(lambda: "config reload rejected" in log.read_text())
        assert "providers.a.extra" in log.read_text()
        assert status("b/m2") == 200 and status("a/m1") == 200
        # 3. SIGHUP reloads at once, even with a long polling interval.
        path.write_text(config_text(fake, tmp_path / "data", interval=60))
        eventually(lambda: status("b/m2") == 404)
        time.sleep(0.5)
        path.write_text(config_text(fake, tmp_path / "data", interval=60, extra=f"""
[providers.c]
type = "openai"
base_url = "{fake.base}/c/v1"
models = ["m3"]
"""))
        assert status("c/m3") == 404
        os.kill(proc.pid, signal.SIGHUP)
        assert eventually(lambda: status("c/m3") == 200, seconds=3) < 3
        stop.set()
        for worker in workers:
            worker.join(10)
        assert sent[0] > 50
        assert failures == [], failures
        assert proc.poll() is None  # still the same process: nothing was restarted
    finally:
        stop.set()
        proc.terminate()
        proc.wait(10)


CONFIG_KEY_A = "sk-proxy-config-key-alpha-0123456789abcdef"
CONFIG_KEY_B = "sk-proxy-config-key-bravo-0123456789abcdef"


async def test_reload_rebuilds_the_config_key_ring(fake: FakeUpstream, tmp_path: Path) -> None:
    """[[keys]] edited in config.toml: a deleted entry answers 401 and a new one 200 after the reload."""
    from gateway.app import create_app
    from gateway.config import load_config_file
    from gateway.store import SqliteStore

    def keys_text(*entries: tuple[str, str]) -> str:
        return config_text(fake, tmp_path / "data") + "".join(
            f'\n[[keys]]\nname = "{name}"\nkey = "{secret}"\n' for name, secret in entries)

    path = tmp_path / "config.toml"
    path.write_text(keys_text(("alpha", CONFIG_KEY_A)))
    store = await SqliteStore.open(tmp_path / "data")
    app = create_app(load_config_file(path), store=store)
    await app.state.start()
    body = {"model": "a/m1", "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            async def status(secret: str) -> int:
                answer = await http.post("/v1/chat/completions", json=body,
                                         headers={"authorization": f"Bearer {secret}"})
                return answer.status_code

            assert (await status(CONFIG_KEY_A), await status(CONFIG_KEY_B)) == (200, 401)
            path.write_text(keys_text(("bravo", CONFIG_KEY_B)))
            assert app.state.reload().ok
            assert (await status(CONFIG_KEY_A), await status(CONFIG_KEY_B)) == (401, 200)
            # A database refresh afterwards keeps the file's current keys, not the old ones.
            await app.state.reload_keys()
            assert (await status(CONFIG_KEY_A), await status(CONFIG_KEY_B)) == (401, 200)
    finally:
        await app.state.stop()
        await store.close()


async def test_reload_keeps_the_serve_commands_flags(fake: FakeUpstream, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """`serve --port` reaches the worker's config (the admin Config page shows it) and survives a reload,
    without a "takes effect after a restart" warning for a port nobody changed."""
    from gateway.admin.views import config_view
    from gateway.app import create_app
    from gateway.config import ServeFlags, load_config_file
    from gateway.store import SqliteStore

    path = tmp_path / "config.toml"
    path.write_text(config_text(fake, tmp_path / "data"))
    flags = ServeFlags(port=9123)
    store = await SqliteStore.open(tmp_path / "data")
    app = create_app(flags.apply(load_config_file(path)), store=store, flags=flags)
    await app.state.start()
    try:
        path.write_text(config_text(fake, tmp_path / "data", extra="# edited"))
        assert app.state.reload().ok
        assert app.state.config.server.port == 9123
        assert "9123" in str(config_view(app.state).sections)
        assert "only take effect after a restart" not in caplog.text
    finally:
        await app.state.stop()
        await store.close()
