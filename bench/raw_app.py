"""The floors: minimal ASGI apps holding open SSE responses in a set and writing each frame to each.

No Django, no Channels. Same URLs and wire format as the product (``retry``, replay after
``Last-Event-ID`` from an in-memory log, ``hello`` with the cursor, then ``notification``
events, and a ``: ping`` comment to every stream every 15 seconds, the product's default
heartbeat), so the load client treats both alike and both pay for keep-alives.

``app`` (the *raw loop*) awaits every stream's ``send`` in one pass; ``floor`` writes
``SLICE`` (64) streams per turn of the event loop, the product's own trick (``hub.FANOUT_SLICE``),
with a lock so that events keep their order while a fan-out yields; neither has a task or
a queue per stream. ``bench.gclog`` records the process's full collections when asked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from bench import gclog

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

BODY = "Benchmark broadcast: the payload is about the size of a short admin notice." * 2
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]

streams: set[Send] = set()
by_user: dict[str, set[Send]] = {}
log: list[bytes] = []  # log[i] is the frame of id i + 1
HEARTBEAT = 15.0
#: Streams written per event-loop turn by ``floor`` (0: all in one pass, the raw loop).
SLICE = 64
pinger: list[asyncio.Task[None]] = []
gclog.install_from_env()


async def write_all(targets: list[Send], message: dict[str, Any], slice: int) -> None:
    """Write ``message`` to every target, ``slice`` per loop turn (all at once for 0)."""
    if not slice:
        for write in targets:
            await write(message)
        return
    for start in range(0, len(targets), slice):
        if start:
            await asyncio.sleep(0)
        for write in targets[start : start + slice]:
            await write(message)


async def ping_all(slice: int) -> None:
    message = body(b": ping\n\n")
    while True:
        await asyncio.sleep(HEARTBEAT)
        await write_all(list(streams), message, slice)


def frame(id: int, title: str, audience: str) -> bytes:
    data = {"id": id, "title": title, "body": BODY, "level": "info", "url": "",
            "created_at": "2025-01-01T00:00:00.000000Z", "audience": audience, "read": False}
    return f"id: {id}\nevent: notification\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def body(chunk: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


async def stream(scope: Scope, receive: Receive, send: Send, slice: int) -> None:
    last = None
    for name, value in scope["headers"]:
        if name == b"last-event-id":
            last = int(value)
    user = parse_qs(scope["query_string"].decode()).get("user", [None])[0]
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send(body(b"retry: 3000\n\n"))
    if last is not None:
        for chunk in log[last:]:
            await send(body(chunk))
    cursor = len(log)
    await send(body(f"id: {cursor}\nevent: hello\ndata: {{\"cursor\":{cursor}}}\n\n".encode()))
    streams.add(send)
    if not pinger:
        pinger.append(asyncio.get_running_loop().create_task(ping_all(slice)))
    if user is not None:
        by_user.setdefault(user, set()).add(send)
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        streams.discard(send)
        if user is not None:
            by_user[user].discard(send)


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send: Send, data: dict[str, Any]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(data).encode()})


def make_app(slice: int) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI app; ``slice`` streams written per loop turn (0: all in one pass)."""
    order: list[asyncio.Lock] = []  # one lock, made on the server's loop

    async def fan_out(targets: list[Send], message: dict[str, Any]) -> None:
        if not slice:
            await write_all(targets, message, 0)
            return
        if not order:
            order.append(asyncio.Lock())
        async with order[0]:  # a fan-out that yields must not let the next event overtake it
            await write_all(targets, message, slice)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        path = scope["path"]
        if path == "/notifications/stream/":
            await stream(scope, receive, send, slice)
        elif path == "/bench/broadcast/":
            k = json.loads(await read_body(receive) or b"{}").get("k", 0)
            chunk = frame(len(log) + 1, f"bench {k}", "everyone")
            log.append(chunk)
            await fan_out(list(streams), body(chunk))
            await respond(send, {"ids": [len(log)]})
        elif path == "/bench/targeted/":
            sent = []
            for user in json.loads(await read_body(receive))["users"]:
                t = time.monotonic()
                chunk = frame(len(log) + 1, f"for {user}", "user")
                log.append(chunk)
                await fan_out(list(by_user.get(user, ())), body(chunk))
                sent.append([len(log), t])
            await respond(send, {"sent": sent})
        else:
            await respond(send, {"queries": 0})

    return app


#: The raw loop: every stream's ``send`` awaited in one pass.
app = make_app(0)
#: The floor: ``SLICE`` streams per loop turn, no task or queue per stream.
floor = make_app(SLICE)
