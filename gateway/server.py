"""Serving: the startup banner, the store prepared before anything listens, and granian.

granian runs the app from an import string in worker processes. Workers are forked (Linux's default
start method), so the app's modules are imported here first: each worker then starts with them
already loaded, which is most of the start-up time. The config reaches workers by path, through the
environment (``GATEWAY_CONFIG``), not by pickling.

granian runs HTTP/1 only (clients of a plain-http gateway speak it; skipping the HTTP/2 detection is
measurably cheaper) and a single-threaded Rust runtime per worker: measured here, the multi-threaded
default spends more on handing each request between threads than on serving it (about +50% req/s on one
core with ``st``). Websockets are off: the gateway has no websocket route.

granian's own SIGHUP handling respawns every worker, which drops in-memory state (key ring, limits,
circuit breakers) and, if the edited config is broken, leaves workers crash-looping. The gateway's
workers reload the config themselves and keep serving the old one when the new one is invalid, so the
main process only passes the signal on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
from typing import Any

from granian.constants import HTTPModes, Interfaces, RuntimeModes
from granian.log import LogLevels
from granian.server.mp import MPServer

from gateway import __version__
from gateway.config import CONFIG_ENV_VAR, Config
from gateway.store import DB_FILENAME, Store

APP_TARGET = "gateway.app:serve_app"


class GatewayServer(MPServer):
    def _reload(self, spawn_target: Any, target_loader: Any) -> None:
        self.reload_signal = False
        self.main_loop_interrupt.clear()
        for worker in self.wrks:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(worker._id(), signal.SIGHUP)  # type: ignore[no-untyped-call]


def banner(config: Config, first_start: bool) -> list[str]:
    host, port = config.server.host, config.server.port
    shown_host = f"[{host}]" if ":" in host else host
    lines = [f"gateway {__version__} listening on http://{shown_host}:{port}"]
    config_text = str(config.path) if config.path else "none (built-in defaults; `gateway init` writes one)"
    lines.append(f"  config:   {config_text}")
    lines.append(f"  database: {config.data_dir / DB_FILENAME}")
    if config.providers:
        for name, provider in config.providers.items():
            origin = config.sources.get(name, "config file")
            lines.append(f"  provider: {name} ({provider.kind}, {provider.base_url}) from {origin}")
    else:
        lines.append("  providers: none: set OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY, or add "
                     "[providers.NAME] to a config file")
    if first_start:
        where = f" --config {config.path}" if config.path else ""
        lines.append(f"  first start: create a key for your clients with `gateway keys create --name NAME{where}`")
    return lines


async def _prepare_store(config: Config) -> bool:
    """Create the data dir and migrate before anything listens; True on a first start."""
    first = not (config.data_dir / DB_FILENAME).exists()
    store = await Store.open(config.data_dir)
    await store.close()
    return first


def serve(config: Config) -> None:
    first_start = asyncio.run(_prepare_store(config))
    if config.path is not None:
        os.environ[CONFIG_ENV_VAR] = str(config.path)
    print("\n".join(banner(config, first_start)), file=sys.stderr, flush=True)
    importlib.import_module(APP_TARGET.partition(":")[0])  # inherited by the forked workers
    GatewayServer(
        APP_TARGET, address=config.server.host, port=config.server.port, interface=Interfaces.ASGI,
        workers=config.server.workers, factory=True, log_level=LogLevels.warning, log_access=False,
        http=HTTPModes.http1, websockets=False, runtime_mode=RuntimeModes.st,
    ).serve()
