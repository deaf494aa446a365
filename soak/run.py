"""Soak test: concurrent writers, reconnecting readers, real daphne; exits 1 on any loss.

    python -m soak.run [--seconds 120] [--pg-redis | --database-url URL --redis-url URL --servers 2]

What it does, bounded in time from start to end:

1. Starts one daphne (SQLite + in-memory layer, the default) or several sharing PostgreSQL
   and Redis (``--pg-redis`` starts a throwaway cluster and redis-server; or point it at
   yours with ``--database-url``/``--redis-url``), on free 127.0.0.1 ports.
2. Writer *processes* sign in as staff and POST notifications to the JSON API, to every
   audience (everyone, one of the groups, one of the users), round robin over the servers.
3. Reader clients (several signed-in users, several anonymous) hold streams on raw sockets,
   drop them at random (gracefully or with an RST), sometimes in the middle of a replay,
   and reconnect to a random server with ``Last-Event-ID``. Some stay until the server's
   ``NOTIFICATIONS_MAX_AGE`` closes them.
4. When the writers stop, every client stays connected until it has what it should have,
   or the drain deadline passes. Then, per audience, it prints: created, expected
   deliveries, delivered, lost, duplicated, out of order, leaked — the expectation taken
   from the database: every row the client's viewer may see with an id above the cursor
   its first connection's ``hello`` gave it.

Exit status 0 only when lost, duplicated, out of order, leaked, resets and errors are all 0.
Every option also reads ``SOAK_<OPTION>`` from the environment (``SOAK_SECONDS=20``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.raw import Event, RawStream, metrics, session_cookie  # noqa: E402
from tests.support.tally import AUDIENCES, Reader, tally  # noqa: E402

STAFF = ("soak-admin", "pw-soak-admin-1")
PASSWORD = "pw-soak-user-1"
GROUPS = ["soak-red", "soak-blue", "soak-green"]


def _env(name: str, default: Any) -> Any:
    value = os.environ.get(f"SOAK_{name.upper()}")
    if value is None or value == "":
        return default
    return type(default)(value) if default is not None else value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m soak.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=_env("seconds", 120.0), help="writing time (default 120)")
    p.add_argument("--writers", type=int, default=_env("writers", 3), help="writer processes (default 3)")
    p.add_argument("--rate", type=float, default=_env("rate", 10.0), help="notifications/s per writer (default 10)")
    p.add_argument("--users", type=int, default=_env("users", 5), help="signed-in users reading (default 5)")
    p.add_argument("--clients-per-user", type=int, default=_env("clients_per_user", 3))
    p.add_argument("--anonymous", type=int, default=_env("anonymous", 6), help="anonymous readers (default 6)")
    p.add_argument("--servers", type=int, default=_env("servers", 0), help="daphne processes (default 1, 2 with Redis)")
    p.add_argument("--database-url", default=_env("database_url", None), help="default: a new SQLite file")
    p.add_argument("--redis-url", default=_env("redis_url", None), help="default: in-memory layer, one server")
    p.add_argument("--redis-layer", default=_env("redis_layer", "pubsub"), choices=["pubsub", "core"])
    p.add_argument("--pg-redis", action="store_true", default=bool(_env("pg_redis", "")),
                   help="start a throwaway PostgreSQL cluster and redis-server (tests/support/pg_redis.py)")
    p.add_argument("--max-age", type=float, default=_env("max_age", 10.0), help="NOTIFICATIONS_MAX_AGE (default 10)")
    p.add_argument("--layer-config", default=_env("layer_config", ""), help="JSON merged into the layer's CONFIG")
    p.add_argument("--drain", type=float, default=_env("drain", 30.0), help="seconds to wait for stragglers")
    p.add_argument("--seed", type=int, default=_env("seed", 0), help="random seed (default: time)")
    p.add_argument("--workdir", default=_env("workdir", None), help="where logs and the SQLite file go")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.servers == 0:
        args.servers = 2 if (args.redis_url or args.pg_redis) else 1
    if args.servers > 1 and not (args.redis_url or args.pg_redis):
        p.error("several servers need a shared layer: --redis-url or --pg-redis")
    return args


# -- writers (separate processes) ------------------------------------------------------


def writer_main(argv: list[str]) -> int:
    """``python -m soak.run writer URLS SECONDS RATE SEED TAG USERS GROUPS OUT``."""
    import httpx

    urls, seconds, rate, seed, tag, users, groups, out = argv
    rng = random.Random(int(seed))
    bases = urls.split(",")
    clients = []
    for base in bases:
        client = httpx.Client(base_url=base, timeout=30)
        cookie = asyncio.run(session_cookie(base, *STAFF))
        for part in cookie.split("; "):
            name, _, value = part.partition("=")
            client.cookies.set(name, value)
        clients.append(client)
    usernames, group_names = users.split(","), groups.split(",")
    deadline = time.monotonic() + float(seconds)
    interval = 1.0 / float(rate)
    created, errors, n = [], 0, 0
    next_at = time.monotonic()
    while time.monotonic() < deadline and n < 1_000_000:
        n += 1
        kind = rng.choices(AUDIENCES, weights=(4, 3, 3))[0]
        body: dict[str, str] = {"title": f"{tag} {os.getpid()}-{n}", "body": "x" * rng.randint(0, 300)}
        if kind == "group":
            body["group"] = rng.choice(group_names)
        elif kind == "user":
            body["recipient"] = rng.choice(usernames)
        client = clients[n % len(clients)]
        try:
            response = client.post(
                "/notifications/api/", json=body, headers={"X-CSRFToken": client.cookies.get("csrftoken", "")}
            )
            if response.status_code == 201:
                created.append((response.json()["id"], kind))
            else:
                errors += 1
                print(f"writer: {response.status_code} {response.text[:200]}", file=sys.stderr)
        except httpx.HTTPError as exc:
            errors += 1
            print(f"writer: {exc!r}", file=sys.stderr)
        next_at += interval
        time.sleep(max(0.0, min(next_at - time.monotonic(), 1.0)))
    Path(out).write_text(json.dumps({"created": created, "errors": errors}))
    return 0


# -- readers (asyncio, in this process) ------------------------------------------------


async def reader_loop(reader: Reader, ports: list[int], rng: random.Random, draining: asyncio.Event,
                      stop: asyncio.Event, hard_deadline: float) -> None:
    loop = asyncio.get_running_loop()
    attempts = 0
    while not stop.is_set() and loop.time() < hard_deadline and attempts < 100_000:
        attempts += 1
        port = rng.choice(ports)
        stream = RawStream(port, cookie=reader.cookie, last_event_id=reader.cursor or None)
        try:
            await stream.open(timeout=30)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            reader.errors.append(f"connect: {exc!r}")
            await _sleep_or(stop, 0.5)
            continue
        if stream.status == 429:
            reader.too_many += 1
            await _sleep_or(stop, 1.0)
            continue
        if stream.status != 200:
            reader.errors.append(f"status {stream.status}: {stream.body[:200]!r}")
            await _sleep_or(stop, 1.0)
            continue
        reader.connections += 1
        replaying = bool(reader.cursor)
        cut_replay_after = rng.randint(0, 5) if replaying and rng.random() < 0.25 else None
        long_lived = rng.random() < 0.3
        until = loop.time() + (1e9 if long_lived else rng.uniform(0.3, 4.0))
        hello = False
        notifications_this_connection = 0
        try:
            while not stop.is_set():
                if not draining.is_set() and loop.time() >= until:
                    break
                if draining.is_set() and reader.satisfied():
                    reader.done.set()
                timeout = min(max(until - loop.time(), 0.01), 0.5) if not draining.is_set() else 0.5
                try:
                    events = await asyncio.wait_for(stream.read_events(), timeout)
                except TimeoutError:
                    continue
                if not events and stream.ended:
                    reader.server_closes += 1
                    break
                # The cut is checked before each event, not once per read: a replay and its hello
                # often arrive in one read, and the client drops mid-replay all the same (it then
                # resumes from the last id it took, which is what this exercises).
                cut = False
                for event in events:
                    if not draining.is_set() and event_cut(cut_replay_after, hello, notifications_this_connection):
                        cut = True
                        break
                    hello = _on_event(reader, event, hello) or hello
                    if event.type == "notification":
                        notifications_this_connection += 1
                if cut:
                    reader.mid_replay_drops += 1
                    break
        finally:
            if rng.random() < 0.5:
                stream.abort()
                reader.aborts += 1
            else:
                await stream.close()
        if draining.is_set() and reader.satisfied():
            reader.done.set()
        if not draining.is_set():
            await _sleep_or(stop, rng.uniform(0.0, 1.5))
    reader.done.set()


def event_cut(cut_after: int | None, hello: bool, seen: int) -> bool:
    """Drop in the middle of a replay: after ``cut_after`` replayed events, before ``hello``."""
    return cut_after is not None and not hello and seen >= cut_after


def _on_event(reader: Reader, event: Event, hello_seen: bool) -> bool:
    """Record one event; returns True for ``hello``."""
    if event.id:
        reader.cursor = event.id
    if event.type == "notification":
        data = json.loads(event.data)
        if str(data["id"]) != event.id:
            reader.errors.append(f"data id {data['id']} != SSE id {event.id}")
        reader.received.append(int(event.id))
    elif event.type == "hello":
        data = json.loads(event.data)
        if data["user"] != reader.username:
            reader.errors.append(f"hello says user {data['user']!r}, expected {reader.username!r}")
        if reader.first_cursor is None:
            reader.first_cursor = int(data["cursor"])
        return True
    elif event.type == "reset":
        reader.resets.append(event.data)
    return False


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# -- the run ---------------------------------------------------------------------------


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "soak.settings"
    os.environ.setdefault("DJANGO_SECRET_KEY", "insecure-key-for-tests-only")
    import django

    django.setup()


def create_users(count: int) -> dict[str, set[int]]:
    """Staff plus ``count`` users in overlapping groups; returns {username: group ids}."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    User = get_user_model()
    groups = [Group.objects.get_or_create(name=name)[0] for name in GROUPS]
    staff, _ = User.objects.get_or_create(username=STAFF[0], defaults={"is_staff": True, "is_superuser": True})
    staff.is_staff = True
    staff.set_password(STAFF[1])
    staff.save()
    members: dict[str, set[int]] = {}
    for i in range(count):
        user, _ = User.objects.get_or_create(username=f"soak-user-{i}")
        user.set_password(PASSWORD)
        user.save()
        # Overlapping memberships; every fourth user is in no group at all.
        mine = [] if i % 4 == 3 else [groups[i % 3], *([groups[(i + 1) % 3]] if i % 2 else [])]
        user.groups.set(mine)
        members[user.username] = {g.pk for g in mine}
    return members


def expected_for(readers: list[Reader], since: int) -> tuple[dict[int, str], dict[str | None, set[int]]]:
    """Audience of every row above ``since``, and the ids each viewer may see (from the DB)."""
    from django.contrib.auth import get_user_model

    from notifications.models import Notification

    rows = Notification.objects.filter(id__gt=since).values_list("id", "recipient_id", "group_id")
    audience = {i: ("user" if r is not None else "group" if g is not None else "everyone") for i, r, g in rows}
    visible: dict[str | None, set[int]] = {}
    User = get_user_model()
    for username in {r.username for r in readers}:
        user = User.objects.get(username=username) if username else None
        visible[username] = set(
            Notification.objects.visible_to(user).filter(id__gt=since).values_list("id", flat=True)
        )
    return audience, visible


COLUMNS = ("created", "expected", "delivered", "lost", "duplicated", "out_of_order", "leaked")
MUST_BE_ZERO = ("lost", "duplicated", "out_of_order", "leaked")


def print_table(table: dict[str, dict[str, int]], out: Any = sys.stdout) -> None:
    print(f"{'audience':<10}" + "".join(f"{c:>14}" for c in COLUMNS), file=out)
    for kind, row in table.items():
        print(f"{kind:<10}" + "".join(f"{row.get(c, 0):>14}" for c in COLUMNS), file=out)


def run(args: argparse.Namespace) -> int:
    """Set up the servers and users (blocking), then drive readers and writers (asyncio)."""
    from tests.support.servers import Daphne, manage, project_env

    seed = args.seed or int(time.time())
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="notifications-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        database_url, redis_url = args.database_url, args.redis_url
        if args.pg_redis:
            from tests.support.pg_redis import postgres_cluster, redis_server

            if not database_url:
                cluster = stack.enter_context(postgres_cluster())
                database_url = cluster.create_database("soak")
            if not redis_url:
                redis_url = stack.enter_context(redis_server(workdir / "redis")).url
        database_url = database_url or f"sqlite:///{workdir / 'soak.sqlite3'}"
        extra = {
            "DJANGO_SETTINGS_MODULE": "soak.settings",
            "NOTIFICATIONS_MAX_AGE": json.dumps(args.max_age),
            "NOTIFICATIONS_HEARTBEAT": json.dumps(5),
            "NOTIFICATIONS_MAX_STREAMS_PER_USER": json.dumps(max(20, args.clients_per_user * 2)),
        }
        if redis_url:
            extra.update(REDIS_URL=redis_url, REDIS_LAYER=args.redis_layer)
        if args.layer_config:
            extra["SOAK_LAYER_CONFIG"] = args.layer_config
        env = project_env(database_url, **extra)
        manage(env, "migrate", "--noinput")
        setup_django(database_url)
        members = create_users(args.users)
        servers = []
        for i in range(args.servers):
            server = Daphne(env=env, log_path=workdir / f"daphne-{i}.log")
            stack.callback(server.stop)
            servers.append(server.start())
        backend = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
        layer = f"Redis ({args.redis_layer})" if redis_url else "in-memory"
        if not args.quiet:
            print(f"soak: seed {seed}, {backend} + {layer} layer, {len(servers)} daphne process(es) "
                  f"on ports {[s.port for s in servers]}, logs in {workdir}", flush=True)

        def start_writer(i: int, writer_seed: int, tag: str) -> tuple[subprocess.Popen, Path]:
            out = workdir / f"writer-{i}.json"
            with open(workdir / f"writer-{i}.log", "ab") as errors:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "soak.run", "writer", ",".join(s.url for s in servers),
                     str(args.seconds), str(args.rate), str(writer_seed), tag, ",".join(members),
                     ",".join(GROUPS), str(out)],
                    cwd=ROOT, env=env, stderr=errors,
                )
            stack.callback(_stop_process, proc)
            return proc, out

        return asyncio.run(drive(args, seed, servers, members, start_writer))


def _writer_results(writers: list[tuple[subprocess.Popen, Path]]) -> tuple[list[tuple[int, str]], int]:
    created: list[tuple[int, str]] = []
    errors = 0
    for proc, out in writers:
        if proc.returncode != 0 or not out.exists():
            errors += 1
            continue
        result = json.loads(out.read_text())
        created += [(int(i), str(kind)) for i, kind in result["created"]]
        errors += result["errors"]
    return created, errors


async def drive(args: argparse.Namespace, seed: int, servers: list[Any], members: dict[str, set[int]],
                start_writer: Any) -> int:
    from asgiref.sync import sync_to_async

    rng = random.Random(seed)
    started = time.monotonic()
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    ports = [s.port for s in servers]
    readers: list[Reader] = []
    for username in members:
        cookie = await session_cookie(servers[0].url, username, PASSWORD)
        readers += [Reader(f"{username}#{i}", username, cookie) for i in range(args.clients_per_user)]
    readers += [Reader(f"anonymous#{i}", None, None) for i in range(args.anonymous)]

    loop = asyncio.get_running_loop()
    stop, draining = asyncio.Event(), asyncio.Event()
    hard_deadline = loop.time() + args.seconds + args.drain + 120
    tasks = [
        asyncio.create_task(reader_loop(r, ports, random.Random(rng.random()), draining, stop, hard_deadline))
        for r in readers
    ]
    try:
        # Every reader holds its first cursor before anything is written.
        await _wait(lambda: all(r.first_cursor is not None for r in readers), 60, "first hello of every reader")
        tag = f"soak-{seed}"
        writers = [
            await asyncio.to_thread(start_writer, i, rng.randrange(1 << 30), tag) for i in range(args.writers)
        ]
        log(f"soak: {len(readers)} readers, {args.writers} writers x {args.rate:g}/s for {args.seconds:g}s ...")
        progress_at = loop.time() + 15
        while any(p.poll() is None for p, _ in writers):
            await asyncio.sleep(0.2)
            if loop.time() > hard_deadline:
                raise TimeoutError("writers did not finish")
            if loop.time() >= progress_at:
                progress_at += 15
                log(f"  t={time.monotonic() - started:4.0f}s delivered {sum(len(r.received) for r in readers)}, "
                    f"connections {sum(r.connections for r in readers)}")
        created_rows, writer_errors = await asyncio.to_thread(_writer_results, writers)
        since = min(r.first_cursor for r in readers if r.first_cursor is not None)
        audience, visible = await sync_to_async(expected_for)(readers, since)
        for r in readers:
            assert r.first_cursor is not None
            r.expected = {i for i in visible[r.username] if i > r.first_cursor}
        draining.set()
        log(f"soak: writers done ({len(created_rows)} created); draining ...")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in readers)), args.drain)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)

    # Every stream the servers held must be gone once the clients have gone.
    left = await _streams_left(servers)
    server_stats = [await metrics(s.url) for s in servers]

    created = collections.Counter(kind for _, kind in created_rows)
    table = tally(readers, audience, visible, dict(created))
    print_table(table)
    resets = sum(len(r.resets) for r in readers)
    errors = [e for r in readers for e in r.errors]
    summary = {
        "seconds": round(time.monotonic() - started, 1),
        "connections": sum(r.connections for r in readers),
        "mid_replay_drops": sum(r.mid_replay_drops for r in readers),
        "server_closes": sum(r.server_closes for r in readers),
        "aborted_by_client": sum(r.aborts for r in readers),
        "answered_429": sum(r.too_many for r in readers),
        "resets": resets,
        "reader_errors": len(errors),
        "writer_errors": writer_errors,
        "streams_left_on_servers": left,
    }
    print("soak: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    keys = ("events_total", "deliveries_total", "catch_ups_total", "tail_repairs_total",
            "duplicates_dropped_total", "replays_total", "layer_errors_total")
    for i, stats in enumerate(server_stats):
        shown = ", ".join(f"{k.removesuffix('_total')} {int(stats.get('notifications_' + k, 0))}" for k in keys)
        rss = stats.get("process_resident_memory_bytes", 0) / 2**20
        print(f"soak: server {i}: {shown}, rss {rss:.0f} MiB")
    for error in errors[:10]:
        print(f"soak: reader error: {error}")
    for reset in [x for r in readers for x in r.resets][:5]:
        print(f"soak: reset: {reset}")
    failed = [c for c in MUST_BE_ZERO if table["total"].get(c, 0)]
    if resets or errors or writer_errors or left:
        failed.append("resets/errors/streams left")
    if not table["total"].get("expected"):
        failed.append("nothing was expected: no traffic")
    print("soak: " + ("FAILED: " + ", ".join(failed) if failed else
                      "OK: nothing lost, nothing twice, nothing out of order, nothing leaked"), flush=True)
    return 1 if failed else 0


async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _streams_left(servers) -> int:
    deadline = time.monotonic() + 15
    while True:
        left = 0
        for server in servers:
            stats = await metrics(server.url)
            left += int(stats.get("notifications_open_streams", 0))
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.1)


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["writer"]:
        return writer_main(argv[1:])
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
