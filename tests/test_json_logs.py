"""[logging] format = "json" on a real `gateway serve`: every log line of the workers is a JSON object, a
request's access line carries its usage fields, and neither a provider key nor a prompt appears."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeUpstream, json_reply
from tests.test_metrics import client, config_text, serve

PROMPT = "a very private prompt 7f3a"


def test_json_lines_carry_the_request_fields_and_no_secret(fake: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(fake, tmp_path / "data", extra='[logging]\nformat = "json"\n'))
    messages = [{"role": "user", "content": PROMPT}]
    with serve(config) as (base, log):
        main = client(base)
        answer = main.chat.completions.with_raw_response.create(model="pair", messages=messages)  # type: ignore[arg-type]
        fake.reply(json_reply({"error": {"message": "down", "type": "server_error"}}, status=500))
        streamed = list(main.chat.completions.create(model="pair", messages=messages,  # type: ignore[arg-type]
                                                     stream=True))
        assert streamed
        # An upstream error that quotes the gateway's provider key (providers do).
        fake.reply(json_reply({"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}",
                                         "type": "invalid_request_error", "code": "invalid_api_key"}}, status=401))
        with pytest.raises(openai.APIStatusError):
            main.chat.completions.create(model="listed/gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        assert httpx.get(f"{base}/healthz").status_code == 200
        deadline = time.monotonic() + 10
        while '"/healthz"' not in log.read_text() and time.monotonic() < deadline:  # lines are written in order
            time.sleep(0.05)
        text = log.read_text()

    assert UPSTREAM_KEY not in text
    assert PROMPT not in text
    # The serve command's banner comes first, on the console (not a log line); from the workers on,
    # every line is JSON.
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("{"))
    entries = [json.loads(line) for line in lines[start:] if line.strip()]
    assert all({"ts", "level", "logger"} <= set(e) for e in entries)
    access = [e for e in entries if e["logger"] == "gateway.access"]
    by_id = {e["request_id"]: e for e in access}

    first = by_id[answer.headers["x-gateway-request-id"]]
    assert first == first | {
        "method": "POST", "path": "/v1/chat/completions", "status": 200, "key_name": "main", "route": "unified",
        "stream": False, "model_requested": "pair", "model": "gpt-4o-mini", "provider": "listed", "attempts": 1,
        "prompt_tokens": 9, "completion_tokens": 6, "error_type": None}
    assert first["latency_ms"] > 0 and first["ttft_ms"] > 0 and first["duration_ms"] > 0
    assert "cost_usd" in first and "project" in first and "cached_tokens" in first and "reasoning_tokens" in first

    stream_line = next(e for e in access if e.get("stream") is True)
    assert stream_line["status"] == 200 and stream_line["attempts"] == 2 and stream_line["provider"] == "backup"

    refused = next(e for e in access if e.get("outcome_status") == 502)
    assert refused["error_type"] and refused["provider"] is None
    assert any(e["logger"] == "gateway.admin" and e["level"] == "WARNING" for e in entries)  # not only access
    health = next(e for e in access if e["path"] == "/healthz")
    assert health["status"] == 200 and "key_name" not in health
