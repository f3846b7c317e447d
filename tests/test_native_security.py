"""The native routes as a fence: a key holder cannot walk out of a provider's base path, reach endpoints that
hold other tenants' data, or make the gateway answer 500 with a hostile body.

Path escapes are sent over raw sockets to a real gateway process: HTTP clients normalise ``..`` before
sending, so only a hand-written request line shows what the server itself does with it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import ConfigError, Provider, load_config_file
from gateway.errors import InvalidRequest
from gateway.native import native_access, upstream_url
from tests.conftest import gateway_env, wait_ready
from tests.fakes import FakeUpstream, Received, Reply, free_port, json_reply

KEY = "sk-proxy-native-security-key-0001"
OPEN_KEY = "sk-proxy-native-security-key-open"
PREFIXES = {"openai": "/tenant/o/v1", "deep": "/tenant/d/v1", "anthropic": "/tenant/a", "google": "/tenant/g"}


@dataclass
class Served:
    base: str
    fake: FakeUpstream
    log: Path


def _config(fake: FakeUpstream, data: Path) -> str:
    providers = {"openai": "openai", "deep": "openai", "anthropic": "anthropic", "google": "gemini"}
    text = f'[server]\ndata_dir = "{data}"\n\n'
    for name, kind in providers.items():
        text += (f'[providers.{name}]\ntype = "{kind}"\nbase_url = "{fake.base}{PREFIXES[name]}"\n'
                 f'api_key = "sk-upstream-native-security"\n\n')
    text += f'[[keys]]\nname = "plain"\nkey = "{KEY}"\n\n'
    text += (f'[[keys]]\nname = "files"\nkey = "{OPEN_KEY}"\n'
             'native_paths = ["GET /v1/files", "GET /v1/files/*", "DELETE /v1/files/*"]\n')
    return text


def _answer(received: Received) -> Reply:
    return json_reply({"id": "x", "object": "list", "data": [], "path": received.path,
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    fake = FakeUpstream().start()
    fake.default = _answer
    root = tmp_path_factory.mktemp("native-security")
    config = root / "config.toml"
    config.write_text(_config(fake, root / "data"))
    port = free_port()
    log = root / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=gateway_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield Served(base=base, fake=fake, log=log)
    finally:
        proc.terminate()
        proc.wait(10)
        fake.stop()


def raw_request(base: str, method: str, target: str, key: str = KEY, body: bytes = b"",
                content_type: str = "application/json") -> tuple[int, bytes]:
    """One HTTP/1.1 request with the target exactly as written; the status and body of the answer."""
    host, port = base.removeprefix("http://").split(":")
    head = (f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    status_line, _, rest = raw.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in headers.lower():
        payload = _unchunk(payload)
    return int(status_line.split()[1]), payload


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


# Each: a request target a hostile key holder sends, trying to leave the provider's base path.
ESCAPES = [
    "/native/deep/v1/../../../_stats",
    "/native/deep/v1/../../../../admin/config",
    "/openai/v1/../../../admin/config",
    "/openai/v1/%2e%2e/%2e%2e/%2e%2e/admin",
    "/openai/v1/%2E%2E/%2E%2E/%2E%2E/secret",
    "/openai/v1/.%2e/.%2e/.%2e/x",
    "/openai/v1/%2e./%2e./%2e./x",
    "/openai/v1/..%2f..%2f..%2fx",
    "/openai/v1/%2e%2e%2f%2e%2e%2f%2e%2e%2fx",
    "/openai/v1/..%5c..%5c..%5cx",
    "/openai/v1/..\\..\\..\\x",
    "/openai/v1/%252e%252e/%252e%252e/%252e%252e/x",
    "/openai/v1/%25252e%25252e/%25252e%25252e/%25252e%25252e/x",
    "/openai/v1/..;/..;/..;/x",
    "/openai/v1/;/../../../x",
    "/openai/v1/models/..;x=1/..;x=1/..;x=1/x",
    "/openai//evil.example/x",
    "/openai/http://evil.example/x",
    "/openai/v1/models/..%2F..%2F..%2Fadmin",
    "/openai/v1/./../../x",
    "/openai/v1/models/../../../../x",
    "/native/deep/%2e%2e/%2e%2e/x",
    "/native/deep/v1/..%252f..%252f..%252fx",
    "/openai/v1/..././..././x",
    "/anthropic/v1/../../../x",
    "/anthropic/%2e%2e/x",
    "/gemini/v1beta/../../../x",
    "/gemini/v1beta/models/%2e%2e%2f%2e%2e%2f%2e%2e%2fx:generateContent",
    "/openai/v1/..%c0%af..%c0%afx",
    "/openai/%2e%2e/x",
    "/openai/v1/..",
    "/openai/v1/%2e%2e?x=1",
    "/native/deep/v1/..//..//..//x",
    "/openai/v1/%252f..%252f..%252fx",
    "/openai/v1/%00/../../x",
    "/native/deep/v1/%2e%2e%5c%2e%2e%5cx",
]


def _outside(received: Received) -> bool:
    return not any(received.path == p or received.path.startswith(p + "/") for p in PREFIXES.values())


def test_no_path_leaves_the_provider_base(served: Served) -> None:
    served.fake.reset()
    served.fake.default = _answer
    answers = {target: raw_request(served.base, "GET", target) for target in ESCAPES}
    reached = [r.path for r in served.fake.received if _outside(r)]
    assert len(ESCAPES) >= 25
    assert reached == [], f"{len(reached)} of {len(ESCAPES)} escapes reached outside: {reached}"
    for target, (status, _) in answers.items():
        assert status in (400, 403, 404), (target, status)
    # Refused in the provider's shape: the path check comes before anything else is read or sent.
    status, body = answers["/anthropic/v1/../../../x"]
    assert status == 400 and json.loads(body)["type"] == "error"
    status, body = answers["/gemini/v1beta/../../../x"]
    assert status == 400 and json.loads(body)["error"]["status"] == "INVALID_ARGUMENT"
    status, body = answers["/openai/v1/%2e%2e/%2e%2e/%2e%2e/admin"]
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_path"


def test_paths_inside_the_base_still_pass(served: Served) -> None:
    served.fake.reset()
    served.fake.default = _answer
    status, _ = raw_request(served.base, "POST", "/openai/v1/chat/completions", body=b'{"model":"m","messages":[]}')
    assert status == 200 and served.fake.last.path == "/tenant/o/v1/chat/completions"
    status, _ = raw_request(served.base, "POST", "/gemini/v1beta/models/g%2D1:generateContent", body=b"{}")
    assert status == 200 and served.fake.last.path == "/tenant/g/v1beta/models/g-1:generateContent"


PROVIDER = Provider(name="p", kind="openai", base_url="https://h.example/base/v1", api_key="k", models=None,
                    connect_timeout=1, timeout=1, headers={})


@pytest.mark.parametrize("target", [t.split("/", 2)[2] if t.startswith("/openai") else t for t in ESCAPES])
def test_upstream_url_refuses_every_escape(target: str) -> None:
    path, _, query = target.partition("?")
    try:
        url = upstream_url(PROVIDER, path.lstrip("/"), query)
    except InvalidRequest as exc:
        assert exc.code == "invalid_path"
        return
    assert url.startswith("https://h.example/base/v1/"), url
    assert ".." not in url and "%2e" not in url.lower()


# ------------------------------------------------------------------------------------- who may reach what

def test_default_endpoints_and_the_allow_list(served: Served) -> None:
    served.fake.reset()
    served.fake.default = _answer
    tried = {
        ("GET", "/openai/v1/files"): 403, ("GET", "/openai/v1/files/file-1/content"): 403,
        ("DELETE", "/openai/v1/files/file-1"): 403, ("GET", "/openai/v1/chat/completions/cmpl-1"): 403,
        ("GET", "/openai/v1/responses/resp_1"): 403, ("DELETE", "/openai/v1/responses/resp_1"): 403,
        ("GET", "/openai/v1/organization/costs"): 403, ("GET", "/anthropic/v1/files"): 403,
        ("POST", "/openai/v1/batches"): 403, ("GET", "/openai/v1/vector_stores"): 403,
        ("GET", "/openai/v1/models"): 200, ("GET", "/openai/v1/models/gpt-4o"): 200,
        ("GET", "/anthropic/v1/models"): 200, ("GET", "/gemini/v1beta/models"): 200,
        ("POST", "/openai/v1/embeddings"): 200, ("POST", "/openai/v1/responses"): 200,
        ("POST", "/anthropic/v1/messages/count_tokens"): 200,
        ("POST", "/gemini/v1beta/models/g:countTokens"): 200,
    }
    got = {}
    for (method, target), _ in tried.items():
        body = b'{"model":"m"}' if method == "POST" else b""
        status, answer = raw_request(served.base, method, target, body=body)
        got[(method, target)] = status
        if status == 403:
            assert "native_paths" in answer.decode(), answer
    assert got == tried
    assert not any("files" in r.path or "organization" in r.path for r in served.fake.received)
    # A key whose own allow-list names files reaches them, methods included; nothing more.
    assert raw_request(served.base, "GET", "/openai/v1/files/file-1", key=OPEN_KEY)[0] == 200
    assert raw_request(served.base, "DELETE", "/openai/v1/files/file-1", key=OPEN_KEY)[0] == 200
    assert raw_request(served.base, "POST", "/openai/v1/files", key=OPEN_KEY)[0] == 403
    assert raw_request(served.base, "GET", "/anthropic/v1/files", key=OPEN_KEY)[0] == 200  # on every provider
    status, body = raw_request(served.base, "GET", "/gemini/v1beta/files", key=OPEN_KEY)
    assert status == 403 and json.loads(body)["error"]["status"] == "PERMISSION_DENIED"


def test_native_access_patterns() -> None:
    access = native_access("openai", ("GET /v1/files/*", "* /v1/batches/**"))
    assert access.allows("GET", "/v1/files/f1") and not access.allows("DELETE", "/v1/files/f1")
    assert not access.allows("GET", "/v1/files/f1/content")
    assert access.allows("POST", "/v1/batches/b/cancel") and access.allows("POST", "/v1/chat/completions")
    gemini = native_access("gemini", ())
    assert gemini.allows("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent")
    assert gemini.allows("POST", "/v1/tunedModels/t1:generateContent")
    assert not gemini.allows("POST", "/v1beta/models/g:batchGenerateContent")
    assert not gemini.allows("GET", "/v1beta/files") and not gemini.allows("DELETE", "/v1beta/models/g")


def test_native_paths_are_checked_at_load(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[providers.openai]\napi_key = "k"\nnative_paths = ["FETCH /v1/files"]\n')
    with pytest.raises(ConfigError, match="native_paths"):
        load_config_file(path)
    path.write_text('[providers.openai]\napi_key = "k"\nnative_paths = ["GET v1/files"]\n')
    with pytest.raises(ConfigError, match="native_paths"):
        load_config_file(path)


# ------------------------------------------------------------------------------------------ hostile bodies

HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("invalid utf-8", b'{"model": "m\xff\xfe", "messages": []}'),
    ("lone surrogate bytes", b'{"model": "\xed\xa0\x80"}'),
    ("deep array", b'{"model": "m", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("deep object", b'{"model": "m", "x": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"),
    ("array body", b'[{"model": "m"}]'),
    ("string body", b'"model"'),
    ("number body", b"42"),
    ("truncated", b'{"model": "m", "messages": ['),
    ("negative max_tokens", b'{"model": "m", "max_tokens": -1000000}'),
    ("absurd max_tokens", b'{"model": "m", "max_tokens": 100000000000000}'),
    ("negative max_completion_tokens", b'{"model": "m", "max_completion_tokens": -1}'),
    ("negative max_output_tokens", b'{"model": "m", "max_output_tokens": -5}'),
    ("negative n", b'{"model": "m", "n": -3}'),
    ("absurd n", b'{"model": "m", "n": 100000}'),
    ("negative thinking budget", b'{"model": "m", "max_tokens": 5, "thinking": {"type": "enabled", '
                                 b'"budget_tokens": -10}}'),
]
GEMINI_BODIES: list[tuple[str, bytes]] = [
    ("negative maxOutputTokens", b'{"generationConfig": {"maxOutputTokens": -1000000}}'),
    ("negative candidateCount", b'{"generationConfig": {"candidateCount": -1}}'),
    ("absurd thinkingBudget", b'{"generationConfig": {"thinkingConfig": {"thinkingBudget": 99999999999}}}'),
    ("invalid utf-8", b'{"contents": [{"parts": [{"text": "\xff"}]}]}'),
    ("deep", b'{"contents": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("array body", b"[]"),
]


def test_hostile_bodies_get_400_in_the_provider_shape(served: Served) -> None:
    served.fake.reset()
    served.fake.default = _answer
    failures = []
    for route, shape in (("/openai/v1/chat/completions", "openai"), ("/anthropic/v1/messages", "anthropic")):
        for name, body in HOSTILE_BODIES:
            status, answer = raw_request(served.base, "POST", route, body=body)
            if status != 400 or _shape(answer) != shape:
                failures.append((route, name, status, answer[:120]))
    for name, body in GEMINI_BODIES:
        status, answer = raw_request(served.base, "POST", "/gemini/v1beta/models/g:generateContent", body=body)
        if status != 400 or _shape(answer) != "gemini":
            failures.append(("gemini", name, status, answer[:120]))
    assert failures == []
    assert served.fake.received == []  # refused at the door: nothing went upstream
    # -1 is Gemini's "dynamic thinking", not a negative count.
    ok = b'{"generationConfig": {"thinkingConfig": {"thinkingBudget": -1}, "maxOutputTokens": 10}}'
    assert raw_request(served.base, "POST", "/gemini/v1beta/models/g:generateContent", body=ok)[0] == 200


def test_a_multipart_body_is_not_read_as_json(served: Served) -> None:
    served.fake.reset()
    served.fake.default = _answer
    status, _ = raw_request(served.base, "POST", "/openai/v1/files", key=OPEN_KEY, body=b"\xff\xfe--x--",
                            content_type="multipart/form-data; boundary=x")
    assert status == 403  # not in its allow-list (POST is not): refused as a path, not as a body


def _shape(answer: bytes) -> str:
    try:
        body: Any = json.loads(answer)
    except ValueError:
        return "not json"
    if body.get("type") == "error":
        return "anthropic"
    error = body.get("error", {})
    return "gemini" if "status" in error else "openai" if "type" in error else "unknown"


def test_httpx_normalises_dot_segments_so_raw_sockets_are_needed() -> None:
    assert httpx.URL("http://h/openai/v1/../../x").path == "/x"
