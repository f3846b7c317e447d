"""One request lifecycle: every way out of a request settles its reservation and writes exactly one record.

A real gateway process (granian: client disconnects are real) in front of ``tests/faults.FaultUpstream``,
whose model names pick a fault in each provider dialect; exceptions inside the gateway are injected
in-process. After each request: its status, its one usage record, and nothing left reserved.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.sse import SSEParser
from tests.conftest import UPSTREAM_KEY, RunningGateway, gateway_env, run_cli, wait_ready
from tests.fakes import FakeUpstream, free_port, json_reply
from tests.faults import COMPLETION, PROMPT, FaultUpstream
from tests.inprocess import gateway_for

USER = [{"role": "user", "content": "Hello"}]
PROVIDERS = ("fake", "anthropic", "google")  # an OpenAI-compatible, an Anthropic and a Gemini upstream
FAULTS = ("ok", "bad-json", "bad-shape", "bad-status", "hang-up", "cut", "no-finish", "no-usage", "huge", "slow")
PRICE = "pricing = { input = 1000.0, output = 2000.0 }"  # USD per 1M tokens: $0.001 and $0.002 a token
BIG_BUDGET = "1000"


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultUpstream]:
    server = FaultUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(faults: FaultUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("lifecycle")
    config = root / "config.toml"
    models = "".join(f'\n[[models]]\nname = "{fault}"\nprovider = "{provider}"\n{PRICE}\n'
                     for provider in PROVIDERS for fault in FAULTS)
    config.write_text(f"""
[server]
data_dir = "{root / 'data'}"
max_upstream_body_mb = 1

[routing]
retries = 0

[providers.fake]
type = "openai"
base_url = "{faults.base}/v1"
api_key = "{UPSTREAM_KEY}"
timeout = 5

[providers.anthropic]
type = "anthropic"
base_url = "{faults.base}"
api_key = "{UPSTREAM_KEY}"
timeout = 5

[providers.google]
type = "gemini"
base_url = "{faults.base}"
api_key = "{UPSTREAM_KEY}"
timeout = 5
{models}""")
    created = run_cli("keys", "create", "--name", "lifecycle", "--budget-usd", BIG_BUDGET, "--config", str(config))
    assert created.returncode == 0, created.stderr
    port = free_port()
    log = root / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=gateway_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield RunningGateway(base=base, key=created.stdout.strip(), config=config, data_dir=root / "data", log=log,
                             proc=proc)
    finally:
        proc.terminate()
        proc.wait(10)


def new_key(gw: RunningGateway, name: str, budget: str) -> str:
    created = gw.cli("keys", "create", "--name", name, "--budget-usd", budget)
    assert created.returncode == 0, created.stderr
    deadline = time.monotonic() + 10
    secret = created.stdout.strip()
    while httpx.get(f"{gw.base}/v1/usage", headers=auth(secret)).status_code != 200:  # picked up within ~0.5 s
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return secret


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def records(gw: RunningGateway, request_ids: list[str], timeout: float = 15) -> list[dict[str, Any]]:
    """The usage records of these requests, once every one has one; and never a second one."""
    deadline = time.monotonic() + timeout
    marks = ",".join("?" * len(request_ids))
    with sqlite3.connect(gw.data_dir / "gateway.db") as db:
        db.row_factory = sqlite3.Row
        while True:
            rows = [dict(r) for r in db.execute(f"SELECT * FROM requests WHERE request_id IN ({marks})",
                                                request_ids)]
            if len({r["request_id"] for r in rows}) == len(set(request_ids)) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # two flush intervals: a duplicate record would have been written by now
        rows = [dict(r) for r in db.execute(f"SELECT * FROM requests WHERE request_id IN ({marks})", request_ids)]
    assert sorted(r["request_id"] for r in rows) == sorted(request_ids), "one record per request, exactly"
    return rows


def usage(gw: RunningGateway, key: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{gw.base}/v1/usage", headers=auth(key)).json()
    return answer


def chat(gw: RunningGateway, model: str, *, stream: bool) -> tuple[int, bytes, str]:
    body = {"model": model, "messages": USER, "max_tokens": 50, "stream": stream}
    response = httpx.post(f"{gw.base}/v1/chat/completions", json=body, headers=auth(gw.key), timeout=60)
    return response.status_code, response.content, response.headers["x-gateway-request-id"]


def events(body: bytes) -> list[bytes]:
    parser = SSEParser()
    return [e.data for e in parser.feed(body) + parser.close()]


# ---------------------------------------------------------------------------------------- one per fault

PLAIN = {  # fault -> (status, error code)
    "ok": (200, None), "bad-json": (502, "invalid_upstream_response"),
    "bad-shape": (502, "invalid_upstream_response"), "bad-status": (500, None),
    "hang-up": (502, "upstream_unreachable"), "cut": (502, "upstream_unreachable"), "no-usage": (200, None),
    "huge": (502, "invalid_upstream_response"),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", list(PLAIN))
def test_fault_in_a_plain_answer(gw: RunningGateway, provider: str, fault: str) -> None:
    if fault == "no-usage" and provider == "anthropic":
        pytest.skip("a Messages answer always carries usage (the API requires it)")
    held = usage(gw, gw.key)["reserved_usd"]
    status, body, rid = chat(gw, f"{provider}/{fault}", stream=False)
    expected, code = PLAIN[fault]
    assert status == expected, body
    if code is not None:
        assert json.loads(body)["error"]["code"] == code
    [found] = records(gw, [rid])
    assert found["status"] == status
    if fault in ("ok", "no-usage"):
        assert found["cost_total"] > 0 and found["completion_tokens"] > 0
        assert found["estimated"] == (fault == "no-usage")  # counted by the gateway, and marked so
        if fault == "ok":
            assert (found["prompt_tokens"], found["completion_tokens"]) == (PROMPT, COMPLETION)
    else:
        assert not found["cost_total"]
    assert usage(gw, gw.key)["reserved_usd"] == held  # this request left nothing reserved


STREAMED = {  # fault -> (HTTP status, the error event's code, or None for a stream that ends well)
    "ok": (200, None), "bad-json": (200, "invalid_upstream_response"),
    "bad-shape": (200, "invalid_upstream_response"), "bad-status": (500, None),
    "hang-up": (502, "upstream_unreachable"), "cut": (200, "*"), "no-finish": (200, "*"), "no-usage": (200, None),
    "huge": (200, "invalid_upstream_response"),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", list(STREAMED))
def test_fault_in_a_stream(gw: RunningGateway, provider: str, fault: str) -> None:
    if fault == "no-usage" and provider == "anthropic":
        pytest.skip("a Messages stream always carries usage (the API requires it)")
    held = usage(gw, gw.key)["reserved_usd"]
    started = time.monotonic()
    status, body, rid = chat(gw, f"{provider}/{fault}", stream=True)
    elapsed = time.monotonic() - started
    expected, code = STREAMED[fault]
    assert status == expected, body
    [found] = records(gw, [rid])
    if status == 200:
        data = events(body)
        if code is None:
            assert data[-1] == b"[DONE]" and found["status"] == 200
            assert found["estimated"] == (fault == "no-usage") and found["cost_total"] > 0
        else:
            # Never an empty or clean-looking 200: the stream ends with an error event, no [DONE], and
            # the record says it failed.
            error = json.loads(data[-1])["error"]
            assert code == "*" or error["code"] == code
            assert b"[DONE]" not in data and found["status"] == 502
    else:
        assert found["status"] == status
    if fault == "huge":
        assert elapsed < 20  # 60 MiB without an event break: refused at 16 MiB, in linear time
    assert usage(gw, gw.key)["reserved_usd"] == held  # this request left nothing reserved


@pytest.mark.parametrize("fault", ["ok", "bad-json", "bad-status", "cut", "huge"])
@pytest.mark.parametrize("stream", [False, True])
def test_fault_through_the_messages_route(gw: RunningGateway, fault: str, stream: bool) -> None:
    """/v1/messages runs the same lifecycle: the same faults leave one record and nothing reserved."""
    body = {"model": f"anthropic/{fault}", "max_tokens": 50, "messages": USER, "stream": stream}
    held = usage(gw, gw.key)["reserved_usd"]
    response = httpx.post(f"{gw.base}/v1/messages", json=body, headers={"x-api-key": gw.key}, timeout=60)
    [found] = records(gw, [response.headers["x-gateway-request-id"]])
    if fault == "ok":
        assert response.status_code == 200 and found["status"] == 200 and found["mode"] == "messages"
    elif stream and fault != "bad-status":
        assert b"event: error" in response.content and found["status"] == 502
    else:
        assert response.status_code >= 500 and response.json()["type"] == "error"
        assert found["status"] == response.status_code
    assert usage(gw, gw.key)["reserved_usd"] == held  # this request left nothing reserved


def test_a_stream_without_event_breaks_leaves_the_server_responsive(gw: RunningGateway) -> None:
    """60 MiB without a blank line: the parser stays linear and stops at its 16 MiB cap, and /healthz
    answers quickly all the while (it used to take seconds per probe while the parser re-scanned)."""
    probes: list[float] = []

    async def main() -> int:
        async with httpx.AsyncClient(timeout=60) as client:
            request = asyncio.create_task(client.post(
                f"{gw.base}/v1/chat/completions", headers=auth(gw.key),
                json={"model": "fake/huge", "messages": USER, "stream": True, "max_tokens": 50}))
            while not request.done():
                started = time.monotonic()
                assert (await client.get(f"{gw.base}/healthz")).status_code == 200
                probes.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
            return (await request).status_code

    assert asyncio.run(main()) == 200
    assert probes and max(probes) < 1.0


# ---------------------------------------------------------------------------------------- disconnects

async def _leave_after_first_chunk(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                                   headers: dict[str, str]) -> str:
    async with client.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200
        async for _ in response.aiter_raw():
            break  # the first chunk arrived: the client goes away
        return response.headers["x-gateway-request-id"]


@pytest.mark.parametrize("route", ["chat", "messages"])
def test_abandoned_streams_close_upstream_settle_and_record(gw: RunningGateway, faults: FaultUpstream,
                                                            route: str) -> None:
    """30 clients leave after the first chunk of a minute-long stream: within seconds the upstream
    connections are closed, 30 records are written (charged what was relayed) and nothing is reserved."""
    key = new_key(gw, f"leavers-{route}", "100")
    url, headers, model = ((f"{gw.base}/v1/chat/completions", auth(key), "fake/slow") if route == "chat"
                           else (f"{gw.base}/v1/messages", {"x-api-key": key}, "anthropic/slow"))
    body = {"model": model, "messages": USER, "max_tokens": 1000, "stream": True}

    async def main() -> list[str]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
            return list(await asyncio.gather(*(_leave_after_first_chunk(client, url, body, headers)
                                               for _ in range(30))))

    rids = asyncio.run(main())
    took = faults.wait_until(lambda: faults.open_streams == 0, timeout=10)
    found = records(gw, rids)
    assert all(r["status"] == 200 for r in found)  # charged what was produced...
    if route == "chat":
        assert all(r["estimated"] for r in found)  # ...as the gateway's estimate (Anthropic counts as it goes)
    # The prompt, and at most what was relayed before the client left: not the minute-long stream's 600 ticks.
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] < 100 for r in found)
    mine = usage(gw, key)
    assert mine["reserved_usd"] == 0.0
    assert mine["spent_usd"] == pytest.approx(sum(r["cost_total"] for r in found))
    assert took < 5


# ---------------------------------------------------------------------------------------- concurrency

def test_200_parallel_requests_never_spend_more_than_the_budget(gw: RunningGateway, faults: FaultUpstream) -> None:
    """Plain, streamed, abandoned and absurd requests at once against a $1 key: the spend stays within
    the budget, nothing stays reserved, and every request has its one record."""
    key = new_key(gw, "one-dollar", "1")
    url = f"{gw.base}/v1/chat/completions"
    plain = {"model": "fake/ok", "messages": USER, "max_tokens": 5}  # small reservations: many in flight at once
    bodies: list[tuple[str, dict[str, Any]]] = (
        [("plain", plain)] * 60
        + [("plain", {**plain, "stream": True})] * 40
        + [("leave", {**plain, "model": "fake/slow", "stream": True})] * 30
        + [("plain", {**plain, "model": "fake/no-usage"})] * 20
        + [("plain", {**plain, "max_tokens": -1000000})] * 15
        + [("plain", {**plain, "max_tokens": 10**15})] * 10
        + [("plain", {**plain, "max_tokens": 0, "stream": True})] * 10
        + [("plain", {**plain, "max_completion_tokens": -5})] * 10
        + [("plain", {**plain, "model": "anthropic/ok", "max_tokens": 1})] * 5)
    assert len(bodies) == 200
    random.Random(12).shuffle(bodies)  # every kind among the first admitted, while the budget lasts

    async def one(client: httpx.AsyncClient, kind: str, body: dict[str, Any]) -> str:
        if kind == "leave":
            async with client.stream("POST", url, json=body, headers=auth(key)) as response:
                async for _ in response.aiter_raw():
                    break
                return response.headers["x-gateway-request-id"]
        response = await client.post(url, json=body, headers=auth(key))
        assert response.status_code < 500, response.text
        return response.headers["x-gateway-request-id"]

    async def main() -> list[str]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=250)) as client:
            return list(await asyncio.gather(*(one(client, kind, body) for kind, body in bodies)))

    rids = asyncio.run(main())
    found = records(gw, rids, timeout=30)
    mine = usage(gw, key)
    spent = sum(r["cost_total"] or 0.0 for r in found)
    assert mine["reserved_usd"] == 0.0
    assert spent <= 1.0 + 1e-9 and mine["spent_usd"] <= 1.0 + 1e-9
    assert mine["spent_usd"] == pytest.approx(spent)
    # The budget was used, not refused wholesale (the rest were refused while reservations held it).
    assert mine["spent_usd"] > 0 and any(r["status"] == 200 for r in found)


# ---------------------------------------------------------------------------------------- exceptions

PRICED = """
[[models]]
name = "m"
provider = "a"
pricing = { input = 1000.0, output = 2000.0 }
"""


async def _settled(gw: Any, count: int) -> list[Any]:
    for _ in range(200):
        if gw.state.usage.written >= count:
            break
        await asyncio.sleep(0.02)
    return list(await gw.store.list_requests(limit=10))


@pytest.mark.parametrize("where", ["before-send", "in-translation", "in-stream-translation"])
async def test_an_exception_anywhere_settles_and_records(fake: FakeUpstream, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A bug of the gateway's own (injected here) answers 500 or cuts the stream, and still settles the
    reservation and writes one record."""
    from gateway.providers import openai as openai_adapter
    from gateway.upstream import Upstream

    def boom(*_: object, **__: object) -> Any:
        raise RuntimeError("injected")

    if where == "before-send":
        monkeypatch.setattr(Upstream, "send", boom)
    elif where == "in-translation":
        monkeypatch.setattr(openai_adapter, "parse_response", boom)
    else:
        monkeypatch.setattr(openai_adapter._PassThrough, "feed", boom)
    stream = where == "in-stream-translation"
    async with gateway_for(fake, tmp_path, extra=PRICED) as gw:
        client = await gw.new_key("budgeted", budget_usd=10.0)
        response = await gw.http.post("/v1/chat/completions", headers={"authorization": f"Bearer {client.api_key}"},
                                      json={"model": "a/m", "messages": USER, "max_tokens": 50, "stream": stream})
        assert response.status_code == (200 if stream else 500)
        assert b"[DONE]" not in response.content
        found = await _settled(gw, 1)
        budget = gw.state.governor.budget_of(next(p.key_id for p in gw.state.keys.principals if p.name == "budgeted"))
        assert budget is not None and budget.reserved == 0.0
    assert len(found) == 1 and found[0]["status"] == 500 and found[0]["error_type"] == "internal_error"


async def test_stored_bodies_are_cut_and_marked(fake: FakeUpstream, tmp_path: Path) -> None:
    """With store_bodies on, a 3 MB answer reaches the client whole but the database keeps 1 MiB of it."""
    text = "x" * (3 * 1024 * 1024)
    fake.reply(json_reply({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
    async with gateway_for(fake, tmp_path, extra="[logging]\nstore_bodies = true\n") as gw:
        answer = await gw.client.chat.completions.create(model="a/m", messages=USER)  # type: ignore[arg-type]
        assert answer.choices[0].message.content == text
        await _settled(gw, 1)
    with sqlite3.connect(tmp_path / "data" / "gateway.db") as db:
        stored, = db.execute("SELECT response_body FROM requests").fetchone()
    assert len(stored.encode()) < 1024 * 1024 + 200
    assert stored.endswith("more bytes not stored]") and "[truncated by the gateway: " in stored
