from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import openai
import pytest

from tests.fakes import FakeUpstream, free_port

UPSTREAM_KEY = "sk-upstream-SECRET-never-shown"
CLIENTS = Path(__file__).parent / "clients"
IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip, saying why; in CI a missing client is a failure, never a silent skip."""
    if IN_CI:
        pytest.fail(f"CI must run the real clients: {reason}")
    pytest.skip(reason)


def python_client(module: str) -> Any:
    """A pinned Python client of the test extra, imported; a checkout without it skips (fails in CI)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        unavailable(f"{module} is not installed (pip install -e '.[test]'): {error}")


@pytest.fixture(scope="session")
def npm_clients() -> Path:
    """The npm clients pinned in tests/clients/package.json, installed once into a cache folder keyed by that
    manifest (outside the checkout, so nothing lands in git); a file lock keeps parallel runs from installing
    twice. The client scripts are copied beside node_modules: ESM imports resolve from the script's folder."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        unavailable("node/npm are not installed (Debian: apt-get install nodejs npm)")
    manifest = (CLIENTS / "package.json").read_bytes()
    folder = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gateway-test-clients"
              / hashlib.sha256(manifest).hexdigest()[:16])
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / ".installed"
        if not done.exists():
            (folder / "package.json").write_bytes(manifest)
            try:
                proc = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=folder, capture_output=True,
                                      text=True, timeout=600)
            except subprocess.TimeoutExpired:
                unavailable("npm install of the pinned clients timed out (is the npm registry reachable?)")
            if proc.returncode != 0:
                errors = " | ".join(line for line in proc.stderr.splitlines() if "error" in line.lower())
                unavailable(f"npm install of the pinned clients failed (is the npm registry reachable?): "
                            f"{errors[:600]}")
            done.write_text("ok\n")
        for script in CLIENTS.glob("*.mjs"):
            shutil.copyfile(script, folder / script.name)
    return folder


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
