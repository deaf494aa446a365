"""Scale-out with real servers: two server processes on one PostgreSQL and one redis-server.

Every server is started here on a free 127.0.0.1 port and stopped by its pid. The
cross-process scenarios run against both channels-redis layers (``REDIS_LAYER``) and under
each supported server (``SERVERS``: daphne, uvicorn), both processes of a test being the same
server. Three run under daphne only, because they test the hub against Redis and PostgreSQL
and the server plays no part in them: the idle-stream read timeout, the Redis restart and the
concurrent writers (they are also the slowest here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.pg_redis import PostgresCluster, RedisServer, postgres_cluster, redis_server
from tests.support.servers import ROOT, SERVERS, Server, SSEClient, Uvicorn, admin_add, login, manage, project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STREAM = "/notifications/stream/"
USERS_SCRIPT = (
    "from django.contrib.auth import get_user_model as g; from django.contrib.auth.models import Group;"
    "U=g(); U.objects.create_superuser('admin','a@example.com','pw-admin-123');"
    "a=U.objects.create_user('alice',password='pw-alice-123'); a.groups.add(Group.objects.create(name='oncall'))"
)


@dataclass
class Backing:
    """One PostgreSQL database and one redis-server shared by every server of a test module."""

    pg: PostgresCluster
    redis: RedisServer
    database_url: str
    tmp: Path

    def env(self, layer: str, **extra: str) -> dict[str, str]:
        return project_env(
            self.database_url, REDIS_URL=self.redis.url, REDIS_LAYER=layer, NOTIFICATIONS_HEARTBEAT="0.5", **extra
        )

    def ids_after(self, after: int) -> list[int]:
        with psycopg.connect(self.database_url.replace("postgres://", "postgresql://")) as conn:
            rows = conn.execute(
                "SELECT id FROM notifications_notification WHERE id > %s ORDER BY id", (after,)
            ).fetchall()
        return [row[0] for row in rows]


@pytest.fixture(scope="module")
def backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backing]:
    tmp = tmp_path_factory.mktemp("scaleout")
    with postgres_cluster() as pg, redis_server(tmp / "redis") as redis:
        database_url = pg.create_database("notifications_scaleout")
        env = project_env(database_url, REDIS_URL=redis.url)
        manage(env, "migrate", "--noinput")
        manage(env, "shell", "-c", USERS_SCRIPT)
        yield Backing(pg, redis, database_url, tmp)


@pytest.fixture(params=["pubsub", "core"])
def layer(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=list(SERVERS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


#: For the tests where the server plays no part (module docstring).
DAPHNE_ONLY = pytest.mark.parametrize("kind", ["daphne"], indirect=True)


@pytest.fixture
def processes(backing: Backing, layer: str, kind: str) -> Iterator[Callable[..., Server]]:
    """Start server processes of ``kind`` on the shared database and Redis; all stopped (by pid) after."""
    started: list[Server] = []

    def start(name: str, **extra: str) -> Server:
        log = backing.tmp / f"{name}-{kind}-{layer}.log"
        server = SERVERS[kind](env=backing.env(layer, **extra), log_path=log).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@contextlib.asynccontextmanager
async def http(server: Server, username: str | None = None, password: str | None = None) -> AsyncIterator[
    httpx.AsyncClient
]:
    async with httpx.AsyncClient(base_url=server.url, follow_redirects=False) as client:
        if username:
            assert password
            await login(client, username, password)
        yield client


class EndAwareSSEClient(SSEClient):
    """An SSEClient that remembers whether the response ended cleanly or broke off."""

    broke_off: Exception | None = None

    async def _pump(self) -> None:
        assert self.response is not None
        try:
            async for chunk in self.response.aiter_raw():
                self._chunks.put_nowait(chunk)
        except httpx.HTTPError as exc:
            self.broke_off = exc
        except asyncio.CancelledError:
            pass
        finally:
            self._chunks.put_nowait(None)


def has(kind: str, count: int = 1) -> Callable[[SSEClient], bool]:
    return lambda s: len(s.of_type(kind)) >= count


def received(*ids: int) -> Callable[[SSEClient], bool]:
    return lambda s: set(ids) <= set(s.notification_ids())


def cursor_of(stream: SSEClient) -> int:
    return int(stream.of_type("hello")[0].last_event_id)


def assert_strictly_increasing(ids: list[int]) -> None:
    assert all(a < b for a, b in zip(ids, ids[1:], strict=False)), ids


def notify_in_other_process(env: dict[str, str], *titles: str) -> list[int]:
    """``notify()`` from a separate Python process (a shell, a worker): no event loop, no server."""
    script = (
        "import json, sys; from notifications.services import notify;"
        f"print(json.dumps([notify(t).id for t in {list(titles)!r}]))"
    )
    out = manage(env, "shell", "-c", script).stdout
    return json.loads(out.strip().splitlines()[-1])


async def test_stream_on_a_receives_what_is_created_through_b_exactly_once(processes, backing, layer):
    a, b = processes("a"), processes("b")
    async with http(a) as anon_a, http(a, "alice", "pw-alice-123") as alice_a, http(
        b, "admin", "pw-admin-123"
    ) as admin_b, SSEClient(anon_a, STREAM) as s1, SSEClient(alice_a, STREAM) as s2, SSEClient(admin_b, STREAM) as s3:
        for s in (s1, s2, s3):
            await s.read_until(has("hello"))
        start = cursor_of(s1)
        via_admin = [await admin_add(admin_b, title=f"from B {i}") for i in range(3)]
        via_shell = notify_in_other_process(backing.env(layer), "from a shell")
        expected = via_admin + via_shell
        for s in (s1, s2, s3):
            await s.read_until(received(*expected))
            await s.drain(0.6)
            assert s.notification_ids() == expected
        assert backing.ids_after(start) == expected


async def test_reconnect_to_b_with_last_event_id_replays_exactly_the_missed(processes, layer):
    a, b = processes("a"), processes("b")
    async with http(a) as anon_a, http(b) as anon_b, http(b, "admin", "pw-admin-123") as admin_b:
        async with SSEClient(anon_a, STREAM) as s:
            await s.read_until(has("hello"))
            seen = await admin_add(admin_b, title="seen live on A")
            await s.read_until(received(seen))
            last = s.parser.last_event_id
        missed = [await admin_add(admin_b, title=f"missed {i}") for i in range(3)]
        async with SSEClient(anon_b, STREAM, {"Last-Event-ID": last}) as s:
            await s.read_until(has("hello"))
            assert s.notification_ids() == missed
            after = await admin_add(admin_b, title="live on B")
            await s.read_until(received(after))
            await s.drain(0.6)
            assert s.notification_ids() == [*missed, after]


async def _writer(admin: httpx.AsyncClient, stop: asyncio.Event, made: list[int], limit: int = 200) -> None:
    """Create notices through one server until told to stop (bounded in count)."""
    for i in range(limit):
        if stop.is_set():
            return
        made.append(await admin_add(admin, title=f"during the outage {i}"))
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_killing_a_loses_nothing_for_streams_that_reconnect_to_b(processes, backing, layer, sig):
    a, b = processes("a"), processes("b")
    async with http(a) as anon_a, http(a, "alice", "pw-alice-123") as alice_a, http(b) as anon_b, http(
        b, "alice", "pw-alice-123"
    ) as alice_b, http(b, "admin", "pw-admin-123") as admin_b:
        first = [EndAwareSSEClient(anon_a, STREAM), EndAwareSSEClient(alice_a, STREAM)]
        for s in first:
            await s.__aenter__()
            await s.read_until(has("hello"))
        start = cursor_of(first[0])
        stop, made = asyncio.Event(), []
        writer = asyncio.create_task(_writer(admin_b, stop, made))
        try:
            await first[0].read_until(lambda s: len(s.notification_ids()) >= 3)
            killed_at = time.monotonic()
            assert a.proc is not None
            a.proc.send_signal(sig)
            for s in first:
                await s.read_until(lambda s: s.ended, timeout=5)
            ended_after = time.monotonic() - killed_at
            if sig == signal.SIGTERM:
                # Quickly, and cleanly: the last chunk arrives, the response is not cut off, and
                # the process exits, well before uvicorn's graceful-shutdown timeout.
                assert ended_after < 3, f"SIGTERM took {ended_after:.1f}s to end the streams"
                assert [s.broke_off for s in first] == [None, None]
                assert a.proc.wait(10) is not None
                exited_after = time.monotonic() - killed_at
                assert exited_after < min(5, Uvicorn.graceful_timeout / 2), f"exited after {exited_after:.1f}s"
            second = [
                SSEClient(client, STREAM, {"Last-Event-ID": s.parser.last_event_id})
                for client, s in zip((anon_b, alice_b), first, strict=True)
            ]
            for s in second:
                await s.__aenter__()
                await s.read_until(has("hello"))
            await first[0].drain(0)
            await asyncio.sleep(0.3)  # a few more notices while the streams are on B
        finally:
            stop.set()
            await writer
        try:
            expected = backing.ids_after(start)
            assert expected == made
            for before, after in zip(first, second, strict=True):
                missed = [i for i in expected if i not in before.notification_ids()]
                await after.read_until(received(*missed))
                await after.drain(0.6)
                ids = before.notification_ids() + after.notification_ids()
                assert ids == expected, (before.notification_ids(), after.notification_ids())
        finally:
            for s in first + second:
                await s.__aexit__(None, None, None)


@DAPHNE_ONLY
async def test_idle_stream_still_receives_live_after_longer_than_the_redis_read_timeout(processes, layer):
    a, b = processes("a"), processes("b")
    async with http(a) as anon_a, http(b, "admin", "pw-admin-123") as admin_b, SSEClient(anon_a, STREAM) as s:
        await s.read_until(has("hello"))
        # Idle for longer than redis-py 8's 5 s socket timeout (and channels-redis' 5 s BZPOPMIN);
        # heartbeats keep coming meanwhile, which is how a deaf stream would look healthy.
        await s.drain(7)
        assert len(s.parser.comments) >= 5 and not s.notification_ids()
        nid = await admin_add(admin_b, title="after a quiet spell")
        sent = time.monotonic()
        await s.read_until(received(nid), timeout=10)
        latency = time.monotonic() - sent
    log = a.log()
    assert "Channel layer receive failed" not in log, log[-3000:]
    # The live path, not the 2 s database tail check, delivered it.
    assert latency < 1.5, latency


@DAPHNE_ONLY
async def test_redis_restart_loses_nothing_once_it_is_back(processes, backing, layer):
    a, b = processes("a"), processes("b")
    async with http(a) as anon_a, http(b) as anon_b, http(b, "admin", "pw-admin-123") as admin_b, SSEClient(
        anon_a, STREAM
    ) as sa, SSEClient(anon_b, STREAM) as sb:
        for s in (sa, sb):
            await s.read_until(has("hello"))
        start = cursor_of(sa)
        before = await admin_add(admin_b, title="before the restart")
        await sa.read_until(received(before))
        backing.redis.stop()
        during = [await admin_add(admin_b, title=f"while Redis is down {i}") for i in range(3)]
        backing.redis.start()
        after = [await admin_add(admin_b, title=f"after the restart {i}") for i in range(3)]
        expected = [before, *during, *after]
        assert backing.ids_after(start) == expected
        for s in (sa, sb):
            await s.read_until(received(*expected), timeout=20)
            await s.drain(0.6)
            assert s.notification_ids() == expected
        # And the live path is back: a new notice arrives without waiting for a tail check.
        for i in range(3):
            nid = await admin_add(admin_b, title=f"live again {i}")
            sent = time.monotonic()
            await sa.read_until(received(nid), timeout=10)
            if time.monotonic() - sent < 1.0:
                break
        else:
            pytest.fail("after the restart, notices only arrive through the database tail check")


# -- PostgreSQL: ids follow commit order --------------------------------------------------------

HOLD_SCRIPT = """
import pathlib, sys, time
from django.db import transaction
from notifications.models import Notification
from notifications.services import notify
ready, go, locked = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == "locked"
with transaction.atomic():
    n = notify("slow") if locked else Notification.objects.create(title="slow, no lock")
    ready.write_text(str(n.id))
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
"""
FAST_SCRIPT = """
import pathlib, sys
from notifications.models import Notification
from notifications.services import notify
done, locked = pathlib.Path(sys.argv[1]), sys.argv[2] == "locked"
n = notify("fast") if locked else Notification.objects.create(title="fast, no lock")
done.write_text(str(n.id))
"""


def _python(env: dict[str, str], script: str, *args: str) -> subprocess.Popen[str]:
    code = "import django; django.setup()\n" + script
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _backends_waiting_on_a_lock(backing: Backing) -> int:
    with psycopg.connect(backing.database_url.replace("postgres://", "postgresql://")) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("locked", [True, False], ids=["with-lock_sequence", "control-without-lock"])
def test_a_late_commit_is_never_skipped_by_an_id_cursor_reader(backing, tmp_path, locked):
    """Writer 1 inserts and holds its transaction open; writer 2 inserts meanwhile.

    Through ``services`` (``lock_sequence``), writer 2 waits for writer 1 to commit, so its id
    is higher and commits later: a reader of ``id > cursor`` sees both. The control inserts
    without the lock and shows the reader skipping writer 1's row, so the test has teeth.
    """
    env = project_env(backing.database_url)  # no Redis needed: this is about the database
    mode = "locked" if locked else "unlocked"
    ready, go, done = tmp_path / "ready", tmp_path / "go", tmp_path / "done"
    start = max(backing.ids_after(0), default=0)
    slow = _python(env, HOLD_SCRIPT, str(ready), str(go), mode)
    fast: subprocess.Popen[str] | None = None
    try:
        _wait_for(ready.exists, 30, "writer 1 to insert")
        fast = _python(env, FAST_SCRIPT, str(done), mode)
        if locked:
            _wait_for(lambda: _backends_waiting_on_a_lock(backing) >= 1, 30, "writer 2 to wait on the lock")
            assert not done.exists()
        else:
            _wait_for(done.exists, 30, "writer 2 to commit")
        # The reader's cursor moves to whatever it sees now.
        cursor = max(backing.ids_after(start), default=start)
        go.touch()
        assert slow.wait(30) == 0, slow.stdout and slow.stdout.read()
        assert fast.wait(30) == 0, fast.stdout and fast.stdout.read()
    finally:
        go.touch()
        for proc in (slow, fast):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
    slow_id, fast_id = int(ready.read_text()), int(done.read_text())
    read_later = backing.ids_after(cursor)
    if locked:
        assert slow_id < fast_id
        assert cursor == start and read_later == [slow_id, fast_id]
    else:
        assert slow_id < fast_id == cursor
        assert slow_id not in read_later  # skipped for good: what lock_sequence prevents


WRITER_SCRIPT = """
import json, random, sys, time
from django.db import transaction
from notifications.services import notify
rng, ids = random.Random(int(sys.argv[1])), []
for i in range(int(sys.argv[2])):
    with transaction.atomic():
        ids.append(notify(f"writer {sys.argv[1]} #{i}").id)
        time.sleep(rng.uniform(0, 0.03))  # commit late, sometimes after a later insert would have
print(json.dumps(ids))
"""


@DAPHNE_ONLY
async def test_concurrent_writers_in_several_processes_reach_every_stream_in_id_order(processes, backing, layer):
    a, b = processes("a"), processes("b")
    writers, per_writer = 4, 25
    async with http(a) as anon_a, http(b) as anon_b, SSEClient(anon_a, STREAM) as sa, SSEClient(anon_b, STREAM) as sb:
        for s in (sa, sb):
            await s.read_until(has("hello"))
        start = cursor_of(sa)
        seen: list[int] = []
        stop = asyncio.Event()

        async def reader() -> None:
            """Polls ``id > cursor`` as a replaying stream would; must never step over a row."""
            cursor = start
            for _ in range(5000):
                ids = await asyncio.to_thread(backing.ids_after, cursor)
                seen.extend(ids)
                cursor = max(ids, default=cursor)
                if stop.is_set() and not ids:
                    return
                await asyncio.sleep(0.005)

        polling = asyncio.create_task(reader())
        env = backing.env(layer)
        procs = [_python(env, WRITER_SCRIPT, str(n), str(per_writer)) for n in range(writers)]
        made: list[int] = []
        for proc in procs:
            out, _ = await asyncio.to_thread(proc.communicate, timeout=90)
            assert proc.returncode == 0, out
            made += json.loads(out.strip().splitlines()[-1])
        stop.set()
        await asyncio.wait_for(polling, 30)
        expected = backing.ids_after(start)
        assert sorted(made) == expected
        assert seen == expected  # the polling reader stepped over nothing
        for s in (sa, sb):
            await s.read_until(received(*expected), timeout=20)
            await s.drain(0.6)
            ids = s.notification_ids()
            assert_strictly_increasing(ids)
            assert ids == expected


# -- uvicorn's lifespan: a stopped process leaves the channel layer ---------------------------------


@pytest.mark.parametrize(("kind", "layer"), [("uvicorn", "core")], indirect=True)
async def test_a_stopped_uvicorn_leaves_the_redis_group_and_startup_is_plain(processes, backing, layer):
    """With the core layer a member stays in a group until ``group_expiry`` (a day) unless it
    leaves: events would keep being queued for a process that is gone. ``servers.lifespan``
    leaves at uvicorn's lifespan shutdown (daphne sends no lifespan events)."""
    import redis

    client = redis.Redis.from_url(backing.redis.url)
    group = "asgi:group:notifications.events"
    try:
        earlier = set(client.zrange(group, 0, -1))  # members left by earlier tests' processes
        a, b = processes("a"), processes("b")
        async with http(a) as anon_a, http(b) as anon_b, SSEClient(anon_a, STREAM) as sa, SSEClient(
            anon_b, STREAM
        ) as sb:
            for s in (sa, sb):
                await s.read_until(has("hello"))  # each process's hub has joined
            joined = set(client.zrange(group, 0, -1)) - earlier
            assert len(joined) == 2, joined
            a.stop()
            await sa.read_until(lambda s: s.ended, timeout=5)
            left = set(client.zrange(group, 0, -1)) - earlier
    finally:
        client.close()
    assert len(left) == 1 and left < joined, (joined, left)
    log = a.log()
    assert "Application startup complete." in log and "Application shutdown complete." in log, log[-2000:]
    assert "'lifespan' protocol appears unsupported" not in log, log[-2000:]


# -- static files with debug off ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SERVERS))
def test_debug_off_server_serves_the_admin_css(tmp_path, kind):
    env = project_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", DJANGO_DEBUG="0")
    manage(env, "migrate", "--noinput")
    server = SERVERS[kind](env=env, log_path=tmp_path / f"{kind}.log").start()
    try:
        with httpx.Client(base_url=server.url) as client:
            login_page = client.get("/admin/login/")
            assert login_page.status_code == 200
            assert "/static/admin/css/base.css" in login_page.text
            for path in ("/static/admin/css/base.css", "/static/notifications/notifications.css"):
                css = client.get(path)
                assert css.status_code == 200, (path, css.status_code)
                assert css.headers["content-type"].startswith("text/css")
                assert len(css.content) > 100
                assert "max-age" in css.headers.get("cache-control", "")
    finally:
        server.stop()
