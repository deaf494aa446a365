"""The inbox (SPEC §13) against real daphne on SQLite, through HTTP as a site and a browser drive it:
unread again and archive reach the user's other tabs at once; archived, muted and expired notices
are not replayed; muting spares other users and never mutes ``error``; ``before``/``next`` pages
walk the history exactly once; bad input is a 400 with nothing stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import eventually
from tests.support.servers import Daphne, Server, SSEClient, call, has, http, manage, project_env, received

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STREAM = "/notifications/stream/"
API = "/notifications/api/"
USERS = ["carol", "dave", "erin", "frank"]
SETUP = (
    "from django.contrib.auth import get_user_model as g;"
    "U=g(); U.objects.create_superuser('admin','a@example.com','pw-admin-123');"
    f"[U.objects.create_user(n, password='pw-'+n+'-123') for n in {USERS!r}]"
)


def data_of(s: SSEClient, kind: str) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in s.of_type(kind)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("inbox")
    env = project_env(f"sqlite:///{tmp / 'db.sqlite3'}", NOTIFICATIONS_HEARTBEAT="0.5")
    manage(env, "migrate", "--noinput")
    manage(env, "shell", "-c", SETUP)
    server = Daphne(env=env, log_path=tmp / "daphne.log").start()
    yield server
    server.stop()


async def send(admin: httpx.AsyncClient, **fields: Any) -> int:
    response = await call(admin, "POST", API, {"title": "t", **fields})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def cursor_of(s: SSEClient) -> int:
    await s.read_until(has("hello"))
    return json.loads(s.of_type("hello")[0].data)["cursor"]


async def test_another_tab_learns_unread_and_archive_at_once(server):
    async with (
        http(server, "admin") as admin, http(server, "carol") as tab1, http(server, "carol") as tab2,
        SSEClient(tab1, STREAM) as s1, SSEClient(tab2, STREAM) as s2,
    ):
        await s1.read_until(has("hello"))
        await s2.read_until(has("hello"))
        n = await send(admin, recipient="carol")
        await s2.read_until(received(n))
        assert (await call(tab1, "POST", f"{API}{n}/read/")).json()["unread_count"] == 0
        await s2.read_until(has("read", 1), timeout=5)
        response = await call(tab1, "POST", f"{API}{n}/unread/")
        assert response.status_code == 200 and response.json() == {"id": n, "read": False, "unread_count": 1}
        await s2.read_until(has("read", 2), timeout=5)
        assert data_of(s2, "read") == [
            {"ids": [n], "read": True, "unread_count": 0},
            {"ids": [n], "read": False, "unread_count": 1},
        ]
        response = await call(tab1, "POST", f"{API}{n}/archive/")
        assert response.json() == {"id": n, "archived": True, "unread_count": 0}
        await s2.read_until(has("archive"), timeout=5)
        await s1.read_until(has("archive"), timeout=5)
        assert data_of(s2, "archive") == [{"ids": [n], "archived": True, "unread_count": 0}]
        await call(tab1, "POST", f"{API}{n}/unarchive/")
        await s2.read_until(has("archive", 2), timeout=5)
        assert data_of(s2, "archive")[1] == {"ids": [n], "archived": False, "unread_count": 1}
        # Nobody else hears it.
        async with SSEClient(admin, STREAM) as other:
            await other.read_until(has("hello"))
            await call(tab1, "POST", f"{API}{n}/archive/")
            await s2.read_until(has("archive", 3), timeout=5)
            await other.drain(0.3)
            assert other.of_type("archive") == []
        # 404 for what carol may not see.
        theirs = await send(admin, recipient="dave")
        for action in ("unread", "archive", "unarchive"):
            assert (await call(tab1, "POST", f"{API}{theirs}/{action}/")).status_code == 404


async def test_archived_muted_and_expired_are_not_replayed_after_a_reconnect(server):
    async with http(server, "admin") as admin, http(server, "dave") as dave:
        async with SSEClient(dave, STREAM) as s:
            cursor = await cursor_of(s)
        archived = await send(admin, title="archived")
        muted = await send(admin, title="muted", category="billing")
        loud = await send(admin, title="error", category="billing", level="error")
        expiring = await send(admin, title="expiring", expires_at=1)
        kept = await send(admin, title="kept", category="social")
        assert (await call(dave, "POST", f"{API}{archived}/archive/")).status_code == 200
        response = await call(dave, "PUT", f"{API}preferences/", {"muted": ["billing"]})
        assert response.status_code == 200 and response.json() == {"muted": ["billing"]}

        async def gone() -> bool:
            ids = [r["id"] for r in (await dave.get(API)).json()["results"]]
            return expiring not in ids

        await eventually(gone, timeout=10, interval=0.2, what="the expiring notice leaves the list")
        async with SSEClient(dave, STREAM, headers={"Last-Event-ID": str(cursor)}) as again:
            await again.read_until(has("hello"))
            assert again.notification_ids() == [loud, kept]
        listed = (await dave.get(API)).json()
        assert [r["id"] for r in listed["results"]][:2] == [kept, loud] and muted not in [
            r["id"] for r in listed["results"]
        ]
        assert [r["id"] for r in (await dave.get(f"{API}?muted=1")).json()["results"]] == [muted]
        assert [r["id"] for r in (await dave.get(f"{API}?archived=1")).json()["results"]] == [archived]


async def test_a_muted_category_reaches_others_but_not_the_muter_and_error_breaks_through(server):
    async with http(server, "admin") as admin, http(server, "erin") as erin, http(server, "frank") as frank:
        async with SSEClient(erin, STREAM) as se, SSEClient(frank, STREAM) as sf:
            await se.read_until(has("hello"))
            await sf.read_until(has("hello"))
            # Muted while the stream is open: it follows at once.
            assert (await call(erin, "PUT", f"{API}preferences/", {"muted": ["digest"]})).status_code == 200
            await se.read_until(has("read"), timeout=5)  # the badge's new count
            assert data_of(se, "read")[0]["ids"] == []
            quiet = await send(admin, title="weekly digest", category="digest")
            loud = await send(admin, title="digest failed", category="digest", level="error")
            plain = await send(admin, title="plain")
            await sf.read_until(received(quiet, loud, plain))
            await se.read_until(received(loud, plain))
            assert quiet not in se.notification_ids()
            # Unmuted: the next one arrives.
            assert (await call(erin, "PUT", f"{API}preferences/", {"muted": []})).status_code == 200
            again = await send(admin, title="next digest", category="digest")
            await se.read_until(received(again))
        count = (await erin.get(API)).json()["unread_count"]
        assert count >= 4  # the digest counts again once unmuted


async def test_before_and_next_walk_the_whole_history_exactly_once(server):
    async with http(server, "admin") as admin, http(server, "carol") as carol:
        for i in range(7):
            await send(admin, title=f"history {i}", category="history")
        everything = [r["id"] for r in (await carol.get(f"{API}?category=history")).json()["results"]]
        assert len(everything) == 7
        seen: list[int] = []
        url = f"{API}?category=history&limit=3"
        for _ in range(10):
            body = (await carol.get(url)).json()
            seen += [r["id"] for r in body["results"]]
            if body["next"] is None:
                break
            url = f"{API}?category=history&limit=3&before={body['next']}"
        assert seen == everything
        page = await carol.get("/notifications/?category=history")
        assert page.status_code == 200 and "history" in page.text


@pytest.mark.parametrize(
    ("method", "path", "body", "needle"),
    [
        ("POST", API, {"title": "t", "category": "not a slug"}, "category"),
        ("POST", API, {"title": "t", "category": "c" * 51}, "category"),
        ("POST", API, {"title": "t", "data": ["list"]}, "data must be a JSON object"),
        ("POST", API, {"title": "t", "data": {"x": "y" * 9000}}, "data may be at most"),
        ("POST", API, {"title": "t", "expires_at": "whenever"}, "ISO 8601"),
        ("PUT", f"{API}preferences/", {"muted": [], "sound": "on"}, "Unknown field(s): sound"),
        ("PUT", f"{API}preferences/", {"muted": ["a b"]}, "Not a category slug"),
        ("GET", f"{API}?before=abc", None, "integers"),
        ("GET", f"{API}?archived=yes", None, "archived must be 1 or 0"),
        ("GET", f"{API}?category=%2F", None, "category must be a slug"),
    ],
)
async def test_bad_input_is_a_400_and_nothing_is_stored(server, method, path, body, needle):
    async with http(server, "admin") as admin:
        before = (await admin.get(f"{API}?limit=1")).json()["results"]
        response = await call(admin, method, path, body)
        assert response.status_code == 400, response.text
        assert needle in response.json()["error"]
        assert (await admin.get(f"{API}?limit=1")).json()["results"] == before
        assert (await admin.get(f"{API}preferences/")).json() == {"muted": []}


async def test_writes_without_csrf_are_refused(server):
    async with http(server, "carol") as carol:
        response = await carol.put(f"{API}preferences/", content=b'{"muted": ["x"]}',
                                   headers={"Content-Type": "application/json"})
        assert response.status_code == 403
        assert (await carol.get(f"{API}preferences/")).json() == {"muted": []}
