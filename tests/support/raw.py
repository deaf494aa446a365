"""A lean SSE client on raw asyncio sockets: thousands of streams in one process.

``RawStream`` speaks just enough HTTP/1.1 (one GET, chunked or close-delimited body) to read
``/notifications/stream/`` and parses events the way the WHATWG processing model does for
the frames this server writes (LF line ends; CR LF accepted). It keeps no per-character
Python loop, so one process can hold 1,000 streams through a burst. Traffic goes to
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass, field

import httpx

STREAM_PATH = "/notifications/stream/"


@dataclass
class Event:
    type: str
    data: str
    id: str


@dataclass
class FastParser:
    """SSE events from bytes in any chunks: ``event``, ``data``, ``id``, comments; no BOM."""

    last_event_id: str = ""
    comments: int = 0
    _buffer: bytes = b""
    _type: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str = ""

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        lines = self._buffer.split(b"\n")
        self._buffer = lines.pop()
        events: list[Event] = []
        for raw in lines:
            line = raw[:-1].decode() if raw.endswith(b"\r") else raw.decode()
            if not line:
                self.last_event_id = self._id
                if self._data:
                    events.append(Event(self._type or "message", "\n".join(self._data), self._id))
                self._data, self._type = [], ""
            elif line[0] == ":":
                self.comments += 1
            else:
                name, sep, value = line.partition(":")
                if sep and value.startswith(" "):
                    value = value[1:]
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._type = value
                elif name == "id" and "\x00" not in value:
                    self._id = value
        return events


class HTTPError(Exception):
    pass


class RawStream:
    """One ``GET /notifications/stream/`` on its own socket.

    ``await open()`` sends the request and reads the status and headers; ``await
    read_events()`` returns the next batch of parsed events ([] at the end of the stream).
    """

    def __init__(
        self,
        port: int,
        *,
        cookie: str | None = None,
        last_event_id: str | int | None = None,
        query: str = "",
        extra_headers: dict[str, str] | None = None,
        path: str = STREAM_PATH,
        rcvbuf: int | None = None,
    ) -> None:
        self.port = port
        self.cookie = cookie
        self.last_event_id = last_event_id
        self.query = query
        self.extra_headers = extra_headers or {}
        self.path = path
        self.rcvbuf = rcvbuf
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""  # the body of a non-streaming (error) response
        self.parser = FastParser()
        self.ended = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._chunked = False
        self._chunk_left = 0
        self._length_left: int | None = None

    async def open(self, timeout: float = 30) -> RawStream:
        await asyncio.wait_for(self._open(), timeout)
        return self

    async def _open(self) -> None:
        if self.rcvbuf is not None:
            import socket

            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
            self._reader, self._writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        else:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        target = self.path + (f"?{self.query}" if self.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Accept: text/event-stream"]
        if self.cookie:
            lines.append(f"Cookie: {self.cookie}")
        if self.last_event_id not in (None, ""):
            lines.append(f"Last-Event-ID: {self.last_event_id}")
        lines += [f"{k}: {v}" for k, v in self.extra_headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                self.headers[name.strip().lower()] = value.strip()
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        if not self._chunked and "content-length" in self.headers:
            self._length_left = int(self.headers["content-length"])
        if self.status != 200:
            self.body = await self._read_all()
            self.ended = True
            await self.close()

    async def _read_all(self) -> bytes:
        parts = []
        while True:
            chunk = await self._read_raw()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    async def _read_raw(self) -> bytes:
        """The next piece of the body (b"" at its end), undoing chunked transfer coding."""
        assert self._reader is not None
        if self._length_left is not None:
            if self._length_left <= 0:
                return b""
            data = await self._reader.read(min(self._length_left, 65536))
            self._length_left = self._length_left - len(data) if data else 0
            return data
        if not self._chunked:
            return await self._reader.read(65536)
        if self._chunk_left == 0:
            size_line = await self._reader.readline()
            if not size_line:
                return b""
            self._chunk_left = int(size_line.split(b";")[0].strip() or b"0", 16)
            if self._chunk_left == 0:
                return b""
        data = await self._reader.read(self._chunk_left)
        if not data:
            return b""
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            await self._reader.readexactly(2)  # the CR LF after the chunk
        return data

    async def read_events(self) -> list[Event]:
        """The events in the next piece of the body: possibly several, or none (a comment,
        part of an event); [] with ``ended`` set once the stream has ended."""
        if self.ended:
            return []
        try:
            chunk = await self._read_raw()
        except (ConnectionError, asyncio.IncompleteReadError):
            chunk = b""
        if not chunk:
            self.ended = True
            return []
        return self.parser.feed(chunk)

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def abort(self) -> None:
        """Drop the connection at once (an RST), as a crashed or vanished client would."""
        if self._writer is not None:
            transport = self._writer.transport
            self._writer = None
            transport.abort()


async def read_until(stream: RawStream, predicate, sink: list[Event], timeout: float) -> None:
    """Read events into ``sink`` until ``predicate(sink)`` or ``timeout`` (AssertionError)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate(sink):
        remaining = deadline - loop.time()
        if remaining <= 0 or stream.ended:
            raise AssertionError(f"stream {'ended' if stream.ended else 'timed out'}; last events {sink[-3:]!r}")
        with contextlib.suppress(TimeoutError):
            sink += await asyncio.wait_for(stream.read_events(), remaining)


def notification_id(event: Event) -> int:
    return int(json.loads(event.data)["id"])


async def session_cookie(base_url: str, username: str, password: str) -> str:
    """Sign in through the real login form; returns a ``Cookie`` header value."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        page = await client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if token is None:
            raise HTTPError(f"no login form at {base_url}: {page.status_code}")
        response = await client.post(
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1), "next": "/"},
            headers={"Referer": f"{base_url}/accounts/login/"},
        )
        if response.status_code != 302:
            raise HTTPError(f"login as {username} failed: {response.status_code}")
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def metrics(base_url: str) -> dict[str, float]:
    """``/notifications/metrics`` as {sample: value} (read from loopback, so allowed)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.get("/notifications/metrics")
    response.raise_for_status()
    return parse_metrics(response.text)


def parse_metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values
