"""Responses API conversation state: the responses kept with ``store: true`` (the default, as in OpenAI).

Written behind, never on the request path: a finished response goes into a bounded in-memory cache of
this worker's recent responses and a pending list that a writer task commits in batches. Reads come from
that cache first. A miss falls back to one SQLite read, and that round trip is accepted only where no
answer can be had without it: resolving a ``previous_response_id`` (an older response, or one another
worker answered) and the GET/DELETE routes, which are not generation paths. Every lookup is scoped to
the key that made the response: another key's id reads as unknown (404), never as forbidden, so ids
cannot be probed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

import msgspec

from gateway.store import Store, StoredResponse

log = logging.getLogger("gateway.responses")

# A worker's cache of recent responses, bounded by count and by bytes: a turn of a long agent session
# carries its whole history in ``input_items``, so a count alone would not bound memory.
CACHE_ENTRIES = 2048
CACHE_BYTES = 64 * 1024 * 1024
FLUSH_SECONDS = 0.2
# The longest previous_response_id chain followed: beyond it a conversation is refused as not found rather
# than read link by link without end.
MAX_CHAIN = 10_000


class _Id(msgspec.Struct):
    id: str | None = None


_items_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_id_decoder = msgspec.json.Decoder(_Id)


def item_ids(items: list[bytes]) -> tuple[str, ...]:
    """The ids the items carry (what an item_reference can name)."""
    ids = []
    for item in items:
        try:
            found = _id_decoder.decode(item).id
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if found:
            ids.append(found)
    return tuple(ids)


def items_of(array: bytes) -> list[bytes]:
    """A stored JSON array of items, one JSON object (bytes) each."""
    return [bytes(item) for item in _items_decoder.decode(array)]


Slot = tuple[str, str]  # (key id, response id): ids are unique per key (a compatible upstream makes its own)


class ResponseStore:
    def __init__(self, *, entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        self.store: Store | None = None
        self._cache: OrderedDict[Slot, StoredResponse] = OrderedDict()
        self._bytes = 0
        self._entries = entries
        self._max_bytes = max_bytes
        self._pending: dict[Slot, StoredResponse] = {}
        self._items: dict[Slot, str] = {}  # (key id, item id) -> response id, for cached rows
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        # Held from taking a batch until it is committed, and by a delete: a delete can never land between
        # a batch being taken and written (which would bring the deleted row back).
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self, store: Store) -> None:
        self.store = store
        self._task = asyncio.create_task(self._run(), name="gateway-responses-writer")

    async def stop(self) -> None:
        """Write what is pending, then end. The writer is never cancelled: a transaction cancelled in flight
        would be left open on the store's shared connection."""
        if self._task is not None:
            self._stopping.set()
            self._wake.set()
            await self._task
            self._task = None
        await self._flush()  # every response answered before the stop is kept

    def put(self, row: StoredResponse) -> None:
        """Called on the request path once the answer is complete: never waits."""
        self._remember(row)
        self._pending[(row.key_id, row.id)] = row
        self._wake.set()

    async def get(self, response_id: str, key_id: str) -> StoredResponse | None:
        slot = (key_id, response_id)
        row = self._cache.get(slot) or self._pending.get(slot)
        if row is not None:
            if slot in self._cache:
                self._cache.move_to_end(slot)
            return row
        if self.store is None:
            return None
        row = await self.store.get_response(response_id, key_id)
        if row is not None:
            self._remember(row)
        return row

    async def with_item(self, item_id: str, key_id: str) -> StoredResponse | None:
        """The response of this key that holds the item ``item_id``."""
        response_id = self._items.get((key_id, item_id))
        if response_id is not None:
            return await self.get(response_id, key_id)
        if self.store is None:
            return None
        row = await self.store.response_with_item(item_id, key_id)
        if row is not None:
            self._remember(row)
        return row

    async def delete(self, response_id: str, key_id: str) -> bool:
        slot = (key_id, response_id)
        async with self._write_lock:
            was_pending = self._pending.pop(slot, None) is not None
            self._forget(slot)
            stored = await self.store.delete_response(response_id, key_id) if self.store is not None else False
            return was_pending or stored

    def history(self, key_id: str) -> KeyHistory:
        return KeyHistory(self, key_id)

    def _remember(self, row: StoredResponse) -> None:
        slot = (row.key_id, row.id)
        self._forget(slot)
        self._cache[slot] = row
        self._bytes += _size(row)
        for item_id in row.item_ids:
            self._items[(row.key_id, item_id)] = row.id
        while self._cache and (len(self._cache) > self._entries or self._bytes > self._max_bytes):
            self._forget(next(iter(self._cache)))

    def _forget(self, slot: Slot) -> None:
        old = self._cache.pop(slot, None)
        if old is not None:
            self._bytes -= _size(old)
            for item_id in old.item_ids:
                if self._items.get((old.key_id, item_id)) == old.id:
                    del self._items[(old.key_id, item_id)]

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._wake.wait()
            self._wake.clear()
            # Let a batch gather (one transaction for many rows); a stop cuts the wait short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FLUSH_SECONDS)
            try:
                await self._flush()
            except Exception:
                log.exception("writing stored responses failed; they stay in this worker's memory and are retried")
                self._wake.set()

    async def _flush(self) -> None:
        if self.store is None:
            return
        async with self._write_lock:
            if not self._pending:
                return
            batch = list(self._pending.items())
            await self.store.write_responses([row for _, row in batch])
            for slot, row in batch:
                if self._pending.get(slot) is row:
                    del self._pending[slot]


def _size(row: StoredResponse) -> int:
    return len(row.response) + len(row.input_items)


class KeyHistory:
    """The stored conversations one key may continue (``ResponseHistory`` of gateway/dialects/responses.py)."""

    __slots__ = ("key_id", "responses")

    def __init__(self, responses: ResponseStore, key_id: str) -> None:
        self.responses = responses
        self.key_id = key_id

    async def conversation(self, response_id: str) -> list[bytes] | None:
        chain: list[StoredResponse] = []
        seen: set[str] = set()
        link: str | None = response_id
        while link is not None:
            if link in seen or len(chain) >= MAX_CHAIN:
                return None
            seen.add(link)
            row = await self.responses.get(link, self.key_id)
            if row is None:
                return None  # the chain is broken (deleted, pruned): the conversation is gone
            chain.append(row)
            link = row.previous_response_id
        items: list[bytes] = []
        for row in reversed(chain):
            items += items_of(row.input_items)
            items += items_of(row.output_items)
        return items

    async def item(self, item_id: str) -> bytes | None:
        row = await self.responses.with_item(item_id, self.key_id)
        if row is None:
            return None
        for item in (*items_of(row.input_items), *items_of(row.output_items)):
            if _id_decoder.decode(item).id == item_id:
                return item
        return None
