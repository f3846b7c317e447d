"""Real engines for the scale-out tests: servers started from their Debian binaries in a temp dir, on
loopback, stopped at the end. Never mocks. When the binaries are missing the tests skip saying why,
except under CI (CI=true), where .ci/run installs them and a missing engine is a failure."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import free_port


def missing_engine(reason: str) -> None:
    """Skip (printing why) on a developer's machine; fail under CI, where the engine must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI installs it in .ci/run)")
    pytest.skip(reason)


# -------------------------------------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> Path | None:
    """Debian keeps initdb and postgres out of PATH, in /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


class Postgres:
    """One PostgreSQL server: its data and socket dir in a fresh temp dir, listening on a free loopback port,
    trust auth for the superuser ``gateway``. PostgreSQL refuses to run as root, so as root (CI) every
    server command runs as the ``postgres`` user Debian's package creates."""

    def __init__(self) -> None:
        bin_dir = _postgres_bin()
        if bin_dir is None:
            missing_engine("PostgreSQL is not installed (apt-get install postgresql)")
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            missing_engine("asyncpg is not installed (pip install -e '.[test]')")
        assert bin_dir is not None
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "gateway", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self._as, str(self.bin / program), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stdout}\n{done.stderr}")

    def start(self) -> None:
        # fsync off: the tests stop the server cleanly (a fast shutdown still writes everything out).
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w",
                  "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://gateway@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "gateway", name)
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    try:
        yield server
    finally:
        server.close()


_databases = iter(range(1_000_000))


@pytest.fixture
def postgres_url(postgres: Postgres) -> str:
    """A fresh, empty database on the session's server."""
    return postgres.create_database(f"t{next(_databases)}")


# ------------------------------------------------------------------------------------------------- Redis


class Redis:
    """One redis-server: no persistence (``--save ""``, no AOF), its dir a fresh temp dir, a free loopback
    port. ``stop`` and ``start`` again on the same port stand for an outage and a restart that lost
    everything."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing_engine("redis-server is not installed (apt-get install redis-server)")
        try:
            import redis  # noqa: F401
        except ImportError:
            missing_engine("the redis client is not installed (pip install -e '.[test]')")
        assert binary is not None
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="gateway-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--daemonize", "no"], stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {(self.root / 'server.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Redis]:
    server = Redis()
    server.start()
    try:
        yield server
    finally:
        server.close()
