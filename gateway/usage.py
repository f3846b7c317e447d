"""Usage: what a request cost, and the queue that takes its record to the database.

Costs come from the catalog's prices (USD per 1M tokens). OpenAI-format usage counts cached and
cache-write tokens inside ``prompt_tokens`` and reasoning inside ``completion_tokens``, so:
uncached input = prompt - cached - cache write, each priced at its own rate. A model without an input
or output price gets no cost at all (null), never an invented one; a missing cached-input or
cache-write price falls back to the input price (what providers without a cache discount charge).

Records go through a bounded in-memory queue to one writer task that commits them in batches; the
request path only does ``put_nowait``. On a clean stop the writer drains the queue before the store
closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec

from gateway import metrics
from gateway.catalog import Pricing
from gateway.config import UsageConfig
from gateway.store import RequestRecord, Store
from gateway.wire.openai import Usage

log = logging.getLogger("gateway.usage")

PER_TOKEN = 1e-6  # prices are per 1M tokens
# What a request refused for its key is counted under: a fixed set, so made-up paths add no rows.
REFUSAL_ROUTES = ("/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/v1/responses", "/v1/models",
                  "/v1/usage", "/admin/api", "/openai", "/anthropic", "/gemini", "/native")
_CREDENTIAL_HEADERS = (b"authorization", b"x-api-key", b"x-goog-api-key")
WRITE_ATTEMPTS = 4
RETRY_PAUSE_MAX = 2.0  # seconds between attempts at most: records flush within 2 s of the store's return


class Cost(msgspec.Struct, frozen=True, kw_only=True):
    input: float
    cached_input: float
    cache_write: float
    output: float

    @property
    def total(self) -> float:
        return self.input + self.cached_input + self.cache_write + self.output


def cost(usage: Usage, pricing: Pricing | None) -> Cost | None:
    if pricing is None or pricing.input is None or pricing.output is None:
        return None
    details = usage.prompt_tokens_details
    cached = details.cached_tokens if details else 0
    written = details.cache_write_tokens if details and isinstance(details.cache_write_tokens, int) else 0
    uncached = max(usage.prompt_tokens - cached - written, 0)
    cached_price = pricing.cached_input if pricing.cached_input is not None else pricing.input
    write_price = pricing.cache_write if pricing.cache_write is not None else pricing.input
    return Cost(
        input=uncached * pricing.input * PER_TOKEN,
        cached_input=cached * cached_price * PER_TOKEN,
        cache_write=written * write_price * PER_TOKEN,
        output=usage.completion_tokens * pricing.output * PER_TOKEN,
    )


def with_cost(usage: Usage, pricing: Pricing | None) -> Usage:
    """The usage object clients see: the same counts plus the ``cost_usd_*`` fields (null when unknown)."""
    priced = cost(usage, pricing)
    return msgspec.structs.replace(
        usage,
        cost_usd_total=_round(priced.total) if priced else None,
        cost_usd_input=_round(priced.input + priced.cache_write) if priced else None,
        cost_usd_cached_input=_round(priced.cached_input) if priced else None,
        cost_usd_output=_round(priced.output) if priced else None,
    )


def _round(value: float) -> float:
    return round(value, 10)


def worst_case_cost(prompt_tokens: int, max_output_tokens: int, pricing: Pricing | None) -> float | None:
    """What a request could cost at most: every prompt token uncached, every output token used."""
    if pricing is None or pricing.input is None or pricing.output is None:
        return None
    return (prompt_tokens * pricing.input + max_output_tokens * pricing.output) * PER_TOKEN


def counts(usage: Usage | None) -> dict[str, int]:
    """Token counts for a request record."""
    if usage is None:
        return {}
    prompt = usage.prompt_tokens_details
    completion = usage.completion_tokens_details
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": prompt.cached_tokens if prompt else 0,
        "cache_write_tokens": prompt.cache_write_tokens if prompt and isinstance(prompt.cache_write_tokens, int)
        else 0,
        "reasoning_tokens": completion.reasoning_tokens if completion else 0,
    }


class UsageRecorder:
    """The bounded queue and its one batch writer."""

    def __init__(self, cfg: UsageConfig) -> None:
        self.store: Store | None = None
        self.cfg = cfg
        # None is the stop signal: it queues behind every record, so all of them are written first.
        self._queue: asyncio.Queue[RequestRecord | None] = asyncio.Queue(maxsize=cfg.queue_size + 1)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self._refusals: dict[tuple[int, str, str], int] = {}  # (hour, route, reason) -> requests

    def record(self, record: RequestRecord) -> None:
        """Called on the request path: never waits."""
        if not self.cfg.enabled:
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            metrics.records_dropped(1)
            log.error("usage queue full (%d records): dropping the record of request %s; is the store stuck or "
                      "unreachable?", self.cfg.queue_size, record.request_id)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def count_unauthenticated(self, path: str, headers: list[tuple[bytes, bytes]], query: bytes) -> None:
        """A request refused for a missing or wrong key (401): counted per hour, route and reason in memory
        and written behind (``take_refusals``), never recorded one by one: its sender may be anyone, and a
        row per request would let them fill the disk. Memory and rows stay bounded: at most one counter
        per hour for each of the fixed routes and the two reasons."""
        if not self.cfg.enabled:
            return
        route = next((r for r in REFUSAL_ROUTES if path == r or path.startswith(r + "/")), "other")
        sent_key = any(name in _CREDENTIAL_HEADERS for name, _ in headers) or b"key=" in query
        bucket = (int(time.time() // 3600), route, "wrong key" if sent_key else "no key")
        self._refusals[bucket] = self._refusals.get(bucket, 0) + 1

    def take_refusals(self) -> dict[tuple[int, str, str], int]:
        taken, self._refusals = self._refusals, {}
        return taken

    def start(self, store: Store) -> None:
        self.store = store
        self._task = asyncio.create_task(self._run(), name="gateway-usage-writer")

    async def stop(self) -> None:
        """Write everything still queued, then end (never cancelled mid-batch: no record is lost)."""
        if self._task is None:
            return
        self._stopping.set()
        await self._queue.put(None)
        await self._task
        self._task = None

    def _take(self, first: RequestRecord) -> tuple[list[RequestRecord], bool]:
        """A batch starting with ``first``, and whether the stop signal was reached."""
        batch = [first]
        while len(batch) < self.cfg.batch_size and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        taken_at = loop.time()
        while True:
            idle = self._queue.empty()
            first = await self._queue.get()
            if first is None:
                return
            if not self._stopping.is_set():
                # Let a batch gather for a moment: one transaction for many rows is what makes recording
                # cheap. A stop cuts the wait short. The wait counts from the oldest record's arrival (now,
                # if the writer was idle; else no earlier than the previous batch was taken), so a record
                # waits at most flush_interval_ms before its commit starts: that is what a kill -9 can lose.
                wait = self.cfg.flush_interval_ms / 1000 - (0.0 if idle else loop.time() - taken_at)
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), wait)
            taken_at = loop.time()
            batch, stop = self._take(first)
            await self._write(batch)
            if stop:
                return

    async def _write(self, batch: list[RequestRecord]) -> None:
        """Commit a batch. A failed write (e.g. the file locked by another process past SQLite's busy
        timeout) is retried a few times before the batch is given up, loudly; while the store's server is
        unreachable (PostgreSQL restarting) it is retried until it comes back, and the records of new
        requests wait in the queue meanwhile (up to usage.queue_size: beyond, they are dropped and
        counted). Only a stop gives up waiting: the batch gets the same few attempts as any other."""
        started = time.perf_counter()
        assert self.store is not None
        attempt = 0
        while True:
            try:
                await self.store.write_requests(batch)
                break
            except Exception as exc:
                attempt += 1
                waiting = self.store.unreachable(exc) and not self._stopping.is_set()
                if not waiting and attempt >= WRITE_ATTEMPTS:
                    self.dropped += len(batch)
                    metrics.records_dropped(len(batch))
                    log.exception("could not write %d usage records after %d attempts: they are lost",
                                  len(batch), attempt)
                    return
                log.warning("writing %d usage records failed (%s); retrying", len(batch),
                            "the store is unreachable" if waiting else f"attempt {attempt}", exc_info=True)
                await asyncio.sleep(min(0.2 * 2 ** (attempt - 1), RETRY_PAUSE_MAX))
        self.written += len(batch)
        metrics.batch_written(time.perf_counter() - started)
        log.debug("wrote %d usage records in %.1f ms", len(batch), (time.perf_counter() - started) * 1000)
