from __future__ import annotations

import hashlib
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway import __version__
from tests.conftest import RunningGateway, gateway_env, run_cli, wait_ready
from tests.fakes import FakeUpstream, free_port, json_reply

USER = [{"role": "user", "content": "Hello"}]


def config_in(tmp_path: Path) -> str:
    path = tmp_path / "config.toml"
    path.write_text('[server]\ndata_dir = "./state"\n')
    return str(path)


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.strip() == f"gateway {__version__}"
    help_text = run_cli("--help").stdout
    for command in ("serve", "check-config", "keys"):
        assert re.search(rf"^\s+{command}\b", help_text, re.M), command
    for args in (["serve", "--help"], ["keys", "create", "--help"], ["keys", "revoke", "--help"]):
        result = run_cli(*args)
        # Run as `python3 -m gateway`, its usage line says so (the hints name the program as it was typed).
        assert result.returncode == 0 and f"usage: {Path(sys.executable).name} -m gateway" in result.stdout


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    created = run_cli("keys", "create", "--name", "alice", "--config", config)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    # The secret alone on stdout, so scripts can capture it.
    assert created.stdout == secret + "\n"
    assert re.fullmatch(r"sk-proxy-[A-Za-z0-9_-]{32,}", secret)
    # Stored only as its SHA-256: the secret's bytes are nowhere in the database files.
    db = tmp_path / "state" / "gateway.db"
    for path in db.parent.iterdir():
        assert secret.encode() not in path.read_bytes()
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT hash FROM keys WHERE name = 'alice'").fetchone()
    assert stored == hashlib.sha256(secret.encode()).hexdigest()

    duplicate = run_cli("keys", "create", "--name", "alice", "--config", config)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr and duplicate.stdout == ""

    listed = run_cli("keys", "list", "--config", config).stdout
    assert "alice" in listed and secret[:13] in listed and secret not in listed
    assert listed.splitlines()[0].split()[:4] == ["NAME", "ID", "SOURCE", "PREFIX"]
    key_id = re.search(r"key_[0-9a-f]+", listed)
    assert key_id is not None

    revoked = run_cli("keys", "revoke", key_id.group(0), "--config", config)
    assert revoked.returncode == 0 and "revoked alice" in revoked.stderr
    row = [line for line in run_cli("keys", "list", "--config", config).stdout.splitlines() if "alice" in line]
    assert row and len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", row[0])) == 2  # created and revoked
    assert run_cli("keys", "revoke", "nobody", "--config", config).returncode == 1


def test_running_server_sees_new_and_revoked_keys_within_a_second(gateway: RunningGateway,
                                                                 fake: FakeUpstream) -> None:
    secret = gateway.cli("keys", "create", "--name", "live-key").stdout.strip()
    url = f"{gateway.base}/v1/chat/completions"
    body = {"model": "fake/gpt-4o", "messages": USER}

    def status_within(expected: int, seconds: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if httpx.post(url, json=body, headers={"authorization": f"Bearer {secret}"}).status_code == expected:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"no {expected} within {seconds}s")

    status_within(200, 10.0)  # ~1 s on a quiet machine (the key ring is re-read every second); 10x
    assert gateway.cli("keys", "revoke", "live-key").returncode == 0
    status_within(401, 10.0)


def test_last_used_is_written_behind(gateway: RunningGateway, fake: FakeUpstream) -> None:
    httpx.post(f"{gateway.base}/v1/chat/completions", json={"model": "fake/gpt-4o", "messages": USER},
               headers={"authorization": f"Bearer {gateway.key}"})
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        line = next(x for x in gateway.cli("keys", "list").stdout.splitlines() if x.startswith("tests "))
        if len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", line)) == 2:
            return
        time.sleep(0.5)
    raise AssertionError("last used time never written")


@pytest.mark.slow
def test_serve_starts_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = config_in(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", config, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=gateway_env())
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        # With no provider configured, a chat request says how to add one.
        secret = run_cli("keys", "create", "--name", "k", "--config", config).stdout.strip()
        time.sleep(1.0)  # the server picks up new keys within a second
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                              json={"model": "openai/gpt-4o", "messages": USER},
                              headers={"authorization": f"Bearer {secret}"})
        assert response.status_code == 503 and "[providers.NAME]" in response.json()["error"]["message"]
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(15)  # "it stops", with a bound that never flakes; the stop time is a bench figure
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
    _, stderr = proc.communicate()
    text = stderr.decode()
    assert f"listening on http://127.0.0.1:{port}" in text
    assert "Traceback" not in text


@pytest.mark.slow
def test_usage_records_are_flushed_on_a_clean_stop_under_load(fake: FakeUpstream, tmp_path: Path) -> None:
    import concurrent.futures

    path = tmp_path / "config.toml"
    path.write_text(f'[server]\ndata_dir = "./state"\n[usage]\nflush_interval_ms = 2000\n'
                    f'[providers.f]\ntype = "openai"\nbase_url = "{fake.base}/v1"\n')
    secret = run_cli("keys", "create", "--name", "load", "--config", str(path)).stdout.strip()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=gateway_env())
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        with httpx.Client(timeout=10) as client:
            def one(_: int) -> int:
                return client.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                   headers={"authorization": f"Bearer {secret}"},
                                   json={"model": "f/m", "messages": USER}).status_code
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(one, range(300)))
        assert codes == [200] * 300
        # The writer holds batches for 2 s: most records are still queued when SIGTERM arrives.
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(tmp_path / "state" / "gateway.db") as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM requests WHERE status = 200").fetchone()
        (daily,) = conn.execute("SELECT SUM(requests) FROM usage_daily").fetchone()
    assert count == 300 and daily == 300


def test_keys_update_and_usage_commands(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    secret = run_cli("keys", "create", "--name", "bob", "--budget-usd", "2.5", "--rpm", "10", "--models",
                     "openai/*,smart", "--expires", "2027-01-31", "--project", "web", "--config", config)
    assert secret.returncode == 0, secret.stderr
    updated = run_cli("keys", "update", "bob", "--rpm", "none", "--tpm", "5000", "--config", config)
    assert updated.returncode == 0 and "updated bob" in updated.stderr
    with sqlite3.connect(tmp_path / "state" / "gateway.db") as conn:
        row = conn.execute("SELECT budget_usd, rpm, tpm, models, expires_at, project FROM keys").fetchone()
    assert row[:3] == (2.5, None, 5000) and json_list(row[3]) == ["openai/*", "smart"] and row[5] == "web"
    listed = run_cli("keys", "list", "--config", config).stdout
    assert "$2.50/month" in listed and "openai/*,smart" in listed and "2027-01-31" in listed
    bad = run_cli("keys", "update", "bob", "--budget-usd", "-3", "--config", config)
    assert bad.returncode == 1 and "must not be negative" in bad.stderr
    usage = run_cli("usage", "--by", "model", "--since", "2026-01-01", "--csv", "--config", config)
    assert usage.returncode == 0 and usage.stdout.startswith("model,requests,errors")
    assert run_cli("usage", "--since", "soon", "--config", config).returncode == 2


def json_list(text: str) -> list[str]:
    import json

    value: list[str] = json.loads(text)
    return value


def test_a_local_ollama_is_found_when_nothing_is_configured(tmp_path: Path) -> None:
    ollama = FakeUpstream()
    ollama.port, ollama.base = 11434, "http://127.0.0.1:11434"
    try:
        ollama.start()
    except OSError:
        pytest.skip("something already listens on 127.0.0.1:11434")
    ollama.default = lambda received: json_reply({"models": [{"name": "llama3.2:3b"}, {"name": "qwen3:8b"}]})
    try:
        found = run_cli("check-config", cwd=tmp_path)
    finally:
        ollama.stop()
    assert found.returncode == 0, found.stderr
    assert "ollama (openai)" in found.stdout
    assert any(r.path == "/api/tags" for r in ollama.received)
    gone = run_cli("check-config", cwd=tmp_path)
    assert "providers: none" in gone.stdout


def test_first_start_banner_says_where_things_are_and_how_to_make_a_key(tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.invocation import program
    from gateway.server import banner

    path = tmp_path / "config.toml"
    path.write_text('[providers.groq]\ntype = "openai"\nbase_url = "https://api.groq.com/openai/v1"\n')
    lines = "\n".join(banner(load_config(str(path)), first_start=True))
    assert "listening on http://127.0.0.1:8080" in lines
    assert f"config:   {path}" in lines and str(tmp_path / "data" / "gateway.db") in lines
    assert "provider: groq (openai, https://api.groq.com/openai/v1) from config file" in lines
    assert f"{program()} keys create --name NAME --config {path}" in lines
    assert "first start" not in "\n".join(banner(load_config(str(path)), first_start=False))


def test_no_arguments_means_serve(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nport = {port}\ndata_dir = "./state"\n')
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=gateway_env(GATEWAY_CONFIG=str(config)))
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        proc.wait(10)
    text = proc.stderr.read().decode() if proc.stderr else ""
    assert f"listening on http://127.0.0.1:{port}" in text
    assert "first start: create a key" in text and str(tmp_path / "state" / "gateway.db") in text
