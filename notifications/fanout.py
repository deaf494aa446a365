"""The process's side of the channel layer: one hub per event loop fans events out to streams.

One channel-layer channel per process joins ``services.EVENTS_GROUP``; every event reaches
every process once. The hub keeps ``head``, the highest id it has handed out with nothing
missing below it, and delivers ids strictly in order:

* the next id arrives → its pre-encoded frame goes to every local stream that may see it;
* an id already handed out (a duplicate, or one the database already gave us) → dropped;
* a higher id (a lost or overtaken message, or a rolled-back id) → the hub reads the rows
  in between from the database, once for all its streams, and delivers them in order.

Because writers commit in id order (``services.lock_sequence``), every id below a
published one is already committed, so that one read is complete. A periodic check of the
newest id catches a lost message that nothing follows; a broken layer receive is retried
and followed by the same check. Streams never read the database on the live path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.sessions import InstanceSessionWrapper

from . import identity, servers, services, sse
from .conf import app_settings
from .models import Notification, Viewer

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]

#: Frames one stream may have queued behind a send that has not finished (a client that
#: does not read, on a server with flow control, e.g. uvicorn); past that the connection
#: is aborted (``servers.abort``) and the client, if it comes back, replays.
MAX_OUTBOX = 1000
#: Rows read from the database per catch-up query.
CATCH_UP_BATCH = 500
#: Seconds between checks of the newest id (finds a lost message that nothing follows, or
#: one sent from a process the channel layer does not reach).
TAIL_CHECK_SECONDS = 2.0
#: Events a stream may collect while it replays before it counts as fallen behind.
MAX_PENDING = 10_000
#: Streams written per turn of the event loop when one event goes to many. Between slices
#: the loop runs once, so the server sends what was written and frees its per-write objects
#: before the next slice: a 10,000-stream broadcast otherwise keeps ~200,000 short-lived
#: objects alive until it ends, and the garbage collector's full passes over a Django
#: process were then most of the broadcast's CPU (docs/benchmarks.md). Other work (connects,
#: API requests) also runs between slices instead of waiting for the whole broadcast.
FANOUT_SLICE = 64
#: Recent events each hub keeps (frames included) to replay reconnects from memory: a
#: reconnect storm after a deploy then costs one small query per stream, not a read and an
#: encoding of every missed row per stream.
RECENT_EVENTS = 1000
#: ...and at most this many bytes of their frames (long bodies keep fewer events).
RECENT_BYTES = 8 << 20
#: Bytes a stream may have waiting in the server's write buffer (daphne/Twisted buffers
#: without limit for a client that does not read); past that the connection is aborted and
#: the client, when it comes back, replays from its Last-Event-ID.
MAX_BUFFERED_BYTES = 1 << 20


class Stream:
    """One open SSE response: where the hub writes frames, in id order, exactly once."""

    __slots__ = (
        "viewer", "_send", "sent_through", "_pending", "_outbox", "closed", "_timer", "_transport", "__weakref__"
    )

    def __init__(self, viewer: Viewer, send: Send) -> None:
        self.viewer = viewer
        self._send = _body_send(send)
        #: Highest notification id written to this stream (or known to be before its start).
        self.sent_through = 0
        #: Events that arrive before the replay is written: ``(id, frame)``; None once live.
        self._pending: list[tuple[int, bytes]] | None = []
        #: Frames waiting behind a send that did not complete at once; None when idle.
        self._outbox: collections.deque[dict[str, Any]] | None = None
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        #: The server's transport when it shows its write buffer (daphne's does), else None.
        self._transport = servers.transport_of(self._send)

    @property
    def live(self) -> bool:
        return self._pending is None

    def deliver(self, id: int, frame: bytes) -> None:
        """Called by the hub in id order for events this stream's viewer may see."""
        if self._pending is not None:
            if len(self._pending) >= MAX_PENDING:
                logger.warning("Stream fell behind while replaying; closing it so it reconnects.")
                get_hub().stats["dropped_pending"] += 1
                self.close()
                return
            self._pending.append((id, frame))
            return
        if id <= self.sent_through:
            return
        self.sent_through = id
        self.write(frame)

    def go_live(self, sent_through: int) -> None:
        """The replay and ``hello`` are written: flush what arrived meanwhile, then go live."""
        pending, self._pending = self._pending or [], None
        self.sent_through = max(self.sent_through, sent_through)
        for id, frame in pending:
            self.deliver(id, frame)

    def write(self, body: bytes, *, more_body: bool = True) -> None:
        """Write now, without waiting; order is kept if the server makes a send wait."""
        if self.closed:
            return
        message = {"type": "http.response.body", "body": body, "more_body": more_body}
        if not more_body:
            self.closed = True
        if self._outbox is not None:
            if len(self._outbox) >= MAX_OUTBOX:
                logger.warning("Dropping a stream that does not read (%d frames queued).", len(self._outbox))
                get_hub().stats["dropped_outbox"] += 1
                self._outbox.clear()
                self.closed = True
                if servers.abort(self._send):  # the blocked send returns once the server sees it
                    return
                # Unknown server: end the response after the send that waits, if it ever returns.
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            self._outbox.append(message)
            return
        try:
            rest = _run_eagerly(self._send(message))
        except Exception:  # a server may raise on a closed connection (ASGI 2.4)
            logger.debug("send failed", exc_info=True)
            self.closed = True
            return
        if rest is not None:
            self._outbox = collections.deque()
            asyncio.get_running_loop().create_task(self._drain(rest))
        elif self._transport is not None and self._transport.producerPaused:
            self._check_buffer()

    def _check_buffer(self) -> None:
        """Abort a connection whose unread bytes exceed ``MAX_BUFFERED_BYTES``.

        Daphne's send never waits: Twisted queues every write in memory and only tells its
        producer to pause (``producerPaused``, past 64 KiB). A client that never reads would
        grow the process without bound, so it is cut off; ``http.disconnect`` then detaches it.
        """
        transport = self._transport
        buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        if buffered > MAX_BUFFERED_BYTES:
            logger.warning("Dropping a stream that does not read (%d bytes unsent).", buffered)
            get_hub().stats["dropped_unread_buffer"] += 1
            self.closed = True
            transport.abortConnection()

    async def _drain(self, first: _Resume) -> None:
        try:
            await first
            while self._outbox:
                await self._send(self._outbox.popleft())
        except Exception:  # a server may raise on a closed connection (ASGI 2.4)
            self.closed = True
        finally:
            self._outbox = None

    def close(self) -> None:
        """End the response; the server then sends ``http.disconnect`` and the consumer detaches."""
        self.write(b"", more_body=False)

    def end_for_shutdown(self) -> None:
        """``close()``, except for a stream whose send waits for a client that stopped reading:
        its last chunk would wait behind that send and hold up the server's shutdown, so the
        connection is dropped instead (the client replays from its Last-Event-ID)."""
        if self._outbox is not None and not self.closed and servers.abort(self._send):
            self.closed = True
        else:
            self.close()


class _Resume:
    """Awaitable that finishes a coroutine which suspended on its first step."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Any:
        value = self.first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancellation: pass it on to the send
                try:
                    value = self.coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                value = self.coro.send(sent)
            except StopIteration:
                return


def _body_send(send: Send) -> Send:
    """The server's own ``send`` behind a consumer's, for the body frames a stream carries.

    A consumer's ``send`` passes through ``AsyncConsumer.send`` and Channels' session
    middleware (``InstanceSessionWrapper.send``), which acts only on ``http.response.start``
    (it may save the session and set its cookie) and reads two lazy session attributes on
    every message. For a broadcast to thousands of streams that was about a sixth of the
    process's CPU (py-spy, docs/benchmarks.md), so body frames skip both. Unwraps only those
    exact methods: an overridden ``send`` or any other wrapper is kept.
    """
    for _ in range(5):
        owner = getattr(send, "__self__", None)
        method = getattr(send, "__func__", None)
        if isinstance(owner, AsyncConsumer) and method is AsyncConsumer.send:
            send = owner.base_send
        elif (
            isinstance(owner, InstanceSessionWrapper)
            and method is InstanceSessionWrapper.send
            and "http.response.body" not in owner.save_message_types
        ):
            send = owner.real_send
        else:
            break
    return send


def _run_eagerly(coro: Coroutine[Any, Any, None]) -> _Resume | None:
    """Run a send now; return None if it finished without suspending (daphne's never suspends).

    A task per write would cost more than the write itself. When a server's send does wait
    (flow control), the rest of it comes back as an awaitable to finish in a task.
    """
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return _Resume(coro, first)


class Hub:
    """Fans the process's one channel-layer subscription out to its open streams."""

    def __init__(self) -> None:
        self.streams: set[Stream] = set()
        self._by_user: dict[int, set[Stream]] = collections.defaultdict(set)
        self._by_group: dict[int, set[Stream]] = collections.defaultdict(set)
        self.head = 0
        #: The last events handed out (``RECENT_EVENTS``, ``RECENT_BYTES``), in id order: every
        #: id in ``(_recent_floor, head]`` that was published is here.
        self._recent: collections.deque[dict[str, Any]] = collections.deque()
        self._recent_floor = 0
        self._recent_bytes = 0
        self.channel_name: str | None = None
        self._layer: Any = None
        self._started: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._held: dict[int, dict[str, Any]] = {}
        self._catching_up = False
        #: Held while an event is being fanned out, so that events reach streams in id order
        #: even though a fan-out yields to the event loop between slices.
        self._fanning: asyncio.Lock | None = None
        self._ends_streams_on_shutdown = False
        self.stats = collections.Counter[str]()

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Join the events group and learn the newest id; idempotent, safe to race."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                await self._join()
                self._tasks = [
                    asyncio.create_task(self._receive_loop(), name="notifications-hub-receive"),
                    asyncio.create_task(self._heartbeat_loop(), name="notifications-hub-heartbeat"),
                    asyncio.create_task(self._maintenance_loop(), name="notifications-hub-maintenance"),
                ]
                self._started.set_result(None)
            except BaseException as exc:
                self._started.set_exception(exc)
                self._started.exception()  # mark retrieved
                self._started = None
                raise
        await asyncio.shield(self._started)

    async def _join(self) -> None:
        self._layer = get_channel_layer()
        if self._layer is None:
            raise RuntimeError("CHANNEL_LAYERS has no 'default' layer; notifications cannot stream.")
        if self.channel_name is None:
            self.channel_name = await self._layer.new_channel("notifications-hub.")
        await self._layer.group_add(services.EVENTS_GROUP, self.channel_name)
        # Joined first, then read the head: anything committed later reaches us by message.
        # Only with no stream attached: on a re-join (after a broken receive) streams are
        # waiting for the ids above head, which the caller's catch-up delivers in order.
        newest = await _newest_id()
        if not self.streams and newest > self.head:
            self.head = newest
            self._forget_recent()
        if not self._ends_streams_on_shutdown:

            def end_streams() -> None:
                for stream in list(self.streams):
                    stream.end_for_shutdown()

            self._ends_streams_on_shutdown = servers.on_shutdown(end_streams)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._layer is not None and self.channel_name is not None:
            try:
                await self._layer.group_discard(services.EVENTS_GROUP, self.channel_name)
            except Exception:
                logger.debug("group_discard failed", exc_info=True)
        self._started = None

    # -- streams ------------------------------------------------------------------------

    def attach(self, viewer: Viewer, send: Send) -> tuple[Stream, int]:
        """Register a stream before its replay. Returns it and the cursor to replay up to.

        Every id above the returned cursor reaches the stream through ``deliver``.
        """
        stream = Stream(viewer, send)
        self.streams.add(stream)
        if viewer.user_id is not None:
            self._by_user[viewer.user_id].add(stream)
        for group_id in viewer.group_ids:
            self._by_group[group_id].add(stream)
        stream.sent_through = self.head
        return stream, self.head

    def detach(self, stream: Stream) -> None:
        self.streams.discard(stream)
        viewer = stream.viewer
        if viewer.user_id is not None:
            _discard(self._by_user, viewer.user_id, stream)
        for group_id in viewer.group_ids:
            _discard(self._by_group, group_id, stream)
        if stream._timer is not None:
            stream._timer.cancel()
            stream._timer = None
        stream.closed = True

    def recent_after(self, viewer: Viewer, after: int) -> list[dict[str, Any]] | None:
        """The events after ``after`` up to ``head`` that ``viewer`` may see, from memory.

        None when memory does not reach back that far (or ``after`` is beyond ``head``): the
        caller then reads the database. Call it right after ``attach`` (no await between), so
        that the returned events and the stream's live events meet at ``head``.
        """
        if not self._recent_floor <= after <= self.head:
            return None
        missed = []
        for event in reversed(self._recent):
            if event["id"] <= after:
                break
            if viewer.may_see(event["audience"], event["target"]):
                missed.append(event)
        missed.reverse()
        return missed

    def _remember(self, message: dict[str, Any]) -> None:
        if "read_frame" not in message:  # from a process that does not encode it yet
            self._forget_recent()
            return
        self._recent.append(message)
        self._recent_bytes += _frame_bytes(message)
        while len(self._recent) > RECENT_EVENTS or (self._recent_bytes > RECENT_BYTES and len(self._recent) > 1):
            oldest = self._recent.popleft()
            self._recent_bytes -= _frame_bytes(oldest)
            self._recent_floor = oldest["id"]

    def _forget_recent(self) -> None:
        self._recent.clear()
        self._recent_bytes = 0
        self._recent_floor = self.head

    def streams_of_user(self, user_id: int) -> int:
        return len(self._by_user.get(user_id, ()))

    def expire_later(self, stream: Stream, seconds: float) -> None:
        """Close the stream after ``seconds`` ±10 % so that clients spread over processes."""
        delay = seconds * random.uniform(0.9, 1.1)
        stream._timer = asyncio.get_running_loop().call_later(delay, stream.close)

    # -- events -------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                message = await self._layer.receive(self.channel_name)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                # A broken connection to the layer (Redis restarted, read timeout): anything
                # published meanwhile is in the database. Re-join, then catch up.
                logger.warning("Channel layer receive failed; retrying in %.1fs.", backoff, exc_info=True)
                self.stats["layer_errors"] += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                try:
                    await self._join()
                except Exception:
                    logger.warning("Re-joining the channel layer failed.", exc_info=True)
                    continue
                self._schedule_catch_up()
                continue
            await self.handle(message)

    async def _heartbeat_loop(self) -> None:
        """A ``: ping`` comment on every live stream every ``NOTIFICATIONS_HEARTBEAT`` seconds."""
        ping = sse.encode_comment("ping")
        while True:
            await asyncio.sleep(app_settings.HEARTBEAT)
            async for streams in _slices(list(self.streams)):
                for stream in streams:
                    if stream.live:
                        stream.write(ping)

    async def _maintenance_loop(self) -> None:
        """Check the newest id (finds a lost last message) and re-join before group expiry."""
        since_join = 0.0
        rejoin_every = max(1.0, float(getattr(self._layer, "group_expiry", 86400)) / 4)
        while True:
            await asyncio.sleep(TAIL_CHECK_SECONDS)
            since_join += TAIL_CHECK_SECONDS
            try:
                newest = await _newest_id()
            except Exception:
                logger.warning("Tail check failed.", exc_info=True)
            else:
                if newest > self.head:
                    self.stats["tail_repairs"] += 1
                    self._schedule_catch_up()
            if since_join >= rejoin_every:
                since_join = 0.0
                try:
                    await self._layer.group_add(services.EVENTS_GROUP, self.channel_name)
                except Exception:
                    logger.warning("Re-joining the events group failed.", exc_info=True)

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == services.EVENT_TYPE:
            await self._on_event(message)
        elif kind == identity.IDENTITY_TYPE:
            self.apply_identity(message)
        elif kind == services.READ_TYPE:
            frame = message["frame"]
            for stream in list(self._by_user.get(message["user_id"], ())):
                if stream.live:
                    stream.write(frame)
        else:
            logger.warning("Hub ignored a message of unknown type %r.", kind)

    async def _on_event(self, message: dict[str, Any]) -> None:
        id = message["id"]
        if id <= self.head:
            self.stats["duplicates_dropped"] += 1
            return
        if id == self.head + 1 and not self._catching_up:
            await self._fan_out(message)
            return
        self._held[id] = message
        self._schedule_catch_up()

    async def _fan_out(self, message: dict[str, Any]) -> None:
        """Deliver one event to every local stream that may see it, ``FANOUT_SLICE`` at a time.

        ``head`` moves first: a stream that attaches while the slices are written replays this
        id (from the hub's memory or the database) and is not in the list being written.
        """
        if self._fanning is None:
            self._fanning = asyncio.Lock()
        async with self._fanning:
            id = message["id"]
            if id <= self.head:  # a catch-up got there while this one waited for the lock
                return
            self.head = id
            self._remember(message)
            self.stats["events"] += 1
            audience, target = message["audience"], message["target"]
            if audience == "everyone":
                streams = list(self.streams)
                user_frame, anon_frame = message["user_frame"], message["anon_frame"]
            else:
                streams = list((self._by_user if audience == "user" else self._by_group).get(target, ()))
                user_frame = anon_frame = message["user_frame"]
            self.stats["deliveries"] += len(streams)
            async for some in _slices(streams):
                for stream in some:
                    stream.deliver(id, user_frame if stream.viewer.user_id is not None else anon_frame)

    def apply_identity(self, message: dict[str, Any]) -> None:
        """Follow a change Django reported (``identity``) on this process's streams of that user.

        Sign-out ends the streams of that session; made inactive or deleted ends them all; a
        password change ends those opened with the old password; a group change re-scopes them.
        An ended stream's client reconnects and gets what its session now allows.
        """
        self.stats["identity_changes"] += 1
        if "users" in message:
            after = int(message["after"])
            for user_id, group_ids in message["users"]:
                for stream in list(self._by_user.get(user_id, ())):
                    self._regroup(stream, frozenset(group_ids), after)
            return
        for stream in list(self._by_user.get(message["user_id"], ())):
            viewer = stream.viewer
            if (
                message.get("end_all")
                or ("end_session" in message and viewer.session == message["end_session"])
                or ("auth" in message and viewer.auth != message["auth"])
            ):
                self.stats["identity_ends"] += 1
                stream.close()
                self.detach(stream)

    def _regroup(self, stream: Stream, group_ids: frozenset[int], after: int) -> None:
        """Give a stream its viewer's new groups; ``after`` is the newest id committed before the change.

        Ids up to ``after`` were decided under the old groups correctly. If this hub already
        decided a later id for a group just joined (the change's message arrived after it), the
        stream cannot be given it in order: it gets ``reset`` and reloads its list instead.
        """
        old = stream.viewer.group_ids
        if old == group_ids:
            return
        for group_id in old - group_ids:
            _discard(self._by_group, group_id, stream)
        for group_id in group_ids - old:
            self._by_group[group_id].add(stream)
        stream.viewer = dataclasses.replace(stream.viewer, group_ids=group_ids)
        added = group_ids - old
        if not added:
            return
        if not stream.live:  # its replay read the old groups: it reconnects and replays with the new ones
            stream.close()
            self.detach(stream)
            return
        if self.head > after and self._group_event_between(added, after, self.head) is not False:
            self.stats["resets_membership"] += 1
            stream.sent_through = max(stream.sent_through, self.head)
            stream.write(services.reset_frame("membership", self.head))

    def _group_event_between(self, group_ids: frozenset[int], low: int, high: int) -> bool | None:
        """Whether an event for one of ``group_ids`` with an id in ``(low, high]`` was handed out;
        None when the memory window does not reach back to ``low``."""
        if low < self._recent_floor:
            return None
        return any(
            low < event["id"] <= high and event["audience"] == "group" and event["target"] in group_ids
            for event in self._recent
        )

    def _schedule_catch_up(self) -> None:
        if not self._catching_up:
            self._catching_up = True
            asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        """Deliver, in order, every id above ``head`` from the database.

        Held messages are only hints of how far to read: every id below a published one is
        committed (writers commit in id order), so one read after ``upto`` was seen returns
        every row up to it that exists; ids it does not return were rolled back or deleted.
        """
        self.stats["catch_ups"] += 1
        try:
            while True:
                upto = max(self._held, default=0)
                try:
                    rows = await _fetch_after(self.head, CATCH_UP_BATCH)
                except Exception:
                    logger.warning("Catch-up query failed; retrying.", exc_info=True)
                    await asyncio.sleep(0.5)
                    continue
                for message in rows:
                    await self._fan_out(message)
                if len(rows) == CATCH_UP_BATCH:
                    continue
                self.head = max(self.head, upto)
                for id in [id for id in self._held if id <= self.head]:
                    del self._held[id]
                if not self._held:
                    return
        finally:
            self._catching_up = False


async def _slices(streams: list[Stream]) -> AsyncIterator[list[Stream]]:
    """``streams`` ``FANOUT_SLICE`` at a time, with one turn of the event loop between slices."""
    for start in range(0, len(streams), FANOUT_SLICE):
        if start:
            await asyncio.sleep(0)
        yield streams[start : start + FANOUT_SLICE]


def _frame_bytes(message: dict[str, Any]) -> int:
    return len(message["user_frame"]) + len(message["anon_frame"]) + len(message["read_frame"])


def _discard(index: dict[int, set[Stream]], key: int, stream: Stream) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(stream)
        if not members:
            del index[key]


@database_sync_to_async
def _newest_id() -> int:
    return Notification.objects.newest_id()


@database_sync_to_async
def _fetch_after(after: int, limit: int) -> list[dict[str, Any]]:
    rows = Notification.objects.filter(id__gt=after).order_by("id")[:limit]
    return [services.event_message(row) for row in rows]


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per process in a server)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
