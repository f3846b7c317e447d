"""The secret canary: distinctive provider keys are planted in a real gateway process whose fake upstreams echo
them back in every error they give (``Incorrect API key provided: … Bearer sk-canary-…``), on every route,
streamed and not. Afterwards every byte the run produced is searched for them: each response (body and
headers), the server's log, every admin page, every row of every database table.

Two of the three keys are not shaped like keys (no ``sk-`` prefix), so only the configured-secret
redaction can catch them; a config reload with credentials in a malformed ``base_url`` adds two more that
no config holds, so only the pattern redaction can.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gateway.logs import FORMAT, SafeFormatter
from gateway.redaction import Redactor
from tests.conftest import gateway_env, wait_ready
from tests.fakes import FakeUpstream, Received, Reply, free_port, json_reply

ADMIN_TOKEN = "admin-token-for-the-canary-run-0123"
PROXY_KEY = "sk-proxy-canary-run-client-key-0001"


@dataclass
class Canary:
    openai: str = field(default_factory=lambda: f"sk-canary-{secrets.token_hex(12)}")
    anthropic: str = field(default_factory=lambda: f"canary-anthropic-{secrets.token_hex(12)}")
    google: str = field(default_factory=lambda: f"canary-google-{secrets.token_hex(12)}")
    reload_user: str = field(default_factory=lambda: f"canary-userinfo-{secrets.token_hex(12)}")
    reload_query: str = field(default_factory=lambda: f"canary-query-{secrets.token_hex(12)}")

    @property
    def all(self) -> list[str]:
        return [self.openai, self.anthropic, self.google, self.reload_user, self.reload_query]

    def found_in(self, text: str) -> list[str]:
        return [c for c in self.all if c in text]


def _credential(received: Received) -> str:
    scheme, _, token = received.headers.get("authorization", "").partition(" ")
    return (token if scheme.lower() == "bearer" else "") or received.headers.get("x-api-key") \
        or received.headers.get("x-goog-api-key") or received.query.get("key", "")


def echo_the_key(received: Received) -> Reply:
    """Every provider's error, quoting the credential it was sent, the way real providers sometimes do."""
    key = _credential(received)
    text = (f"Incorrect API key provided: {key}. You can find your API key at https://example.test/keys. "
            f"(sent Authorization: Bearer {key}, x-api-key: {key}, url https://example.test/v1?key={key})")
    status = 401 if "m401" in received.path or b"m401" in received.body else 400
    if "/v1/messages" in received.path:
        return json_reply({"type": "error", "error": {"type": "authentication_error", "message": text}}, status)
    if ":generateContent" in received.path or ":streamGenerateContent" in received.path:
        return json_reply({"error": {"code": status, "message": text, "status": "INVALID_ARGUMENT"}}, status)
    return json_reply({"error": {"message": text, "type": "invalid_request_error", "param": None,
                                 "code": "invalid_api_key", "api_key": key}}, status)


def _config(fake: FakeUpstream, data: Path, canary: Canary, openai_url: str | None = None) -> str:
    return f"""
[server]
data_dir = "{data}"

[routing]
retries = 0

[providers.openai]
base_url = "{openai_url or fake.base + '/v1'}"
api_key = "{canary.openai}"

[providers.anthropic]
base_url = "{fake.base}"
api_key = "{canary.anthropic}"

[providers.google]
base_url = "{fake.base}"
api_key = "{canary.google}"

[[keys]]
name = "client"
key = "{PROXY_KEY}"

[admin]
token = "{ADMIN_TOKEN}"

[logging]
store_bodies = true
"""


@dataclass
class Run:
    base: str
    canary: Canary
    config: Path
    data: Path
    log: Path
    proc: subprocess.Popen[bytes]
    fake: FakeUpstream


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    canary = Canary()
    fake = FakeUpstream().start()
    fake.default = echo_the_key
    root = tmp_path_factory.mktemp("canary")
    config = root / "config.toml"
    config.write_text(_config(fake, root / "data", canary))
    port = free_port()
    log = root / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=gateway_env(GATEWAY_LOG_LEVEL="DEBUG"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield Run(base=base, canary=canary, config=config, data=root / "data", log=log, proc=proc, fake=fake)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        fake.stop()


def provoked_requests() -> list[tuple[str, str, dict[str, object]]]:
    """(label, path, JSON body) of every request the fake answers with a key-quoting error."""
    user = [{"role": "user", "content": "hi"}]
    out: list[tuple[str, str, dict[str, object]]] = []
    for stream in (False, True):
        for provider in ("openai", "anthropic", "google"):
            for model in ("m401", "m400"):
                out.append((f"chat {provider}/{model} stream={stream}", "/v1/chat/completions",
                            {"model": f"{provider}/{model}", "messages": user, "stream": stream}))
                out.append((f"messages {provider}/{model} stream={stream}", "/v1/messages",
                            {"model": f"{provider}/{model}", "max_tokens": 5, "messages": user, "stream": stream}))
        for model in ("m401", "m400"):
            out.append((f"native openai {model} stream={stream}", "/openai/v1/chat/completions",
                        {"model": model, "messages": user, "stream": stream}))
            out.append((f"native anthropic {model} stream={stream}", "/anthropic/v1/messages",
                        {"model": model, "max_tokens": 5, "messages": user, "stream": stream}))
            method = "streamGenerateContent?alt=sse" if stream else "generateContent"
            out.append((f"native gemini {model} stream={stream}", f"/gemini/v1beta/models/{model}:{method}",
                        {"contents": [{"parts": [{"text": "hi"}]}]}))
    return out


def _admin_pages(http: httpx.Client, data: Path) -> dict[str, str]:
    form = http.get("/admin/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = http.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf": csrf.group(1), "next": "/admin"})
    assert answer.status_code == 303, answer.text
    pages = {}
    for page in ("/admin", "/admin/keys", "/admin/usage", "/admin/providers", "/admin/requests", "/admin/config"):
        pages[page] = http.get(page).text
    with sqlite3.connect(data / "gateway.db") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM requests")]
    for row_id in ids:
        pages[f"/admin/requests/{row_id}"] = http.get(f"/admin/requests/{row_id}").text
    pages["/admin/api/usage"] = http.get("/admin/api/usage", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).text
    return pages


def _database(data: Path) -> str:
    with sqlite3.connect(data / "gateway.db") as db:
        return "\n".join(db.iterdump())


FORGED = "2026-01-01 00:00:00,000 INFO gateway.access: POST /v1/chat/completions 200 1.0ms forged"


def test_a_client_cannot_forge_log_lines(run: Run) -> None:
    """Runs first, on the same process: the canary test below stops it and reads the whole log."""
    host, port = run.base.removeprefix("http://").split(":")
    target = "/v1/models%0A" + FORGED.replace(" ", "%20") + "%0D%0A%1B[31m"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass
    deadline = time.monotonic() + 10
    while "forged" not in run.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = run.log.read_text().splitlines()
    assert not any(line.startswith(FORGED[:23]) for line in lines)
    assert any(f"/v1/models\\n{FORGED[:10]}" in line and "\\r\\n\\x1b[31m" in line for line in lines)


def test_log_records_are_redacted_and_kept_on_one_line() -> None:
    formatter = SafeFormatter(FORMAT)
    record = logging.LogRecord("gateway.x", logging.ERROR, __file__, 1, "upstream said %s",
                               ("key sk-abcdefghijklmnop\nINFO x",), None)
    assert formatter.format(record).endswith("upstream said key [REDACTED]\\nINFO x")
    try:
        raise ValueError("Bearer sk-abcdefghijklmnop")
    except ValueError:
        record = logging.LogRecord("gateway.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(record)
    assert "sk-abcdefghijklmnop" not in text and "ValueError: Bearer [REDACTED]" in text


def test_no_provider_key_leaves_the_gateway(run: Run) -> None:
    canary = run.canary
    leaking: list[str] = []
    provoked = provoked_requests()
    with httpx.Client(base_url=run.base, timeout=20) as http:
        for label, path, body in provoked:
            headers = {"authorization": f"Bearer {PROXY_KEY}"}
            with http.stream("POST", path, json=body, headers=headers) as response:
                seen = response.read().decode("utf-8", "replace") + str(response.headers)
            assert response.status_code >= 400 or "error" in seen, (label, response.status_code, seen[:200])
            if canary.found_in(seen):
                leaking.append(label)
        # Every provoked request reached the fake, which quoted the key it received.
        assert len(run.fake.received) == len(provoked)
        assert all(canary.found_in(echo_the_key(r).body.decode()) for r in run.fake.received)

        # A config reload that fails on a base_url carrying credentials: the error is logged and shown.
        bad_url = f"htp://user:{canary.reload_user}@example.test/v1?key={canary.reload_query}"
        time.sleep(1.1)  # a distinct mtime for the reload watcher
        run.config.write_text(_config(run.fake, run.data, canary, openai_url=bad_url))
        deadline = time.monotonic() + 10
        while "config reload rejected" not in run.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "config reload rejected" in run.log.read_text()
        time.sleep(0.5)  # the usage writer's last batch
        with httpx.Client(base_url=run.base, timeout=20) as admin:
            pages = _admin_pages(admin, run.data)
    run.proc.terminate()
    run.proc.wait(10)
    logged = run.log.read_text()
    places = {"log": canary.found_in(logged), "database": canary.found_in(_database(run.data))}
    places.update({page: canary.found_in(text) for page, text in pages.items()})
    assert leaking == [], f"{len(leaking)} of {len(provoked)} provoked errors leaked a key: {leaking}"
    assert {where: found for where, found in places.items() if found} == {}
    assert "Incorrect API key provided: [REDACTED]" in logged or "[REDACTED]" in _database(run.data) \
        or any("••••••••" in text for text in pages.values())


@pytest.mark.parametrize(("text", "kept"), [
    ("Incorrect API key provided: sk-proj-abcdefghijklmnop1234", "Incorrect API key provided: [REDACTED]"),
    ("Authorization: Bearer eyJhbGciOi.abc.def", "Authorization: Bearer [REDACTED]"),
    ("x-api-key: plain-opaque-value", "x-api-key: [REDACTED]"),
    ('{"api_key": "hunter2-hunter2", "n": 1}', '{"api_key": "[REDACTED]", "n": 1}'),
    ("GET https://h.example/v1beta/models?key=AIzaSyD-abcdefghijklmnopqrstuv&alt=sse",
     "GET https://h.example/v1beta/models?key=[REDACTED]&alt=sse"),
    ("invalid URL 'https://me:pass-word@h.example/v1'", "invalid URL 'https://[REDACTED]@h.example/v1'"),
    ("a configured opaque-provider-secret-42 here", "a configured [REDACTED] here"),
    ("task-model and monkey=business stay", "task-model and monkey=business stay"),
])
def test_redactor_patterns(text: str, kept: str) -> None:
    assert Redactor(["opaque-provider-secret-42", "short"])(text) == kept


def test_redactor_keeps_bytes_that_are_not_utf8() -> None:
    body = b"\xff\xfe quoted opaque-provider-secret-42 \x80"
    assert Redactor(["opaque-provider-secret-42"]).data(body) == b"\xff\xfe quoted [REDACTED] \x80"
