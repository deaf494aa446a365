"""Write-side benchmark: ``notify()`` throughput on PostgreSQL and a 10,000-recipient bulk send.

``python -m bench.writes`` starts a throwaway PostgreSQL cluster (``tests.support.pg_redis``,
127.0.0.1, fsync off) and measures, in one run:

* **throughput**: ``notify(title, body="x" * 100)`` in a loop from 1, 4 and 8 writer
  processes for ``--seconds`` each (bounded by ``--max-calls`` too), with the sequence lock
  and with ``lock_sequence`` replaced by a no-op (the ordering mechanism off), for this tree
  and, with ``--before REF``, for an older commit of the product (extracted with ``git
  archive`` into a temp dir; same database schema);
* **ceiling** (``--ceiling ROUNDS``): the product's ``notify()`` INSERT, as Django compiles it,
  with the lock and with the column's default id, run by ``pgbench`` from 1, 4 and 8 clients:
  what the lock costs at the database alone and the most inserts per second it lets through;
* **profile** (``--profile``): cProfile of a single writer's ``notify()`` calls, top functions;
* **bulk** (``--bulk N``, 0 to skip): N users, one open stream each on one daphne (signed in
  by session cookie, ``bench.client`` processes), one ``POST /notifications/api/`` with
  ``"recipients"`` for all of them; end to end = from the POST until the last stream holds its
  notice; checks each stream got exactly its own notice, once.

Every process is started here and ended by its pid; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

#: The writer process: set up Django, warm up, wait for "go" on stdin, call notify() until the
#: time or the count is up, print the count. Passed as ``-c`` so it also runs in an older tree.
WORKER = r"""
import json, sys, time
import django
django.setup()
from django.db import connection
from notifications import services
mode, seconds, max_calls = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
if mode == "nolock":
    services.lock_sequence = lambda: None
    if hasattr(services, "ordered_id"):
        services.ordered_id = lambda: None
body = "x" * 100
services.notify("warm-up", body=body)
print("ready", flush=True)
sys.stdin.readline()
n, start = 0, time.perf_counter()
deadline = start + seconds
while n < max_calls and time.perf_counter() < deadline:
    services.notify(f"bench {n}", body=body)
    n += 1
elapsed = time.perf_counter() - start
print(json.dumps({"calls": n, "seconds": elapsed}), flush=True)
"""

PROFILE = r"""
import cProfile, io, pstats, sys, time
import django
django.setup()
from notifications import services
calls = int(sys.argv[1])
body = "x" * 100
services.notify("warm-up", body=body)
profile = cProfile.Profile()
start = time.perf_counter()
profile.enable()
for n in range(calls):
    services.notify(f"profile {n}", body=body)
profile.disable()
elapsed = time.perf_counter() - start
out = io.StringIO()
pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(35)
print(f"{calls} calls in {elapsed:.2f}s under cProfile ({elapsed / calls * 1e3:.2f} ms each)")
print(out.getvalue())
"""


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFICATIONS_", "DJANGO_", "REDIS_"))}
    env.update(DJANGO_SETTINGS_MODULE="bench.settings", DJANGO_SECRET_KEY="insecure-key-for-benchmarks-only",
               DATABASE_URL=database_url, PYTHONUNBUFFERED="1", **extra)
    return env


@contextlib.contextmanager
def source_tree(ref: str | None) -> Iterator[Path]:
    """This tree, or ``ref`` of this repository extracted into a temp dir (its bench/ beside ours)."""
    if ref is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="bench-before-") as tmp:
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True, timeout=60)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True, timeout=60)
        yield Path(tmp)


def throughput(tree: Path, env: dict[str, str], procs: int, mode: str, seconds: float, max_calls: int) -> float:
    """notify() calls per second summed over ``procs`` writer processes started together."""
    workers = [
        subprocess.Popen([PY, "-c", WORKER, mode, str(seconds), str(max_calls)], cwd=tree, env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    try:
        for w in workers:
            assert w.stdout is not None
            line = w.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"writer {w.pid} did not start: {line!r}")
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        results = []
        for w in workers:
            out, _ = w.communicate(timeout=seconds + 60)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(5)
    return sum(r["calls"] / r["seconds"] for r in results)


# -- the lock alone, at the database -----------------------------------------------------------------

#: The SQL the ceiling compares: the product's ``notify()`` INSERT as it reaches PostgreSQL,
#: with the id from ``services.ordered_id()`` (lock, then ``nextval``) and with the column's
#: own default (no lock). Printed by Django's compiler, so it is the product's statement.
CEILING_SCRIPT = r"""
import json
import django
django.setup()
from django.db import connection
from notifications import services
from notifications.models import Notification
def sql(ordered):
    n = Notification(title="t", body="x" * 100)
    if ordered:
        n.id = services.ordered_id()
    fields = [f for f in Notification._meta.local_concrete_fields if ordered or not f.primary_key]
    query = django.db.models.sql.InsertQuery(Notification)
    query.insert_values(fields, [n])
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = [Notification._meta.pk]
    [(text, params)] = compiler.as_sql()
    with connection.cursor() as cursor:
        return cursor.cursor.mogrify(text, params)  # psycopg 3: the statement with its literals
print(json.dumps({"lock": sql(True), "nolock": sql(False)}))
"""


def ceiling(env: dict[str, str], port: int, rounds: int, seconds: float, clients: list[int]) -> list[str]:
    """The product's INSERT with and without the lock, from pgbench (no Python): the lock's own cost and ceiling."""
    import shutil

    pgbench = shutil.which("pgbench") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))), None)
    if pgbench is None:
        return ["[ceiling] skipped: no pgbench (Debian package postgresql-client)"]
    statements = json.loads(subprocess.run([PY, "-c", CEILING_SCRIPT], cwd=ROOT, env=env, check=True,
                                           capture_output=True, text=True, timeout=60).stdout)
    rates: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        for mode, text in statements.items():
            Path(tmp, f"{mode}.sql").write_text(text + ";\n")
        database = env["DATABASE_URL"].rsplit("/", 1)[1]
        for round_ in range(rounds):
            for n in clients:
                for mode in ("lock", "nolock") if round_ % 2 == 0 else ("nolock", "lock"):
                    out = subprocess.run(
                        [str(pgbench), "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", str(n),
                         "-j", str(min(n, 2)), "-T", str(int(seconds)), "-f", f"{tmp}/{mode}.sql", database],
                        capture_output=True, text=True, timeout=seconds + 60, check=True)
                    tps = next(float(line.split()[2]) for line in out.stdout.splitlines() if line.startswith("tps"))
                    rates.setdefault((n, mode), []).append(tps)
                    print(f"[ceiling] {n} client(s) {mode:<6} {tps:8.0f} INSERT/s", flush=True)
    lines = ["| pgbench clients | the product's INSERT/s with the lock | without | per-round ratios → median |",
             "|---|---|---|---|"]
    for n in clients:
        lock, nolock = rates[n, "lock"], rates[n, "nolock"]
        paired = [b / a for a, b in zip(lock, nolock, strict=True)]
        lines.append(f"| {n} | {statistics.median(lock):,.0f} | {statistics.median(nolock):,.0f} | "
                     f"{' / '.join(f'{x:.2f}' for x in paired)} → **{statistics.median(paired):.2f}×** |")
    return lines


# -- bulk, end to end ----------------------------------------------------------------------------------


ADMIN_SCRIPT = """
import json
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
admin = get_user_model().objects.create_superuser("bench-admin", "a@example.com", "pw-bench-123")
s = SessionStore()
s[SESSION_KEY] = str(admin.pk)
s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
s[HASH_SESSION_KEY] = admin.get_session_auth_hash()
s.create()
print(json.dumps(s.session_key))
"""


def django_script(env: dict[str, str], script: str, *args: str) -> Any:
    done = subprocess.run([PY, "-c", "import django; django.setup(); exec(open(0).read())", *args],
                          input=script, env=env, cwd=ROOT, check=True, timeout=600, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def api_post(port: int, path: str, data: Any, session: str, timeout: float = 120) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(data), headers={
            "Content-Type": "application/json", "X-CSRFToken": "b" * 32,
            "Cookie": f"sessionid={session}; csrftoken={'b' * 32}",
        })
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def bulk(env: dict[str, str], n: int, client_procs: int, spy: str | None = None) -> dict[str, Any]:
    """N users with one stream each on one daphne; one bulk API call; time until the last one holds it."""
    from bench.run import USERS_SCRIPT, Clients, request, wait_delivered
    from tests.support.servers import Daphne

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 4096)), hard))
    users = [(name, key) for name, key in django_script(env, USERS_SCRIPT, str(n))]
    admin_session = django_script(env, ADMIN_SCRIPT)
    with tempfile.TemporaryDirectory(prefix="bench-writes-") as tmp:
        server = Daphne(env=env, log_path=Path(tmp) / "daphne.log").start()
        clients = Clients(client_procs)
        try:
            shares = clients.split([request("/notifications/stream/", cookie=key) for _, key in users])
            answers = clients.ask([{"cmd": "connect", "port": server.port, "requests": share, "concurrency": 256,
                                    "timeout": 30 + n * 0.02} for share in shares])
            ready = sum(a["ready"] for a in answers)
            time.sleep(0.5)
            recorder = None
            if spy:  # sample the server from the POST to the last delivery (collapsed stacks, idle left out)
                assert server.proc is not None
                recorder = subprocess.Popen([spy, "record", "-p", str(server.proc.pid), "-r", "250", "-f", "raw",
                                             "--gil", "-o", str(Path(tmp) / "spy.txt")],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            started = time.monotonic()
            status, body = api_post(server.port, "/notifications/api/",
                                    {"title": "Your export is ready", "body": "x" * 100,
                                     "recipients": [name for name, _ in users]}, admin_session)
            posted = time.monotonic()
            if status != 201:
                raise RuntimeError(f"bulk POST → {status}: {str(body)[:300]}")
            done = wait_delivered(clients, ready, timeout=30 + n * 0.01)
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)
                recorder.wait(30)
                print(spy_summary(Path(tmp) / "spy.txt"))
            ids = {name: row["id"] for (name, _), row in zip(users, body["results"], strict=True)}
            user_shares = clients.split([name for name, _ in users])
            collected = clients.ask([{"cmd": "collect", "per_conn": [[[ids[name], started]] for name in share]}
                                     for share in user_shares])
            latencies = sorted(x for a in collected for x in a["latencies"])
            result = {key: sum(a[key] for a in collected) for key in ("lost", "dup", "ooo", "extra", "closed")}
            result.update(users=n, ready=ready, post_s=posted - started, delivered=len(latencies),
                          end_to_end_s=(latencies[-1] if latencies else done - started))
            return result
        finally:
            clients.stop()
            server.stop()


def spy_summary(path: Path, top: int = 30) -> str:
    """Self and inclusive samples per function from py-spy's collapsed stacks (idle frames dropped)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or "select (selectors.py" in stack or "epoll" in stack.rsplit(";", 1)[-1]:
            continue
        frames = stack.split(";")
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    lines = [f"[spy] {total} busy samples"]
    for title, table in (("self", own), ("inclusive", inclusive)):
        lines.append(f"[spy] top {title}:")
        for frame, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"  {n * 100 / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


# -- every hub hears every event: the cost of one it does not deliver ---------------------------------


HUB_COST_SETUP = """
import json, sys
from django.contrib.auth import get_user_model
User = get_user_model()
n = int(sys.argv[-1])
User.objects.bulk_create([User(username=f"hubcost{i}", password="!") for i in range(n)], ignore_conflicts=True)
print(json.dumps(n))
"""

HUB_COST_WRITER = r"""
import json, sys
import django
django.setup()
from notifications import services
from notifications.models import Notification
mode, n = sys.argv[1], int(sys.argv[2])
if mode == "single":
    for i in range(n):
        services.notify(f"hub cost {i}", body="x" * 100, recipient=f"hubcost{i % 100}")
else:
    services.notify_many("hub cost bulk", body="x" * 100, recipients=[f"hubcost{i}" for i in range(n)])
print(json.dumps(Notification.objects.newest_id()))
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_stream(port: int) -> Any:
    """One anonymous stream (the hub of that process starts with its first stream), read up to hello."""
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET /notifications/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    seen = b""
    for _ in range(1000):
        seen += sock.recv(65536)
        if b"event: hello" in seen:
            return sock
    raise RuntimeError(f"no hello from {port}: {seen[:300]!r}")


def head_of(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/notifications/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith("notifications_head_id"):
            return int(float(line.split()[-1]))
    raise RuntimeError("no notifications_head_id in the metrics")


def hub_cost(database_url: str, processes: int, events: int) -> dict[str, Any]:
    """CPU per event of each of ``processes`` daphnes on Redis (pubsub) whose hubs deliver none of them.

    Each process holds one anonymous stream (so its hub runs); a separate writer process sends
    ``events`` personal notices to users with no stream, one ``notify()`` each, then one
    ``notify_many`` of as many; each server's CPU (utime + stime) over the run, less its idle
    rate, divided by the events. Also Redis's CPU per event and the bytes of one event message.
    """
    import django
    import msgpack
    import redis
    from django.conf import settings

    from tests.support.pg_redis import redis_server
    from tests.support.servers import Daphne

    if not settings.configured:
        os.environ.update(env_for(database_url))
        django.setup()
    from django.utils import timezone

    from notifications.events import Event, EventBatch
    from notifications.models import Notification

    with tempfile.TemporaryDirectory(prefix="bench-hubcost-") as tmp, redis_server(Path(tmp) / "redis") as rs:
        env = env_for(database_url, REDIS_URL=rs.url, REDIS_LAYER="pubsub")
        django_script(env, HUB_COST_SETUP, str(events))
        servers = [Daphne(env=env, log_path=Path(tmp) / f"daphne{i}.log").start() for i in range(processes)]
        socks = []
        r = redis.Redis.from_url(rs.url)
        result: dict[str, Any] = {"processes": processes, "events": events}
        try:
            socks = [open_stream(s.port) for s in servers]
            time.sleep(1.0)
            pids = [s.proc.pid for s in servers if s.proc is not None]
            idle0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
            time.sleep(3.0)
            idle_rate = [(cpu_seconds(p) - c) / (time.monotonic() - t0) for p, c in zip(pids, idle0, strict=True)]
            for mode in ("single", "bulk"):
                cpu0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
                rcpu0 = r.info("cpu")
                done = subprocess.run([PY, "-c", HUB_COST_WRITER, mode, str(events)], cwd=ROOT, env=env, check=True,
                                      capture_output=True, text=True, timeout=600)
                last = json.loads(done.stdout.strip().splitlines()[-1])
                deadline = time.monotonic() + 120
                while any(head_of(s.port) < last for s in servers) and time.monotonic() < deadline:
                    time.sleep(0.05)
                elapsed = time.monotonic() - t0
                rcpu1 = r.info("cpu")
                per = [(cpu_seconds(p) - c - rate * elapsed) / events * 1e6
                       for p, c, rate in zip(pids, cpu0, idle_rate, strict=True)]
                redis_s = sum(rcpu1[k] - rcpu0[k] for k in ("used_cpu_sys", "used_cpu_user"))
                result[mode] = {"us_per_event_per_process": [round(x, 1) for x in per],
                                "redis_us_per_event": round(redis_s / events * 1e6, 2), "seconds": round(elapsed, 2)}
            sample = Notification(id=123456, title="hub cost 1", body="x" * 100, recipient_id=42,
                                  created_at=timezone.now())
            one = Event.of(sample)
            result["bytes_single_event"] = len(msgpack.packb(one.to_message(), use_bin_type=True))
            batch = EventBatch(tuple(Event.of(Notification(id=123456 + i, title="hub cost bulk", body="x" * 100,
                                                           recipient_id=42 + i, created_at=sample.created_at))
                                     for i in range(1000)))
            result["bytes_per_event_in_batch"] = round(len(msgpack.packb(batch.to_message(), use_bin_type=True)) / 1000)
        finally:
            for sock in socks:
                sock.close()
            for s in servers:
                s.stop()
    return result


# -- driver ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput cell")
    parser.add_argument("--max-calls", type=int, default=20_000, help="per writer process and cell")
    parser.add_argument("--procs", default="1,4,8", help="writer process counts")
    parser.add_argument("--modes", default="lock,nolock")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every cell; the table shows medians")
    parser.add_argument("--before", default=None, help="also measure this git ref (e.g. main)")
    parser.add_argument("--profile", type=int, default=0, help="cProfile this many single-writer calls")
    parser.add_argument("--profile-procs", type=int, default=1, help="writer processes while profiling")
    parser.add_argument("--bulk", type=int, default=10_000, help="bulk end-to-end users (0: skip)")
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--ceiling", type=int, default=0,
                        help="rounds of pgbench on the product's INSERT with and without the lock (0: skip)")
    parser.add_argument("--hub-cost", type=int, default=0,
                        help="events for the per-process cost of an undelivered event (0: skip)")
    parser.add_argument("--hub-processes", type=int, default=4)
    parser.add_argument("--spy", default=None, help="a py-spy binary: sample the server during the bulk send")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.support.pg_redis import postgres_cluster
    from tests.support.servers import manage, project_env

    with postgres_cluster() as pg:
        url = pg.create_database("bench_writes")
        manage(project_env(url), "migrate", "--noinput", "-v", "0")
        env = env_for(url)
        if args.profile:  # one writer profiled, with --profile-procs - 1 others writing beside it
            profiled = [subprocess.Popen([PY, "-c", PROFILE, str(args.profile)], cwd=ROOT, env=env,
                                         stdout=subprocess.PIPE, text=True) for _ in range(args.profile_procs)]
            outputs = [p.communicate(timeout=300)[0] for p in profiled]
            print(f"[profile] {args.profile_procs} writer process(es), each under cProfile; the first one's:")
            print(outputs[0])
        rows: list[tuple[str, int, str, float, int]] = []
        if not args.skip_throughput:
            with contextlib.ExitStack() as stack:
                # Cells interleaved (trees, then modes, within each process count; --rounds times),
                # so that a change in the machine's load falls on both sides of each comparison.
                trees = [("after", stack.enter_context(source_tree(None)))]
                if args.before:
                    trees.append(("before", stack.enter_context(source_tree(args.before))))
                modes = args.modes.split(",")
                for round_ in range(args.rounds):
                    for procs in [int(p) for p in args.procs.split(",")]:
                        # Which mode goes first alternates by round: a drift (the table growing,
                        # the machine warming) does not always fall on the same side.
                        for mode in modes if round_ % 2 == 0 else modes[::-1]:
                            for label, tree in trees:
                                rate = throughput(tree, env, procs, mode, args.seconds, args.max_calls)
                                rows.append((label, procs, mode, rate, round_))
                                print(f"[writes] {label:<6} {procs} process(es) {mode:<6} {rate:8.0f} notify()/s",
                                      flush=True)
            print("\n| tree | writer processes | notify()/s with the sequence lock | lock replaced by a no-op | "
                  "ratio of medians | per-round ratios (no-lock / lock, same round) → median |\n"
                  "|---|---|---|---|---|---|")
            for label in dict.fromkeys(r[0] for r in rows):
                for procs in dict.fromkeys(r[1] for r in rows):
                    cell = {mode: statistics.median(r[3] for r in rows if r[:3] == (label, procs, mode))
                            for mode in {r[2] for r in rows if r[:2] == (label, procs)}}
                    lock, nolock = cell.get("lock"), cell.get("nolock")
                    ratio = f"{nolock / lock:.2f}×" if lock and nolock else "-"
                    by_round = {(r[4], r[2]): r[3] for r in rows if r[:2] == (label, procs)}
                    paired = [by_round[n, "nolock"] / by_round[n, "lock"] for n in range(args.rounds)
                              if by_round.get((n, "lock")) and (n, "nolock") in by_round]
                    pairs = (f"{' / '.join(f'{x:.2f}' for x in paired)} → **{statistics.median(paired):.2f}×**"
                             if paired else "-")
                    print(f"| {label} | {procs} | {lock or 0:.0f} | {nolock or 0:.0f} | {ratio} | {pairs} |")
        if args.ceiling:
            print("\n" + "\n".join(ceiling(env, pg.port, args.ceiling, args.seconds, [1, 4, 8])))
        if args.hub_cost:
            cost = hub_cost(url, args.hub_processes, args.hub_cost)
            print(f"\n[hub-cost] {json.dumps(cost)}")
        if args.bulk:
            result = bulk(env, args.bulk, args.client_procs, args.spy)
            print(f"\n[bulk] {json.dumps(result)}")
            print(f"[bulk] {result['users']:,} personal notices, {result['ready']:,} streams: POST took "
                  f"{result['post_s']:.2f}s, last delivery {result['end_to_end_s']:.2f}s after the POST; "
                  f"lost {result['lost']} dup {result['dup']} extra {result['extra']}")


if __name__ == "__main__":
    main()
