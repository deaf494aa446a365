"""Test doubles for driving a ``Hub`` through its public methods: a fake channel layer, injected
database reads, a server ``send`` that records, and helpers to open streams and publish.

Used by tests/test_hub*.py (and the ``harness`` fixture in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from notifications.events import Event
from notifications.hub import Hub
from notifications.models import Viewer


class FakeLayer:
    """Enough of a channel layer for the hub: a queue per channel, groups, injectable receive failures."""

    group_expiry = 86400

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.groups: dict[str, set[str]] = {}
        self.fail_receives = 0
        self.joins = 0

    async def new_channel(self, prefix: str) -> str:
        return prefix + "1"

    async def group_add(self, group: str, channel: str) -> None:
        self.joins += 1
        self.groups.setdefault(group, set()).add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.groups.get(group, set()).discard(channel)

    async def receive(self, channel: str) -> Any:
        if self.fail_receives:
            self.fail_receives -= 1
            raise ConnectionError("redis went away")
        return await self.queue.get()


class Database:
    """The committed rows, as the hub's injected reads see them; reads can be made to fail."""

    def __init__(self) -> None:
        self.rows: dict[int, Event] = {}
        self.fetches: list[tuple[int, int]] = []
        self.fail_fetches = 0

    def commit(self, *events: Event) -> None:
        for e in events:
            self.rows[e.id] = e

    async def newest_id(self) -> int:
        return max(self.rows, default=0)

    async def fetch_after(self, after: int, limit: int) -> list[Event]:
        self.fetches.append((after, limit))
        if self.fail_fetches:
            self.fail_fetches -= 1
            raise OSError("database is down")
        return [self.rows[id] for id in sorted(self.rows) if id > after][:limit]


class Recorder:
    """A server ``send`` that never waits and remembers the bodies written to it."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["body"]:
            self.frames.append(message["body"])


async def publish(layer: FakeLayer, db: Database, *events: Event, commit: bool = True) -> None:
    if commit:
        db.commit(*events)
    for e in events:
        layer.queue.put_nowait(e.to_message())


def user_streams(hub: Hub, viewer: Viewer, count: int = 1, *, live: bool = True) -> list[tuple[Any, Recorder]]:
    out = []
    for _ in range(count):
        send = Recorder()
        stream = hub.new_stream(viewer, send)
        cursor, _ = hub.attach(stream)
        if live:
            stream.go_live(b"", cursor)
        out.append((stream, send))
    return out
