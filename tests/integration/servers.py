"""Real servers for integration tests: daphne (and later redis-server, PostgreSQL) on free ports.

Every server is started by the test, bound to 127.0.0.1, and stopped by the test (by its pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.sse_parser import Event, Parser

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


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


@dataclass
class Daphne:
    """One daphne process serving project.asgi on a free port."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Daphne:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "project.asgi:application"],
            env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running(server: Daphne) -> Iterator[Daphne]:
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
