"""The promises of SPEC §11 under stress, over real HTTP against real servers (daphne, uvicorn).

Bursts with hundreds of streams held on raw sockets by this one process, streams that
outlive the channel layer's expiries, max-age closes with jitter, sessions that end, bad
input, a user opening a thousand streams, clients that never read, and thousands of
connect/disconnect cycles against one process (memory and leftovers read from
/notifications/metrics, which answers loopback clients). Every test runs under each server
in ``SERVERS`` except ``test_a_stream_outlives_the_layers_group_expiry_and_message_expiry``,
which is about the channel layer's expiries and the hub alone: the server plays no part in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.raw import Event, RawStream, metrics, read_until, session_cookie
from tests.support.servers import SERVERS, Server, manage, project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

USERS = {  # username: groups
    "ann": ["red"],
    "ben": ["red", "blue"],
    "cat": ["blue"],
    "dan": [],
}
SETUP = (
    "from django.contrib.auth import get_user_model as g; from django.contrib.auth.models import Group;"
    "U=g(); U.objects.create_superuser('admin','a@example.com','pw-admin-123');"
    "gs={n: Group.objects.create(name=n) for n in ('red','blue')};"
    + "".join(
        f"u=U.objects.create_user({name!r},password='pw-{name}-123'); u.groups.set([gs[n] for n in {groups!r}]);"
        for name, groups in USERS.items()
    )
)


_TEMPLATE: dict[str, Path] = {}


@pytest.fixture(scope="module", params=list(SERVERS))
def kind(request: pytest.FixtureRequest) -> str:
    """Which server the module's servers are: each test runs once per supported server."""
    return request.param


def start_server(tmp_path_factory, kind: str, name: str, **settings: object) -> Server:
    """A server of ``kind`` on a copy of a database migrated (and given its users) once per session."""
    tmp = tmp_path_factory.mktemp(f"{name}-{kind}")
    layer = settings.pop("layer", None)
    extra = {f"NOTIFICATIONS_{k.upper()}": json.dumps(v) for k, v in settings.items()}
    if layer:
        extra["SOAK_LAYER_CONFIG"] = json.dumps(layer)
    if "db" not in _TEMPLATE:
        template = tmp_path_factory.mktemp("template") / "db.sqlite3"
        template_env = project_env(f"sqlite:///{template}")
        manage(template_env, "migrate", "--noinput")
        manage(template_env, "shell", "-c", SETUP)
        _TEMPLATE["db"] = template
    shutil.copyfile(_TEMPLATE["db"], tmp / "db.sqlite3")
    env = project_env(f"sqlite:///{tmp / 'db.sqlite3'}", DJANGO_SETTINGS_MODULE="soak.settings", **extra)
    return SERVERS[kind](env=env, log_path=tmp / f"{kind}.log").start()


@contextlib.contextmanager
def serving(tmp_path_factory, kind: str, name: str, **settings: object) -> Iterator[Server]:
    server = start_server(tmp_path_factory, kind, name, **settings)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def roomy(tmp_path_factory, kind):
    """Tiny layer capacity and expiries (3 s); room for hundreds of streams per user."""
    with serving(tmp_path_factory, kind, "roomy", heartbeat=1, max_streams_per_user=1000,
                 layer={"capacity": 3, "expiry": 3, "group_expiry": 3}) as server:
        yield server


@pytest.fixture(scope="module")
def strict(tmp_path_factory, kind):
    """The defaults: 20 streams per user, the default layer."""
    with serving(tmp_path_factory, kind, "strict", heartbeat=1) as server:
        yield server


@pytest.fixture(scope="module")
def aging(tmp_path_factory, kind):
    """Streams closed after 2 s ±10 %."""
    with serving(tmp_path_factory, kind, "aging", heartbeat=1, max_age=2) as server:
        yield server


# -- helpers ------------------------------------------------------------------------------


@dataclass
class Writer:
    """Staff client of the JSON API."""

    client: httpx.AsyncClient

    @classmethod
    async def open(cls, server: Server) -> Writer:
        client = httpx.AsyncClient(base_url=server.url, timeout=30)
        for part in (await session_cookie(server.url, "admin", "pw-admin-123")).split("; "):
            key, _, value = part.partition("=")
            client.cookies.set(key, value)
        return cls(client)

    async def send(self, title: str, *, body: str = "", recipient: str = "", group: str = "") -> int:
        data = {"title": title, "body": body, "recipient": recipient, "group": group}
        response = await self.client.post(
            "/notifications/api/", json=data, headers={"X-CSRFToken": self.client.cookies["csrftoken"]}
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def aclose(self) -> None:
        await self.client.aclose()


def may_see(username: str | None, recipient: str, group: str) -> bool:
    if recipient:
        return recipient == username
    if group:
        return username is not None and group in USERS[username]
    return True


def ids(events: list[Event]) -> list[int]:
    return [int(e.id) for e in events if e.type == "notification"]


def of(kind: str, events: list[Event]) -> list[Event]:
    return [e for e in events if e.type == kind]


async def cookies(server: Server) -> dict[str | None, str | None]:
    jar: dict[str | None, str | None] = {None: None}
    for name in USERS:
        jar[name] = await session_cookie(server.url, name, f"pw-{name}-123")
    return jar


async def open_stream(server: Server, cookie: str | None = None, **kwargs) -> tuple[RawStream, list[Event]]:
    stream = await RawStream(server.port, cookie=cookie, **kwargs).open()
    assert stream.status == 200, (stream.status, stream.body)
    events: list[Event] = []
    await read_until(stream, lambda ev: bool(of("hello", ev)), events, 30)
    return stream, events


async def until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns its last value."""
    for _ in range(int(timeout / step) + 1):
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


async def gather_limited(coros, limit: int):
    semaphore = asyncio.Semaphore(limit)

    async def one(coro):
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


# -- 1. bursts ----------------------------------------------------------------------------

BURST_STREAMS = int(os.environ.get("NOTIFICATIONS_BURST_STREAMS", "300"))
BURST_NOTIFICATIONS = int(os.environ.get("NOTIFICATIONS_BURST_NOTIFICATIONS", "300"))


@pytest.mark.timeout(240 if BURST_STREAMS * BURST_NOTIFICATIONS <= 90_000 else 900)
async def test_burst_every_open_stream_gets_every_notification_it_may_see_once_in_order(roomy):
    """BURST_STREAMS streams open, BURST_NOTIFICATIONS created by 8 concurrent writers, capacity 3."""
    jar = await cookies(roomy)
    viewers = [None, *USERS]
    rng = random.Random(5)
    owners = [viewers[i % len(viewers)] for i in range(BURST_STREAMS)]
    opened = await gather_limited([open_stream(roomy, jar[who]) for who in owners], 50)
    streams = [s for s, _ in opened]
    received = [ev for _, ev in opened]
    before = await metrics(roomy.url)

    plan = []
    for i in range(BURST_NOTIFICATIONS):
        kind = rng.choice(["everyone", "group", "user"])
        plan.append((f"burst {i}", rng.choice(["red", "blue"]) if kind == "group" else "",
                     rng.choice(list(USERS)) if kind == "user" else ""))
    writers = [await Writer.open(roomy) for _ in range(8)]
    sent: dict[int, tuple[str, str]] = {}

    async def write(k: int) -> None:
        for title, group, recipient in plan[k :: len(writers)]:
            sent[await writers[k].send(title, group=group, recipient=recipient)] = (recipient, group)

    readers_done = asyncio.Event()

    async def read(i: int) -> None:
        while not readers_done.is_set():
            with contextlib.suppress(TimeoutError):
                received[i] += await asyncio.wait_for(streams[i].read_events(), 0.5)
            if streams[i].ended:
                return

    reading = [asyncio.create_task(read(i)) for i in range(len(streams))]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(write(k) for k in range(len(writers))))
    created = loop.time() - started
    expected = [[n for n in sorted(sent) if may_see(who, *sent[n])] for who in owners]
    await until(lambda: not any(set(e) - set(ids(r)) for e, r in zip(expected, received, strict=True)), 60, 0.1)
    delivered_in = loop.time() - started
    readers_done.set()
    await asyncio.gather(*reading)
    after = await metrics(roomy.url)
    for w in writers:
        await w.aclose()
    for s in streams:
        s.abort()
    for who, want, got in zip(owners, expected, received, strict=True):
        assert ids(got) == want, f"{who}: missing {sorted(set(want) - set(ids(got)))[:10]}"
        assert not of("reset", got)
    deliveries = sum(len(e) for e in expected)
    print(f"\nburst: {len(streams)} streams, {len(sent)} notifications created in {created:.1f}s, "
          f"{deliveries} deliveries complete after {delivered_in:.1f}s; catch-ups "
          f"{after['notifications_catch_ups_total'] - before['notifications_catch_ups_total']:.0f}")


# -- 2. long uptime ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["daphne"], indirect=True)  # the layer and the hub alone (module docstring)
async def test_a_stream_outlives_the_layers_group_expiry_and_message_expiry(roomy):
    """expiry = group_expiry = 3 s; the stream stays open ~10 s and gets each notice live."""
    writer = await Writer.open(roomy)
    stream, events = await open_stream(roomy)
    before = await metrics(roomy.url)
    sent = []
    for round_ in range(5):
        # Let two heartbeats (1 s each) pass between notices: past the expiries by the end.
        await read_until(stream, lambda _, pings=stream.parser.comments: stream.parser.comments >= pings + 2,
                         events, 10)
        sent.append(await writer.send(f"uptime {round_}"))
        await read_until(stream, lambda ev: sent[-1] in ids(ev), events, 1.5)
    after = await metrics(roomy.url)
    assert ids(events) == sent
    # Delivered through the layer, not found by the 2-second tail check (which may, rarely,
    # run between a commit and its message: one repair is allowed).
    assert after["notifications_tail_repairs_total"] - before["notifications_tail_repairs_total"] <= 1
    stream.abort()
    await writer.aclose()


async def test_max_age_closes_streams_with_jitter_and_reconnects_lose_nothing(aging):
    """NOTIFICATIONS_MAX_AGE = 2: ten clients reconnect with Last-Event-ID through several closes."""
    strict = aging
    writer = await Writer.open(strict)
    loop = asyncio.get_running_loop()
    lifetimes: list[float] = []
    got: list[list[int]] = [[] for _ in range(10)]
    stop = asyncio.Event()
    connected = [asyncio.Event() for _ in range(10)]

    async def client(i: int) -> None:
        cursor = None
        for _ in range(20):
            opened_at = loop.time()
            stream, events = await open_stream(strict, last_event_id=cursor)
            connected[i].set()
            while not stream.ended and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    events += await asyncio.wait_for(stream.read_events(), 0.2)
            got[i] += ids(events)
            cursor = stream.parser.last_event_id
            if stop.is_set():
                stream.abort()
                return
            lifetimes.append(loop.time() - opened_at)

    tasks = [asyncio.create_task(client(i)) for i in range(10)]
    # Every client has its first hello (its cursor) before the first notice: one that connected
    # later would rightly start after it.
    await asyncio.wait_for(asyncio.gather(*(c.wait() for c in connected)), 30)
    sent = []
    started = loop.time()
    while loop.time() - started < 5 or len(lifetimes) < 20:
        sent.append(await writer.send(f"age {len(sent)}"))
        await asyncio.sleep(0.05)
        assert loop.time() - started < 30
    await until(lambda: not any(set(sent) - set(g) for g in got), 10)
    stop.set()
    await asyncio.gather(*tasks)
    await writer.aclose()
    for g in got:
        assert g == sent
    # 2 s ±10 %: never before 1.8 s; after 2.2 s only by the time a busy machine takes to
    # connect, read the hello and notice the end.
    assert all(1.75 <= t <= 2.2 + 2.0 for t in lifetimes), sorted(lifetimes)
    assert max(lifetimes) - min(lifetimes) > 0.05, "no jitter"


# -- 3. sessions ---------------------------------------------------------------------------


async def test_after_logout_the_next_connection_says_user_null(strict):
    async with httpx.AsyncClient(base_url=strict.url, timeout=30) as browser:
        cookie = await session_cookie(strict.url, "ann", "pw-ann-123")
        for part in cookie.split("; "):
            key, _, value = part.partition("=")
            browser.cookies.set(key, value)
        stream, events = await open_stream(strict, cookie)
        assert json.loads(of("hello", events)[0].data)["user"] == "ann"
        response = await browser.post(
            "/accounts/logout/", headers={"X-CSRFToken": browser.cookies["csrftoken"],
                                          "Referer": f"{strict.url}/"}
        )
        assert response.status_code == 302
        # The open stream is not downgraded in place; the next connection, same cookie, is anonymous.
        again, events = await open_stream(strict, cookie, last_event_id=stream.parser.last_event_id)
        assert json.loads(of("hello", events)[0].data)["user"] is None
        stream.abort()
        again.abort()


async def test_after_the_session_expires_the_next_connection_says_user_null(strict):
    cookie = await session_cookie(strict.url, "ben", "pw-ben-123")
    stream, events = await open_stream(strict, cookie)
    assert json.loads(of("hello", events)[0].data)["user"] == "ben"
    key = re.search(r"sessionid=([^;]+)", cookie).group(1)
    script = (
        "import datetime as d; from django.utils import timezone as t; "
        "from django.contrib.sessions.models import Session as S; "
        f"assert S.objects.filter(session_key={key!r}).update(expire_date=t.now()-d.timedelta(seconds=1)) == 1"
    )
    await asyncio.to_thread(manage, strict.env, "shell", "-c", script)
    again, events = await open_stream(strict, cookie)
    assert json.loads(of("hello", events)[0].data)["user"] is None
    stream.abort()
    again.abort()


# -- 4. bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "query"),
    [
        ("9" * 10_000, ""),  # 10 kB of digits
        ("x" * 10_000, ""),
        ("-1", ""),
        ("1e3", ""),
        ("", "last_event_id=" + "7" * 10_000),
        ("", "last_event_id=-5"),
    ],
    ids=["10kB-digits", "10kB-junk", "negative", "float", "10kB-query", "negative-query"],
)
async def test_bad_last_event_id_is_a_short_400(strict, header, query):
    stream = await RawStream(strict.port, last_event_id=header or None, query=query).open()
    assert stream.status == 400
    assert stream.headers["content-type"].startswith("text/plain")
    assert len(stream.body) < 300, stream.body[:300]


async def test_huge_unrelated_query_values_are_ignored(strict):
    stream, events = await open_stream(strict, query="utm=" + "a" * 10_000 + "&x=%00%0d%0a")
    assert of("hello", events)
    stream.abort()


@pytest.mark.parametrize("far", [10**12, 2**63 - 1, 10**20 - 1])
async def test_an_id_beyond_the_newest_misses_nothing_and_hello_gives_the_head(strict, far):
    writer = await Writer.open(strict)
    head = await writer.send("before")
    stream, events = await open_stream(strict, last_event_id=far)
    hello = json.loads(of("hello", events)[0].data)
    assert hello["cursor"] == head and of("hello", events)[0].id == str(head)
    assert not ids(events) and not of("reset", events)
    nid = await writer.send("after")
    await read_until(stream, lambda ev: nid in ids(ev), events, 10)
    assert ids(events) == [nid]
    stream.abort()
    await writer.aclose()


async def test_a_thousand_streams_from_one_user_get_429_past_the_cap(strict):
    cookie = await session_cookie(strict.url, "cat", "pw-cat-123")

    async def attempt() -> RawStream:
        return await RawStream(strict.port, cookie=cookie).open()

    attempts = await gather_limited([attempt() for _ in range(1000)], 100)
    ok = [s for s in attempts if s.status == 200]
    refused = [s for s in attempts if s.status == 429]
    assert len(ok) == 20 and len(refused) == 980, sorted({s.status for s in attempts})
    assert all(s.headers.get("retry-after") for s in refused)
    assert b"at most 20" in refused[0].body
    for s in ok:
        s.abort()
    # Once they are gone the user may stream again.
    async def reopened() -> bool:
        s = await attempt()
        s.abort()
        return s.status == 200

    for _ in range(100):
        if await reopened():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the cap never freed up")


def silent_client(port: int) -> socket.socket:
    """A stream request on a socket that is never read (a 4 kB receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /notifications/stream/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


#: How each server's slow client is found out (``notifications.stream``): daphne's send never
#: waits, so its write buffer grows; uvicorn's send waits once its buffer passes the high-water
#: mark (flow control), so frames queue in the stream's outbox. Either way a stream with more than
#: WATCH_BYTES unsent whose client takes nothing for NOTIFICATIONS_SLOW_CLIENT_TIMEOUT is dropped.
DROP_REASON = {"daphne": "unread_buffer", "uvicorn": "outbox"}


def commit_at_once(server: Server, count: int, size: int) -> list[int]:
    """``count`` notices of ``size`` bytes committed in ONE transaction by another process.

    The in-memory layer does not cross processes, so the server's hub finds them with its tail
    check and writes them all in one catch-up: every stream gets the whole burst at once.
    """
    script = (
        "from django.db import transaction\n"
        "from notifications.services import notify\n"
        "with transaction.atomic():\n"
        f"    made = [notify('burst %d' % i, body='z' * {size}).id for i in range({count})]\n"
        "print(made[0], made[-1])"
    )
    first, last = manage(server.env, "shell", "-c", script).stdout.split()[-2:]
    return list(range(int(first), int(last) + 1))


async def test_readers_keep_up_with_a_burst_and_only_the_silent_client_is_dropped(tmp_path_factory, kind):
    """Three readers and one client that never reads; 400 notices of 4 kB (1.6 MB) committed in
    one transaction reach every stream at once, then 800 of 9 kB (7 MB, more than the kernel
    buffers the silent socket). The readers are never dropped (no reconnect, every id once, in
    order); the silent client is, after the timeout; memory stays bounded."""
    with serving(tmp_path_factory, kind, "burst-readers", heartbeat=1, slow_client_timeout=1) as server:
        readers = [await open_stream(server) for _ in range(3)]
        silent = await asyncio.to_thread(silent_client, server.port)
        assert await until(lambda: True, 0.5)
        before = await metrics(server.url)
        assert before["notifications_open_streams"] == 4

        async def keep_reading(stream: RawStream, events: list[Event]) -> None:
            while not stream.ended:
                events.extend(await stream.read_events())

        tasks = [asyncio.create_task(keep_reading(stream, events)) for stream, events in readers]
        made = await asyncio.to_thread(commit_at_once, server, 400, 4000)
        assert await until(lambda: all(made[-1] in ids(events) for _, events in readers), 30)
        made += await asyncio.to_thread(commit_at_once, server, 800, 9000)
        peak = before["process_resident_memory_bytes"]
        dropped = f'notifications_streams_dropped_total{{reason="{DROP_REASON[kind]}"}}'
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            after = await metrics(server.url)
            peak = max(peak, after["process_resident_memory_bytes"])
            done = all(made[-1] in ids(events) for _, events in readers)
            if done and after[dropped] - before[dropped] >= 1:
                break
            if loop.time() > deadline:
                raise AssertionError(f"readers done: {done}; metrics: {after}")
            await asyncio.sleep(0.05)
        for stream, events in readers:
            assert not stream.ended, "a reader that kept reading was dropped"
            assert ids(events) == made
        assert after[dropped] - before[dropped] == 1, "only the silent client is dropped"
        assert after["notifications_open_streams"] == 3
        # 8.8 MB to four streams, the frames the hub keeps for replays (8 MiB at most), and what
        # the silent stream held while it was watched.
        assert (peak - before["process_resident_memory_bytes"]) / 2**20 < 60
        with pytest.raises(OSError):
            for _ in range(10_000):
                if not await asyncio.to_thread(silent.recv, 1 << 20):
                    raise ConnectionResetError("closed")
        silent.close()
        for task in tasks:
            task.cancel()
        for (stream, _), task in zip(readers, tasks, strict=True):
            with contextlib.suppress(asyncio.CancelledError):
                await task
            stream.abort()


async def test_clients_that_never_read_are_dropped_and_memory_stays_bounded(tmp_path_factory, kind):
    """Five clients never read while 8 MB is written to each (more than the kernel buffers)."""
    with serving(tmp_path_factory, kind, "silent", heartbeat=1, slow_client_timeout=1) as server:
        reader, events = await open_stream(server)

        async def keep_reading() -> None:  # the reading client keeps up, all along
            while not reader.ended:
                events.extend(await reader.read_events())

        reading = asyncio.create_task(keep_reading())
        sent: list[int] = []

        async def send_big(count: int, peak: float) -> float:
            """``count`` notices of 9 kB, in bursts of 100, that the reader gets; returns the peak RSS seen."""
            for _ in range(count // 100):
                sent.extend(await asyncio.to_thread(commit_at_once, server, 100, 9000))
                peak = max(peak, (await metrics(server.url))["process_resident_memory_bytes"])
            assert await until(lambda: sent[-1] in ids(events) or reader.ended, 30)
            assert ids(events) == sent, f"reader got {len(ids(events))} of {len(sent)}; ended: {reader.ended}"
            return peak

        # What 900 such notices cost the process by themselves, with no slow client: the hub
        # keeps the frames of its last events to replay reconnects from memory (8 MiB at most).
        start = (await metrics(server.url))["process_resident_memory_bytes"]
        await send_big(900, start)
        before = await metrics(server.url)
        by_themselves = before["process_resident_memory_bytes"] - start
        idle = [await asyncio.to_thread(silent_client, server.port) for _ in range(5)]
        peak = await send_big(900, before["process_resident_memory_bytes"])
        dropped = f'notifications_streams_dropped_total{{reason="{DROP_REASON[kind]}"}}'
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            after = await metrics(server.url)
            peak = max(peak, after["process_resident_memory_bytes"])
            if after[dropped] - before[dropped] >= 5 and after["notifications_open_streams"] == 1:
                break
            if loop.time() > deadline:
                raise AssertionError(f"not dropped: {after}")
            await asyncio.sleep(0.05)
        # 5 x 8 MB were written; each silent stream held what arrived while it was watched (one
        # timeout's worth past WATCH_BYTES), on top of what the same notices cost by themselves.
        grown = (peak - before["process_resident_memory_bytes"] - by_themselves) / 2**20
        assert grown < 60, f"RSS grew {grown:.1f} MiB more than the notices cost by themselves"
        # The server cut them off: their sockets say so once read (reset, or the end after
        # what the kernel had buffered).
        for sock in idle:
            with pytest.raises(OSError):
                for _ in range(10_000):
                    if not await asyncio.to_thread(sock.recv, 1 << 20):
                        raise ConnectionResetError("closed")
            sock.close()
        # And the reader is still live.
        last = (await asyncio.to_thread(commit_at_once, server, 1, 10))[-1]
        assert await until(lambda: last in ids(events), 10), f"reader ended: {reader.ended}"
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        reader.abort()


async def test_a_client_that_stopped_reading_does_not_hold_up_a_shutdown(tmp_path_factory, kind):
    """SIGTERM while one client has stopped reading 6 MB in and is still being watched (a long
    slow-client timeout): the process still exits at once and the reading client's stream ends.
    Under uvicorn the silent stream's send is waiting, so its last chunk could never be written;
    under daphne its last chunk would sit behind 6 MB unsent. Both are aborted instead."""
    with serving(tmp_path_factory, kind, "stalled", heartbeat=1, slow_client_timeout=60) as server:
        reader, events = await open_stream(server)
        idle = await asyncio.to_thread(silent_client, server.port)
        for _ in range(100):
            if (await metrics(server.url))["notifications_open_streams"] == 2:
                break
            await asyncio.sleep(0.05)
        sent = await asyncio.to_thread(commit_at_once, server, 660, 9000)
        await read_until(reader, lambda ev: sent[-1] in ids(ev), events, 30)
        assert server.proc is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(server.proc.wait, 10)
        except subprocess.TimeoutExpired:
            server.proc.kill()  # ours, by pid; the assertion below says what went wrong
        took = loop.time() - started
        await read_until(reader, lambda ev: reader.ended, events, 5)
        idle.close()
    assert took < 5, f"exited after {took:.1f}s"


# -- 5. memory -------------------------------------------------------------------------------

CYCLES = int(os.environ.get("NOTIFICATIONS_MEMORY_CYCLES", "2000"))  # make soak SOAK_FULL=1: 10,000


@pytest.mark.timeout(120 if CYCLES <= 2000 else 600)
async def test_connect_disconnect_cycles_keep_memory_flat_and_leave_nothing_behind(tmp_path_factory, kind):
    with serving(tmp_path_factory, kind, "memory", heartbeat=1) as server:
        jar = await cookies(server)
        who = [None, *USERS]
        writer = await Writer.open(server)
        head = await writer.send("warm")

        async def cycle(i: int) -> None:
            kind = i % 4  # graceful close after hello / abort after hello / abort at once / resume
            stream = RawStream(server.port, cookie=jar[who[i % len(who)]],
                               last_event_id=head - 1 if kind == 3 else None)
            await stream.open()
            assert stream.status == 200
            if kind != 2:
                events: list[Event] = []
                await read_until(stream, lambda ev: bool(of("hello", ev)), events, 30)
            if kind == 0:
                await stream.close()
            else:
                stream.abort()

        async def run(count: int) -> None:
            await gather_limited([cycle(i) for i in range(count)], 20)

        async def settled() -> dict[str, float]:
            for _ in range(200):
                stats = await metrics(server.url)
                if stats["notifications_open_streams"] == 0:
                    return stats
                await asyncio.sleep(0.05)
            raise AssertionError(f"streams left: {stats}")

        await run(1000)  # warm-up: caches, thread pool, allocator arenas
        warm = await settled()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await run(CYCLES)
        took = loop.time() - started
        end = await settled()
        await writer.aclose()
    grown = (end["process_resident_memory_bytes"] - warm["process_resident_memory_bytes"]) / 2**20
    print(f"\nmemory: {CYCLES} cycles in {took:.1f}s; RSS {warm['process_resident_memory_bytes'] / 2**20:.1f} -> "
          f"{end['process_resident_memory_bytes'] / 2**20:.1f} MiB ({grown:+.1f}); tasks "
          f"{warm['notifications_event_loop_tasks']:.0f} -> {end['notifications_event_loop_tasks']:.0f}")
    assert grown < 10, f"RSS grew {grown:.1f} MiB over {CYCLES} cycles"
    for gauge in ("notifications_open_streams", "notifications_replaying_streams", "notifications_indexed_users",
                  "notifications_indexed_groups", "notifications_held_events"):
        assert end[gauge] == 0, gauge
    assert end["notifications_layer_channels"] == 1 and end["notifications_layer_group_members"] == 1
    assert end["notifications_event_loop_tasks"] <= warm["notifications_event_loop_tasks"]
    assert end["notifications_hubs"] == 1
