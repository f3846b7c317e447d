"""The stored responses behind previous_response_id, item_reference and GET /v1/responses/{id}: a bounded cache
of recent responses written behind to SQLite, read back after a restart, scoped to the key, pruned."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.config import ConfigErrors, load_config
from gateway.responses_store import ResponseStore
from gateway.store import SqliteStore, StoredResponse


def row(response_id: str, key: str = "k1", previous: str | None = None, created: float | None = None,
        text: str = "hi") -> StoredResponse:
    return StoredResponse(
        id=response_id, key_id=key, created_at=created if created is not None else time.time(), model="p/m",
        previous_response_id=previous, response=b'{"id":"%s"}' % response_id.encode(),
        input_items=b'[{"type":"message","id":"in_%s","role":"user","content":"%s"}]' % (response_id.encode(),
                                                                                       text.encode()),
        output_items=b'[{"type":"reasoning","id":"rs_%s","summary":[]}]' % response_id.encode(),
        item_ids=(f"in_{response_id}", f"rs_{response_id}"))


async def test_written_behind_and_read_back_by_another_worker(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    writer = ResponseStore()
    writer.start(store)
    writer.put(row("r1"))
    writer.put(row("r2", previous="r1", text="again"))
    assert (await writer.get("r2", "k1")) is not None  # from memory, before any commit
    await writer.stop()  # a stop writes what is pending

    reader = ResponseStore()  # another worker (or a restart): nothing in its memory
    reader.store = store
    history = reader.history("k1")
    conversation = await history.conversation("r2")
    assert conversation is not None and [item.count(b"in_") + item.count(b"rs_") for item in conversation] == [1] * 4
    assert b'"again"' in conversation[2]
    assert await history.item("rs_r1") == b'{"type":"reasoning","id":"rs_r1","summary":[]}'
    assert await reader.history("k2").conversation("r2") is None  # another key: not found
    assert await reader.history("k2").item("rs_r1") is None
    assert await reader.get("r1", "k2") is None
    await store.close()


async def test_delete_is_scoped_and_breaks_the_chain(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    responses = ResponseStore()
    responses.start(store)
    responses.put(row("r1"))
    responses.put(row("r2", previous="r1"))
    assert not await responses.delete("r1", "k2")
    assert await responses.delete("r1", "k1")
    await responses.stop()  # the pending write of r1 must not bring it back
    assert await store.get_response("r1", "k1") is None
    assert await responses.history("k1").conversation("r2") is None
    await store.close()


async def test_the_cache_is_bounded_and_falls_back_to_the_store(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    responses = ResponseStore(entries=2)
    responses.start(store)
    for n in range(5):
        responses.put(row(f"r{n}"))
    await responses.stop()
    assert len(responses._cache) == 2 and responses._items.keys() == {("k1", "in_r3"), ("k1", "rs_r3"),
                                                                     ("k1", "in_r4"), ("k1", "rs_r4")}
    assert (await responses.get("r0", "k1")) is not None  # evicted from memory, read from SQLite
    assert await responses.history("k1").item("in_r1") is not None
    await store.close()


async def test_pruned_with_the_request_records(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    await store.write_responses([row("old", created=100.0), row("new")])
    assert await store.prune_responses(time.time() - 60) == 1
    assert await store.get_response("old", "k1") is None and await store.response_with_item("in_old", "k1") is None
    assert await store.get_response("new", "k1") is not None
    await store.close()


def test_which_providers_serve_the_responses_api(tmp_path: Path) -> None:
    """OpenAI's own URL does by default; another compatible server only when its config says so; an
    Anthropic or Gemini provider cannot be told it does."""
    config = tmp_path / "config.toml"
    config.write_text("""
[providers.openai]
api_key = "k"

[providers.groq]
type = "openai"
base_url = "https://api.groq.com/openai/v1"

[providers.vllm]
type = "openai"
base_url = "http://127.0.0.1:8000/v1"
responses = true
""")
    providers = load_config(str(config)).providers
    assert (providers["openai"].responses, providers["groq"].responses, providers["vllm"].responses) == \
        (True, False, True)
    config.write_text('[providers.anthropic]\napi_key = "k"\nresponses = true\n')
    with pytest.raises(ConfigErrors, match="responses"):
        load_config(str(config))
