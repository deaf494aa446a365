"""The stream over real HTTP from a real server process (daphne, then uvicorn): admin adds,
audiences, replay, heartbeats, errors, and what differs behind a proxy."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.servers import SERVERS, SSEClient, admin_add, login, manage, project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request, tmp_path_factory):
    kind = request.param
    tmp = tmp_path_factory.mktemp(kind)
    env = project_env(f"sqlite:///{tmp / 'db.sqlite3'}", NOTIFICATIONS_HEARTBEAT="0.5")
    manage(env, "migrate", "--noinput")
    script = (
        "from django.contrib.auth import get_user_model as g; from django.contrib.auth.models import Group;"
        "U=g(); U.objects.create_superuser('admin','a@example.com','pw-admin-123');"
        "a=U.objects.create_user('alice',password='pw-alice-123'); a.groups.add(Group.objects.create(name='oncall'));"
        "U.objects.create_user('bob',password='pw-bob-123')"
    )
    manage(env, "shell", "-c", script)
    server = SERVERS[kind](env=env, log_path=tmp / f"{kind}.log").start()
    yield server
    server.stop()


async def client_for(server, username=None, password=None) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=server.url, follow_redirects=False)
    if username:
        await login(client, username, password)
    return client


def has(kind, count=1):
    return lambda s: len(s.of_type(kind)) >= count


async def test_admin_add_reaches_anonymous_and_signed_in_stream_once(server):
    admin = await client_for(server, "admin", "pw-admin-123")
    anon = await client_for(server)
    alice = await client_for(server, "alice", "pw-alice-123")
    url = "/notifications/stream/"
    async with SSEClient(anon, url) as a, SSEClient(alice, url) as b:
        assert a.response.status_code == 200
        assert a.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert a.response.headers["x-accel-buffering"] == "no"
        await a.read_until(has("hello"))
        await b.read_until(has("hello"))
        assert json.loads(b.of_type("hello")[0].data)["user"] == "alice"
        nid = await admin_add(admin, title="Deploy at 6", body="<b>bold?</b>", level="warning")
        await a.read_until(has("notification"))
        await b.read_until(has("notification"))
        await a.drain(0.7)
        await b.drain(0.7)
        assert a.notification_ids() == [nid] and b.notification_ids() == [nid]
        data = json.loads(a.of_type("notification")[0].data)
        assert data["title"] == "Deploy at 6" and data["body"] == "<b>bold?</b>" and data["level"] == "warning"
    for c in (admin, anon, alice):
        await c.aclose()


async def test_targeted_live_and_replayed_reach_only_their_audience(server):
    admin = await client_for(server, "admin", "pw-admin-123")
    alice = await client_for(server, "alice", "pw-alice-123")
    bob = await client_for(server, "bob", "pw-bob-123")
    url = "/notifications/stream/"
    async with SSEClient(alice, url) as a, SSEClient(bob, url) as b:
        await a.read_until(has("hello"))
        await b.read_until(has("hello"))
        start = int(a.of_type("hello")[0].last_event_id)
        group_id = await admin_add(admin, title="oncall page", group=await _group_pk(admin, "oncall"))
        to_bob = await admin_add(admin, title="for bob", recipient=await _user_pk(admin, "bob"))
        everyone = await admin_add(admin, title="all hands")
        await a.read_until(lambda s: everyone in s.notification_ids())
        await b.read_until(lambda s: everyone in s.notification_ids())
        assert a.notification_ids() == [group_id, everyone]
        assert b.notification_ids() == [to_bob, everyone]
    # Replayed, through a new connection with Last-Event-ID: the same audiences.
    async with SSEClient(alice, url, {"Last-Event-ID": str(start)}) as a, SSEClient(
        bob, url, {"Last-Event-ID": str(start)}
    ) as b:
        await a.read_until(has("hello"))
        await b.read_until(has("hello"))
        assert a.notification_ids() == [group_id, everyone]
        assert b.notification_ids() == [to_bob, everyone]
    for c in (admin, alice, bob):
        await c.aclose()


async def test_replay_after_disconnect_returns_exactly_the_missed_ones(server):
    admin = await client_for(server, "admin", "pw-admin-123")
    anon = await client_for(server)
    url = "/notifications/stream/"
    async with SSEClient(anon, url) as a:
        await a.read_until(has("hello"))
        first = await admin_add(admin, title="seen live")
        await a.read_until(lambda s: first in s.notification_ids())
        last_seen = a.parser.last_event_id
    missed = [await admin_add(admin, title=f"missed {i}") for i in range(2)]
    async with SSEClient(anon, url, {"Last-Event-ID": last_seen}) as a:
        await a.read_until(has("hello"))
        await a.drain(0.5)
        assert a.notification_ids() == missed
    await admin.aclose()
    await anon.aclose()


async def test_heartbeat_comment_arrives(server):
    async with httpx.AsyncClient(base_url=server.url) as anon, SSEClient(anon, "/notifications/stream/") as a:
        await a.read_until(lambda s: "ping" in s.parser.comments, timeout=5)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/notifications/stream/", {"Last-Event-ID": "abc"}, 400),
        ("GET", "/notifications/stream/", {"Last-Event-ID": "-3"}, 400),
        ("GET", "/notifications/stream/?last_event_id=1e9", {}, 400),
        ("POST", "/notifications/stream/", {}, 405),
        ("PUT", "/notifications/stream/", {}, 405),
    ],
)
async def test_bad_input_gets_its_error(server, method, path, headers, status):
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.request(method, path, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.strip()


async def _user_pk(client: httpx.AsyncClient, username: str) -> str:
    import re

    page = await client.get(f"/admin/auth/user/?q={username}")
    ids = re.findall(r"/admin/auth/user/(\d+)/change/", page.text)
    assert ids
    return ids[0]


async def _group_pk(client: httpx.AsyncClient, name: str) -> str:
    import re

    page = await client.get(f"/admin/auth/group/?q={name}")
    ids = re.findall(r"/admin/auth/group/(\d+)/change/", page.text)
    assert ids
    return ids[0]


@pytest.mark.parametrize("forwarded", ["203.0.113.9", "127.0.0.1, 203.0.113.9"], ids=["client", "forged-prefix"])
async def test_metrics_see_the_forwarded_client_only_where_proxy_headers_are_on(server, forwarded):
    """``/notifications/metrics`` answers direct loopback clients (no token set), but never a
    request that carries a forwarding header: whatever address the server derived from it (uvicorn
    reads ``X-Forwarded-For`` from 127.0.0.1; daphne as started here ignores it), a proxied
    request is not the local scraper (docs/security.md)."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        direct = await client.get("/notifications/metrics")
        proxied = await client.get("/notifications/metrics", headers={"X-Forwarded-For": forwarded})
    assert direct.status_code == 200
    assert proxied.status_code == 403
