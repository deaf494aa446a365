"""Many processes on one machine, one port: ``uvicorn --workers 4`` on PostgreSQL and redis-server.

The four worker processes share one listening socket (the kernel hands each connection to one
of them); each has its own hub, and every hub hears every event through Redis. Readers are
opened until every worker holds some (which worker holds a connection is read from
``/proc``: the server side of each TCP connection, by socket inode), writers post through
connections held by different workers and from separate processes at the same time. Each
stream must get exactly the notices its viewer may see, once, in id order, and nothing else.

Every process is started here and ended by its pid (the supervisor ends its workers; any
worker still running afterwards is ended by its pid too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
import psycopg
import pytest

from tests.integration.test_scaleout import STREAM, _python, assert_strictly_increasing, has
from tests.support.pg_redis import postgres_cluster, redis_server
from tests.support.servers import SSEClient, Uvicorn, login, manage, project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WORKERS = 4
USERS = [f"worker{i}" for i in range(8)]
TEAM = USERS[:4]  # members of the group "team"
SETUP = (
    "from django.contrib.auth import get_user_model as g; from django.contrib.auth.models import Group;"
    "U=g(); U.objects.create_superuser('admin','a@example.com','pw-admin-123');"
    "t=Group.objects.create(name='team');"
    f"us=[U.objects.create_user(n, password='pw-'+n+'-123') for n in {USERS!r}];"
    f"[u.groups.add(t) for u in us if u.username in {TEAM!r}]"
)
#: A writer in a separate process: single notices to each audience and bulk sends, in a loop.
WRITER = """
import sys
from notifications.services import notify, notify_many
n = int(sys.argv[1])
users = sys.argv[2].split(",")
for i in range(n):
    notify(f"process everyone {i}")
    notify(f"process personal {i}", recipient=users[i % len(users)])
    notify(f"process team {i}", group="team")
    notify_many(f"process bulk {i}", recipients=users[i % 3::3])
print("done")
"""


@dataclass
class UvicornWorkers(Uvicorn):
    """``uvicorn --workers N``: N processes on one port (docs/deployment.md, "Many processes")."""

    name: ClassVar[str] = "uvicorn-workers"
    workers: int = WORKERS

    def command(self) -> list[str]:
        return [*super().command()[:-1], "--workers", str(self.workers), "project.asgi:application"]

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in children if _listens(int(pid), self.port)]


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _tcp_rows() -> list[tuple[int, int, str, str]]:
    """(local port, remote port, state, inode) of every IPv4 TCP socket on this host."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        rows.append((int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16), fields[3], fields[9]))
    return rows


def _listens(pid: int, port: int) -> bool:
    inodes = _socket_inodes(pid)
    return any(local == port and state == "0A" and inode in inodes for local, _, state, inode in _tcp_rows())


def owners(server: UvicornWorkers) -> dict[int, int]:
    """Client port → pid of the worker holding the server side of that connection."""
    by_inode = {inode: pid for pid in server.worker_pids() for inode in _socket_inodes(pid)}
    return {remote: by_inode[inode] for local, remote, state, inode in _tcp_rows()
            if local == server.port and state == "01" and inode in by_inode}


def client_port(response: httpx.Response) -> int:
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("processes")
    with postgres_cluster() as pg, redis_server(tmp / "redis") as redis:
        database_url = pg.create_database("notifications_processes")
        env = project_env(database_url, REDIS_URL=redis.url, REDIS_LAYER="pubsub", NOTIFICATIONS_HEARTBEAT="1")
        manage(env, "migrate", "--noinput")
        manage(env, "shell", "-c", SETUP)
        yield env


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[UvicornWorkers]:
    started = UvicornWorkers(env=env, log_path=tmp_path / "uvicorn.log").start()
    pids: list[int] = []
    born: dict[int, str | None] = {}
    try:
        for _ in range(200):  # the workers start after the supervisor listens
            pids = started.worker_pids()
            if len(pids) == WORKERS:
                break
            time.sleep(0.05)
        assert len(pids) == WORKERS, started.log()[-2000:]
        born = {pid: _start_time(pid) for pid in pids}
        yield started
    finally:
        started.stop(timeout=20)
        for pid in pids:  # a worker the supervisor left behind (the same process, not a reused pid)
            if _start_time(pid) is not None and _start_time(pid) == born.get(pid):
                os.kill(pid, signal.SIGKILL)


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def rows_after(database_url: str, after: int) -> list[tuple[int, str | None, str | None]]:
    with psycopg.connect(database_url.replace("postgres://", "postgresql://")) as conn:
        return conn.execute(
            "SELECT n.id, u.username, g.name FROM notifications_notification n "
            "LEFT JOIN auth_user u ON u.id = n.recipient_id LEFT JOIN auth_group g ON g.id = n.group_id "
            "WHERE n.id > %s ORDER BY n.id", (after,),
        ).fetchall()


def visible(user: str | None, row: tuple[int, str | None, str | None]) -> bool:
    _, recipient, group = row
    if recipient is not None:
        return recipient == user
    if group is not None:
        return user in TEAM and group == "team"
    return True


async def api_post(client: httpx.AsyncClient, payload: dict) -> httpx.Response:
    token = client.cookies.get("csrftoken")
    assert token
    return await client.post("/notifications/api/", json=payload, headers={
        "X-CSRFToken": token, "Referer": str(client.base_url) + "/notifications/"})


async def test_four_processes_on_one_port_deliver_exactly_once_in_order_to_each_audience_only(server, env):
    async with contextlib.AsyncExitStack() as stack:
        readers: list[tuple[str | None, SSEClient]] = []

        async def open_reader(user: str | None) -> None:
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=server.url))
            if user is not None:
                await login(client, user, f"pw-{user}-123")
            stream = await stack.enter_async_context(SSEClient(client, STREAM))
            await stream.read_until(has("hello"), timeout=20)
            readers.append((user, stream))

        # Readers until every worker holds some (each client is its own connection; the kernel's
        # hand-out is uneven: a quiet machine gave one worker 51 of 64 and another 1).
        for i in range(128):
            await open_reader(None if i % 5 == 4 else USERS[i % len(USERS)])
            held = owners(server)
            per_worker = [sum(1 for _, s in readers if held.get(client_port(s.response)) == pid)  # type: ignore[arg-type]
                          for pid in server.worker_pids()]
            if len(readers) >= 2 * len(USERS) and min(per_worker) >= 1:
                break
        assert min(per_worker) >= 1, per_worker

        # Writers: admins whose connections are held by different workers, and two processes.
        admins: list[httpx.AsyncClient] = []
        writer_workers: set[int] = set()
        # As for the readers, the kernel may hand many connections in a row to one worker
        # (a fresh-clone run gave all of 16 to one): try up to 64.
        for _ in range(64):
            admin = await stack.enter_async_context(httpx.AsyncClient(base_url=server.url))
            await login(admin, "admin", "pw-admin-123")
            page = await admin.get("/notifications/api/")  # the connection the posts will reuse
            pid = owners(server).get(client_port(page))
            if pid not in writer_workers:
                writer_workers.add(pid)  # type: ignore[arg-type]
                admins.append(admin)
            if len(writer_workers) >= 3:
                break
        assert len(writer_workers) >= 2, writer_workers

        database_url = env["DATABASE_URL"]
        start = max((row[0] for row in rows_after(database_url, 0)), default=0)

        async def api_writer(k: int, admin: httpx.AsyncClient) -> None:
            for i in range(6):
                for payload in (
                    {"title": f"api{k} everyone {i}"},
                    {"title": f"api{k} personal {i}", "recipient": USERS[(k + i) % len(USERS)]},
                    {"title": f"api{k} team {i}", "group": "team"},
                    {"title": f"api{k} bulk {i}", "recipients": USERS[i % 2::2]},
                ):
                    response = await api_post(admin, payload)
                    assert response.status_code == 201, response.text

        procs = [_python(env, WRITER, "6", ",".join(USERS)) for _ in range(2)]
        try:
            await asyncio.gather(*(api_writer(k, admin) for k, admin in enumerate(admins)))
            for proc in procs:
                out, _ = await asyncio.to_thread(proc.communicate, timeout=120)
                assert proc.returncode == 0 and "done" in out, out
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)

        rows = rows_after(database_url, start)
        assert len(rows) == len(admins) * 6 * (3 + len(USERS) // 2) + 2 * 6 * 3 + sum(
            len(USERS[i % 3::3]) for i in range(6)) * 2
        for user, stream in readers:
            expected = [row[0] for row in rows if visible(user, row)]
            await stream.read_until(lambda s, e=expected: set(e) <= set(s.notification_ids()), timeout=60)
        for _, stream in readers:
            await stream.drain(1.0)
        leaked = 0
        for user, stream in readers:
            expected = [row[0] for row in rows if visible(user, row)]
            got = [id for id in stream.notification_ids() if id > start]
            assert_strictly_increasing(got)
            leaked += len(set(got) - set(expected))
            assert got == expected, (user, sorted(set(got) ^ set(expected))[:20])
        assert leaked == 0
    log = server.log()
    assert not re.search(r"Dropped a bad channel-layer message|Traceback", log), log[-3000:]


def test_uvicorn_workers_is_what_the_deployment_guide_shows():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text()
    section = guide.split("## Many processes", 1)[1].split("\n## ", 1)[0]
    assert "--workers" in section and "REDIS_URL" in section
