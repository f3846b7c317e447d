"""The packaged binary's smoke test: --version, keys made by its own CLI, `serve` on a free port,
/readyz, the admin page's template and static files, a proxied chat request (plain and streamed) to a fake
upstream, and a clean stop on SIGTERM with every usage record written. Run by build.sh; exits non-zero on
any failure.

It checks behaviour, not speed: the stop bound (15 s) only tells "stops" from "hangs", whatever the
machine's load. How fast the binary starts and stops is measured by ``python -m bench --binary``."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fakes import FakeUpstream, free_port  # the repo's loopback fake provider

# "It stops", not "it stops fast": a quiet machine needs ~0.3 s, a loaded one measured 2.9 s.
STOP_BOUND = 15.0


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the binary exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/readyz", timeout=0.5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise SystemExit("the binary was not ready in time")


def main(binary: str) -> None:
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    print(f"smoke: {version}")
    fake = FakeUpstream().start()
    root = Path(tempfile.mkdtemp(prefix="gateway-smoke-"))
    config = root / "config.toml"
    config.write_text(f'[server]\ndata_dir = "data"\n[providers.fake]\ntype = "openai"\n'
                      f'base_url = "{fake.base}/v1"\napi_key = "sk-upstream"\n')
    key = subprocess.run([binary, "keys", "create", "--name", "smoke", "--config", str(config)],
                         capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, "serve", "--config", str(config), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = wait_ready(base, proc)
        print(f"smoke: ready in {ready:.2f}s")
        headers = {"authorization": f"Bearer {key}"}
        body = {"model": "fake/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        plain = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=10)
        assert plain.status_code == 200 and plain.json()["model"] == "fake/gpt-4o", plain.text
        streamed = httpx.post(f"{base}/v1/chat/completions", json={**body, "stream": True}, headers=headers,
                              timeout=10)
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]"), streamed.text
        # The admin page's files are found inside the bundle (gateway/web), as in an installed wheel.
        login = httpx.get(f"{base}/admin/login", timeout=10)
        assert login.status_code == 200 and "<form" in login.text, login.text[:500]
        css = httpx.get(f"{base}/admin/static/admin.css", timeout=10)
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css"), css.status_code
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            proc.wait(STOP_BOUND)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"the binary did not stop within {STOP_BOUND:.0f}s of SIGTERM") from None
        print(f"smoke: stopped in {time.monotonic() - started:.2f}s")
    finally:
        if proc.poll() is None:
            proc.kill()
        fake.stop()
    with sqlite3.connect(root / "data" / "gateway.db") as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM requests").fetchone()
    assert rows == 2, f"{rows} usage records, expected 2"
    print("smoke: ok")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dist/gateway")
