"""The request path's shortcuts (issue 18), each checked to behave like the long way it replaced."""

from __future__ import annotations

import asyncio
import datetime
import gc
import os
import time
from pathlib import Path

import httpx

from gateway import logs, redaction
from gateway.app import create_app
from gateway.config import load_config_file
from gateway.server import GC_YOUNG_THRESHOLD, freeze_startup_heap

SECRET = "plain-provider-secret-4711"  # not shaped like a key: only the configured-secret redaction cuts it


def _config(tmp_path: Path, api_key: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n'
                    f'[providers.p]\ntype = "openai"\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "{api_key}"\n')
    return path


def _entry(path: str, request_id: str = "req_1") -> logs.Entry:
    return (time.time(), "POST", path, 200, 1.0, request_id, None)


def test_access_lines_stay_safe_when_the_secrets_change(tmp_path: Path) -> None:
    """The remembered ``safe`` of a path is forgotten when a reload installs other secrets: a path seen
    before a secret existed is cut once it does."""
    redaction.install(load_config_file(_config(tmp_path, "another-secret-0000")))
    path = f"/native/p/{SECRET}"
    assert SECRET in logs._line(_entry(path))
    redaction.install(load_config_file(_config(tmp_path, SECRET)))
    line = logs._line(_entry(path))
    assert SECRET not in line and "[REDACTED]" in line
    # Control characters are still escaped, remembered or not.
    for _ in range(2):
        assert logs._line(_entry("/v1/models\nINFO forged")).count("\n") == 1


def test_access_line_stamps_follow_the_clock() -> None:
    first, later = logs._line(_entry("/v1/models"))[:19], None
    at = time.time() + 3600
    later = logs._line((at, "GET", "/v1/models", 200, 1.0, "req_2", None))[:19]
    assert later == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) and later != first


def test_a_request_id_holding_a_secret_is_replaced(tmp_path: Path) -> None:
    """The door checks a client's x-request-id for secrets once, so that log lines need not."""
    app = create_app(load_config_file(_config(tmp_path, SECRET)))

    async def call(request_id: str) -> str:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.get("/healthz", headers={"x-request-id": request_id})
        return response.headers["x-gateway-request-id"]

    assert asyncio.run(call("trace-abc.123")) == "trace-abc.123"
    replaced = asyncio.run(call(f"trace-{SECRET}"))
    assert replaced.startswith("req_") and SECRET not in replaced


def test_a_started_worker_freezes_its_startup_heap() -> None:
    before = gc.get_threshold()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_item_id_suffixes_are_unique_and_drawn_again_in_a_fork() -> None:
    from gateway.dialects.responses import _nonce

    seen = {_nonce() for _ in range(10_000)}
    assert len(seen) == 10_000 and all(len(s) >= 12 for s in seen)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a worker forked from a process that drew its prefix already
        os.write(write, _nonce().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert child[:6] != next(iter(seen))[:6] and child not in seen


def test_a_budget_rolls_over_at_each_boundary_it_remembers() -> None:
    """Budgets keep their period's end so a request does no calendar arithmetic; every boundary still
    resets the spend, one after another, and a clock that goes back into an earlier period does too."""
    from gateway.limits import Budget

    def at(day: str) -> float:
        return datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.UTC).timestamp()

    budget = Budget(10.0, "week", spent=0.0, now=at("2026-11-23T00:00:00"))  # a Monday
    for start, last in (("2026-11-23", "2026-11-29T23:59:59"), ("2026-11-30", "2026-12-06T23:59:59")):
        assert budget.try_reserve(4.0, at(start + "T08:00:00"))
        budget.settle(4.0, 4.0, at(start + "T08:00:01"))
        assert budget.remaining(at(last)) == 6.0  # the last second of the week: still spent
    assert budget.remaining(at("2026-12-07T00:00:00")) == 10.0  # the next Monday: a new week
    assert budget.try_reserve(3.0, at("2026-12-07T01:00:00"))
    budget.settle(3.0, 3.0, at("2026-12-07T01:00:01"))
    assert budget.remaining(at("2026-12-01T00:00:00")) == 10.0  # back in an earlier week: not its spend
