"""Which channels-redis layer carries events between daphne processes: core or pub/sub?

Starts PostgreSQL, redis-server and two daphne processes (A, B) on free 127.0.0.1 ports, opens
N streams spread over both, then a separate writer process calls ``notify()`` E times (paced,
then as fast as it can). Measures, per layer: the writer's cost per event (``notify()`` =
insert + commit + ``group_send``, and ``group_send`` alone), delivery latency to every stream,
missing/duplicate deliveries, server and Redis CPU per event, and Redis client connections.

Usage: ``.venv/bin/python -m bench.redis_layer [--streams 1000] [--events 200] [--layers pubsub,core]``
Every process it starts is stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.pg_redis import PostgresCluster, RedisServer
from tests.support.servers import ROOT, Daphne, manage, project_env

TICK = os.sysconf("SC_CLK_TCK")

WRITER = """
import asyncio, json, sys, time
from channels.layers import get_channel_layer
from notifications import services
from notifications.services import notify
events, pace = int(sys.argv[1]), float(sys.argv[2])
sent, notify_s = {}, []
for i in range(events):
    t0 = time.monotonic()
    n = notify(f"bench {i}")
    sent[n.id] = t0
    notify_s.append(time.monotonic() - t0)
    if pace:
        time.sleep(max(0.0, pace - (time.monotonic() - t0)))
# group_send alone, on one event loop as in daphne (a sync caller pays a new loop and a new
# connection per async_to_sync call on top): re-publish the last event, which every hub
# drops as a duplicate.
message = services.event_message(n)

async def group_sends():
    layer, times = get_channel_layer(), []
    for _ in range(min(events, 200)):
        t0 = time.monotonic()
        await layer.group_send(services.EVENTS_GROUP, message)
        times.append(time.monotonic() - t0)
    return times

group_s = asyncio.run(group_sends())
print(json.dumps({"sent": sent, "notify_s": notify_s, "group_send_s": group_s}))
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def redis_clients(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), 2) as s:
        s.sendall(b"INFO clients\r\n")
        data = b""
        deadline = time.monotonic() + 2
        while b"connected_clients:" not in data and time.monotonic() < deadline:
            data += s.recv(65536)
    for line in data.decode().splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":")[1])
    return -1


class Reader:
    """One raw SSE connection: (id, monotonic time) of every notification received."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.times: list[float] = []
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def run(self, port: int) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        self.writer.write(
            b"GET /notifications/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        pending_id: int | None = None
        while line := await reader.readline():
            if line.startswith(b"id: "):
                pending_id = int(line[4:])
            elif line.startswith(b"event: hello"):
                self.ready.set()
            elif line.startswith(b"event: notification") and pending_id is not None:
                self.ids.append(pending_id)
                self.times.append(time.monotonic())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_layer(
    layer: str, pg: PostgresCluster, redis: RedisServer, tmp: Path, streams: int, events: int
) -> dict[str, Any]:
    database_url = pg.create_database(f"bench_{layer}")
    env = project_env(database_url, REDIS_URL=redis.url, REDIS_LAYER=layer, NOTIFICATIONS_LOG_LEVEL="WARNING")
    manage(env, "migrate", "--noinput")
    servers = [Daphne(env=env, log_path=tmp / f"{layer}-{name}.log").start() for name in "AB"]
    readers: list[Reader] = []
    result: dict[str, Any] = {"layer": layer, "streams": streams}
    try:
        # A connect storm: every stream at once, half on each process.
        for i in range(streams):
            r = Reader()
            r.task = asyncio.create_task(r.run(servers[i % 2].port))
            readers.append(r)
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in readers)), 60)
        result["redis_clients_with_streams_open"] = redis_clients(redis.port)
        for phase, pace in (("paced_50_per_s", 0.02), ("burst", 0.0)):
            for r in readers:
                r.ids.clear()
                r.times.clear()
            cpu0 = [cpu_seconds(s.proc.pid) for s in servers if s.proc]
            redis0 = cpu_seconds(redis.proc.pid) if redis.proc else 0.0
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import django; django.setup()\n" + WRITER, str(events), str(pace),
                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 300)
            assert proc.returncode == 0, err.decode()[-2000:]
            data = json.loads(out.decode().strip().splitlines()[-1])
            sent = {int(k): v for k, v in data["sent"].items()}
            deadline = time.monotonic() + 30
            # Polled (bounded): the readers count ids, nothing to signal on.
            while time.monotonic() < deadline and any(len(r.ids) < len(sent) for r in readers):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
            cpu1 = [cpu_seconds(s.proc.pid) for s in servers if s.proc]
            redis1 = cpu_seconds(redis.proc.pid) if redis.proc else 0.0
            latencies = [t - sent[i] for r in readers for i, t in zip(r.ids, r.times, strict=True) if i in sent]
            expected = sorted(sent)
            result[phase] = {
                "events": len(sent),
                "writer_notify_ms_p50_sync_caller": round(1000 * statistics.median(data["notify_s"]), 2),
                "group_send_ms_p50_in_loop": round(1000 * statistics.median(data["group_send_s"]), 3),
                "group_send_ms_p99_in_loop": round(1000 * pct(data["group_send_s"], 0.99), 3),
                "latency_ms_p50": round(1000 * pct(latencies, 0.5), 1),
                "latency_ms_p99": round(1000 * pct(latencies, 0.99), 1),
                "latency_ms_max": round(1000 * max(latencies, default=float("nan")), 1),
                "streams_complete_in_order": sum(r.ids == expected for r in readers),
                "deliveries_missing": sum(len(set(expected) - set(r.ids)) for r in readers),
                "deliveries_duplicated": sum(len(r.ids) - len(set(r.ids)) for r in readers),
                "daphne_cpu_ms_per_event_per_process": [
                    round(1000 * (b - a) / len(sent), 3) for a, b in zip(cpu0, cpu1, strict=True)
                ],
                "redis_cpu_ms_per_event": round(1000 * (redis1 - redis0) / len(sent), 3),
                "wall_s": round(elapsed, 2),
            }
        result["redis_clients_after"] = redis_clients(redis.port)
        result["receive_failures_logged"] = sum(s.log().count("Channel layer receive failed") for s in servers)
        result["capacity_drops_logged"] = sum(s.log().count("over capacity") for s in servers)
    finally:
        for r in readers:
            r.close()
        for s in servers:
            s.stop()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--layers", default="pubsub,core")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-redis-layer-"))
    pg = PostgresCluster().start()
    redis = RedisServer(tmp / "redis").start()
    try:
        for layer in args.layers.split(","):
            print(json.dumps(await run_layer(layer, pg, redis, tmp, args.streams, args.events), indent=1), flush=True)
    finally:
        redis.stop()
        pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
