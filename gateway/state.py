"""The per-worker state the routes share: config, store, upstream session, key ring, background jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.config import Config
from gateway.keys import KeyRing
from gateway.store import Store
from gateway.upstream import Upstream

log = logging.getLogger("gateway")

KEY_POLL_SECONDS = 0.5
LAST_USED_FLUSH_SECONDS = 5.0


class GatewayState:
    def __init__(self, config: Config, *, store: Store | None = None, upstream: Upstream | None = None) -> None:
        self.config = config
        self._own_store = store is None
        self.store: Store | None = store
        self.upstream = upstream or Upstream()
        self.keys = KeyRing()
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    async def start(self) -> None:
        if self.store is None:
            self.store = await Store.open(self.config.data_dir)
        await self.keys.refresh(self.store, force=True)
        await self.upstream.start()
        self._tasks.append(asyncio.create_task(self._watch_keys(), name="gateway-keys"))
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
