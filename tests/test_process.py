"""The server process: request reading bounds, its workers, its port, and the serve command's flags.

Each test runs a real `gateway serve` against the loopback fake upstream.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, gateway_env, run_cli, wait_ready
from tests.fakes import FakeUpstream, free_port

pytestmark = pytest.mark.slow


@dataclass
class Served:
    base: str
    port: int
    key: str
    config: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}


def config_text(fake: FakeUpstream, data: Path, *, server: str = "", extra: str = "") -> str:
    return f"""
[server]
data_dir = "{data}"
{server}

[providers.fake]
type = "openai"
base_url = "{fake.base}/v1"
api_key = "{UPSTREAM_KEY}"

[providers.anthropic]
type = "anthropic"
base_url = "{fake.base}"
api_key = "{UPSTREAM_KEY}"
{extra}
"""


@contextmanager
def served(fake: FakeUpstream, tmp_path: Path, *, server: str = "", extra: str = "",
           args: tuple[str, ...] = ()) -> Iterator[Served]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "config.toml"
    config.write_text(config_text(fake, tmp_path / "data", server=server, extra=extra))
    created = run_cli("keys", "create", "--name", "process", "--config", str(config))
    assert created.returncode == 0, created.stderr
    port = free_port()
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config),
                                 "--port", str(port), *args], stdout=out, stderr=subprocess.STDOUT,
                                env=gateway_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield Served(base=base, port=port, key=created.stdout.strip(), config=config, log=log, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def chat(model: str = "fake/m") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


# ------------------------------------------------------------------------------------------ slow bodies


async def trickle(port: int, path: str, headers: dict[str, str], seconds: float) -> tuple[int, bytes, float]:
    """Send the headers and then one body byte every 0.2 s; the status and body of the answer, and when
    it came (0 if none came within ``seconds``)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 f"content-length: 100000\r\n{extra}\r\n{{".encode())
    answer = b""
    try:
        while time.monotonic() - started < seconds:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.2)
            except TimeoutError:
                writer.write(b" ")
                await writer.drain()
                continue
            answer += chunk
            head, complete, body = answer.partition(b"\r\n\r\n")
            if not chunk or (complete and len(body) >= _length(head)):
                break
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    if not answer.startswith(b"HTTP/1.1 "):
        return 0, answer, 0.0
    head_part, _, body = answer.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), body, time.monotonic() - started


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def test_slow_bodies_get_a_408_and_do_not_stop_the_server(fake: FakeUpstream, tmp_path: Path) -> None:
    """Hundreds of connections trickling a body, with and without a key, on the plain-ASGI chat path and on
    Litestar routes: each gets a 408 in its route's error shape once the body deadline passes, while
    /healthz and a real request still answer at once."""
    with served(fake, tmp_path, server="body_timeout_s = 2\nmin_body_rate_kbps = 1") as gw:
        key = gw.headers()
        targets = [("/admin/login", {}), ("/v1/chat/completions", key), ("/v1/messages", {"x-api-key": gw.key}),
                   ("/native/fake/chat/completions", key)]
        tricklers = [asyncio.create_task(trickle(gw.port, path, headers, 40))
                     for _ in range(75) for path, headers in targets]
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient(base_url=gw.base, timeout=30) as http:
            started = time.monotonic()
            health = await http.get("/healthz")
            health_s = time.monotonic() - started
            started = time.monotonic()
            real = await http.post("/v1/chat/completions", headers=key, json=chat())
            real_s = time.monotonic() - started
        results = await asyncio.gather(*tricklers)
    assert health.status_code == 200 and health_s < 5, health_s
    assert real.status_code == 200 and real_s < 10, real_s
    statuses = {(path, status) for (status, _, _), (path, _) in zip(results, targets * 75, strict=True)}
    # The login form refuses a post without its CSRF cookie before reading the body: that answer comes once
    # the body deadline has passed (the rest is read and thrown away first, up to the deadline).
    assert statuses == {("/admin/login", 403)} | {(path, 408) for path, _ in targets[1:]}, sorted(statuses)
    assert max(at for _, _, at in results) < 20
    for (_, body, _), (path, _) in zip(results, targets * 75, strict=True):
        if path == "/admin/login":
            continue
        error = json.loads(body)
        if path == "/v1/messages":
            assert error["type"] == "error" and "did not arrive in time" in error["error"]["message"], error
        else:
            assert error["error"]["code"] == "request_timeout", error


def test_a_steady_upload_slower_than_the_base_timeout_still_completes(fake: FakeUpstream, tmp_path: Path) -> None:
    """The deadline grows with what arrives: a body sent at the minimum rate is not cut off."""
    with served(fake, tmp_path, server="body_timeout_s = 1\nmin_body_rate_kbps = 1") as gw:
        payload = json.dumps({**chat(), "user": "x" * 3000}).encode()

        def slowly() -> Iterator[bytes]:
            for i in range(0, len(payload), 1000):
                yield payload[i:i + 1000]
                time.sleep(0.5)  # 2 kB/s: above the 1 kB/s minimum, for longer than body_timeout_s

        answer = httpx.post(f"{gw.base}/v1/chat/completions", headers={**gw.headers(),
                            "content-type": "application/json"}, content=slowly(), timeout=30)
    assert answer.status_code == 200, answer.text


async def hold(port: int, path: str) -> None:
    """A connection that sends a body one byte a second, until cancelled."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{{".encode())
    try:
        while True:
            await asyncio.sleep(1)
            writer.write(b" ")
            await writer.drain()
    finally:
        writer.close()


async def test_more_tricklers_than_granians_default_slots_do_not_stop_accepting(
        fake: FakeUpstream, tmp_path: Path) -> None:
    """granian's default admits 1,024 connections per worker at once: 1,100 tricklers within the (default,
    30 s) body deadline made /healthz wait 25.7 s. The gateway raises that bound and the open-files limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    with served(fake, tmp_path) as gw:
        holders = [asyncio.create_task(hold(gw.port, "/admin/login")) for _ in range(1100)]
        try:
            await asyncio.sleep(3)
            assert not any(task.done() for task in holders)
            async with httpx.AsyncClient(base_url=gw.base, timeout=30) as http:
                started = time.monotonic()
                health = await http.get("/healthz")
                real = await http.post("/v1/chat/completions", headers=gw.headers(), json=chat())
                elapsed = time.monotonic() - started
        finally:
            for task in holders:
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
    assert (health.status_code, real.status_code) == (200, 200)
    assert elapsed < 10, elapsed


# ------------------------------------------------------------------------------------- the process group


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_the_main_process_takes_its_workers_along(fake: FakeUpstream, tmp_path: Path) -> None:
    with served(fake, tmp_path, server="workers = 2") as gw:
        workers = children(gw.proc.pid)
        assert len(workers) >= 2
        gw.proc.kill()
        gw.proc.wait(5)
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [Path(f"/proc/{pid}/cmdline").read_text() for pid in workers if alive(pid)]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{gw.base}/healthz", timeout=2)


def test_a_second_gateway_on_a_served_port_fails(fake: FakeUpstream, tmp_path: Path) -> None:
    with served(fake, tmp_path / "first") as gw:
        other = tmp_path / "second.toml"
        other.write_text(config_text(fake, tmp_path / "second-data"))
        try:
            second = run_cli("serve", "--config", str(other), "--port", str(gw.port), timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("a second gateway started on a port already served")
        assert second.returncode == 1
        assert "address already in use" in second.stderr.lower(), second.stderr
        assert "Traceback" not in second.stderr
        assert httpx.get(f"{gw.base}/healthz").status_code == 200


# ---------------------------------------------------------------------------------------- serve's flags


def test_the_port_flag_reaches_the_workers(fake: FakeUpstream, tmp_path: Path) -> None:
    """The admin URL printed with the generated token (by a worker) is the flag's port, not the file's."""
    with served(fake, tmp_path) as gw:
        deadline = time.monotonic() + 10
        while "log in at" not in gw.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = gw.log.read_text()
    assert f"log in at http://127.0.0.1:{gw.port}/admin" in log, log


def test_an_out_of_range_port_flag_is_a_clean_config_error(fake: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(fake, tmp_path / "data"))
    for flag, value in (("--port", "99999"), ("--port", "0"), ("--workers", "0")):
        answer = run_cli("serve", "--config", str(config), flag, value)
        assert answer.returncode == 2, answer.stderr
        assert "Traceback" not in answer.stderr and f"{flag} {value}" in answer.stderr, answer.stderr


# ------------------------------------------------------------------------------------ workers and limits


def test_more_than_one_worker_with_limits_is_refused(fake: FakeUpstream, tmp_path: Path) -> None:
    limited = {
        "keys[0].budget_usd": '[[keys]]\nname = "k"\nkey = "sk-proxy-0123456789abcdefghij"\nbudget_usd = 1',
        "keys[0].rpm": '[[keys]]\nname = "k"\nkey = "sk-proxy-0123456789abcdefghij"\nrpm = 10',
        "projects.p.budget_usd": "[projects.p]\nbudget_usd = 5",
        "limits.tpm": "[limits]\ntpm = 1000",
        "limits.providers.fake.rpm": "[limits.providers.fake]\nrpm = 10",
    }
    config = tmp_path / "config.toml"
    for key, extra in limited.items():
        config.write_text(config_text(fake, tmp_path / "data", server="workers = 2", extra=extra))
        answer = run_cli("check-config", "--config", str(config))
        assert answer.returncode == 2, (key, answer.stdout)
        assert "server.workers" in answer.stderr and key in answer.stderr and "workers = 1" in answer.stderr
        config.write_text(config_text(fake, tmp_path / "data", extra=extra))
        assert run_cli("check-config", "--config", str(config)).returncode == 0
        flagged = run_cli("serve", "--config", str(config), "--workers", "2")
        assert flagged.returncode == 2 and key in flagged.stderr, flagged.stderr
    # Without any limit, more workers are allowed, and keys cannot be given limits.
    config.write_text(config_text(fake, tmp_path / "data", server="workers = 2"))
    assert run_cli("check-config", "--config", str(config)).returncode == 0
    refused = run_cli("keys", "create", "--name", "capped", "--rpm", "10", "--config", str(config))
    assert refused.returncode == 1 and "server.workers = 2" in refused.stderr, refused.stderr
    # A key with a limit in the database (given under one worker) is refused at serve start, naming the key
    # and the way out.
    config.write_text(config_text(fake, tmp_path / "data"))
    assert run_cli("keys", "create", "--name", "capped", "--rpm", "10", "--config", str(config)).returncode == 0
    config.write_text(config_text(fake, tmp_path / "data", server="workers = 2"))
    answer = run_cli("serve", "--config", str(config), "--port", str(free_port()))
    assert answer.returncode == 2, answer.stderr
    assert "'capped'" in answer.stderr and "keys update capped --rpm none" in answer.stderr, answer.stderr


# ------------------------------------------------------------------------------------------ the console


def test_a_console_that_closes_early_does_not_stop_the_server(fake: FakeUpstream, tmp_path: Path) -> None:
    """`gateway serve 2>&1 | head -1` on a first start: the banner and the generated admin token meet a
    closed pipe. The server still serves, and stops on SIGTERM."""
    config = tmp_path / "config.toml"
    config.write_text(config_text(fake, tmp_path / "data"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=gateway_env())
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.close()  # what `head -1` does after its line
        wait_ready(f"http://127.0.0.1:{port}", proc)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        proc.terminate()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------------------------- protocol errors


def raw_request(port: int, head: str, body: bytes = b"") -> bytes:
    """Send a request as a plain HTTP/1 client does (the whole body, then read); the answer's bytes, or
    the error the client met."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(head.encode() + b"\r\n")
            for i in range(0, len(body), 65536):
                sock.sendall(body[i:i + 65536])
            answer = b""
            while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            return answer
        except OSError as exc:
            return f"client error: {exc}".encode()


def test_an_oversized_upload_gets_its_answer_not_a_broken_pipe(fake: FakeUpstream, tmp_path: Path) -> None:
    """Routes that answer before reading the whole body (a 413, a 401) read the rest and throw it away first:
    a plain client sends it all before reading, and closing on it made it see a broken pipe instead."""
    with served(fake, tmp_path, server="max_body_mb = 4") as gw:
        body = b"a" * 7_500_000
        answers = {}
        for path, key in (("/v1/chat/completions", gw.key), ("/v1/messages", gw.key),
                          ("/native/fake/chat/completions", gw.key), ("/v1/messages", "sk-proxy-unknown")):
            head = (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: "
                    f"{len(body)}\r\nauthorization: Bearer {key}\r\nx-api-key: {key}\r\n")
            answers[path, key == gw.key] = raw_request(gw.port, head, body).split(b"\r\n", 1)[0]
    assert answers == {
        ("/v1/chat/completions", True): b"HTTP/1.1 413 Payload Too Large",
        ("/v1/messages", True): b"HTTP/1.1 413 Payload Too Large",
        ("/native/fake/chat/completions", True): b"HTTP/1.1 413 Payload Too Large",
        ("/v1/messages", False): b"HTTP/1.1 401 Unauthorized",
    }


def test_malformed_bodies_and_wrong_methods_answer_in_the_routes_shape(fake: FakeUpstream, tmp_path: Path) -> None:
    with served(fake, tmp_path) as gw:
        bad_chunk = "transfer-encoding: chunked\r\n"
        answers = {path: raw_request(gw.port, f"POST {path} HTTP/1.1\r\nhost: x\r\n{bad_chunk}authorization: Bearer "
                                     f"{gw.key}\r\nx-api-key: {gw.key}\r\n", b"ZZ\r\nabc\r\n")
                   for path in ("/v1/chat/completions", "/v1/messages")}
        get_messages = httpx.get(f"{gw.base}/v1/messages")
    for path, answer in answers.items():
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), (path, answer)
        error = json.loads(body)
        assert (error["type"] == "error") if path == "/v1/messages" else ("code" in error["error"]), error
    assert get_messages.status_code == 405
    assert get_messages.json()["type"] == "error" and get_messages.json()["error"]["type"] == "invalid_request_error"
    assert "use POST for /v1/messages" in get_messages.json()["error"]["message"]
    assert get_messages.headers["allow"] == "POST"


# ------------------------------------------------------------------------------------ the write window


class SlowStore:
    """Stands in for the store: each batch commit takes a second; records when each record's commit began."""

    def __init__(self) -> None:
        self.commit_started: dict[int, float] = {}

    async def write_requests(self, batch: list[Any]) -> None:
        now = time.monotonic()
        for record in batch:
            self.commit_started[record] = now
        await asyncio.sleep(1.0)


async def test_a_record_waits_at_most_flush_interval_before_its_commit_starts() -> None:
    """What a kill -9 can lose is what waits in the queue: the writer's gathering wait counts from the oldest
    record's arrival, not from the end of the previous commit (here a slow one: 1 s, under a 1.5 s interval)."""
    from gateway.config import UsageConfig
    from gateway.usage import UsageRecorder

    recorder = UsageRecorder(UsageConfig(flush_interval_ms=1500))
    store = SlowStore()
    recorder.start(store)  # type: ignore[arg-type]
    queued: dict[int, float] = {}
    for i in range(100):  # 5 s of steady traffic
        queued[i] = time.monotonic()
        recorder.record(i)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
    await recorder.stop()  # a stop cuts the last wait short
    waits = [store.commit_started[i] - queued[i] for i in range(70)]
    # Before: a record that arrived as a commit began waited for it (1 s) and then the whole interval (2.5 s).
    assert max(waits) < 2.0, max(waits)
