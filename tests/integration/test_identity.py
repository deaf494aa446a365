"""Identity changes reach open streams (issue 12 rows 1 and 2), driven the way staff drive them:
the site's logout, the admin's user form, its password form and its delete page — against real
daphne on SQLite, and across two daphne processes on PostgreSQL + Redis."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest

from tests.support.servers import Daphne, Server, SSEClient, admin_add, has, http, manage, project_env, received

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STREAM = "/notifications/stream/"
USERS = ["carol", "dave", "erin", "frank", "gina", "hank", "ivan"]
SETUP = (
    "from django.contrib.auth import get_user_model as g; from django.contrib.auth.models import Group;"
    "U=g(); U.objects.create_superuser('admin','a@example.com','pw-admin-123');"
    "oncall=Group.objects.create(name='oncall'); Group.objects.create(name='ops');"
    f"[U.objects.create_user(n, password='pw-'+n+'-123').groups.add(oncall) for n in {USERS!r}]"
)


def ended(s: SSEClient) -> bool:
    return s.ended


class _Form(HTMLParser):
    """The submittable fields of the first POST form on a page, as a browser would send them."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "").lower() == "post":
            self._in_form = True
        if not self._in_form or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            if kind in ("submit", "button", "file"):
                return
            self.fields.setdefault(name, []).append(a.get("value", "on" if kind == "checkbox" else ""))
        elif tag == "select" and name:
            self._select = name
            self.fields.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in a:
            self.fields[self._select].append(a.get("value", ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = [""]

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.fields[self._textarea][0] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self._in_form = False


async def admin_post_form(client: httpx.AsyncClient, path: str, changes: dict[str, list[str] | None]) -> None:
    """GET an admin form, change some fields (None removes one: an unticked box), POST it back."""
    page = await client.get(path)
    assert page.status_code == 200, (path, page.status_code)
    form = _Form()
    form.feed(page.text)
    fields = form.fields
    for name, value in changes.items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    response = await client.post(
        path, data=fields, headers={"Referer": str(client.base_url) + path}
    )
    assert response.status_code == 302, response.text[-3000:]


async def user_pk(admin: httpx.AsyncClient, username: str) -> str:
    listing = await admin.get(f"/admin/auth/user/?q={username}")
    pks = re.findall(r"/admin/auth/user/(\d+)/change/", listing.text)
    assert len(set(pks)) == 1, pks
    return pks[0]


async def group_pk(admin: httpx.AsyncClient, name: str) -> str:
    listing = await admin.get(f"/admin/auth/group/?q={name}")
    pks = re.findall(r"/admin/auth/group/(\d+)/change/", listing.text)
    assert pks, listing.text[:500]
    return pks[0]


async def logout(client: httpx.AsyncClient) -> None:
    """The site's own logout (Django 5: a POST with the CSRF token)."""
    token = client.cookies.get("csrftoken")
    assert token
    response = await client.post(
        "/accounts/logout/", data={"csrfmiddlewaretoken": token},
        headers={"Referer": str(client.base_url) + "/"},
    )
    assert response.status_code in (200, 302), response.status_code


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("identity")
    env = project_env(f"sqlite:///{tmp / 'db.sqlite3'}", NOTIFICATIONS_HEARTBEAT="0.5")
    manage(env, "migrate", "--noinput")
    manage(env, "shell", "-c", SETUP)
    server = Daphne(env=env, log_path=tmp / "daphne.log").start()
    yield server
    server.stop()


async def hello_user(client: httpx.AsyncClient) -> str | None:
    async with SSEClient(client, STREAM) as s:
        await s.read_until(has("hello"))
        return json.loads(s.of_type("hello")[0].data)["user"]


async def test_logout_ends_that_sessions_streams_before_the_next_notice(server):
    async with http(server, "admin") as admin, http(server, "carol") as one, http(server, "carol") as two:
        async with SSEClient(one, STREAM) as s1, SSEClient(two, STREAM) as s2:
            await s1.read_until(has("hello"))
            await s2.read_until(has("hello"))
            await logout(one)
            await s1.read_until(ended, timeout=5)
            private = await admin_add(admin, title="for carol only", recipient=await user_pk(admin, "carol"))
            await s2.read_until(received(private))
            assert private not in s1.notification_ids()
        assert await hello_user(one) is None
        assert await hello_user(two) == "carol"


async def test_user_made_inactive_in_the_admin_loses_every_stream(server):
    async with http(server, "admin") as admin, http(server, "dave") as dave:
        async with SSEClient(dave, STREAM) as s:
            await s.read_until(has("hello"))
            await admin_post_form(admin, f"/admin/auth/user/{await user_pk(admin, 'dave')}/change/",
                                  {"is_active": None})
            await s.read_until(ended, timeout=5)
        assert await hello_user(dave) is None


async def test_password_changed_in_the_admin_ends_the_users_other_sessions(server):
    async with http(server, "admin") as admin, http(server, "erin") as erin:
        async with SSEClient(erin, STREAM) as s, SSEClient(admin, STREAM) as staff:
            await s.read_until(has("hello"))
            await staff.read_until(has("hello"))
            pk = await user_pk(admin, "erin")
            await admin_post_form(admin, f"/admin/auth/user/{pk}/password/",
                                  {"password1": ["new-pw-erin-456"], "password2": ["new-pw-erin-456"],
                                   "usable_password": ["true"]})
            await s.read_until(ended, timeout=5)
            await staff.drain(0.3)
            assert not staff.ended  # other users' streams stay open
        assert await hello_user(erin) is None


async def test_deleted_user_loses_every_stream(server):
    async with http(server, "admin") as admin, http(server, "ivan") as ivan, SSEClient(ivan, STREAM) as s:
        await s.read_until(has("hello"))
        pk = await user_pk(admin, "ivan")
        page = await admin.get(f"/admin/auth/user/{pk}/delete/")
        assert page.status_code == 200
        response = await admin.post(
            f"/admin/auth/user/{pk}/delete/",
            data={"post": "yes", "csrfmiddlewaretoken": admin.cookies["csrftoken"]},
            headers={"Referer": f"{server.url}/admin/auth/user/{pk}/delete/"},
        )
        assert response.status_code == 302
        await s.read_until(ended, timeout=5)


async def test_removed_from_a_group_stops_its_notices_on_the_open_stream(server):
    async with http(server, "admin") as admin, http(server, "frank") as frank, SSEClient(frank, STREAM) as s:
        await s.read_until(has("hello"))
        oncall = await group_pk(admin, "oncall")
        before = await admin_add(admin, title="oncall, frank a member", group=oncall)
        await s.read_until(received(before))
        await admin_post_form(admin, f"/admin/auth/user/{await user_pk(admin, 'frank')}/change/", {"groups": []})
        after = await admin_add(admin, title="oncall, frank gone", group=oncall)
        everyone = await admin_add(admin, title="to everyone")
        await s.read_until(received(everyone))
        await s.drain(0.5)
        assert s.notification_ids() == [before, everyone]
        assert after not in s.notification_ids()
        assert not s.ended


async def test_added_to_a_group_gets_its_notices_from_then_on_and_after_a_reconnect(server):
    async with http(server, "admin") as admin, http(server, "gina") as gina:
        ops = await group_pk(admin, "ops")
        oncall = await group_pk(admin, "oncall")
        async with SSEClient(gina, STREAM) as s:
            await s.read_until(has("hello"))
            earlier = await admin_add(admin, title="ops, before gina joined", group=ops)
            await s.drain(0.3)
            assert earlier not in s.notification_ids()
            await admin_post_form(admin, f"/admin/auth/user/{await user_pk(admin, 'gina')}/change/",
                                  {"groups": [oncall, ops]})
            joined = await admin_add(admin, title="ops, gina a member", group=ops)
            await s.read_until(received(joined))
            last = s.parser.last_event_id
        missed = await admin_add(admin, title="ops, while gina was away", group=ops)
        async with SSEClient(gina, STREAM, {"Last-Event-ID": last}) as s:
            await s.read_until(received(missed))
            await s.drain(0.3)
            assert s.notification_ids() == [missed]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two daphne processes on one PostgreSQL database and one redis-server (the pub/sub layer)."""
    from tests.support.pg_redis import postgres_cluster, redis_server

    tmp = tmp_path_factory.mktemp("identity-pair")
    with postgres_cluster() as pg, redis_server(tmp / "redis") as redis:
        env = project_env(pg.create_database("notifications_identity"), REDIS_URL=redis.url,
                          NOTIFICATIONS_HEARTBEAT="0.5")
        manage(env, "migrate", "--noinput")
        manage(env, "shell", "-c", SETUP)
        a = Daphne(env=env, log_path=tmp / "a.log").start()
        b = Daphne(env=env, log_path=tmp / "b.log").start()
        try:
            yield a, b
        finally:
            a.stop()
            b.stop()


async def test_changes_made_on_one_process_reach_streams_on_another(pair):
    a, b = pair
    async with http(a, "admin") as admin, http(a, "carol") as carol_a, http(b, "dave") as dave_b:
        # carol signs in on A; her session's stream is on B (same cookie, another process).
        carol_b = httpx.AsyncClient(base_url=b.url, cookies=carol_a.cookies)
        async with carol_b, SSEClient(carol_b, STREAM) as carol, SSEClient(dave_b, STREAM) as dave:
            await carol.read_until(has("hello"))
            await dave.read_until(has("hello"))
            oncall, ops = await group_pk(admin, "oncall"), await group_pk(admin, "ops")
            # dave leaves oncall and joins ops through A's admin; his stream on B follows at once.
            await admin_post_form(admin, f"/admin/auth/user/{await user_pk(admin, 'dave')}/change/",
                                  {"groups": [ops]})
            to_oncall = await admin_add(admin, title="oncall, dave gone", group=oncall)
            to_ops = await admin_add(admin, title="ops, dave joined", group=ops)
            await dave.read_until(received(to_ops))
            assert to_oncall not in dave.notification_ids()
            # carol signs out on A: her stream on B ends.
            await logout(carol_a)
            await carol.read_until(ended, timeout=5)
            assert not dave.ended


async def test_a_stream_whose_session_was_flushed_never_logs_out_later_viewers(server):
    """A stream from a session Django no longer accepts deletes that session's cookie, and only
    that one: the next streams of other users set no cookie (they once did, through a header
    list Channels' session middleware appended to and the consumer shared)."""
    async with http(server, "admin") as admin, http(server, "hank") as hank, http(server, "gina") as gina:
        pk = await user_pk(admin, "hank")
        await admin_post_form(admin, f"/admin/auth/user/{pk}/password/",
                              {"password1": ["new-pw-hank-456"], "password2": ["new-pw-hank-456"],
                               "usable_password": ["true"]})
        async with SSEClient(hank, STREAM) as stale:
            await stale.read_until(has("hello"))
            assert "sessionid=\"\"" in stale.response.headers.get("set-cookie", "")
        for _ in range(2):
            async with SSEClient(gina, STREAM) as s:
                await s.read_until(has("hello"))
                assert "set-cookie" not in s.response.headers
                assert json.loads(s.of_type("hello")[0].data)["user"] == "gina"
