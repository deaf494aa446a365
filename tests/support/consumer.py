"""Reading a stream from the consumer with ApplicationCommunicator, chunk by chunk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from channels.testing import ApplicationCommunicator
from django.contrib.auth.models import AnonymousUser

from notifications.consumers import NotificationStreamConsumer
from tests.support.sse import Event, Parser


class ConsumerStream:
    def __init__(self, user: Any = None, *, method: str = "GET", query: bytes = b"", headers=None) -> None:
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": "/notifications/stream/",
            "query_string": query,
            "headers": list(headers or []),
            "user": user if user is not None else AnonymousUser(),
        }
        self.communicator = ApplicationCommunicator(NotificationStreamConsumer.as_asgi(), scope)
        self.parser = Parser()
        self.events: list[Event] = []
        self.body = b""
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.ended = False

    async def open(self) -> ConsumerStream:
        await self.communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.communicator.receive_output(5)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = {k.lower(): v for k, v in start["headers"]}
        return self

    async def read_chunk(self, timeout: float = 5) -> bytes:
        message = await self.communicator.receive_output(timeout)
        assert message["type"] == "http.response.body"
        chunk = message.get("body", b"")
        self.body += chunk
        self.events += self.parser.feed(chunk)
        if not message.get("more_body", False):
            self.ended = True
        return chunk

    async def read_until(self, predicate: Callable[[ConsumerStream], bool], timeout: float = 5) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self.ended:
                raise AssertionError(f"condition not met; events so far: {self.events!r}")
            await self.read_chunk(remaining)

    async def nothing_more(self, wait: float = 0.3) -> None:
        assert await self.communicator.receive_nothing(wait), "unexpected output"

    def of_type(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.type == kind]

    def notification_ids(self) -> list[int]:
        return [json.loads(e.data)["id"] for e in self.of_type("notification")]

    async def close(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(5)
