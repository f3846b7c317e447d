"""Starting the servers of a run: the mock, the floor, the gateway (as a user would) and LiteLLM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.procs import Layout, Proc, child_env, free_port, request, wait_ready

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0

# Model names as clients send them, per gateway provider; the mock answers whatever name it is given.
OPENAI_MODEL = "mock/gpt-4o-mini"
ANTHROPIC_MODEL = "mockanthropic/claude-sonnet-4-6"
GEMINI_MODEL = "mockgemini/gemini-2.5-flash"


class Server:
    """A started server: its process and port, plus the API key clients send (empty when none)."""

    def __init__(self, proc: Proc, port: int, key: str = "", startup_s: float = 0.0) -> None:
        self.proc = proc
        self.port = port
        self.key = key
        self.startup_s = startup_s

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}


def start_mock(workdir: Path, layout: Layout) -> Server:
    port = free_port()
    proc = Proc("mock", [sys.executable, "-m", "bench.mock", "--port", str(port)], cpus=layout.client,
                log=workdir / "mock.log", cwd=REPO)
    return Server(proc, port, startup_s=wait_ready(proc, port, "/_mock/stats", READY_TIMEOUT))


def configure_mock(mock: Server, **knobs: float) -> None:
    status, body = request(mock.port, "POST", "/_mock/config", json.dumps(knobs).encode())
    if status != 200:
        raise RuntimeError(f"mock refused knobs {knobs}: {body!r}")


def start_floor(workdir: Path, layout: Layout, mock: Server) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--no-ws", "--http", "1", "--runtime-mode", "st", "--log-level", "warning",
           "bench.floor:app"]  # granian tuned as the gateway runs it: the floor must be the best possible
    proc = Proc("floor", cmd, cpus=layout.server, log=workdir / "floor.log", cwd=REPO,
                env={"BENCH_FLOOR_UPSTREAM": f"http://127.0.0.1:{mock.port}"})
    # The floor has no health route: any answer from it (the mock's 404, relayed) means it is serving.
    return Server(proc, port, startup_s=wait_ready(proc, port, "/ready", READY_TIMEOUT, any_status=True))


def gateway_config(port: int, mock_port: int, workers: int, extra: str = "") -> str:
    return f"""# Written by bench/run.py: the gateway under test, pointed at the mock upstream.
[server]
host = "127.0.0.1"
port = {port}
data_dir = "data"
workers = {workers}

[providers.mock]
type = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"
api_key = "sk-mock"

[providers.mockanthropic]
type = "anthropic"
base_url = "http://127.0.0.1:{mock_port}"
api_key = "sk-mock"

[providers.mockgemini]
type = "gemini"
base_url = "http://127.0.0.1:{mock_port}"
api_key = "sk-mock"

[routing]
retries = 0
{extra}"""


def gateway_cli(src: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m gateway …`` run from ``src``, so the gateway package found there is the one measured."""
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=src,
                          env=child_env(), timeout=60, check=False)


def write_gateway_config(workdir: Path, mock: Server, *, workers: int = 1, extra: str = "") -> tuple[Path, int]:
    """A config in its own folder (its data dir beside it) and a key made with the CLI, once per folder."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    path = workdir / "bench.toml"
    path.write_text(gateway_config(port, mock.port, workers, extra))
    return path, port


def create_key(src: Path, config: Path) -> str:
    done = gateway_cli(src, "keys", "create", "--name", "bench", "--config", str(config))
    if done.returncode != 0 or not done.stdout.strip().startswith("sk-"):
        raise RuntimeError(f"gateway keys create failed ({done.returncode}): {done.stderr}")
    return done.stdout.strip()


def start_gateway(src: Path, config: Path, port: int, key: str, cpus: frozenset[int]) -> Server:
    """``python -m gateway serve --config …``, timed from exec to the first 200 on /readyz."""
    proc = Proc("gateway", [sys.executable, "-m", "gateway", "serve", "--config", str(config)], cpus=cpus,
                log=config.parent / "gateway.log", cwd=src)
    return Server(proc, port, key, startup_s=wait_ready(proc, port, "/readyz", READY_TIMEOUT))
