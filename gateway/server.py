"""Serving: the startup banner, the store prepared before anything listens, and granian.

granian runs the app from an import string in worker processes. Workers are forked (Linux's default
start method), so the app's modules are imported here first: each worker then starts with them
already loaded, which is most of the start-up time. The config reaches workers by path, through the
environment (``GATEWAY_CONFIG``), not by pickling.

granian runs HTTP/1 only (clients of a plain-http gateway speak it; skipping the HTTP/2 detection is
measurably cheaper) and a single-threaded Rust runtime per worker: measured here, the multi-threaded
default spends more on handing each request between threads than on serving it (about +50% req/s on one
core with ``st``). Websockets are off: the gateway has no websocket route.

granian's own SIGHUP handling respawns every worker, which drops in-memory state (key ring, limits,
circuit breakers) and, if the edited config is broken, leaves workers crash-looping. The gateway's
workers reload the config themselves and keep serving the old one when the new one is invalid, so the
main process only passes the signal on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import importlib
import io
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import msgspec
from granian.constants import HTTPModes, Interfaces, RuntimeModes
from granian.log import LogLevels
from granian.server.mp import MPServer

from gateway import __version__
from gateway.catalog import load_builtin
from gateway.config import CONFIG_ENV_VAR, SERVE_FLAGS_ENV_VAR, Config, ServeFlags, workers_refused
from gateway.invocation import program
from gateway.router import RouteTable, auto_pool
from gateway.store import DB_FILENAME, StoreUnavailable, open_store, redact_url

APP_TARGET = "gateway.app:serve_app"
# prometheus_client's multiprocess directory (its own variable name; gateway.metrics reads it).
METRICS_DIR_ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
MAIN_PID_ENV_VAR = "GATEWAY_MAIN_PID"
# granian hands a worker at most ``backpressure`` connections at once and stops accepting beyond that (its
# default: backlog / workers = 1024). A connection sending its body slowly holds one of them until the body
# deadline (server.body_timeout_s): measured, 1,100 tricklers made /healthz wait 25.7 s with the default.
# Connections cost little memory until they send a request, so the bound is set far above any real
# concurrency, and the file-descriptor limit raised to match (see raise_open_files_limit).
CONNECTIONS_PER_WORKER = 16384
LISTEN_BACKLOG = 4096  # what Linux allows by default (net.core.somaxconn)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.5
ORPHAN_GRACE_S = 10.0


class GatewayServer(MPServer):
    def _reload(self, spawn_target: Any, target_loader: Any) -> None:
        self.reload_signal = False
        self.main_loop_interrupt.clear()
        for worker in self.wrks:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(worker._id(), signal.SIGHUP)  # type: ignore[no-untyped-call]


def banner(config: Config, first_start: bool) -> list[str]:
    host, port = config.server.host, config.server.port
    shown_host = f"[{host}]" if ":" in host else host
    lines = [f"gateway {__version__} listening on http://{shown_host}:{port}"]
    config_text = str(config.path) if config.path else f"none (built-in defaults; `{program()} init` writes one)"
    lines.append(f"  config:   {config_text}")
    database = (redact_url(config.store.postgres_url or "") if config.store.backend == "postgres"
                else config.data_dir / DB_FILENAME)
    lines.append(f"  database: {database}")
    if config.providers:
        for name, provider in config.providers.items():
            origin = config.sources.get(name, "config file")
            lines.append(f"  provider: {name} ({provider.kind}, {provider.base_url}) from {origin}")
    else:
        lines.append("  providers: none: set OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY, or add "
                     "[providers.NAME] to a config file")
    if config.providers:
        reached = auto_pool(RouteTable(config, load_builtin())) or ["nothing (declare models or [routes.auto])"]
        lines.append(f"  auto:     {', '.join(reached)} (a request naming no model, or `auto`)")
    if first_start:
        where = f" --config {config.path}" if config.path else ""
        lines.append(f"  first start: create a key for your clients with `{program()} keys create --name NAME{where}`")
    return lines


class ServeRefused(Exception):
    """The server cannot start; the message says why and what to do."""


class TolerantStderr(io.TextIOWrapper):
    """stderr that survives its reader going away (``gateway serve 2>&1 | head -1``).

    A write to a closed pipe raises BrokenPipeError (Python ignores SIGPIPE): in the middle of printing the
    banner or the generated admin token, that killed start-up and left the main process waiting on a worker
    that never came up. On the first EPIPE, fd 2 is pointed at /dev/null instead, so every later write (ours,
    logging's, granian's, the workers' after a fork) succeeds unseen and the server keeps serving.
    """

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self) -> None:
        try:
            super().flush()
        except BrokenPipeError:
            self._silence()
            super().flush()  # what was buffered now goes to /dev/null

    def _silence(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.fileno())
        os.close(devnull)


def tolerate_closed_stderr() -> None:
    if not isinstance(sys.stderr, TolerantStderr) and hasattr(sys.stderr, "buffer"):
        sys.stderr = TolerantStderr(sys.stderr.buffer, encoding=sys.stderr.encoding, errors="backslashreplace",
                                    line_buffering=True)


def check_port_free(host: str, port: int) -> None:
    """granian's workers each bind with SO_REUSEPORT, so a second gateway on a served port would start and
    split the traffic (two sets of budgets over one database). A probe bound without it fails on any port
    that is being listened on; SO_REUSEADDR keeps the connections of a just-stopped gateway from counting."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        shown = f"[{host}]" if ":" in host else host
        hint = ("another process (another gateway?) listens there: stop it, or choose another server.port / "
                "--port" if exc.errno == errno.EADDRINUSE else "check server.host / --host")
        raise ServeRefused(f"error: cannot listen on {shown}:{port}: {exc.strerror or exc}\n  hint: {hint}") from None


async def _prepare_store(config: Config) -> bool:
    """Create the data dir and migrate before anything listens; True on a first start. With more than one
    worker, keys with limits in the database are refused like limits in the file (see workers_refused)."""
    first = config.store.backend == "sqlite" and not (config.data_dir / DB_FILENAME).exists()
    try:
        store = await open_store(config)
    except StoreUnavailable as exc:
        raise ServeRefused(f"error: {exc}") from None
    try:
        if config.server.workers > 1 and config.state.backend == "memory":
            for row in await store.list_keys():
                limit = next((name for name in ("budget_usd", "rpm", "tpm") if getattr(row, name) is not None), None)
                if row.revoked_at is None and limit is not None:
                    raise workers_refused(
                        str(config.path or "<embedded defaults>"), config.server.workers,
                        f"the {limit} of key {row.name!r} (in the database)",
                        f"set server.workers = 1, or clear it: {program()} keys update {row.name} "
                        f"--{limit.replace('_', '-')} none")
    finally:
        await store.close()
    return first


def raise_open_files_limit() -> None:
    """Each connection is a file descriptor: the usual soft limit (1024) would refuse connections long before
    CONNECTIONS_PER_WORKER; raise it to the hard limit the system allows (inherited by the workers)."""
    if sys.platform == "win32":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CONNECTIONS_PER_WORKER * 2 + 1024  # per worker: the client's socket and an upstream one
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def serve(config: Config, flags: ServeFlags) -> None:
    """Raises ServeRefused or ConfigError before anything listens when the server cannot start."""
    check_port_free(config.server.host, config.server.port)
    raise_open_files_limit()
    first_start = asyncio.run(_prepare_store(config))
    if config.path is not None:
        os.environ[CONFIG_ENV_VAR] = str(config.path)
    # The workers load the file again themselves: the flags must reach them too, or the admin URL and the
    # Config page would show the file's port.
    os.environ[SERVE_FLAGS_ENV_VAR] = msgspec.json.encode(flags).decode()
    os.environ[MAIN_PID_ENV_VAR] = str(os.getpid())
    # At the fork itself, not when the worker has started: a main process killed while a worker is still
    # starting (seen under load in CI) must not leave that worker waiting for it forever.
    os.register_at_fork(after_in_child=die_with_parent)
    print("\n".join(banner(config, first_start)), file=sys.stderr, flush=True)
    # Before the app's modules are imported: prometheus_client picks its multiprocess storage at import.
    metrics_dir = prepare_multiprocess(config.server.workers)
    importlib.import_module(APP_TARGET.partition(":")[0])  # inherited by the forked workers
    try:
        GatewayServer(
            APP_TARGET, address=config.server.host, port=config.server.port, interface=Interfaces.ASGI,
            workers=config.server.workers, factory=True, log_level=LogLevels.warning, log_access=False,
            http=HTTPModes.http1, websockets=False, runtime_mode=RuntimeModes.st,
            backlog=LISTEN_BACKLOG, backpressure=CONNECTIONS_PER_WORKER,
        ).serve()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def prepare_multiprocess(workers: int) -> str | None:
    """With several workers, a fresh directory where each keeps its metric values, so that a scrape answered
    by any worker counts every request once; a reused one would add a previous run's counts."""
    if workers <= 1:
        return None
    os.environ[METRICS_DIR_ENV_VAR] = path = tempfile.mkdtemp(prefix="gateway-metrics-")
    return path


# The cyclic collector's first-generation threshold in a worker (Python's default is 700). Under load a
# request allocates a few hundred container objects, so the default runs a collection every other
# request or so; nearly all of them die by reference counting anyway, and each collection walks the
# young objects of every request in flight (issue 18's profile).
GC_YOUNG_THRESHOLD = 20_000


def freeze_startup_heap() -> None:
    """Once a worker has started: move everything alive (modules, the config, the catalog, the app's routes:
    some 100,000 objects) out of the collector's sight. A full collection walked all of them every few
    seconds under load, a pause of 10-30 ms that was the p99 of a fixed-rate run.

    No collection first, although that is the textbook order: it holds the GIL for about 40 ms at the end of
    start-up, which widened the window in which a SIGTERM (the main process dying: PDEATHSIG) reaches a worker
    still starting, and granian then hangs that worker's graceful stop (``_watch_parent`` ends it). Freezing
    is constant time; the price is the few cycles of start-up garbage (about ten objects, measured) kept."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


_watching = False  # this worker watches its parent already (at the fork, or when its app was made)


def die_with_parent() -> None:
    """In a worker: exit when the main process goes, however it goes (kill -9 included), so that no orphan
    worker keeps serving the port on its own. Linux sends the worker SIGTERM, its usual graceful stop, the
    moment its parent dies; a thread also watches the parent, for other systems and for a worker whose
    graceful stop does not finish (seen under load: a worker still starting up when its parent died)."""
    global _watching
    parent = int(os.environ.get(MAIN_PID_ENV_VAR) or 0)
    if not parent or parent == os.getpid() or _watching:
        return
    _watching = True
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    threading.Thread(target=_watch_parent, args=(parent,), name="gateway-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    if sys.platform != "linux":
        os.kill(os.getpid(), signal.SIGTERM)
    # On Linux the kernel sent SIGTERM already (PDEATHSIG). A second one must not follow: granian's worker
    # handler is not reentrant, and a SIGTERM arriving while it runs the first one's callbacks deadlocks the
    # worker with the GIL held, so this thread could never reach the exit below (seen: an orphan worker).
    # The graceful stop flushes usage records; one that has not finished by now is not going to.
    time.sleep(ORPHAN_GRACE_S)
    os._exit(70)
