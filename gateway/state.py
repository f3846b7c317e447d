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
from typing import TYPE_CHECKING

import msgspec

from gateway import metrics, redaction, tracing
from gateway.admin.auth import AdminAuth
from gateway.catalog import CatalogFile, load_builtin
from gateway.config import Config, ConfigError, ServeFlags, load_config_file
from gateway.governance import Governor, config_principals
from gateway.health import HealthBook
from gateway.keys import KeyRing
from gateway.limits import period_start_day
from gateway.logs import access
from gateway.pipeline import Pipeline
from gateway.responses_store import ResponseStore
from gateway.router import RouteTable
from gateway.store import Store, open_store
from gateway.upstream import Upstream
from gateway.usage import UsageRecorder

if TYPE_CHECKING:
    from gateway.shared_state import RedisState

log = logging.getLogger("gateway")

KEY_POLL_SECONDS = 0.5
LAST_USED_FLUSH_SECONDS = 5.0
SETTLE_SECONDS = 0.1
PRUNE_SECONDS = 3600.0
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
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 wall_clock: Callable[[], float] = time.time, flags: ServeFlags | None = None) -> None:
        self.catalog = catalog or load_builtin()
        self.flags = flags or ServeFlags()
        redaction.install(config)  # its secrets are cut from every error and log line from now on
        self.runtime = Runtime(config=config, table=RouteTable(config, self.catalog))
        metrics.configure(self.runtime.table)
        tracing.configure(config.tracing)
        self._own_store = store is None
        self.store: Store | None = store
        self.upstream = upstream or Upstream()
        self.health = HealthBook(config.routing)
        self.shared = _open_shared(config, self._recorded_spend)
        self.governor = Governor(config, clock=wall_clock, shared=self.shared)
        self.pipeline = Pipeline(self.upstream, self.health, governor=self.governor, clock=clock, sleep=sleep)
        self.keys = KeyRing()
        self.keys.set_config_keys(config_principals(config))
        self.usage = UsageRecorder(config.usage)
        self.responses = ResponseStore()
        self.admin = AdminAuth(shared=self.shared)
        self.last_reload = ReloadResult(at=time.time(), ok=True, message="loaded at start")
        self._reload_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    @property
    def config(self) -> Config:
        return self.runtime.config

    async def start(self) -> None:
        if self.store is None:
            self.store = await open_store(self.config)
        await self.keys.refresh(self.store, force=True)
        await self.admin.load(self.store, self.config)
        await self._load_spend()
        self.usage.start(self.store)
        self.responses.start(self.store)
        await self.upstream.start()
        self._tasks.append(asyncio.create_task(self._watch_keys(), name="gateway-keys"))
        self._tasks.append(asyncio.create_task(self._prune(), name="gateway-retention"))
        if self.shared is not None:
            self._tasks.append(asyncio.create_task(self.shared.watch(self._announced), name="gateway-announced"))
            self._tasks.append(asyncio.create_task(self.shared.renew_holds(), name="gateway-holds"))
        self._tasks.append(asyncio.create_task(self._refresh_gauges(), name="gateway-metrics"))
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
        if self.shared is not None:
            await self.shared.close()  # settlements still in flight land on Redis first
        await self.usage.stop()  # every queued usage record lands before the store closes
        await self.responses.stop()  # ...and every stored response
        access.flush()
        tracing.shutdown()
        metrics.worker_stopped()
        if self.store is not None:
            await self.flush_behind()
            if self._own_store:
                await self.store.close()
                self.store = None

    # ---------------------------------------------------------------------------------------- reload

    def reload(self) -> ReloadResult:
        """Validate the config file again and swap it in; a broken file leaves the old one serving."""
        path = self.config.path
        assert path is not None
        try:
            config = self.flags.apply(load_config_file(path))
            table = RouteTable(config, self.catalog)
        except ConfigError as exc:
            log.error("config reload rejected, still serving the previous config: %s", exc)
            metrics.reloaded(False)
            self.last_reload = ReloadResult(at=time.time(), ok=False, message=str(exc))
            return self.last_reload
        old = self.config
        changed = [name for name in RESTART_ONLY
                   if getattr(old.server, name, None) != getattr(config.server, name, None)]
        if old.data_dir != config.data_dir and "data_dir" not in changed:
            changed.append("data_dir")
        if changed:
            log.warning("config reloaded, but server.%s only take effect after a restart", ", server.".join(changed))
        # The Redis connection (or its absence) is made once, at start; on_unavailable applies at once.
        if msgspec.structs.replace(old.state, on_unavailable=config.state.on_unavailable) != config.state:
            log.warning("config reloaded, but state.backend, state.redis_url and state.hold_ttl_s only take "
                        "effect after a restart")
        self.health.reconfigure(config.routing)
        self.health.clear_provider_marks()
        self.governor.reconfigure(config)
        self.usage.cfg = config.usage
        self.keys.set_config_keys(config_principals(config))
        redaction.install(config)
        self.runtime = Runtime(config=config, table=table)
        metrics.configure(table)
        metrics.reloaded(True)
        self._keys_changed()
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
                    self._keys_changed()
                    log.info("key ring reloaded")
                since_flush += KEY_POLL_SECONDS
                if since_flush >= LAST_USED_FLUSH_SECONDS:
                    since_flush = 0.0
                    await self.flush_behind()
            except Exception:
                log.exception("key ring refresh failed; keeping the keys in memory")

    async def flush_behind(self) -> None:
        """Write what is kept in memory between flushes: keys' last-used times, counts of refused requests."""
        assert self.store is not None
        await self.store.touch_keys(self.keys.take_last_used())
        await self.store.add_auth_refusals(self.usage.take_refusals())

    async def reload_keys(self) -> None:
        """After the admin page changed a key: the watcher cannot see it, since ``data_version`` only moves
        for commits of other connections."""
        assert self.store is not None
        await self.keys.refresh(self.store, force=True)
        self._keys_changed()

    async def _announced(self, announcement: str | None) -> None:
        """Another process changed a key or saw a wrong admin token (or announcements may have been missed):
        a revoked key is refused at once, then the ring is read again from the store; a failed login counts
        in this process's throttle too."""
        action, _, rest = (announcement or "").partition(":")
        if action == "admin-failed":
            self.admin.failed_elsewhere(rest)
            return
        if action == "revoke":
            self.keys.revoked(rest)
        try:
            await self.reload_keys()
        except Exception:  # the store may be down for a moment: the poll in _watch_keys tries again
            log.exception("key ring reload after an announcement failed; keeping the keys in memory")

    async def _recorded_spend(self, name: str, day: str) -> float:
        """A budget's spend since ``day`` as the store recorded it: seeds a Redis budget that has none."""
        assert self.store is not None
        kind, _, ident = name.partition(":")
        return (await self.store.spend_since(day, by="key_id" if kind == "key" else "project")).get(ident, 0.0)

    def _keys_changed(self) -> None:
        for principal in self.keys.principals:
            self.governor.configure_key(principal)

    async def _load_spend(self) -> None:
        """Budgets start from what the database says was spent in each key's and project's period."""
        assert self.store is not None
        now = time.time()
        periods = {p.budget_period for p in self.keys.principals} | {
            p.budget_period for p in self.config.projects.values()}
        by_key: dict[str, dict[str, float]] = {}
        by_project: dict[str, dict[str, float]] = {}
        for period in periods:
            day = period_start_day(period, now)
            by_key[period] = await self.store.spend_since(day, by="key_id")
            by_project[period] = await self.store.spend_since(day, by="project")
        for principal in self.keys.principals:
            self.governor.configure_key(principal, by_key.get(principal.budget_period, {}).get(principal.key_id, 0.0))
        project_spend = {name: by_project.get(p.budget_period, {}).get(name, 0.0)
                         for name, p in self.config.projects.items()}
        self.governor.load_project_spend(project_spend)

    def refresh_gauges(self) -> None:
        metrics.refresh(self.health, self.governor, self.keys.principals, self.usage.queued)

    async def _refresh_gauges(self) -> None:
        """Each worker's gauges, kept current for a scrape another worker answers (multiprocess mode)."""
        while True:
            if self.config.metrics.enabled:
                self.refresh_gauges()
            await asyncio.sleep(metrics.REFRESH_SECONDS)

    async def _prune(self) -> None:
        """Request records and stored responses older than usage.retention_days go; the daily aggregates stay."""
        assert self.store is not None
        while True:
            try:
                cutoff = time.time() - self.config.usage.retention_days * 86400
                deleted = await self.store.prune_requests(cutoff)
                await self.store.prune_responses(cutoff)
                if deleted:
                    log.info("pruned %d request records older than %g days", deleted,
                             self.config.usage.retention_days)
            except Exception:
                log.exception("pruning request records failed")
            await asyncio.sleep(PRUNE_SECONDS)


def _open_shared(config: Config, seed: Callable[[str, str], Awaitable[float]]) -> RedisState | None:
    if config.state.backend != "redis" or config.state.redis_url is None:
        return None
    from gateway.shared_state import RedisState  # the Redis client is loaded only when configured

    return RedisState(config.state.redis_url, hold_ttl_s=config.state.hold_ttl_s, seed=seed)


def _mtime(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
