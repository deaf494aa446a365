"""Load client worker: holds thousands of SSE connections to 127.0.0.1 on raw asyncio sockets.

One process of this runs per share of the connections; ``bench.run`` drives it with one JSON
command per line on stdin and reads one JSON answer per line on stdout. Each connection is
an ``asyncio.Protocol`` that decodes HTTP/1.1 (chunked or not) and SSE incrementally and
keeps only the notification ids it received and when (``time.monotonic()``, the same
CLOCK_MONOTONIC as the server's, so server-side timestamps compare directly).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, cast

#: SSE event types that count as a delivered notification / as "the stream is ready".
NOTIFICATION_TYPES = frozenset({b"notification", b"message"})
READY_TYPES = frozenset({b"hello", b"stream-open"})


class Conn(asyncio.Protocol):
    """One SSE response being read."""

    def __init__(self, request: bytes, done: asyncio.Future[None] | None) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.in_body = False
        self.chunked = False
        self.chunk_left = 0  # bytes of chunk data still to come (chunked encoding)
        self.raw = b""  # undecoded chunked bytes
        self.sse = b""  # decoded bytes not yet ending in a blank line
        self.status = 0
        self.ready = False
        self.closed = False
        self.ids: list[int] = []
        self.times: list[float] = []
        self.last_id: bytes | None = None
        self.ready_future = done
        self.lost_future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.expect = 0  # notifications to wait for (reconnect storm)
        self.want_future: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._settle(self.ready_future, ConnectionError(f"closed (status {self.status})"))
        self._settle(self.want_future, ConnectionError("closed"))
        if not self.lost_future.done():
            self.lost_future.set_result(None)

    @staticmethod
    def _settle(future: asyncio.Future[None] | None, exc: Exception | None = None) -> None:
        if future is not None and not future.done():
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)

    def data_received(self, data: bytes) -> None:
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.head = b""
            self.in_body = True
            self.status = int(head.split(b" ", 2)[1])
            self.chunked = b"transfer-encoding: chunked" in head.lower()
            if self.status != 200:
                self._settle(self.ready_future, ConnectionError(f"status {self.status}"))
                if self.transport is not None:
                    self.transport.close()
                return
        if self.chunked:
            data = self._dechunk(data)
        if data:
            self._sse(data)

    def _dechunk(self, data: bytes) -> bytes:
        buf = self.raw + data if self.raw else data
        out = []
        pos = 0
        n = len(buf)
        while pos < n:
            if self.chunk_left > 0:
                take = min(self.chunk_left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self.chunk_left -= take
                if self.chunk_left == 0:
                    self.chunk_left = -2  # the CRLF after the data
                continue
            if self.chunk_left < 0:
                skip = min(-self.chunk_left, n - pos)
                pos += skip
                self.chunk_left += skip
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:
                if self.transport is not None:
                    self.transport.close()
                pos = n
                break
            self.chunk_left = size
        self.raw = buf[pos:]
        return b"".join(out)

    def _sse(self, data: bytes) -> None:
        buf = self.sse + data if self.sse else data
        if b"\n\n" not in buf:
            self.sse = buf
            return
        blocks = buf.split(b"\n\n")
        self.sse = blocks.pop()
        now = time.monotonic()
        for block in blocks:
            kind = b"message"
            id = None
            for line in block.split(b"\n"):
                if line.startswith(b"id:"):
                    id = line[3:].strip()
                elif line.startswith(b"event:"):
                    kind = line[6:].strip()
            if id is not None:
                self.last_id = id
            if kind in NOTIFICATION_TYPES and id is not None:
                self.ids.append(int(id.rsplit(b":", 1)[-1]))
                self.times.append(now)
                if self.want_future is not None and len(self.ids) >= self.expect:
                    self._settle(self.want_future)
            elif kind in READY_TYPES:
                self.ready = True
                self._settle(self.ready_future)


class Worker:
    def __init__(self) -> None:
        #: One slot per requested connection, in request order (None: it failed).
        self.conns: list[Conn | None] = []

    def live(self) -> list[Conn]:
        return [c for c in self.conns if c is not None]

    async def _open(self, port: int, request: bytes, sem: asyncio.Semaphore, deadline: float,
                    expect: int = 0) -> Conn | None:
        loop = asyncio.get_running_loop()
        async with sem:
            ready = loop.create_future()
            conn: Conn | None = None
            try:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: Conn(request, ready), "127.0.0.1", port), remaining
                )
                if expect:
                    conn.expect = expect
                    conn.want_future = loop.create_future()
                    await asyncio.wait_for(asyncio.gather(ready, conn.want_future), deadline - loop.time())
                else:
                    await asyncio.wait_for(ready, deadline - loop.time())
                return conn
            except (OSError, TimeoutError, ConnectionError, ValueError):
                if conn is not None and conn.transport is not None:
                    conn.transport.abort()
                if not ready.done():
                    ready.cancel()
                elif not ready.cancelled():
                    ready.exception()
                return conn if conn is not None and not conn.closed else None

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open ``requests`` (one raw HTTP request each), ``concurrency`` at a time."""
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(cmd["concurrency"])
        deadline = loop.time() + cmd["timeout"]
        start = time.monotonic()
        requests = [r.encode() for r in cmd["requests"]]
        results = await asyncio.gather(*(self._open(cmd["port"], r, sem, deadline) for r in requests))
        elapsed = time.monotonic() - start
        self.conns = [c if c is not None and c.ready else None for c in results]
        ready = len(self.live())
        return {"ready": ready, "failed": len(requests) - ready, "elapsed": elapsed, "end": time.monotonic()}

    def count(self) -> dict[str, Any]:
        return {"events": sum(len(c.ids) for c in self.live()), "closed": sum(1 for c in self.live() if c.closed)}

    def reset(self) -> dict[str, Any]:
        for c in self.live():
            c.ids.clear()
            c.times.clear()
        return {}

    def collect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Compare what each connection received with what it should have, in order, once."""
        shared = cmd.get("expected")
        per_conn = cmd.get("per_conn")
        lost = dup = ooo = extra = 0
        latencies: list[float] = []
        #: Per notification id: the first and the last receipt's latency (trigger path, then fan-out).
        spans: dict[int, list[float]] = {}
        for i, c in enumerate(self.conns):
            if c is None:
                continue
            expected = shared if shared is not None else per_conn[i]
            sent_at = dict(expected)
            seen: dict[int, float] = {}
            previous = -1
            for id, t in zip(c.ids, c.times, strict=True):
                if id <= previous:
                    ooo += 1
                previous = max(previous, id)
                if id in seen:
                    dup += 1
                    continue
                seen[id] = t
                if id in sent_at:
                    latency = t - sent_at[id]
                    latencies.append(latency)
                    span = spans.get(id)
                    if span is None:
                        spans[id] = [latency, latency]
                    else:
                        span[0] = min(span[0], latency)
                        span[1] = max(span[1], latency)
                else:
                    extra += 1
            lost += sum(1 for id in sent_at if id not in seen)
        closed = sum(1 for c in self.live() if c.closed)
        return {"lost": lost, "dup": dup, "ooo": ooo, "extra": extra, "closed": closed, "latencies": latencies,
                "spans": spans}

    async def close(self) -> dict[str, Any]:
        for c in self.live():
            if c.transport is not None:
                c.transport.close()
        waits = [c.lost_future for c in self.live() if not c.lost_future.done()]
        if waits:
            await asyncio.wait(waits, timeout=30)
        return {}

    async def reconnect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Reopen every connection at once with its ``Last-Event-ID``; wait for ``expect`` events each."""
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(cmd["concurrency"])
        deadline = loop.time() + cmd["timeout"]
        start = time.monotonic()
        jobs = []
        for c in self.live():
            header = f"Last-Event-ID: {c.last_id.decode()}\r\n" if c.last_id is not None else ""
            raw = c.request.replace(b"\r\n\r\n", b"\r\n" + header.encode() + b"\r\n", 1)
            jobs.append(self._open(cmd["port"], raw, sem, deadline, expect=cmd["expect"]))
        results = await asyncio.gather(*jobs)
        elapsed = time.monotonic() - start
        self.conns = list(results)
        complete = sum(1 for c in self.live() if len(c.ids) >= cmd["expect"])
        return {"complete": complete, "failed": len(jobs) - complete, "elapsed": elapsed}


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    while line := await reader.readline():
        cmd = json.loads(line)
        name = cmd["cmd"]
        if name == "exit":
            await worker.close()
            break
        if name == "connect":
            answer = await worker.connect(cmd)
        elif name == "count":
            answer = worker.count()
        elif name == "reset":
            answer = worker.reset()
        elif name == "collect":
            answer = worker.collect(cmd)
        elif name == "close":
            answer = await worker.close()
        elif name == "reconnect":
            answer = await worker.reconnect(cmd)
        else:
            answer = {"error": f"unknown command {name!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
