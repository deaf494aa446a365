"""Real Chromium (Debian's ``chromium``) driven by Playwright against a real daphne process."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import require_binary
from tests.support.servers import Daphne, login, manage, project_env

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
#: Fast timings for tests: the browser's own retry, the keep-alive.
SERVER_SETTINGS = {"NOTIFICATIONS_RETRY_MS": "500", "NOTIFICATIONS_HEARTBEAT": "5"}
USERS_SCRIPT = (
    "from django.contrib.auth import get_user_model as g; from django.contrib.auth.models import Group;"
    "U=g(); U.objects.create_superuser('admin','a@example.com','pw-admin-123');"
    "a=U.objects.create_user('alice',password='pw-alice-123'); a.groups.add(Group.objects.create(name='oncall'));"
    "U.objects.create_user('bob',password='pw-bob-123')"
)


def _playwright() -> Any:
    try:
        from playwright import async_api
    except ImportError:
        message = "needs Playwright for Python (pip install playwright; no browser download: Debian's chromium)"
        if os.environ.get("NOTIFICATIONS_REQUIRE_SERVERS") == "1":
            pytest.fail(message + "; NOTIFICATIONS_REQUIRE_SERVERS=1 forbids skipping")
        pytest.skip(message)
    return async_api


def start_server(tmp: Path, **settings: str) -> Daphne:
    env = project_env(f"sqlite:///{tmp / 'db.sqlite3'}", **{**SERVER_SETTINGS, **settings})
    manage(env, "migrate", "--noinput")
    manage(env, "shell", "-c", USERS_SCRIPT)
    return Daphne(env=env, log_path=tmp / "daphne.log").start()


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = require_binary("chromium", "chromium")
    _playwright()
    return path


@pytest.fixture(scope="module")
def server(chromium_path, tmp_path_factory):
    """One daphne for the module (tests use their own titles); SQLite in a tmp dir."""
    daphne = start_server(tmp_path_factory.mktemp("browser"))
    yield daphne
    daphne.stop()


@pytest.fixture
def fresh_server(chromium_path, tmp_path, request):
    """A daphne of its own, for tests that stop and restart it; settings by indirect parametrize."""
    daphne = start_server(tmp_path, **getattr(request, "param", {}))
    yield daphne
    daphne.stop()


@pytest.fixture
async def browser(chromium_path) -> AsyncIterator[Any]:
    async with _playwright().async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught errors of every page opened through ``open_page``; tests assert it stays empty."""
    return []


@pytest.fixture
def open_page(page_errors) -> Callable[..., Awaitable[Any]]:
    async def open_page(context: Any, server: Daphne, path: str = "/", state: str | None = "connected") -> Any:
        page = await context.new_page()
        page.on("pageerror", lambda exc: page_errors.append(f"{page.url}: {exc}"))
        response = await page.goto(server.url + path)
        assert response is not None and response.status == 200
        if state is not None:
            await wait_state(page, state)
        return page

    return open_page


async def wait_state(page: Any, state: str, timeout: float = 10) -> None:
    await page.wait_for_selector(f'.n-state[data-state="{state}"]', timeout=timeout * 1000)


async def titles(page: Any) -> list[str]:
    return await page.eval_on_selector_all(".n-list .n-item .n-title", "els => els.map(e => e.textContent)")


async def wait_titles(page: Any, wanted: list[str], timeout: float = 10) -> None:
    """Until every title in ``wanted`` is on the page."""
    await page.wait_for_function(
        "wanted => { const have = new Set([...document.querySelectorAll('.n-list .n-title')]"
        ".map(e => e.textContent)); return wanted.every(t => have.has(t)); }",
        arg=wanted,
        timeout=timeout * 1000,
    )


async def sign_in(page: Any, server: Daphne, username: str, password: str) -> None:
    """Through the real login form, as a person would (cookies then hold for the context)."""
    await page.goto(server.url + "/accounts/login/")
    await page.fill("#id_username", username)
    await page.fill("#id_password", password)
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    assert await page.locator(".who strong").text_content() == username


class Admin:
    """Sends notifications through the real admin form of the same daphne."""

    def __init__(self, server: Daphne) -> None:
        self.server = server
        self.client = httpx.AsyncClient(base_url=server.url, follow_redirects=False, timeout=20)
        self._token: str | None = None
        self._pks: dict[tuple[str, str], str] = {}

    async def __aenter__(self) -> Admin:
        await login(self.client, "admin", "pw-admin-123")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def prepare(self) -> None:
        """Load the add form (its CSRF token), so that ``send`` is one POST."""
        page = await self.client.get("/admin/notifications/notification/add/")
        assert page.status_code == 200, page.status_code
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token
        self._token = token.group(1)

    async def send(self, title: str, **fields: str) -> None:
        if self._token is None:
            await self.prepare()
        data = {"title": title, "body": "", "level": "info", "url": "", "recipient": "", "group": "", **fields}
        data["csrfmiddlewaretoken"] = self._token or ""
        response = await self.client.post(
            "/admin/notifications/notification/add/", data=data,
            headers={"Referer": self.server.url + "/admin/notifications/notification/add/"},
        )
        assert response.status_code == 302, response.text[-2000:]

    async def metric(self, name: str) -> int:
        """One value of this daphne's ``/notifications/metrics`` (e.g. ``notifications_open_streams``)."""
        text = (await self.client.get("/notifications/metrics")).text
        match = re.search(rf"^{re.escape(name)} (\d+)", text, re.MULTILINE)
        assert match, text[:2000]
        return int(match.group(1))

    async def open_streams(self) -> int:
        return await self.metric("notifications_open_streams")

    async def wait_open_streams(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while (now := await self.open_streams()) != count:
            assert time.monotonic() < deadline, f"{now} open streams, expected {count}"
            await _pause()


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.1)
