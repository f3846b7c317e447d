"""``python -m bench --binary``: the single executable's figures beside the Python install's, same run.

Measures the built ``dist/gateway`` (``bash packaging/build.sh`` first) and ``python -m gateway`` from
this interpreter: file size, ``--version`` wall time, exec to the first 200 on ``/readyz``, and SIGTERM to
exit (every usage record written is the smoke test's job; here only the time). Medians over ``--runs``
starts, one at a time, on embedded defaults plus a data dir. Writes its section of docs/benchmarks.md
(``report.write_binary_section``), which a full ``python -m bench`` run keeps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from bench import report

REPO = Path(__file__).resolve().parent.parent

# The targets of issue 13 (a quiet machine); the Python install has no size.
TARGETS = {"size_mb": 25.0, "ready_s": 1.2, "version_s": 0.8}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _version_s(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([*command, "--version"], check=True, capture_output=True)
    return time.perf_counter() - started


def _start_and_stop(command: list[str], workdir: Path) -> tuple[float, float]:
    """Seconds from exec to the first 200 on /readyz, and from SIGTERM to exit."""
    port = _free_port()
    config = workdir / "config.toml"
    config.write_text(f'[server]\ndata_dir = "{workdir / "data"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "GATEWAY_CONFIG"}
    started = time.perf_counter()
    proc = subprocess.Popen([*command, "serve", "--config", str(config), "--port", str(port)], cwd=workdir,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{command[0]} exited with {proc.returncode} before it was ready")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.perf_counter() - started > 60:
                raise SystemExit(f"{command[0]} was not ready within 60 s")
            time.sleep(0.005)
        ready = time.perf_counter() - started
        proc.send_signal(signal.SIGTERM)
        stopping = time.perf_counter()
        proc.wait(60)
        return ready, time.perf_counter() - stopping
    finally:
        if proc.poll() is None:
            proc.kill()


def measure(binary: Path, runs: int) -> dict[str, dict[str, float]]:
    kinds = {"single executable": [str(binary)], "Python install": [sys.executable, "-m", "gateway"]}
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-bench-binary-") as tmp:
        for kind, command in kinds.items():
            versions, readies, stops = [], [], []
            for i in range(runs):
                versions.append(_version_s(command))
                workdir = Path(tmp) / f"{kind.split()[0]}-{i}"
                workdir.mkdir()
                ready, stop = _start_and_stop(command, workdir)
                readies.append(ready)
                stops.append(stop)
            figures[kind] = {"version_s": median(versions), "ready_s": median(readies), "stop_s": median(stops),
                             "ready_max_s": max(readies)}
    figures["single executable"]["size_mb"] = binary.stat().st_size / 1e6
    return figures


def markdown(figures: dict[str, dict[str, float]], runs: int, load: tuple[float, float]) -> str:
    frozen, python = figures["single executable"], figures["Python install"]

    def verdict(name: str) -> str:
        return "met" if frozen[name] <= TARGETS[name] else "**missed**"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False).stdout.strip()

    sha = git("rev-parse", "--short=12", "HEAD") + (" (modified)" if git("status", "--porcelain") else "")
    return "\n".join([
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC on git {sha} with `python -m bench --binary`"
        f" (`bash packaging/build.sh` first); medians of {runs} starts, one at a time; 1-minute load average "
        f"before and after: {load[0]:.2f} / {load[1]:.2f}.",
        "",
        "| figure | single executable | Python install | target (executable) | verdict |",
        "|---|---|---|---|---|",
        f"| file size | {frozen['size_mb']:.1f} MB | — | ≤ {TARGETS['size_mb']:g} MB | {verdict('size_mb')} |",
        f"| `--version`, wall time | {frozen['version_s']:.2f} s | {python['version_s']:.2f} s "
        f"| ≤ {TARGETS['version_s']:g} s | {verdict('version_s')} |",
        f"| exec to first 200 on /readyz | {frozen['ready_s']:.2f} s (max {frozen['ready_max_s']:.2f}) "
        f"| {python['ready_s']:.2f} s (max {python['ready_max_s']:.2f}) | ≤ {TARGETS['ready_s']:g} s "
        f"| {verdict('ready_s')} |",
        f"| SIGTERM to exit | {frozen['stop_s']:.2f} s | {python['stop_s']:.2f} s | — | — |",
        "",
    ])


def main(binary: Path, runs: int) -> int:
    if not binary.is_file():
        print(f"{binary} is missing: build it with `bash packaging/build.sh`", file=sys.stderr)
        return 2
    before = os.getloadavg()[0]
    figures = measure(binary, runs)
    text = markdown(figures, runs, (before, os.getloadavg()[0]))
    print(text)
    report.write_binary_section(REPO / "docs" / "benchmarks.md", text)
    return 0
