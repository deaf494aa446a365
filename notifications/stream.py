"""One open SSE response: the only writer of its bytes — headers, retry, replay, hello, live — in id order, once.

Imports ``asgi_send``, ``servers`` and ``sse``; never the hub (it reports drops through the
``on_drop`` callback it is given) nor the consumer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import weakref
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from . import servers, sse
from .asgi_send import Resume, Send, body_send, run_eagerly
from .conf import app_settings
from .models import Viewer

logger = logging.getLogger(__name__)

#: Events a stream may collect while it replays before it counts as fallen behind.
MAX_PENDING = 10_000
#: The slow-client rule measures the client, not the burst. Unsent bytes are those in daphne's
#: write buffer (Twisted buffers without limit for a client that does not read) or queued
#: behind a send that waits (uvicorn's flow control). Past ``WATCH_BYTES`` the stream is
#: watched: if the client then takes nothing for ``NOTIFICATIONS_SLOW_CLIENT_TIMEOUT`` seconds
#: its connection is aborted and the client, when it comes back, replays from its
#: Last-Event-ID. A client that keeps reading is never dropped by a burst, however large,
#: up to ``MAX_UNSENT_BYTES``: the memory one stream may hold, reading or not.
WATCH_BYTES = 1 << 20
MAX_UNSENT_BYTES = 64 << 20
#: SPEC §14: the least time between two ``update`` frames of one notice on one stream (about
#: 10 a second). A faster one is held, with every frame after it (order), until its time; a
#: newer update of the same notice arriving meanwhile replaces it. So the stream's cursor never
#: passes an update it did not send unless a later update of that notice is on its way.
UPDATE_INTERVAL = 0.1
#: Notices whose last update time a stream remembers before it forgets those past the interval.
RECENT_UPDATES = 64


def _ignore(reason: str) -> None:
    pass


#: ``Stream._updated`` until a stream writes its first update: most never do, and an empty
#: dict each is 64 bytes.
_NO_UPDATES: dict[int, float] = {}


class _Expiry:
    """Streams to close at their maximum age, bucketed by the whole second of their deadline.

    A ``call_later`` per stream kept a ``TimerHandle``, its bound method and a heap entry alive
    for the stream's life (about 270 bytes, docs/benchmarks.md); here a stream is one entry
    in a set, and each second with deadlines has one timer.
    """

    __slots__ = ("loop", "buckets", "__weakref__")
    _per_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Expiry]] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buckets: dict[int, set[Stream]] = {}

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Expiry:
        expiry = cls._per_loop.get(loop)
        if expiry is None:
            expiry = cls._per_loop[loop] = cls(loop)
        return expiry

    def add(self, stream: Stream, delay: float) -> int:
        key = math.ceil(self.loop.time() + max(delay, 0.0))
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = set()
            self.loop.call_at(key, self._fire, key)
        bucket.add(stream)
        return key

    def discard(self, stream: Stream, key: int) -> None:
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.discard(stream)

    @classmethod
    def forget(cls, stream: Stream, key: int) -> None:
        """Take ``stream`` out of its bucket, from its loop or (no loop running here) any loop's."""
        try:
            expiries = [cls.of(asyncio.get_running_loop())]
        except RuntimeError:
            expiries = list(cls._per_loop.values())
        for expiry in expiries:
            expiry.discard(stream, key)

    def _fire(self, key: int) -> None:
        for stream in self.buckets.pop(key, ()):
            stream._timer = None
            try:
                stream.close()
            except Exception:
                logger.exception("Closing a stream at its maximum age failed.")


class Stream:
    """One open SSE response.

    Life: ``open()`` (headers and ``retry:``) → the hub attaches it (live events collect in
    *pending*) → ``go_live(replay + hello, through)`` writes those, then what collected, then
    every later ``deliver`` at once → ``close()`` or ``release()``. Every numbered frame it
    writes has an id above every one before it.
    """

    __slots__ = (
        "viewer", "_start_send", "_send", "sent_through", "_pending", "_outbox", "closed", "_timer", "_transport",
        "_on_drop", "_drainer", "_written", "_outbox_bytes", "_watch", "_mark", "_updated", "_held", "_due",
        "__weakref__",
    )

    def __init__(self, viewer: Viewer, send: Send, *, on_drop: Callable[[str], None] = _ignore) -> None:
        self.viewer = viewer
        self._start_send = send
        self._send = body_send(send)
        #: Highest notification id written to this stream (or known to be before its start).
        self.sent_through = 0
        #: Events that arrive before the replay is written: ``(id, frame)``; None once live.
        self._pending: list[tuple[int, bytes, int | None]] | None = []
        #: Frames waiting behind a send that did not complete at once; None when idle.
        self._outbox: collections.deque[dict[str, Any]] | None = None
        self.closed = False
        #: The second (loop time) whose ``_Expiry`` bucket holds this stream, once ``expire_after`` ran.
        self._timer: int | None = None
        #: The server's transport when it shows its write buffer (daphne's does), else None.
        self._transport = servers.transport_of(self._send)
        #: Called with ``"pending"``, ``"outbox"`` or ``"unread_buffer"`` when the stream drops its client.
        self._on_drop = on_drop
        self._drainer: asyncio.Task[None] | None = None
        #: Body bytes handed to the server or queued for it; minus the unsent ones, what the client took.
        self._written = 0
        self._outbox_bytes = 0
        #: While unsent bytes are past ``WATCH_BYTES``: the check due, and what the client had taken then.
        self._watch: asyncio.TimerHandle | None = None
        self._mark = 0
        #: Conflation (``UPDATE_INTERVAL``): when each recently updated notice's last update was
        #: written (loop time); the frames held behind a too-early update, ``(id, notice, frame)``
        #: with notice None for any other event; the timer that releases them.
        self._updated: dict[int, float] = _NO_UPDATES  # a dict of its own at the first update
        self._held: collections.deque[tuple[int, int | None, bytes]] | None = None
        self._due: asyncio.TimerHandle | None = None

    @property
    def server_send(self) -> Send:
        """The send body frames go to (what ``servers.probe`` inspects)."""
        return self._send

    @property
    def live(self) -> bool:
        return self._pending is None

    async def open(self, headers: Iterable[tuple[bytes, bytes]], retry_ms: int) -> None:
        """``200`` with ``headers`` (through the consumer's send: the session middleware sees it), then ``retry:``.

        The message gets a list of its own: Channels' session middleware appends its
        ``Set-Cookie`` to it, and a list shared between responses would carry one viewer's
        cookie (or its deletion) to every later stream.
        """
        await self._start_send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        self._write(sse.encode_retry(retry_ms))

    def deliver(self, id: int, frame: bytes, update_of: int | None = None) -> None:
        """Called by the hub in id order for events this stream's viewer may see.

        ``update_of``: the notice an ``update`` event is about (SPEC §14, conflated: at most one
        per ``UPDATE_INTERVAL`` per notice, the latest always written, never out of order).
        """
        if self._pending is not None:
            if len(self._pending) >= MAX_PENDING:
                logger.warning("Stream fell behind while replaying; closing it so it reconnects.")
                self._drop("pending")
                self.close()
                return
            self._pending.append((id, frame, update_of))
            return
        if id <= self.sent_through:
            return
        held = self._held
        if held is not None:
            if update_of is not None:
                for index, (_, notice, _) in enumerate(held):
                    if notice == update_of:  # superseded: this newer one goes out in its place, later
                        del held[index]
                        break
            held.append((id, update_of, frame))
            if len(held) > MAX_PENDING:
                logger.warning("Stream fell behind behind a held update; closing it so it reconnects.")
                self._drop("pending")
                self.close()
            return
        if update_of is not None:
            now = asyncio.get_running_loop().time()
            due = self._updated.get(update_of, -UPDATE_INTERVAL) + UPDATE_INTERVAL
            if now < due:
                self._held = collections.deque([(id, update_of, frame)])
                self._due = asyncio.get_running_loop().call_at(due, self._release)
                return
            self._note_update(update_of, now)
        self.sent_through = id
        self._write(frame)

    def _note_update(self, notice: int, now: float) -> None:
        updated = self._updated
        if updated is _NO_UPDATES:
            updated = self._updated = {}
        updated[notice] = now
        if len(updated) > RECENT_UPDATES:
            for old in [n for n, at in updated.items() if now - at >= UPDATE_INTERVAL]:
                del updated[old]

    def _release(self) -> None:
        """The held update's time came: write from the front until an update not yet due."""
        self._due = None
        held = self._held
        if held is None or self.closed:
            self._held = None
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        while held:
            id, notice, frame = held[0]
            if notice is not None:
                due = self._updated.get(notice, -UPDATE_INTERVAL) + UPDATE_INTERVAL
                if now < due:
                    self._due = loop.call_at(due, self._release)
                    return
                self._note_update(notice, now)
            held.popleft()
            if id > self.sent_through:
                self.sent_through = id
                self._write(frame)
        self._held = None

    def go_live(self, frames: bytes, through: int) -> None:
        """Write the replay and ``hello`` (``frames``, complete up to ``through``), then what arrived meanwhile."""
        pending, self._pending = self._pending or [], None
        if frames:  # one write, however many frames (a reconnect storm is thousands of these)
            self._write(frames)
        self.sent_through = max(self.sent_through, through)
        for id, frame, update_of in pending:
            self.deliver(id, frame, update_of)

    def push(self, frame: bytes) -> None:
        """An unnumbered frame (``: ping``, ``event: read``): written only once the stream is live."""
        if self._pending is None:
            self._write(frame)

    def reset(self, frame: bytes, through: int) -> None:
        """Write ``event: reset`` (its cursor ``through``) to a live stream; ids up to it are not written after it."""
        self.sent_through = max(self.sent_through, through)
        if self._held is not None:
            self._held = collections.deque(item for item in self._held if item[0] > through) or None
        self._write(frame)

    def expire_after(self, seconds: float) -> None:
        """Close the stream after ``seconds`` ±10 % (to the next whole second) so that clients
        spread over processes. One timer per second for all the loop's streams (``_Expiry``)."""
        if self._timer is None and not self.closed:
            self._timer = _Expiry.of(asyncio.get_running_loop()).add(self, seconds * random.uniform(0.9, 1.1))

    def release(self) -> None:
        """The response is over (the client left): write nothing more, forget the timers."""
        if self._timer is not None:
            _Expiry.forget(self, self._timer)
        for timer in (self._watch, self._due):
            if timer is not None:
                timer.cancel()
        self._timer = self._watch = self._due = None
        self._held = None
        self.closed = True

    def close(self) -> None:
        """End the response; the server then sends ``http.disconnect`` and the consumer detaches."""
        self._write(b"", more_body=False)

    def end_for_shutdown(self) -> None:
        """``close()``, except for a stream whose client is not taking what it was sent (a send
        that waits, or more than ``WATCH_BYTES`` unsent): its last chunk would wait behind
        that and hold up the server's shutdown, so the connection is dropped instead (the
        client replays from its Last-Event-ID)."""
        behind = self._outbox is not None or self._unsent() > WATCH_BYTES
        if behind and not self.closed and servers.abort(self._send):
            self.closed = True
        else:
            self.close()

    # -- writing ----------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        try:
            self._on_drop(reason)
        except Exception:
            logger.exception("on_drop(%r) failed", reason)

    def _write(self, body: bytes, *, more_body: bool = True) -> None:
        """Write now, without waiting; order is kept if the server makes a send wait."""
        if self.closed:
            return
        message = {"type": "http.response.body", "body": body, "more_body": more_body}
        if not more_body:
            self.closed = True
        self._written += len(body)
        if self._outbox is not None:
            self._outbox.append(message)
            self._outbox_bytes += len(body)
            self._check_unsent()
            return
        try:
            rest = run_eagerly(self._send(message))
        except Exception:  # a server may raise on a closed connection (ASGI 2.4)
            logger.debug("send failed", exc_info=True)
            self.closed = True
            return
        if rest is not None:
            self._outbox = collections.deque()
            self._drainer = asyncio.get_running_loop().create_task(self._drain(rest), name="notifications-stream-drain")
        elif self._transport is not None and self._transport.producerPaused:
            self._check_unsent()

    def _unsent(self) -> int:
        """Bytes written that the client has not taken yet (as far as this server shows)."""
        if self._outbox is not None:
            return self._outbox_bytes
        transport = self._transport
        if transport is None:
            return 0
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    def _check_unsent(self) -> None:
        """After a write that left bytes unsent: drop past ``MAX_UNSENT_BYTES``, watch past ``WATCH_BYTES``."""
        unsent = self._unsent()
        if unsent > MAX_UNSENT_BYTES:
            self._cut(f"{unsent} bytes unsent")
        elif unsent > WATCH_BYTES and self._watch is None and not self.closed:
            self._mark = self._written - unsent
            self._watch = asyncio.get_running_loop().call_later(app_settings.SLOW_CLIENT_TIMEOUT, self._check_progress)

    def _check_progress(self) -> None:
        """The watch is due: a client that took bytes since it began is watched on; one that took none is cut off."""
        self._watch = None
        if self.closed:
            return
        unsent = self._unsent()
        if unsent <= WATCH_BYTES:
            return  # caught up
        taken = self._written - unsent
        if taken > self._mark:
            self._mark = taken
            self._watch = asyncio.get_running_loop().call_later(app_settings.SLOW_CLIENT_TIMEOUT, self._check_progress)
            return
        self._cut(f"{unsent} bytes unsent, none read for {app_settings.SLOW_CLIENT_TIMEOUT:g}s")

    def _cut(self, why: str) -> None:
        """Abort the connection of a client that does not read; ``http.disconnect`` then detaches it."""
        outbox = self._outbox is not None
        logger.warning("Dropping a stream that does not read (%s).", why)
        self._drop("outbox" if outbox else "unread_buffer")
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if not outbox:
            if self._transport is not None:
                self._transport.abortConnection()
            return
        assert self._outbox is not None
        self._outbox.clear()
        self._outbox_bytes = 0
        if not servers.abort(self._send):  # the blocked send returns once the server sees it
            # Unknown server: end the response after the send that waits, if it ever returns.
            self._outbox.append({"type": "http.response.body", "body": b"", "more_body": False})

    async def _drain(self, first: Resume) -> None:
        try:
            await first
            while self._outbox:
                message = self._outbox.popleft()
                self._outbox_bytes -= len(message["body"])
                await self._send(message)
        except Exception:  # a server may raise on a closed connection (ASGI 2.4)
            logger.debug("send failed while draining", exc_info=True)
            self.closed = True
        finally:
            self._outbox = None
            self._outbox_bytes = 0
            self._drainer = None
