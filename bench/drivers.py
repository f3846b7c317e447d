"""Load generators: closed-loop throughput (wrk, or a Python fallback), an open-loop fixed-rate generator,
sequential interleaved probers for added latency and time to first token, and a concurrent-streams run.

Every loop is bounded by a request count or a deadline, and every target is on loopback.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.http import Connection, StreamTrace, build_request, stream

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Target:
    """Where to send one kind of request, and the request's exact bytes."""

    name: str
    port: int
    raw: bytes
    path: str = ""
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def post(cls, name: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None,
             *, close: bool = False) -> Target:
        """A JSON POST; ``close`` asks the server to end the connection after answering (streams)."""
        all_headers = {"content-type": "application/json", **(headers or {})}
        raw = build_request("POST", path, body, all_headers, close=close)
        return cls(name=name, port=port, raw=raw, path=path, body=body, headers=all_headers)


@dataclass
class Throughput:
    requests: int
    errors: int
    seconds: float
    driver: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# ------------------------------------------------------------------------------------ closed loop


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {{"requests":%d,"duration_us":%d,"errors":%d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk(target: Target, *, connections: int, seconds: float, threads: int = 1) -> Throughput:
    """Closed loop with wrk: ``connections`` keep-alive connections each sending as fast as answered."""
    headers = "\n".join(f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in target.headers.items())
    script = _WRK_SCRIPT.format(body=_lua_string(target.body.decode()), headers=headers)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(int(seconds), 1)}s", "--timeout", "5s",
             "-s", handle.name, f"http://{HOST}:{target.port}{target.path}"],
            capture_output=True, text=True, timeout=seconds + 30, check=False,
        )
    finally:
        Path(handle.name).unlink()
    match = re.search(r"^BENCH (\{.*\})$", out.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk gave no summary (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    figures = json.loads(match.group(1))
    return Throughput(requests=figures["requests"] - figures["errors"], errors=figures["errors"],
                      seconds=figures["duration_us"] / 1e6, driver="wrk")


async def _closed_loop_worker(port: int, raw: bytes, connections: int, warmup: float,
                              seconds: float) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    stop = start + seconds
    counts = [0, 0]  # ok, errors: counted only inside the measured window

    async def one_connection() -> None:
        conn = await Connection.open(HOST, port)
        try:
            while (now := loop.time()) < stop:
                try:
                    status, _ = await conn.request(raw)
                    ok = status == 200
                except ConnectionError:
                    ok = False
                    conn = await Connection.open(HOST, port)
                if now >= start:
                    counts[0 if ok else 1] += 1
        finally:
            conn.close()

    await asyncio.wait_for(asyncio.gather(*(one_connection() for _ in range(connections))),
                           warmup + seconds + 30)
    return counts[0], counts[1]


def _closed_loop_process(args: tuple[int, bytes, int, float, float]) -> tuple[int, int]:
    return asyncio.run(_closed_loop_worker(*args))


def python_closed_loop(target: Target, *, connections: int, seconds: float, processes: int = 2,
                       warmup: float = 1.0) -> Throughput:
    """The fallback when wrk is not installed: ``processes`` processes sharing the connections."""
    per_process = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    jobs = [(target.port, target.raw, n, warmup, seconds) for n in per_process if n]
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        results = pool.map(_closed_loop_process, jobs)
    return Throughput(requests=sum(ok for ok, _ in results), errors=sum(err for _, err in results),
                      seconds=seconds, driver=f"python x{len(jobs)}")


def closed_loop(target: Target, *, connections: int, seconds: float, use_wrk: bool, threads: int = 1) -> Throughput:
    if use_wrk:
        wrk(target, connections=connections, seconds=1, threads=threads)  # warm-up, discarded
        return wrk(target, connections=connections, seconds=seconds, threads=threads)
    return python_closed_loop(target, connections=connections, seconds=seconds, processes=max(threads, 1))


# -------------------------------------------------------------------------------------- open loop


def schedule(rate: float, seconds: float) -> list[float]:
    """Send times (seconds from the start) of a fixed-rate run: evenly spaced, ``rate * seconds`` of them."""
    if rate <= 0 or seconds <= 0:
        return []
    return [i / rate for i in range(int(rate * seconds))]


@dataclass
class OpenLoop:
    latencies_ms: list[float]
    errors: int
    sent: int
    seconds: float
    max_lag_ms: float  # how far behind schedule the generator itself fell: large means it could not keep up


async def open_loop(target: Target, *, rate: float, seconds: float, max_connections: int = 512,
                    on_tick: Callable[[], None] | None = None) -> OpenLoop:
    """Fixed-rate load: request i is due at start + i/rate whether or not earlier ones have answered.

    Latency runs from the scheduled time, not from the actual send, so a server (or generator) that
    falls behind is charged for the wait (no coordinated omission). Connections are reused when idle
    and opened when none is, up to ``max_connections``; beyond that a request waits for one, on the clock.
    ``on_tick`` runs about every 100 ms (the RSS sampler).
    """
    loop = asyncio.get_running_loop()
    idle: list[Connection] = []
    opened = 0
    freed = asyncio.Condition()
    latencies: list[float] = []
    errors = 0
    max_lag = 0.0

    async def one(due: float) -> None:
        nonlocal opened, errors
        conn: Connection | None = None
        try:
            async with freed:
                while not idle and opened >= max_connections:
                    await freed.wait()
                if idle:
                    conn = idle.pop()
                else:
                    opened += 1
            if conn is None:
                conn = await Connection.open(HOST, target.port)
            status, _ = await conn.request(target.raw)
            latencies.append((loop.time() - due) * 1000)
            if status != 200:
                errors += 1
        except (ConnectionError, OSError):
            errors += 1
            if conn is not None:
                conn.close()
            conn = None
            opened -= 1
        async with freed:
            if conn is not None:
                idle.append(conn)
            freed.notify()

    times = schedule(rate, seconds)
    tasks: list[asyncio.Task[None]] = []
    start = loop.time() + 0.05
    next_tick = start
    index = 0
    while index < len(times):
        now = loop.time()
        while index < len(times) and start + times[index] <= now:
            max_lag = max(max_lag, now - start - times[index])
            tasks.append(asyncio.create_task(one(start + times[index])))
            index += 1
        if on_tick is not None and now >= next_tick:
            on_tick()
            next_tick = now + 0.1
        if index < len(times):
            await asyncio.sleep(max(start + times[index] - loop.time(), 0))
    _, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    for conn in idle:
        conn.close()
    return OpenLoop(latencies_ms=latencies, errors=errors + len(pending), sent=len(times),
                    seconds=loop.time() - start, max_lag_ms=max_lag * 1000)


# --------------------------------------------------------------------------------------- probers


async def probe(targets: Sequence[Target], *, rounds: int, per_round: int) -> dict[str, list[list[float]]]:
    """One request in flight at a time, alternating targets, so every target sees the same moments.

    Returns per target, per round, the latencies in ms (errors are raised: a probe must be clean).
    """
    conns = {t.name: await Connection.open(HOST, t.port) for t in targets}
    results: dict[str, list[list[float]]] = {t.name: [] for t in targets}
    try:
        for t in targets:  # warm every connection and code path once before measuring
            for _ in range(20):
                await conns[t.name].request(t.raw)
        for r in range(rounds):
            current: dict[str, list[float]] = {t.name: [] for t in targets}
            for i in range(per_round):
                # Rotate the order so no target always follows the same one.
                order = [*targets[(i + r) % len(targets):], *targets[:(i + r) % len(targets)]]
                for t in order:
                    began = time.perf_counter()
                    status, body = await conns[t.name].request(t.raw)
                    elapsed = (time.perf_counter() - began) * 1000
                    if status != 200:
                        raise RuntimeError(f"{t.name} answered {status}: {body[:300]!r}")
                    current[t.name].append(elapsed)
            for name, values in current.items():
                results[name].append(values)
    finally:
        for conn in conns.values():
            conn.close()
    return results


async def stream_probe(targets: Sequence[Target], *, count: int, timeout: float = 10.0) -> dict[str, list[StreamTrace]]:
    """Streamed requests one at a time, alternating targets; each trace times its first and last event."""
    results: dict[str, list[StreamTrace]] = {t.name: [] for t in targets}
    for t in targets:  # warm-up
        await stream(HOST, t.port, t.raw, timeout=timeout)
    for i in range(count):
        order = list(targets[i % len(targets):]) + list(targets[:i % len(targets)])
        for t in order:
            trace = await stream(HOST, t.port, t.raw, timeout=timeout)
            if trace.status != 200 or not trace.done:
                raise RuntimeError(f"{t.name} stream failed: status {trace.status}, {trace.error}")
            results[t.name].append(trace)
    return results


async def concurrent_streams(target: Target, *, count: int, timeout: float) -> list[StreamTrace]:
    """``count`` streams opened at once, each read to its end within ``timeout`` seconds."""
    return list(await asyncio.gather(*(stream(HOST, target.port, target.raw, timeout=timeout)
                                       for _ in range(count))))
