"""Benchmark driver (``make bench``): servers side by side in one run, on 127.0.0.1 only.

For each server under test and each N it starts a fresh server process on a free port,
opens N SSE streams from load-client processes (``bench.client``), sends 20 admin-style
broadcasts 0.5 s apart through the server's trigger endpoint, and reports connect time,
fan-out latency (trigger → receipt), lost / duplicated / out-of-order events, memory per
stream (RSS delta / N) and server CPU per delivered event (utime + stime from /proc).
Then the targeted case (U users, one stream and one notification each) and the reconnect
storm (S streams reconnecting at once, each with 20 missed notifications).

Environment: ``BENCH_PROFILE=quick`` (default) or ``full``; ``BENCH_N``, ``BENCH_SERVERS``,
``BENCH_ROUNDS``, ``BENCH_USERS``, ``BENCH_STORM``, ``BENCH_OUT`` override the profile.
Every loop is bounded in count and time; servers and clients are ended by their pid.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import gclog
from tests.support.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BACKLOG = 4096
STREAM_PATH = "/notifications/stream/"


# -- servers under test ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerKind:
    name: str
    label: str
    target: str  # module:attribute of the ASGI app
    server: str  # "daphne" | "uvicorn"
    settings: str | None  # DJANGO_SETTINGS_MODULE, None for the raw loop
    stream_path: str = STREAM_PATH
    user_path: str = STREAM_PATH + "?user={user}"  # raw loop; product uses the session cookie
    root: Path = ROOT  # the source tree the server imports from (BENCH_BEFORE: an older product)

    def command(self, port: int) -> list[str]:
        if self.server == "daphne":
            endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog={BACKLOG}"
            return [PY, "-m", "daphne", "-e", endpoint, self.target]
        return [PY, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
                "--http", "httptools", "--backlog", str(BACKLOG), "--no-access-log", "--log-level", "warning",
                "--lifespan", "on", self.target]


KINDS = {
    k.name: k
    for k in [
        ServerKind("raw-daphne", "raw ASGI loop, daphne", "bench.raw_app:app", "daphne", None),
        ServerKind("floor-daphne", "floor (ASGI loop, 64 per turn), daphne", "bench.raw_app:floor", "daphne", None),
        ServerKind("product-daphne", "our product, daphne", "project.asgi:application", "daphne", "bench.settings"),
        ServerKind("async-daphne", "our product, anotify() trigger (no Django view), daphne", "bench.asgi:application",
                   "daphne", "bench.settings"),
        ServerKind("eventstream-daphne", "django-eventstream 5, daphne", "bench.es_asgi:application", "daphne",
                   "bench.es_settings", stream_path="/events/", user_path="/events/user/{user}/"),
        ServerKind("raw-uvicorn", "raw ASGI loop, uvicorn+uvloop+httptools", "bench.raw_app:app", "uvicorn", None),
        ServerKind("floor-uvicorn", "floor (ASGI loop, 64 per turn), uvicorn+uvloop+httptools", "bench.raw_app:floor",
                   "uvicorn", None),
        ServerKind("product-uvicorn", "our product, uvicorn+uvloop+httptools", "project.asgi:application",
                   "uvicorn", "bench.settings"),
        ServerKind("async-uvicorn", "our product, anotify() trigger (no Django view), uvicorn+uvloop+httptools",
                   "bench.asgi:application", "uvicorn", "bench.settings"),
    ]
}
if os.environ.get("BENCH_BEFORE"):
    # A tree holding another version of the product (notifications/, project/, and a bench/
    # link), e.g. ``git archive`` of the commit before a change: compared in the same run.
    _before = Path(os.environ["BENCH_BEFORE"]).resolve()
    for _server in ("daphne", "uvicorn"):
        KINDS[f"before-{_server}"] = ServerKind(
            f"before-{_server}", f"product before the change, {_server}", "project.asgi:application", _server,
            "bench.settings", root=_before)
# More trees to compare in the same run: ``BENCH_VARIANTS=slice256=/tmp/a,slice16=/tmp/b`` adds
# the servers ``slice256-daphne``, ``slice256-uvicorn``, ... (select them with BENCH_SERVERS).
for _item in filter(None, os.environ.get("BENCH_VARIANTS", "").split(",")):
    _name, _, _path = _item.partition("=")
    for _server in ("daphne", "uvicorn"):
        KINDS[f"{_name}-{_server}"] = ServerKind(
            f"{_name}-{_server}", f"variant {_name}, {_server}", "project.asgi:application", _server,
            "bench.settings", root=Path(_path).resolve())


def base_of(name: str, present: set[str]) -> str | None:
    """What a server is compared with: the floor on the same server if it ran, else the raw loop."""
    server = KINDS[name].server if name in KINDS else name.rsplit("-", 1)[-1]
    for base in (f"floor-{server}", f"raw-{server}"):
        if base in present and base != name and not name.startswith(("raw-", "floor-")):
            return base
    return None


def cpu_times(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_of(pid: int) -> float:
    return sum(cpu_times(pid))


def switches(pid: int) -> int:
    """Context switches (voluntary + involuntary) of a process so far: wake-ups and preemptions."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if "ctxt_switches:" in line:
            total += int(line.split()[1])
    return total


def django_env(settings: str, database: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFICATIONS_", "DJANGO_", "REDIS_URL"))}
    env.update(DJANGO_SETTINGS_MODULE=settings, DJANGO_SECRET_KEY="insecure-key-for-benchmarks-only",
               DATABASE_URL=f"sqlite:///{database}", PYTHONUNBUFFERED="1")
    return env


class Server:
    """One server process under test, on a free port, with a fresh copy of the template database."""

    def __init__(self, kind: ServerKind, out: Path, template: Path, tag: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.log_path = out / f"{tag}.log"
        database = out / f"{tag}.sqlite3"
        shutil.copyfile(template, database)
        env = django_env(kind.settings or "bench.settings", database)
        self.gc_log = out / f"{tag}.gc.txt"
        env["BENCH_GC_LOG"] = str(self.gc_log)
        if kind.settings is None:
            env.pop("DJANGO_SETTINGS_MODULE")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(kind.command(self.port), env=env, cwd=kind.root, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.database = database
        wait_for_port(self.port, timeout=30, proc=self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        """Seconds of CPU (user + system) the server process has used."""
        return sum(self.cpu_times())

    def cpu_times(self) -> tuple[float, float]:
        """Seconds of user and of system (kernel: socket writes, epoll) CPU the server has used."""
        return cpu_times(self.pid)

    def rss(self) -> int:
        return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * PAGE

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return 0

    def post(self, path: str, data: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", path, body=json.dumps(data), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"POST {path} → {response.status}: {body[:300]!r}")
            return dict(json.loads(body))
        finally:
            conn.close()

    def queries(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/bench/queries/")
            return int(json.loads(conn.getresponse().read())["queries"])
        finally:
            conn.close()

    def warm_up(self) -> None:
        """One stream until it is ready and one broadcast: imports done, hub started, threads up."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as s:
            s.sendall(request(self.kind.stream_path).encode())
            data = b""
            deadline = time.monotonic() + 20
            while b"hello" not in data and b"stream-open" not in data and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        self.post("/bench/broadcast/", {"k": -1})
        time.sleep(1.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        with contextlib.suppress(FileNotFoundError):
            self.database.unlink()


def request(path: str, cookie: str | None = None) -> str:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream", "Cache-Control: no-cache"]
    if cookie:
        lines.append(f"Cookie: sessionid={cookie}")
    return "\r\n".join(lines) + "\r\n\r\n"


# -- load clients ------------------------------------------------------------------------------


class Clients:
    """``count`` load-client processes; each command goes to all of them, answers come back in order."""

    def __init__(self, count: int) -> None:
        self.procs = [
            subprocess.Popen([PY, "-m", "bench.client"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            for _ in range(count)
        ]

    def ask(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for proc, cmd in zip(self.procs, commands, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cmd).encode() + b"\n")
            proc.stdin.flush()
        answers = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"load client {proc.pid} exited")
            answers.append(json.loads(line))
        return answers

    def all(self, cmd: dict[str, Any]) -> list[dict[str, Any]]:
        return self.ask([cmd] * len(self.procs))

    def split(self, items: list[Any]) -> list[list[Any]]:
        k = len(self.procs)
        return [items[i::k] for i in range(k)]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(BrokenPipeError, ValueError):
                    assert proc.stdin is not None
                    proc.stdin.write(b'{"cmd": "exit"}\n')
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def session(kind: ServerKind, cfg: Config, tag: str) -> Iterator[tuple[Server, Clients]]:
    server = Server(kind, cfg.out, cfg.template, tag)
    clients = Clients(cfg.client_procs)
    try:
        server.warm_up()
        yield server, clients
    finally:
        clients.stop()
        server.stop()


def connect(server: Server, clients: Clients, requests: list[str], timeout: float) -> dict[str, Any]:
    shares = clients.split(requests)
    answers = clients.ask([
        {"cmd": "connect", "port": server.port, "requests": share, "concurrency": 256, "timeout": timeout}
        for share in shares
    ])
    return {"ready": sum(a["ready"] for a in answers), "failed": sum(a["failed"] for a in answers),
            "seconds": max(a["elapsed"] for a in answers), "shares": shares}


def profiler(cfg: Config, server: Server, tag: str, seconds: float) -> subprocess.Popen[bytes] | None:
    """With ``BENCH_PYSPY=1``, py-spy samples the server while it fans out (collapsed stacks)."""
    if not cfg.pyspy:
        return None
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or "py-spy"
    return subprocess.Popen([spy, "record", "--pid", str(server.pid), "--rate", "200", "--nonblocking",
                             "--duration", str(int(seconds)), "--format", "raw", "--output",
                             str(cfg.out / f"{tag}.pyspy.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_delivered(clients: Clients, total: int, timeout: float) -> float:
    """Poll until the clients hold ``total`` notifications (or time is up); returns when."""
    deadline = time.monotonic() + timeout
    while True:
        got = sum(a["events"] for a in clients.all({"cmd": "count"}))
        if got >= total or time.monotonic() > deadline:
            return time.monotonic()
        time.sleep(0.1)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p99": at(0.99), "max": ordered[-1]}


def merge(answers: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for a in answers for x in a["latencies"]]
    out: dict[str, Any] = {key: sum(a[key] for a in answers) for key in ("lost", "dup", "ooo", "extra", "closed")}
    out.update(percentiles(latencies))
    out["delivered"] = len(latencies)
    spans: dict[str, list[float]] = {}
    for a in answers:
        for id, (first, last) in a.get("spans", {}).items():
            span = spans.setdefault(id, [first, last])
            span[0], span[1] = min(span[0], first), max(span[1], last)
    if spans:
        # Per notification: the first receipt (the trigger path: request, notify(), publish)
        # and how long the fan-out to every stream took after it.
        firsts = [first for first, _ in spans.values()]
        widths = [last - first for first, last in spans.values()]
        out.update(first_p50=statistics.median(firsts), first_max=max(firsts),
                   span_p50=statistics.median(widths), span_max=max(widths))
    return out


# -- scenarios ---------------------------------------------------------------------------------


def broadcast_run(kind: ServerKind, n: int, cfg: Config, tag: str) -> dict[str, Any]:
    """N anonymous streams, ``cfg.broadcasts`` broadcasts ``cfg.interval`` s apart."""
    with session(kind, cfg, tag) as (server, clients):
        # What one trigger costs the server with no stream open (the request, notify(), the
        # publish): measured apart, so the fan-out's own CPU can be told from the trigger's.
        for k in range(TRIGGER_WARMUP):
            server.post("/bench/broadcast/", {"k": f"warm-{k}"})
        trigger_cpu0 = server.cpu()
        for k in range(cfg.broadcasts):
            server.post("/bench/broadcast/", {"k": f"alone-{k}"})
        trigger_cpu = (server.cpu() - trigger_cpu0) / cfg.broadcasts
        rss0, cpu0 = server.rss(), server.cpu()
        connect_start = time.monotonic()
        conn = connect(server, clients, [request(kind.stream_path)] * n, timeout=30 + n * 0.015)
        connect_cpu = server.cpu() - cpu0
        connect_gc = gclog.read(server.gc_log, connect_start, time.monotonic())
        time.sleep(1.0)
        ready = conn["ready"]
        rss1, fds, threads = server.rss(), server.fds(), server.threads()
        sent: list[tuple[int, float]] = []
        lock = threading.Lock()

        def trigger(k: int) -> None:
            t0 = time.monotonic()
            try:
                ids = server.post("/bench/broadcast/", {"k": k})["ids"]
            except Exception as exc:  # a failed publish is reported as lost events
                print(f"  trigger {k} failed: {exc}", file=sys.stderr)
                return
            with lock:
                sent.extend((id, t0) for id in ids)

        spy = profiler(cfg, server, tag, seconds=cfg.broadcasts * cfg.interval + 3)
        (user1, sys1) = server.cpu_times()
        cpu1 = user1 + sys1
        sw1 = switches(server.pid), sum(switches(p.pid) for p in clients.procs)
        ccpu1 = sum(cpu_of(p.pid) for p in clients.procs)
        start = time.monotonic()
        threads_ = []
        for k in range(cfg.broadcasts):
            time.sleep(max(0.0, start + k * cfg.interval - time.monotonic()))
            t = threading.Thread(target=trigger, args=(k,), daemon=True)
            t.start()
            threads_.append(t)
        for t in threads_:
            t.join(120)
        end = wait_delivered(clients, ready * cfg.broadcasts, timeout=20 + n * 0.006)
        (user2, sys2) = server.cpu_times()
        broadcast_gc = gclog.read(server.gc_log, start, end)
        cpu2 = user2 + sys2
        sw2 = switches(server.pid), sum(switches(p.pid) for p in clients.procs)
        ccpu2 = sum(cpu_of(p.pid) for p in clients.procs)
        if spy is not None:
            spy.wait(60)
        expected = sorted(sent)
        result = merge(clients.all({"cmd": "collect", "expected": expected}))
        result["lost"] += ready * (cfg.broadcasts - len(expected))  # triggers that failed
        result.update(
            server=kind.name, n=n, ready=ready, failed=n - ready, connect_s=conn["seconds"],
            connect_cpu_s=connect_cpu, rss_base=rss0,
            mem_per_stream=(rss1 - rss0) / max(ready, 1), fds=fds, threads=threads,
            broadcast_cpu_s=cpu2 - cpu1,
            cpu_per_event_us=(cpu2 - cpu1) / max(result["delivered"], 1) * 1e6,
            trigger_cpu_ms=trigger_cpu * 1e3,
            fanout_cpu_per_event_us=max(cpu2 - cpu1 - len(expected) * trigger_cpu, 0.0)
            / max(result["delivered"], 1) * 1e6,
            sys_per_event_us=(sys2 - sys1) / max(result["delivered"], 1) * 1e6,
            client_cpu_per_event_us=(ccpu2 - ccpu1) / max(result["delivered"], 1) * 1e6,
            server_switches=sw2[0] - sw1[0], client_switches=sw2[1] - sw1[1],
            connect_full_gcs=connect_gc["full_gcs"], connect_full_gc_s=connect_gc["full_gc_s"],
            **broadcast_gc,
        )
        return result


def targeted_run(kind: ServerKind, users: list[tuple[str, str]], cfg: Config, tag: str) -> dict[str, Any]:
    """One stream per user (signed in through the session cookie for the product), one notification each."""
    with session(kind, cfg, tag) as (server, clients):
        if kind.settings == "bench.settings":
            requests = [request(STREAM_PATH, cookie=key) for _, key in users]
        else:
            requests = [request(kind.user_path.format(user=name)) for name, _ in users]
        conn = connect(server, clients, requests, timeout=30 + len(users) * 0.02)
        time.sleep(0.5)
        cpu1 = server.cpu()
        started = time.monotonic()
        answer = server.post("/bench/targeted/", {"users": [name for name, _ in users]})
        wait_delivered(clients, conn["ready"], timeout=30 + len(users) * 0.01)
        cpu2 = server.cpu()
        by_user = dict(zip([name for name, _ in users], answer["sent"], strict=True))
        user_shares = clients.split([name for name, _ in users])
        answers = clients.ask([{"cmd": "collect", "per_conn": [[by_user[name]] for name in share]}
                               for share in user_shares])
        result = merge(answers)
        result.update(server=kind.name, users=len(users), ready=conn["ready"], failed=len(users) - conn["ready"],
                      connect_s=conn["seconds"], post_s=time.monotonic() - started,
                      cpu_per_event_us=(cpu2 - cpu1) / max(result["delivered"], 1) * 1e6)
        return result


def storm_run(kind: ServerKind, n: int, cfg: Config, tag: str, missed: int = 20) -> dict[str, Any]:
    """N streams get one event, all drop, ``missed`` events are sent, all reconnect at once."""
    with session(kind, cfg, tag) as (server, clients):
        conn = connect(server, clients, [request(kind.stream_path)] * n, timeout=30 + n * 0.015)
        server.post("/bench/broadcast/", {"k": "before"})
        wait_delivered(clients, conn["ready"], timeout=30)
        clients.all({"cmd": "close"})
        sent = []
        for k in range(missed):
            sent.extend(server.post("/bench/broadcast/", {"k": f"missed {k}"})["ids"])
        time.sleep(1.0)
        spy = profiler(cfg, server, tag, seconds=10)
        q0, cpu0, t0 = server.queries(), server.cpu(), time.monotonic()
        answers = clients.all({"cmd": "reconnect", "port": server.port, "expect": missed, "concurrency": 4096,
                               "timeout": 30 + n * 0.03})
        q1, cpu1 = server.queries(), server.cpu()
        storm_gc = gclog.read(server.gc_log, t0, time.monotonic())
        if spy is not None:
            spy.wait(60)
        complete = sum(a["complete"] for a in answers)
        result = merge(clients.all({"cmd": "collect", "expected": [[id, 0.0] for id in sent]}))
        reconnected = conn["ready"]
        result.update(server=kind.name, n=n, ready=reconnected, complete=complete,
                      seconds=max(a["elapsed"] for a in answers), cpu_s=cpu1 - cpu0,
                      queries=q1 - q0, queries_per_reconnect=(q1 - q0) / max(reconnected, 1), **storm_gc)
        result.pop("p50"), result.pop("p99"), result.pop("max")
        return result


# -- configuration, setup, report ----------------------------------------------------------------


@dataclass
class Config:
    profile: str
    ns: list[int]
    servers: list[str]
    rounds: int
    users: int
    storm: int
    storm_servers: list[str]
    targeted_servers: list[str]
    broadcasts: int = 20
    interval: float = 0.5
    client_procs: int = 2
    pyspy: bool = False
    budget: float = 600.0  # seconds; scenarios not started by then are skipped (partial report)
    out: Path = field(default_factory=lambda: ROOT / "bench" / "results")
    template: Path = field(default_factory=Path)
    plot: Path = field(default_factory=Path)


def config() -> Config:
    profile = os.environ.get("BENCH_PROFILE", "quick")
    full = profile == "full"
    all_servers = list(KINDS)
    daphne = ["floor-daphne", "product-daphne", "eventstream-daphne"]

    def ints(name: str, default: str) -> list[int]:
        return [int(x) for x in os.environ.get(name, default).split(",") if x]

    def names(name: str, default: list[str]) -> list[str]:
        value = os.environ.get(name)
        chosen = default if value is None else [s for s in value.split(",") if s]
        unknown = [s for s in chosen if s not in KINDS]
        if unknown:
            raise SystemExit(f"{name}: unknown servers {unknown}; known: {list(KINDS)}")
        return chosen

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(os.environ.get("BENCH_OUT", ROOT / "bench" / "results" / f"{profile}-{stamp}"))
    return Config(
        profile=profile,
        ns=ints("BENCH_N", "1000,5000,10000" if full else "1000"),
        servers=names("BENCH_SERVERS", all_servers),
        rounds=int(os.environ.get("BENCH_ROUNDS", "3" if full else "1")),
        users=int(os.environ.get("BENCH_USERS", "1000")),
        storm=int(os.environ.get("BENCH_STORM", "5000" if full else "1000")),
        storm_servers=names("BENCH_STORM_SERVERS", daphne),
        pyspy=os.environ.get("BENCH_PYSPY", "") == "1",
        budget=float(os.environ.get("BENCH_BUDGET", "5400" if full else "540")),
        targeted_servers=names("BENCH_TARGETED_SERVERS", daphne),
        out=out,
        plot=Path(os.environ.get("BENCH_PLOT", ROOT / "docs" / "bench-latency.png" if full else out / "latency.png")),
    )


USERS_SCRIPT = """
import json, sys
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
User = get_user_model()
n = int(sys.argv[-1])
User.objects.bulk_create([User(username=f"bench{i}", password="!") for i in range(n)])
out = []
for user in User.objects.filter(username__startswith="bench").order_by("id"):
    s = SessionStore()
    s[SESSION_KEY] = str(user.pk)
    s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    s[HASH_SESSION_KEY] = user.get_session_auth_hash()
    s.create()
    out.append([user.username, s.session_key])
print(json.dumps(out))
"""


def prepare(cfg: Config) -> list[tuple[str, str]]:
    """A migrated template database (both apps' tables) with ``cfg.users`` users and their sessions."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    cfg.template = cfg.out / "template.sqlite3"
    env = django_env("bench.es_settings", cfg.template)
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True, timeout=300,
                   capture_output=True)
    done = subprocess.run([PY, "-c", "import django; django.setup(); exec(open(0).read())", str(cfg.users)],
                          input=USERS_SCRIPT, env=env, cwd=ROOT, check=True, timeout=300, capture_output=True,
                          text=True)
    return [(name, key) for name, key in json.loads(done.stdout)]


def median(rows: list[dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return None
    return statistics.median(values)


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


RATIO_KEYS = (("p99", "p99"), ("cpu_per_event_us", "cpu"), ("mem_per_stream", "mem"), ("connect_s", "connect"),
              ("fanout_cpu_per_event_us", "fanout"))
#: Triggers sent before the measured ones (first-request imports, connections, caches).
TRIGGER_WARMUP = 5


def summarise(cfg: Config, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    present = {r["server"] for r in rows}
    table = []
    for n in cfg.ns:
        for name in cfg.servers:
            runs = [r for r in rows if r["server"] == name and r["n"] == n]
            if not runs:
                continue
            summary: dict[str, Any] = {"server": name, "n": n, "rounds": len(runs), "base": base_of(name, present)}
            for key in ("connect_s", "connect_cpu_s", "p50", "p99", "max", "mem_per_stream", "cpu_per_event_us",
                        "broadcast_cpu_s", "fds", "threads", "full_gcs", "full_gc_s", "full_gc_max_s",
                        "connect_full_gcs", "connect_full_gc_s", "first_p50", "first_max", "span_p50", "span_max"):
                summary[key] = median(runs, key)
            for key in ("sys_per_event_us", "client_cpu_per_event_us", "trigger_cpu_ms", "fanout_cpu_per_event_us"):
                summary[key] = median(runs, key) if all(key in r for r in runs) else None
            for key in ("lost", "dup", "ooo", "failed", "extra", "closed"):
                summary[key] = sum(r[key] for r in runs)
            # The base (the floor, else the raw loop) on the same server ran just before, in the
            # same round: pair them, so that a noisy minute on the shared machine moves both
            # sides of a ratio.
            base = summary["base"]
            for key, label in RATIO_KEYS:
                pairs = [(r, next((b for b in rows if b["server"] == base and b["n"] == n
                                   and b.get("round") == r.get("round")), None)) for r in runs]
                summary[f"{label}_ratios"] = [r[key] / b[key] for r, b in pairs
                                              if b and b.get(key) and r.get(key) is not None]
            table.append(summary)
    return table


def _ratio(table: list[dict[str, Any]], row: dict[str, Any], key: str) -> str:
    base = next((r for r in table if r["n"] == row["n"] and r["server"] == row.get("base")), None)
    if base is None or not base.get(key) or row.get(key) is None:
        return "-"
    return f"{row[key] / base[key]:.2f}"


def print_table(cfg: Config, table: list[dict[str, Any]]) -> None:
    print(f"\nBroadcast fan-out: {cfg.broadcasts} broadcasts {cfg.interval} s apart; medians of {cfg.rounds} round(s);"
          " ratios (x) against the floor on the same server (the raw loop if no floor ran)")
    header = (f"{'server':<20} {'N':>6} {'connect':>9} {'p50':>9} {'p99':>9} {'max':>9} {'lost':>5} {'dup':>4} "
              f"{'ooo':>4} {'fail':>5} {'KiB/str':>8} {'CPU/ev':>8} {'fullGC':>7} {'p99 x':>6} {'CPU x':>6} "
              f"{'mem x':>6} {'conn x':>6} {'trigger':>8} {'fan-out x':>9}")
    print(header)
    print("-" * len(header))
    for row in table:
        gcs = f"{row['full_gcs'] or 0:.0f}/{(row['full_gc_s'] or 0) * 1000:.0f}ms"
        print(f"{row['server']:<20} {row['n']:>6} {row['connect_s']:>8.1f}s {fmt_ms(row['p50']):>9} "
              f"{fmt_ms(row['p99']):>9} {fmt_ms(row['max']):>9} {row['lost']:>5} {row['dup']:>4} {row['ooo']:>4} "
              f"{row['failed']:>5} {row['mem_per_stream'] / 1024:>8.1f} {row['cpu_per_event_us']:>6.1f}us {gcs:>7} "
              f"{_ratio(table, row, 'p99'):>6} {_ratio(table, row, 'cpu_per_event_us'):>6} "
              f"{_ratio(table, row, 'mem_per_stream'):>6} {_ratio(table, row, 'connect_s'):>6} "
              f"{row['trigger_cpu_ms'] or 0:>6.2f}ms {_ratio(table, row, 'fanout_cpu_per_event_us'):>9}")


def markdown(cfg: Config, table: list[dict[str, Any]], targeted: list[dict[str, Any]],
             storms: list[dict[str, Any]]) -> str:
    """The figures as Markdown tables (pasted into docs/benchmarks.md)."""
    out = [f"Broadcast: {cfg.broadcasts} broadcasts {cfg.interval} s apart, medians of {cfg.rounds} round(s); "
           "ratios against the floor on the same server (the raw loop where no floor ran).", "",
           "| server | N | connect | p50 | p99 | max | lost / dup / out of order | failed | memory per stream "
           "| CPU per delivered event | full GCs in the window | p99 × floor | CPU × floor | memory × floor "
           "| connect × floor |",
           "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table:
        gcs = (f"{row['full_gcs'] or 0:.0f} ({(row['full_gc_s'] or 0) * 1000:.0f} ms)"
               if row.get("full_gcs") is not None else "-")
        out.append(f"| {KINDS[row['server']].label} | {row['n']:,} | {row['connect_s']:.1f} s | {fmt_ms(row['p50'])} "
                   f"| {fmt_ms(row['p99'])} | {fmt_ms(row['max'])} | {row['lost']} / {row['dup']} / {row['ooo']} "
                   f"| {row['failed']} | {row['mem_per_stream'] / 1024:.1f} KiB | {row['cpu_per_event_us']:.1f} µs "
                   f"| {gcs} | {_ratio(table, row, 'p99')} | {_ratio(table, row, 'cpu_per_event_us')} "
                   f"| {_ratio(table, row, 'mem_per_stream')} | {_ratio(table, row, 'connect_s')} |")
    paired = [row for row in table if row.get("cpu_ratios")]
    if paired:
        out += ["", "The same ratios taken round by round (each server against the floor on the same server, "
                "run just before it in the same round), then their median (**bold**); the load clients' CPU "
                "per event.", "",
                "| server | N | p99 × floor, by round | CPU × floor, by round | memory × floor, by round "
                "| connect × floor, by round | system CPU per event | client CPU per event "
                "| one trigger alone (server CPU) | fan-out CPU × floor (trigger taken out), by round |",
                "|---|---:|---|---|---|---|---:|---:|---:|---|"]

        def cell(values: list[float]) -> str:
            if not values:
                return "-"
            return f"{' / '.join(f'{x:.2f}' for x in values)} → **{statistics.median(values):.2f}**"

        for row in paired:
            sys_us, client_us = row.get("sys_per_event_us"), row.get("client_cpu_per_event_us")
            trigger = "-" if row.get("trigger_cpu_ms") is None else f"{row['trigger_cpu_ms']:.2f} ms"
            out.append(f"| {KINDS[row['server']].label} | {row['n']:,} | {cell(row['p99_ratios'])} "
                       f"| {cell(row['cpu_ratios'])} | {cell(row['mem_ratios'])} | {cell(row['connect_ratios'])} "
                       f"| {'-' if sys_us is None else f'{sys_us:.1f} µs'} "
                       f"| {'-' if client_us is None else f'{client_us:.1f} µs'} "
                       f"| {trigger} "
                       f"| {cell(row.get('fanout_ratios', []))} |")
    if targeted:
        out += ["", "Targeted: one stream and one notification per user (latency from the server's send).", "",
                "| server | users | connected | p50 | p99 | max | lost / dup / out of order | CPU per event |",
                "|---|---:|---:|---:|---:|---:|---|---:|"]
        out += [f"| {KINDS[r['server']].label} | {r['users']:,} | {r['ready']:,} | {fmt_ms(r['p50'])} "
                f"| {fmt_ms(r['p99'])} | {fmt_ms(r['max'])} | {r['lost']} / {r['dup']} / {r['ooo']} "
                f"| {r['cpu_per_event_us']:.0f} µs |" for r in targeted]
    if storms:
        present = {r["server"] for r in storms}
        out += ["", "Reconnect storm: every stream reconnects at once with Last-Event-ID, 20 missed each.", "",
                "| server | streams | complete | time | time × floor | lost / dup / out of order "
                "| DB queries per reconnect | server CPU | full GCs |", "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
        for r in storms:
            base_name = base_of(r["server"], present)
            base = next((b for b in storms if b["server"] == base_name and b["n"] == r["n"]), None)
            times = f"{r['seconds'] / base['seconds']:.2f}" if base and base["seconds"] else "-"
            gcs = f"{r.get('full_gcs', 0)} ({r.get('full_gc_s', 0.0) * 1000:.0f} ms)" if "full_gcs" in r else "-"
            out.append(f"| {KINDS[r['server']].label} | {r['n']:,} | {r['complete']:,} | {r['seconds']:.1f} s "
                       f"| {times} | {r['lost']} / {r['dup']} / {r['ooo']} | {r['queries_per_reconnect']:.2f} "
                       f"| {r['cpu_s']:.1f} s | {gcs} |")
    return "\n".join(out) + "\n"


def plot(cfg: Config, table: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name in cfg.servers:
        points = [(r["n"], r["p99"]) for r in table if r["server"] == name and r["p99"] is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, [y * 1000 for y in ys], marker="o", label=KINDS[name].label)
    ax.set_xlabel("open streams (N)")
    ax.set_ylabel("p99 fan-out latency, trigger → receipt (ms)")
    ax.set_yscale("log")
    ax.set_title(f"One process, {cfg.broadcasts} broadcasts {cfg.interval} s apart (2 cores, client on same host)")
    ax.title.set_fontsize(9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    cfg.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(cfg.plot)
    print(f"plot: {cfg.plot}")


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    cfg = config()
    print(f"profile={cfg.profile} N={cfg.ns} servers={cfg.servers} rounds={cfg.rounds} users={cfg.users} "
          f"storm={cfg.storm} nofile={hard} out={cfg.out}")
    users = prepare(cfg)
    rows: list[dict[str, Any]] = []
    targeted: list[dict[str, Any]] = []
    storms: list[dict[str, Any]] = []
    results_file = cfg.out / "results.json"

    def save() -> None:
        results_file.write_text(json.dumps({"broadcast": rows, "targeted": targeted, "storm": storms}, indent=1))

    deadline = time.monotonic() + cfg.budget

    def in_time(what: str) -> bool:
        if time.monotonic() < deadline:
            return True
        print(f"time budget ({cfg.budget:.0f} s, BENCH_BUDGET) spent: skipping {what}", flush=True)
        return False

    for round_ in range(cfg.rounds):
        for n in cfg.ns:
            for name in cfg.servers:
                if not in_time(f"{name} N={n} round {round_ + 1}"):
                    continue
                r = broadcast_run(KINDS[name], n, cfg, f"{name}-{n}-r{round_}")
                r.pop("latencies", None)
                r["round"] = round_
                rows.append(r)
                save()
                print(f"[round {round_ + 1}] {name:<19} N={n:<6} connect {r['connect_s']:.1f}s  "
                      f"p50 {fmt_ms(r['p50'])}  p99 {fmt_ms(r['p99'])}  max {fmt_ms(r['max'])}  "
                      f"lost {r['lost']} dup {r['dup']} ooo {r['ooo']} failed {r['failed']}  "
                      f"{r['mem_per_stream'] / 1024:.1f} KiB/stream  {r['cpu_per_event_us']:.1f} us CPU/event "
                      f"({r['sys_per_event_us']:.1f} system; client {r['client_cpu_per_event_us']:.1f})  "
                      f"switches {r['server_switches']}/{r['client_switches']}  fds {r['fds']} "
                      f"threads {r['threads']}  first receipt p50/max {fmt_ms(r.get('first_p50'))}/"
                      f"{fmt_ms(r.get('first_max'))} fan-out span p50/max {fmt_ms(r.get('span_p50'))}/"
                      f"{fmt_ms(r.get('span_max'))}  full GCs {r['full_gcs']} ({r['full_gc_s'] * 1000:.0f} ms, "
                      f"longest {r['full_gc_max_s'] * 1000:.0f}); at connect {r['connect_full_gcs']}", flush=True)
    for name in cfg.targeted_servers:
        if not in_time(f"targeted {name}"):
            continue
        r = targeted_run(KINDS[name], users, cfg, f"targeted-{name}")
        targeted.append(r)
        save()
        print(f"[targeted] {name:<19} users={r['users']} ready {r['ready']}  p50 {fmt_ms(r['p50'])}  "
              f"p99 {fmt_ms(r['p99'])}  max {fmt_ms(r['max'])}  lost {r['lost']} dup {r['dup']} ooo {r['ooo']}  "
              f"{r['cpu_per_event_us']:.1f} us CPU/event", flush=True)
    for name in cfg.storm_servers:
        if not in_time(f"storm {name}"):
            continue
        r = storm_run(KINDS[name], cfg.storm, cfg, f"storm-{name}")
        storms.append(r)
        save()
        print(f"[storm] {name:<19} N={r['n']} complete {r['complete']}/{r['ready']} in {r['seconds']:.1f}s  "
              f"lost {r['lost']} dup {r['dup']} ooo {r['ooo']}  {r['queries_per_reconnect']:.2f} queries/reconnect  "
              f"CPU {r['cpu_s']:.1f}s  full GCs {r['full_gcs']} ({r['full_gc_s'] * 1000:.0f} ms)", flush=True)
    table = summarise(cfg, rows)
    (cfg.out / "summary.json").write_text(json.dumps({"broadcast": table, "targeted": targeted, "storm": storms},
                                                     indent=1))
    print_table(cfg, table)
    (cfg.out / "summary.md").write_text(markdown(cfg, table, targeted, storms))
    plot(cfg, table)


def render(results: Path) -> None:
    """``python -m bench.run --render DIR``: tables and plot again from DIR/results.json."""
    cfg = config()
    data = json.loads((results / "results.json").read_text())
    rows = data["broadcast"]
    cfg.ns = sorted({r["n"] for r in rows})
    cfg.servers = [name for name in KINDS if any(r["server"] == name for r in rows)]
    cfg.rounds = max(r.get("round", 0) for r in rows) + 1 if rows else 1
    cfg.out = results
    table = summarise(cfg, rows)
    print_table(cfg, table)
    (results / "summary.md").write_text(markdown(cfg, table, data["targeted"], data["storm"]))
    plot(cfg, table)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--render"]:
        render(Path(sys.argv[2]))
    else:
        main()
