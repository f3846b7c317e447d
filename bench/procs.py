"""Processes under test: CPU layout and pinning, start and stop, readiness, and RSS of a process tree."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.http import build_request, parse_response

HOST = "127.0.0.1"
# Proxy variables would send the peers' (httpx-based) upstream calls off the machine: never inherited.
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@dataclass(frozen=True)
class Layout:
    """Which CPUs the server under test gets, and which the mock and the load generator share."""

    server: frozenset[int]
    client: frozenset[int]
    all: frozenset[int]

    @property
    def pinned(self) -> bool:
        return self.server != self.all

    def describe(self) -> str:
        if not self.pinned:
            return f"unpinned ({len(self.all)} CPU)"
        return f"server on CPU {_cpus(self.server)}; mock and load generator on CPU {_cpus(self.client)}"


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def layout() -> Layout:
    cpus = sorted(os.sched_getaffinity(0))
    every = frozenset(cpus)
    if len(cpus) < 2:
        return Layout(server=every, client=every, all=every)
    return Layout(server=frozenset(cpus[:1]), client=frozenset(cpus[1:]), all=every)


def quiet_gc() -> None:
    """Collect garbage in the bench's own processes (the load generator, the mock) as rarely as the gateway's
    workers do (gateway/server.py: freeze_startup_heap): a full pass over the generator's heap took 7-14 ms
    mid-run, and landed in the p99 of whichever target was being measured, the mock's own included."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, *gc.get_threshold()[1:])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Proc:
    """A server process in its own session, so stopping it stops its workers too (by its group id)."""

    def __init__(self, name: str, cmd: list[str], *, cpus: frozenset[int], log: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", _cpus(cpus), *cmd]  # taskset execs the command: same pid
            preexec = None
        else:
            def preexec() -> None:
                os.sched_setaffinity(0, cpus)
        self.started = time.perf_counter()
        with log.open("ab") as out:
            self.popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(env),
                                          cwd=cwd, start_new_session=True, preexec_fn=preexec)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            timeout: float = 5.0) -> tuple[int, bytes]:
    """One blocking request on a fresh connection (control calls and readiness polls)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(build_request(method, path, body, headers, close=True))
        buf = b""
        while chunk := sock.recv(65536):
            buf += chunk
    parsed = parse_response(buf)
    if parsed is None:
        raise ConnectionError(f"incomplete answer from {HOST}:{port}{path}")
    return parsed[0], parsed[1]


def wait_ready(proc: Proc, port: int, path: str, timeout: float, *, any_status: bool = False) -> float:
    """Seconds from the process's start to its first 200 (or any answer) on ``path``, polled every 5 ms."""
    deadline = proc.started + timeout
    while time.perf_counter() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            status = request(port, "GET", path, timeout=1.0)[0]
            if status == 200 or any_status:
                return time.perf_counter() - proc.started
        except OSError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"{proc.name} not ready on :{port}{path} within {timeout:g}s:\n{proc.log_tail()}")


def descendants(parents: dict[int, int], root: int) -> set[int]:
    """``root`` and every process below it, from a pid → parent pid map."""
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def _parent_map() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields resume after the last ')'.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants (granian main + workers), in MB (10^6 bytes).

    Counted as PSS (proportional set size), so the pages granian's main process and its forked workers
    share (the app's modules, imported once before the fork) count once, split between them. Summing
    each process's RSS would count them twice; where PSS is not available, RSS is summed instead.
    """
    total_kb = 0
    for pid in descendants(_parent_map(), root):
        total_kb += _pss_kb(pid)
    return total_kb * 1024 / 1e6


def _pss_kb(pid: int) -> int:
    for source, field in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            for line in Path(source).read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1])
        except OSError:
            continue
    return 0
