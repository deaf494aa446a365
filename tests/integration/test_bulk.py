"""Bulk sends (SPEC §15) through real servers: two daphnes on one PostgreSQL and one redis-server.

Streams of several users are spread over both processes; a bulk send through the API of one,
or ``manage.py notify --user … --user …`` from a separate process, must reach each user's
streams with exactly their own notice, once, in id order, and nobody else's; a rolled-back
bulk send and one with an unknown user among many deliver and store nothing.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.test_scaleout import (
    STREAM,
    Backing,
    _python,
    assert_strictly_increasing,
    has,
    http,
    received,
)
from tests.support.pg_redis import postgres_cluster, redis_server
from tests.support.servers import Daphne, Server, SSEClient, manage, project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

USERS = [f"member{i}" for i in range(6)]
SETUP = (
    "from django.contrib.auth import get_user_model as g; U=g();"
    "U.objects.create_superuser('admin','a@example.com','pw-admin-123');"
    f"[U.objects.create_user(n, password='pw-'+n+'-123') for n in {USERS!r}]"
)
ROLLBACK_SCRIPT = """
from django.db import transaction
from notifications.services import notify_many
try:
    with transaction.atomic():
        notify_many("rolled back", recipients=["member0", "member1", "member2"])
        raise RuntimeError("roll back")
except RuntimeError:
    print("rolled back")
"""


@pytest.fixture(scope="module")
def backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backing]:
    tmp = tmp_path_factory.mktemp("bulk")
    with postgres_cluster() as pg, redis_server(tmp / "redis") as redis:
        database_url = pg.create_database("notifications_bulk")
        env = project_env(database_url, REDIS_URL=redis.url)
        manage(env, "migrate", "--noinput")
        manage(env, "shell", "-c", SETUP)
        yield Backing(pg, redis, database_url, tmp)


@pytest.fixture
def servers(backing: Backing) -> Iterator[tuple[Server, Server]]:
    started = [Daphne(env=backing.env("pubsub"), log_path=backing.tmp / f"daphne-{name}.log").start()
               for name in ("a", "b")]
    try:
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


async def api_post(client: httpx.AsyncClient, payload: object) -> httpx.Response:
    page = await client.get("/notifications/")
    token = client.cookies.get("csrftoken") or re.search(r'csrfmiddlewaretoken" value="([^"]+)"', page.text)
    return await client.post("/notifications/api/", json=payload, headers={
        "X-CSRFToken": token if isinstance(token, str) else token.group(1),  # type: ignore[union-attr]
        "Referer": str(client.base_url) + "/notifications/",
    })


async def test_bulk_sends_reach_each_user_only_their_own_once_in_order(servers, backing):
    a, b = servers
    streams: dict[str, SSEClient] = {}
    async with contextlib.AsyncExitStack() as stack:
        admin = await stack.enter_async_context(http(b, "admin", "pw-admin-123"))
        for i, name in enumerate(USERS):  # spread over both processes
            client = await stack.enter_async_context(http((a, b)[i % 2], name, f"pw-{name}-123"))
            streams[name] = await stack.enter_async_context(SSEClient(client, STREAM))
        anonymous = await stack.enter_async_context(SSEClient(await stack.enter_async_context(http(a)), STREAM))
        for s in [*streams.values(), anonymous]:
            await s.read_until(has("hello"))
        start = max(backing.ids_after(0), default=0)

        # 1. An unknown user among many: a clear 400, nothing stored.
        bad = await api_post(admin, {"title": "never", "recipients": ["member0", "nobody", "member1"]})
        assert bad.status_code == 400 and "No user is called 'nobody'" in bad.json()["error"]
        # 2. A bulk send rolled back in another process: nothing stored, nothing sent.
        rolled = _python(backing.env("pubsub"), ROLLBACK_SCRIPT)
        out, _ = rolled.communicate(timeout=60)
        assert rolled.returncode == 0 and "rolled back" in out, out
        assert backing.ids_after(start) == []

        # 3. Through the API of b, then the command from a separate process, then once more.
        first = await api_post(admin, {"title": "export ready", "recipients": ["member3", "member0", "member5",
                                                                                "member1"]})
        assert first.status_code == 201, first.text
        sent = {r["id"]: name for r, name in zip(first.json()["results"], ["member3", "member0", "member5",
                                                                             "member1"], strict=True)}
        out = manage(backing.env("pubsub"), "notify", "by command", "--user", "member2", "--user", "member0",
                     "--user", "member4").stdout
        command_ids = [int(x) for x in re.search(r"\(([\d, ]+)\)", out).group(1).split(", ")]  # type: ignore[union-attr]
        sent.update(zip(command_ids, ["member2", "member0", "member4"], strict=True))
        again = await api_post(admin, {"title": "second", "recipients": USERS[::-1]})
        assert again.status_code == 201
        sent.update({r["id"]: name for r, name in zip(again.json()["results"], USERS[::-1], strict=True)})

        assert backing.ids_after(start) == sorted(sent)  # ids as committed, nothing else stored
        for name in USERS:
            mine = sorted(id for id, owner in sent.items() if owner == name)
            await streams[name].read_until(received(*mine), timeout=20)
        for s in [*streams.values(), anonymous]:
            await s.drain(0.8)
        for name in USERS:
            ids = streams[name].notification_ids()
            assert ids == sorted(id for id, owner in sent.items() if owner == name), name
            assert_strictly_increasing(ids)
            titles = [json.loads(e.data)["title"] for e in streams[name].of_type("notification")]
            assert "never" not in titles and "rolled back" not in titles
        assert anonymous.notification_ids() == []
    for server in (a, b):
        log = server.log()
        assert "Dropped a bad channel-layer message" not in log, log[-2000:]
