"""Real redis-server and PostgreSQL for integration tests, on free ports, in temp dirs.

Both bind 127.0.0.1 only and are stopped by their pid. PostgreSQL refuses to run as root, so
when the tests run as root the cluster belongs to the Debian ``postgres`` user and its
processes are started with that uid (``subprocess`` ``user=``/``group=``: the pid we hold is
the postmaster's own, no ``runuser`` in between).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import require_binary
from tests.support.servers import free_port, wait_for_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_binary(name: str) -> str:
    """``initdb``/``postgres`` from Debian's versioned directory (not on PATH), or skip."""
    for directory in PG_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found:
        return found
    return require_binary(name, "postgresql")


def _stop_pid(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class RedisServer:
    """``redis-server`` without persistence on a free port; restartable on the same port."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = require_binary("redis-server", "redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 (closed when the process ends)
        self.proc = subprocess.Popen(
            [
                binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(self.port, proc=self.proc)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} did not answer PING")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if self.proc is not None:
            _stop_pid(self.proc, sig, timeout)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop (by pid) and start again on the same port; ``down_for`` seconds in between."""
        self.stop()
        time.sleep(down_for)
        self.start()


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb in a temp dir, trust auth on 127.0.0.1)."""

    port: int = field(default_factory=free_port)
    directory: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        assert self.directory is not None
        return self.directory / "data"

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _as_owner(self) -> dict[str, object]:
        """Popen arguments that drop root to the ``postgres`` user (nothing when not root)."""
        if os.geteuid() != 0:
            return {}
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root needs the 'postgres' user (Debian package postgresql)") from None
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.directory), "LANG": "C.UTF-8"}
        return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [], "env": env}

    def start(self) -> PostgresCluster:
        initdb, postgres = pg_binary("initdb"), pg_binary("postgres")
        self.directory = Path(tempfile.mkdtemp(prefix="notifications-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        as_owner = self._as_owner()
        subprocess.run(
            [initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
             "--no-instructions"],
            cwd=self.directory, check=True, capture_output=True, timeout=120, **as_owner,  # type: ignore[arg-type]
        )
        log = open(self.directory / "postgres.log", "ab")  # noqa: SIM115 (closed when the process ends)
        self.proc = subprocess.Popen(
            [
                postgres, "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                "-k", str(self.directory), "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200",
            ],
            cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, **as_owner,  # type: ignore[arg-type]
        )
        log.close()
        wait_for_port(self.port, timeout=30, proc=self.proc)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster, by pid), then remove the cluster."""
        if self.proc is not None:
            _stop_pid(self.proc, signal.SIGINT, 30)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        assert self.directory is not None
        return (self.directory / "postgres.log").read_text(errors="replace")


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
