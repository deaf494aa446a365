"""Notices that change (SPEC §14) against real daphne: on SQLite (one process, plus commands and
shells as second processes) and on PostgreSQL + Redis (two daphne processes and a worker process).

Updates and retractions reach exactly the audience; a replay after a disconnect spanning several
updates sends one event per notice in its latest state; many fast updates end in the final state,
never going backwards; a rolled-back update is never streamed; an update from another process
reaches the streams of the first; the job helper works from a worker process; bad input is a 400
that changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.pg_redis import postgres_cluster, redis_server
from tests.support.servers import Daphne, Server, SSEClient, call, has, http, manage, project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

STREAM = "/notifications/stream/"
API = "/notifications/api/"
SETUP = (
    "from django.contrib.auth import get_user_model as g;"
    "U=g(); U.objects.create_superuser('admin','a@example.com','pw-admin-123');"
    "[U.objects.create_user(n, password='pw-'+n+'-123') for n in ('carol', 'dave', 'erin')]"
)


def changes(s: SSEClient) -> list[tuple[str, int, dict[str, Any]]]:
    """(event type, event id, data) of every notification/update/retract read, in order."""
    return [(e.type, int(e.last_event_id), json.loads(e.data)) for e in s.events
            if e.type in ("notification", "update", "retract")]


def progress_reached(notice: int, value: int) -> Callable[[SSEClient], bool]:
    return lambda s: any(t == "update" and d["id"] == notice and d["progress"] == value for t, _, d in changes(s))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("updates")
    env = project_env(f"sqlite:///{tmp / 'db.sqlite3'}", NOTIFICATIONS_HEARTBEAT="0.5")
    manage(env, "migrate", "--noinput")
    manage(env, "shell", "-c", SETUP)
    server = Daphne(env=env, log_path=tmp / "daphne.log").start()
    yield server, env
    server.stop()


async def send(admin: httpx.AsyncClient, **fields: Any) -> int:
    response = await call(admin, "POST", API, {"title": "t", **fields})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def patch(admin: httpx.AsyncClient, notice: int, **fields: Any) -> dict[str, Any]:
    response = await call(admin, "PATCH", f"{API}{notice}/", fields)
    assert response.status_code == 200, response.text
    return response.json()


async def cursor_of(s: SSEClient) -> int:
    await s.read_until(has("hello"))
    return json.loads(s.of_type("hello")[0].data)["cursor"]


async def test_updates_and_retractions_reach_exactly_the_audience(server):
    srv, _ = server
    async with (
        http(srv, "admin") as admin, http(srv, "carol") as carol, http(srv, "dave") as dave,
        SSEClient(carol, STREAM) as sc, SSEClient(dave, STREAM) as sd,
    ):
        await sc.read_until(has("hello"))
        await sd.read_until(has("hello"))
        mine = await send(admin, title="Exporting", recipient="carol")
        everyone = await send(admin, title="Maintenance at 9")
        await patch(admin, mine, progress=40, body="40 %")
        await patch(admin, everyone, title="Maintenance at 10")
        assert (await call(admin, "DELETE", f"{API}{everyone}/")).status_code == 204
        await sc.read_until(has("retract"))
        await sd.read_until(has("retract"))
        seen_c, seen_d = changes(sc), changes(sd)
        assert [(t, d["id"]) for t, _, d in seen_c] == [
            ("notification", mine), ("notification", everyone), ("update", mine), ("update", everyone),
            ("retract", everyone)]
        assert [(t, d["id"]) for t, _, d in seen_d] == [
            ("notification", everyone), ("update", everyone), ("retract", everyone)]
        ids = [i for _, i, _ in seen_c]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        update = seen_c[2][2]
        assert (update["progress"], update["body"], update["title"]) == (40, "40 %", "Exporting")
        assert update["updated_at"] and "read" not in update
        assert seen_c[4][2] == {"id": everyone}
        # The page and the API show the latest state; the retracted one is gone.
        listed = {r["id"]: r for r in (await carol.get(API)).json()["results"]}
        assert listed[mine]["progress"] == 40 and everyone not in listed
        page = (await carol.get("/")).text
        assert "40 %" in page and "Maintenance at" not in page


async def test_replay_after_a_disconnect_spanning_several_updates_sends_each_notice_once_latest(server):
    srv, _ = server
    async with http(srv, "admin") as admin, http(srv, "erin") as erin:
        before = await send(admin, title="before", recipient="erin")
        doomed = await send(admin, title="doomed", recipient="erin")
        async with SSEClient(erin, STREAM) as s:
            cursor = await cursor_of(s)
        for step in range(1, 6):
            await patch(admin, before, progress=step * 10)
        created = await send(admin, title="new", recipient="erin")
        await patch(admin, created, progress=5)
        await patch(admin, created, progress=7)
        await call(admin, "DELETE", f"{API}{doomed}/")
        fleeting = await send(admin, title="fleeting", recipient="erin")
        await call(admin, "DELETE", f"{API}{fleeting}/")
        await patch(admin, before, title="before (final)")
        async with SSEClient(erin, STREAM, headers={"Last-Event-ID": str(cursor)}) as again:
            await again.read_until(has("hello"))
            seen = changes(again)
        assert [(t, d["id"]) for t, _, d in seen] == [
            ("notification", created), ("retract", doomed), ("update", before)]
        assert seen[0][2]["progress"] == 7 and seen[2][2]["progress"] == 50
        assert seen[2][2]["title"] == "before (final)"
        ids = [i for _, i, _ in seen]
        assert ids == sorted(ids)
        hello = json.loads(again.of_type("hello")[0].data)
        assert hello["cursor"] >= ids[-1]


async def test_many_fast_updates_end_in_the_final_state_never_backwards(server):
    srv, _ = server
    async with (
        http(srv, "admin") as admin, http(srv, "carol") as carol, SSEClient(carol, STREAM) as s,
    ):
        await s.read_until(has("hello"))
        notice = await send(admin, title="Crunching", recipient="carol", progress=0)
        for value in range(1, 101):
            await patch(admin, notice, progress=value)
        await s.read_until(progress_reached(notice, 100), timeout=20)
        values = [d["progress"] for t, _, d in changes(s) if t == "update" and d["id"] == notice]
        assert values == sorted(values) and values[-1] == 100
        ids = [i for _, i, _ in changes(s)]
        assert ids == sorted(ids) and len(ids) == len(set(ids))


async def test_a_rolled_back_update_is_never_streamed_and_a_shell_update_arrives(server):
    srv, env = server
    async with http(srv, "admin") as admin, http(srv, "dave") as dave, SSEClient(dave, STREAM) as s:
        await s.read_until(has("hello"))
        notice = await send(admin, title="Rollback", recipient="dave")
        script = (
            "from django.db import transaction; from notifications import services;"
            f"from notifications.models import Notification as N; n=N.objects.get(pk={notice})\n"
            "try:\n    with transaction.atomic():\n        services.update(n, title='ROLLED BACK')\n"
            "        raise RuntimeError\nexcept RuntimeError:\n    pass\n"
            f"services.update(N.objects.get(pk={notice}), progress=99)"
        )
        # A second process on the in-memory layer: the server's hub finds it in the database.
        manage(env, "shell", "-c", script)
        await s.read_until(progress_reached(notice, 99), timeout=15)
        updates = [d for t, _, d in changes(s) if t == "update"]
        assert [d["title"] for d in updates] == ["Rollback"]


async def test_bad_updates_are_400_403_404_and_change_nothing(server):
    srv, _ = server
    async with http(srv, "admin") as admin, http(srv, "carol") as carol:
        notice = await send(admin, title="Steady", recipient="carol")
        for body, needle in (({"progress": 101}, "from 0 to 100"), ({"level": "loud"}, "Unknown level"),
                             ({"recipient": "dave"}, "Unknown field")):
            response = await call(admin, "PATCH", f"{API}{notice}/", body)
            assert response.status_code == 400 and needle in response.json()["error"]
        for method in ("PATCH", "DELETE"):
            response = await call(carol, method, f"{API}{notice}/", {"title": "x"} if method == "PATCH" else None)
            assert response.status_code == 403
        assert (await call(admin, "PATCH", f"{API}99999999/", {"title": "x"})).status_code == 404
        row = next(r for r in (await carol.get(API)).json()["results"] if r["id"] == notice)
        assert (row["title"], row["progress"], row["updated_at"]) == ("Steady", None, None)


# -- PostgreSQL + Redis: two daphne processes and a worker ------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("updates-pg")
    with postgres_cluster() as pg, redis_server(tmp / "redis") as redis:
        database_url = pg.create_database("notifications_updates")
        env = project_env(database_url, REDIS_URL=redis.url, NOTIFICATIONS_HEARTBEAT="0.5")
        manage(env, "migrate", "--noinput")
        manage(env, "shell", "-c", SETUP)
        one = Daphne(env=env, log_path=tmp / "one.log").start()
        two = Daphne(env=env, log_path=tmp / "two.log").start()
        try:
            yield one, two, env
        finally:
            one.stop()
            two.stop()


async def test_updates_from_another_process_and_a_worker_job_reach_streams_of_the_first(pair):
    one, two, env = pair
    async with (
        http(one, "carol") as carol, http(one, "dave") as dave, http(two, "admin") as admin,
        SSEClient(carol, STREAM) as sc, SSEClient(dave, STREAM) as sd,
    ):
        await sc.read_until(has("hello"))
        await sd.read_until(has("hello"))
        notice = await send(admin, title="Exporting", recipient="carol")
        for value in (10, 20, 30):
            await patch(admin, notice, progress=value)
        await sc.read_until(progress_reached(notice, 30))
        # A worker process (a shell here) runs a job with the helper: it ends success at 100.
        script = (
            "from notifications import services\n"
            "with services.job('Nightly import', recipient='carol', done='3 files') as job:\n"
            "    [job.progress(p) for p in range(0, 100, 5)]\n"
            "try:\n"
            "    with services.job('Broken import', recipient='carol') as job:\n"
            "        job.progress(10)\n"
            "        raise ValueError('bad header in row 7')\n"
            "except ValueError:\n    pass\n"
        )
        manage(env, "shell", "-c", script)
        await sc.read_until(lambda s: any(t == "update" and d["level"] == "error" for t, _, d in changes(s)),
                            timeout=15)
        finals: dict[int, dict[str, Any]] = {}
        for t, _, d in changes(sc):
            if t in ("notification", "update"):
                finals[d["id"]] = d
        ends = {d["title"]: (d["level"], d["progress"], d["body"]) for d in finals.values()}
        assert ends["Nightly import"] == ("success", 100, "3 files")
        assert ends["Broken import"] == ("error", 10, "bad header in row 7")
        ids = [i for _, i, _ in changes(sc)]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        await sd.drain(0.5)
        assert changes(sd) == []
