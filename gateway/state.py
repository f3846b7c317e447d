"""The per-worker state the routes share, and the background jobs that keep it fresh.

``runtime`` (the config and its route table) is one immutable object swapped in a single assignment
on reload: a request reads it once and finishes on the config it started with. Health, the key ring
and the upstream session outlive reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.catalog import CatalogFile, load_builtin
from gateway.config import Config, ConfigError, load_config_file
from gateway.health import HealthBook
from gateway.keys import KeyRing
from gateway.pipeline import Pipeline
from gateway.router import RouteTable
from gateway.store import Store
from gateway.upstream import Upstream

log = logging.getLogger("gateway")

KEY_POLL_SECONDS = 0.5
LAST_USED_FLUSH_SECONDS = 5.0
SETTLE_SECONDS = 0.1
# Changing these needs a restart: the listening socket and the database are opened once.
RESTART_ONLY = ("host", "port", "workers", "data_dir")


@dataclass(frozen=True)
class Runtime:
    config: Config
    table: RouteTable


@dataclass(frozen=True)
class ReloadResult:
    at: float
    ok: bool
    message: str


class GatewayState:
    def __init__(self, config: Config, *, store: Store | None = None, upstream: Upstream | None = None,
                 catalog: CatalogFile | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.catalog = catalog or load_builtin()
        self.runtime = Runtime(config=config, table=RouteTable(config, self.catalog))
        self._own_store = store is None
        self.store: Store | None = store
        self.upstream = upstream or Upstream()
        self.health = HealthBook(config.routing)
        self.pipeline = Pipeline(self.upstream, self.health, clock=clock, sleep=sleep)
        self.keys = KeyRing()
        self.last_reload = ReloadResult(at=time.time(), ok=True, message="loaded at start")
        self._reload_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    @property
    def config(self) -> Config:
        return self.runtime.config

    async def start(self) -> None:
        if self.store is None:
            self.store = await Store.open(self.config.data_dir)
        await self.keys.refresh(self.store, force=True)
        await self.upstream.start()
        self._tasks.append(asyncio.create_task(self._watch_keys(), name="gateway-keys"))
        if self.config.path is not None:
            self._listen_for_sighup()
            self._tasks.append(asyncio.create_task(self._watch_config(), name="gateway-config"))
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.upstream.close()
        if self.store is not None:
            await self.store.touch_keys(self.keys.take_last_used())
            if self._own_store:
                await self.store.close()
                self.store = None

    # ---------------------------------------------------------------------------------------- reload

    def reload(self) -> ReloadResult:
        """Validate the config file again and swap it in; a broken file leaves the old one serving."""
        path = self.config.path
        assert path is not None
        try:
            config = load_config_file(path)
            table = RouteTable(config, self.catalog)
        except ConfigError as exc:
            log.error("config reload rejected, still serving the previous config: %s", exc)
            self.last_reload = ReloadResult(at=time.time(), ok=False, message=str(exc))
            return self.last_reload
        old = self.config
        changed = [name for name in RESTART_ONLY
                   if getattr(old.server, name, None) != getattr(config.server, name, None)]
        if old.data_dir != config.data_dir and "data_dir" not in changed:
            changed.append("data_dir")
        if changed:
            log.warning("config reloaded, but server.%s only take effect after a restart", ", server.".join(changed))
        self.health.reconfigure(config.routing)
        self.health.clear_provider_marks()
        self.runtime = Runtime(config=config, table=table)
        log.info("config reloaded from %s (%d providers)", path, len(config.providers))
        self.last_reload = ReloadResult(at=time.time(), ok=True, message=f"reloaded from {path}")
        return self.last_reload

    def _listen_for_sighup(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reload_now.set)

    async def _watch_config(self) -> None:
        path = self.config.path
        assert path is not None
        last = _mtime(path)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload_now.wait(), self.config.routing.reload_interval_s)
            forced = self._reload_now.is_set()
            self._reload_now.clear()
            current = _mtime(path)
            if forced or current != last:
                # An editor (or `cat >`) may be half-way through writing: wait until the file stops
                # changing, or a truncated file could be read as a valid, emptier config.
                while True:
                    await asyncio.sleep(SETTLE_SECONDS)
                    settled = _mtime(path)
                    if settled == current:
                        break
                    current = settled
                last = current
                self.reload()

    # ------------------------------------------------------------------------------------------ keys

    async def _watch_keys(self) -> None:
        """Pick up keys created or revoked by the CLI within a second; write last-used times behind."""
        assert self.store is not None
        since_flush = 0.0
        while True:
            await asyncio.sleep(KEY_POLL_SECONDS)
            try:
                if await self.keys.refresh(self.store):
                    log.info("key ring reloaded")
                since_flush += KEY_POLL_SECONDS
                if since_flush >= LAST_USED_FLUSH_SECONDS:
                    since_flush = 0.0
                    await self.store.touch_keys(self.keys.take_last_used())
            except Exception:
                log.exception("key ring refresh failed; keeping the keys in memory")


def _mtime(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
