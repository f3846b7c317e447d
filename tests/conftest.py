from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes import FakeUpstream, free_port

UPSTREAM_KEY = "sk-upstream-SECRET-never-shown"


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset_fake(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


def gateway_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "GATEWAY_CONFIG"}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          env=env or gateway_env(), cwd=cwd, timeout=timeout)


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("gateway did not become ready")


@dataclass
class RunningGateway:
    base: str
    key: str
    config: Path
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=self.key, max_retries=0, **kwargs)  # type: ignore[arg-type]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--config", str(self.config))

    def logs(self) -> str:
        return self.log.read_text()


def gateway_config(fake: FakeUpstream, data_dir: Path) -> str:
    dead = free_port()
    return f"""
[server]
data_dir = "{data_dir}"

[routing]
retries = 0  # one answer per queued fake reply; retries and fallback have tests of their own

[providers.fake]
type = "openai"
base_url = "{fake.base}/v1"
api_key = "{UPSTREAM_KEY}"
timeout = 1.5

[providers.listed]
type = "openai"
base_url = "{fake.base}/v1"
api_key = "{UPSTREAM_KEY}"
models = ["gpt-4o", "gpt-4o-mini"]

[providers.anthropic]
type = "anthropic"
base_url = "{fake.base}"
api_key = "{UPSTREAM_KEY}"
timeout = 1.5

[providers.google]
type = "gemini"
base_url = "{fake.base}"
api_key = "{UPSTREAM_KEY}"
timeout = 1.5

[providers.down]
type = "openai"
base_url = "http://127.0.0.1:{dead}/v1"
api_key = "{UPSTREAM_KEY}"
connect_timeout = 1
"""


@pytest.fixture(scope="session")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("gateway")
    with serve_gateway(root, gateway_config(fake, root / "data")) as running:
        yield running


@contextmanager
def serve_gateway(root: Path, config_text: str) -> Iterator[RunningGateway]:
    """`gateway serve` on a free port with this config (written to root), and one proxy key."""
    config = root / "config.toml"
    config.write_text(config_text)
    created = run_cli("keys", "create", "--name", "tests", "--config", str(config))
    assert created.returncode == 0, created.stderr
    port = free_port()
    log = root / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=gateway_env(),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield RunningGateway(base=base, key=created.stdout.strip(), config=config, data_dir=root / "data",
                             log=log, proc=proc)
    finally:
        proc.terminate()
        proc.wait(10)
