"""Real servers for integration tests: daphne and uvicorn on free ports (redis-server and
PostgreSQL are in ``pg_redis``), and clients that read them over real HTTP.

Every server is started by the test, bound to 127.0.0.1, and stopped by the test (by its pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx

from tests.support.ports import free_port, wait_for_port  # other test modules import them from here too
from tests.support.sse import Event, Parser

ROOT = Path(__file__).resolve().parents[2]


def project_env(database_url: str, **extra: str) -> dict[str, str]:
    """Environment for a project process: test settings, the given database, NOTIFICATIONS_* as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFICATIONS_", "DJANGO_", "REDIS_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DJANGO_SECRET_KEY="insecure-key-for-tests-only",
        DATABASE_URL=database_url,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
        check=check, timeout=120,
    )


def require_module(*modules: str, package: str) -> None:
    """Skip unless the Python modules are installed (fail under CI: NOTIFICATIONS_REQUIRE_SERVERS=1)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        import pytest  # not at import time: soak/ and bench/ use these helpers outside pytest

        message = f"needs {', '.join(missing)} from the PyPI package {package!r} (pip install -e '.[test]')"
        if os.environ.get("NOTIFICATIONS_REQUIRE_SERVERS") == "1":
            pytest.fail(message + "; NOTIFICATIONS_REQUIRE_SERVERS=1 forbids skipping")
        pytest.skip(message)


@dataclass
class Server:
    """One ASGI server process serving project.asgi on a free 127.0.0.1 port, stopped by its pid.

    Subclasses give the command line; tests take the class from ``SERVERS`` so the same
    test runs under each server.
    """

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    name: ClassVar[str] = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command(), env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Daphne(Server):
    """daphne, as in production (``daphne -b … -p … project.asgi:application``)."""

    name: ClassVar[str] = "daphne"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "project.asgi:application"]


@dataclass
class Uvicorn(Server):
    """uvicorn with uvloop and httptools, as docs/deployment.md runs it.

    The graceful-shutdown timeout is long on purpose: a SIGTERM that ends the streams
    quickly proves the app's shutdown hook did it, not the timeout.
    """

    name: ClassVar[str] = "uvicorn"
    graceful_timeout: ClassVar[int] = 30

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port),
            "--loop", "uvloop", "--http", "httptools",
            "--timeout-graceful-shutdown", str(self.graceful_timeout), "project.asgi:application",
        ]

    def start(self) -> Self:
        require_module("uvicorn", "uvloop", "httptools", package="uvicorn[standard]")
        return super().start()


#: Every supported production server, by name; integration tests parametrize over these.
SERVERS: dict[str, type[Server]] = {"daphne": Daphne, "uvicorn": Uvicorn}


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


class SSEClient:
    """Reads one stream over real HTTP (httpx), parsing events as a browser would."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.url = url
        self.headers = {"Accept": "text/event-stream", **(headers or {})}
        self.parser = Parser()
        self.events: list[Event] = []
        self.response: httpx.Response | None = None
        self._stack = contextlib.AsyncExitStack()
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SSEClient:
        self.response = await self._stack.enter_async_context(
            self.client.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(30, read=None))
        )
        self._task = asyncio.create_task(self._pump())
        return self

    async def _pump(self) -> None:
        assert self.response is not None
        try:
            async for chunk in self.response.aiter_raw():
                self._chunks.put_nowait(chunk)
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        finally:
            self._chunks.put_nowait(None)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self._stack.aclose()

    @property
    def ended(self) -> bool:
        return self._task is not None and self._task.done() and self._chunks.empty()

    async def read_until(self, predicate, timeout: float = 10) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out; events so far: {self.events!r}")
            try:
                chunk = await asyncio.wait_for(self._chunks.get(), remaining)
            except TimeoutError:
                continue
            if chunk is None:
                if predicate(self):
                    return
                raise AssertionError(f"stream ended; events so far: {self.events!r}")
            self.events += self.parser.feed(chunk)

    async def drain(self, seconds: float) -> None:
        """Read whatever arrives for ``seconds`` (to show nothing more comes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(self._chunks.get(), remaining)
            except TimeoutError:
                return
            if chunk is None:
                self._chunks.put_nowait(None)
                return
            self.events += self.parser.feed(chunk)

    def of_type(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.type == kind]

    def notification_ids(self) -> list[int]:
        return [json.loads(e.data)["id"] for e in self.of_type("notification")]


async def login(client: httpx.AsyncClient, username: str, password: str) -> None:
    """Sign in through the real login form (session cookie + CSRF), as a browser would."""
    page = await client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    response = await client.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1), "next": "/"},
        headers={"Referer": str(client.base_url) + "/accounts/login/"},
    )
    assert response.status_code == 302, response.text[:500]


async def admin_add(client: httpx.AsyncClient, **fields: str) -> int:
    """Add a notification through the real admin form; returns its id."""
    page = await client.get("/admin/notifications/notification/add/")
    assert page.status_code == 200, page.status_code
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token
    data = {"title": "", "body": "", "level": "info", "url": "", "recipient": "", "group": "", **fields}
    data["csrfmiddlewaretoken"] = token.group(1)
    response = await client.post(
        "/admin/notifications/notification/add/", data=data,
        headers={"Referer": str(client.base_url) + "/admin/notifications/notification/add/"},
    )
    assert response.status_code == 302, response.text[-2000:]
    listing = await client.get("/admin/notifications/notification/")
    ids = [int(m) for m in re.findall(r"/admin/notifications/notification/(\d+)/change/", listing.text)]
    return max(ids)


# -- what the integration tests share ---------------------------------------------------------


def has(kind: str, count: int = 1) -> Callable[[SSEClient], bool]:
    """``read_until`` predicate: at least ``count`` events of ``kind``."""
    return lambda s: len(s.of_type(kind)) >= count


def received(*ids: int) -> Callable[[SSEClient], bool]:
    """``read_until`` predicate: every one of ``ids`` arrived as a notification."""
    return lambda s: set(ids) <= set(s.notification_ids())


@contextlib.asynccontextmanager
async def http(server: Server, username: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``server``, signed in through the login form when ``username`` is given
    (the test users' password is ``pw-<username>-123``)."""
    async with httpx.AsyncClient(base_url=server.url, follow_redirects=False) as client:
        if username:
            await login(client, username, f"pw-{username}-123")
        yield client


async def call(client: httpx.AsyncClient, method: str, path: str, body: Any = None) -> httpx.Response:
    """A same-origin fetch with Django's CSRF header, as the page's client makes it."""
    token = client.cookies.get("csrftoken")
    assert token
    headers = {"X-CSRFToken": token, "Referer": str(client.base_url) + "/"}
    content = json.dumps(body).encode() if body is not None else None
    if content is not None:
        headers["Content-Type"] = "application/json"
    return await client.request(method, path, content=content, headers=headers)
