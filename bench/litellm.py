"""The optional peer: LiteLLM's proxy against the same mock, same pinning (``--with-litellm``).

It lives in a venv of its own (bench/.venv-litellm, created on first use) so its hundreds of
dependencies never meet the gateway's. Run as its docs describe a lean deployment: no database,
no callbacks, the local model-cost map (no fetch at start), uvicorn with one worker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.procs import Layout, Proc, child_env, free_port, wait_ready
from bench.servers import OPENAI_MODEL, REPO, Server

VERSION = "1.106.2"
VENV = REPO / "bench" / ".venv-litellm"
MASTER_KEY = "sk-bench-litellm"
INSTALL_TIMEOUT_S = 1200
READY_TIMEOUT_S = 180


def ensure_venv() -> Path:
    """The venv's ``litellm`` executable, installing ``litellm[proxy]`` first if needed (bounded in time)."""
    exe = VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", f"litellm[proxy]=={VERSION}"],
                   check=True, timeout=INSTALL_TIMEOUT_S, env=child_env())
    return exe


def config_yaml(mock_port: int) -> str:
    return f"""# Written by bench/run.py: LiteLLM proxy pointed at the mock upstream.
model_list:
  - model_name: {OPENAI_MODEL}
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:{mock_port}/v1
      api_key: sk-mock
litellm_settings:
  callbacks: []
  success_callback: []
  failure_callback: []
  num_retries: 0
general_settings:
  master_key: {MASTER_KEY}
  disable_spend_logs: true
"""


def start_litellm(workdir: Path, layout: Layout, mock: Server) -> Server:
    exe = ensure_venv()
    folder = workdir / "litellm"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "litellm.yaml"
    config.write_text(config_yaml(mock.port))
    port = free_port()
    cmd = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    proc = Proc("litellm", cmd, cpus=layout.server, log=folder / "litellm.log", env=env, cwd=folder)
    startup = wait_ready(proc, port, "/health/readiness", READY_TIMEOUT_S)
    return Server(proc, port, MASTER_KEY, startup_s=startup)
