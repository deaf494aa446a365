"""The process's one channel-layer subscription: order, gaps, catch-up, fan-out to its streams.

One channel-layer channel per process joins ``events.EVENTS_GROUP``; every event reaches
every process once. The hub keeps ``head``, the highest id it has handed out with nothing
missing below it, and delivers ids strictly in order:

* the next id arrives → its pre-encoded frame goes to every local stream that may see it;
* an id already handed out (a duplicate, or one the database already gave us) → dropped;
* a higher id (a lost or overtaken message, or a rolled-back id) → held, and the hub reads
  the rows in between from the database, once for all its streams, and delivers them in order.

Because writers commit in id order (``services.lock_sequence``), every id below a
published one is already committed, so that one read is complete. A periodic check of the
newest id catches a lost message that nothing follows; a broken layer receive is retried
and followed by the same check. Streams never read the database on the live path.

Failures are loud and bounded: a bad message is logged and counted, never ends the receive
loop; every task is referenced and its failure logged; catch-up backs off up to a cap; held
messages are bounded. Imports events, stream, window, servers; the consumer imports it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from . import heap, servers, sse
from .conf import app_settings
from .events import (
    EVENTS_GROUP,
    MEMBERSHIP,
    NOTIFICATION,
    RETRACT,
    UPDATE,
    BadMessage,
    Event,
    EventBatch,
    IdentityChange,
    PreferenceChange,
    ReadEvent,
    parse,
    reset_frame,
)
from .models import Notification, Viewer
from .stream import Stream
from .window import Window

logger = logging.getLogger(__name__)

#: Rows read from the database per catch-up query.
CATCH_UP_BATCH = 500
#: First and longest wait between failed catch-up reads (doubling in between).
CATCH_UP_RETRY = 0.5
CATCH_UP_MAX_RETRY = 30.0
#: Out-of-order messages held while a catch-up runs; past that they are dropped (counted as
#: ``held_dropped``) and the catch-up reads on to the newest id instead: the rows are the truth.
MAX_HELD = 10_000
#: Seconds between checks of the newest id (finds a lost message that nothing follows, or
#: one sent from a process the channel layer does not reach).
TAIL_CHECK_SECONDS = 2.0
#: Users whose latest identity change each hub remembers (``identity_changed_since``).
IDENTITY_MEMORY = 1024
#: Streams written per turn of the event loop when one event goes to many. Between slices
#: the loop runs once, so the server sends what was written and frees its per-write objects
#: before the next slice: a 10,000-stream broadcast otherwise keeps ~200,000 short-lived
#: objects alive until it ends, and the garbage collector's full passes over a Django
#: process were then most of the broadcast's CPU (docs/benchmarks.md). Other work (connects,
#: API requests) also runs between slices instead of waiting for the whole broadcast.
FANOUT_SLICE = 64

NewestId = Callable[[], Awaitable[int]]
FetchAfter = Callable[[int, int], Awaitable[list[Event]]]


@database_sync_to_async
def newest_id() -> int:
    """The newest id the database knows of (pruned ones included)."""
    return Notification.objects.newest_id()


@database_sync_to_async
def fetch_after(after: int, limit: int) -> list[Event]:
    """Up to ``limit`` events with ids above ``after``, oldest first, encoded from their rows.

    Each notice that changed after ``after`` comes once, as its latest event (SPEC §14): ids
    of intermediate updates are not in the database any more, and count as gone, like
    rolled-back ones. A notice created after ``after`` comes as ``notification`` in its
    latest state (a retracted one as ``retract``: harmless to a page that never showed it).
    """
    return [Event.of(row, change_kind(row, after)) for row in Notification.objects.changed_after(after)[:limit]]


def change_kind(row: Notification, after: int) -> str:
    """What a viewer whose cursor is ``after`` is told about ``row``'s latest state."""
    if row.retracted_at is not None:
        return RETRACT
    return NOTIFICATION if row.id > after else UPDATE


@dataclass(frozen=True)
class Snapshot:
    """The hub's numbers at one instant, read on its event loop (``Hub.snapshot``)."""

    streams: int = 0
    replaying: int = 0
    users: int = 0
    groups: int = 0
    held: int = 0
    head: int = 0
    recent_events: int = 0
    tasks: int = 0
    stats: Mapping[str, int] = field(default_factory=dict)
    #: ``servers.Capabilities.flags()``, once the first stream showed which server this is.
    capabilities: Mapping[str, bool] = field(default_factory=dict)


class Hub:
    """Fans the process's one channel-layer subscription out to its open streams.

    ``layer``, ``newest_id`` and ``fetch_after`` default to the configured channel layer and
    the database; tests pass their own.
    """

    def __init__(
        self,
        *,
        layer: Any = None,
        newest_id: NewestId = newest_id,
        fetch_after: FetchAfter = fetch_after,
        window: Window | None = None,
    ) -> None:
        self.streams: set[Stream] = set()
        self._by_user: dict[int, set[Stream]] = collections.defaultdict(set)
        self._by_group: dict[int, set[Stream]] = collections.defaultdict(set)
        #: Streams by the categories their viewer muted (SPEC §13): the fan-out skips them in memory.
        self._muting: dict[str, set[Stream]] = collections.defaultdict(set)
        self.head = 0
        self.window = window if window is not None else Window()
        self.channel_name: str | None = None
        self._layer = layer
        self._newest_id = newest_id
        self._fetch_after = fetch_after
        self._started: asyncio.Future[None] | None = None
        #: Every task this hub runs (loops, catch-ups): referenced until done, failures logged.
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        #: Ids seen above head while a catch-up runs: hints of how far it must read.
        self._held: set[int] = set()
        self._held_overflowed = False
        self._catch_up_task: asyncio.Task[None] | None = None
        #: Held while an event is being fanned out, so that events reach streams in id order
        #: even though a fan-out yields to the event loop between slices.
        self._fanning: asyncio.Lock | None = None
        self._shutdown_hook: bool | None = None
        self.capabilities: servers.Capabilities | None = None
        self.stats = collections.Counter[str]()
        #: One bound method for every stream's ``on_drop`` (a new one per stream is 64 bytes each).
        self._count_drop = self.count_drop
        #: Identity changes applied so far, and the number of the latest one per user (the
        #: last ``IDENTITY_MEMORY`` users): a stream being opened checks it did not miss one.
        self._identity_changes = 0
        self._changed_users: collections.OrderedDict[int, int] = collections.OrderedDict()

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Join the events group and learn the newest id; idempotent, safe to race."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                await self._join()
                self._loops = [
                    self._spawn(self._receive_loop(), "notifications-hub-receive"),
                    self._spawn(self._heartbeat_loop(), "notifications-hub-heartbeat"),
                    self._spawn(self._maintenance_loop(), "notifications-hub-maintenance"),
                ]
                servers.on_lifespan_shutdown(self.stop)
                self._started.set_result(None)
            except BaseException as exc:
                self._started.set_exception(exc)
                self._started.exception()  # mark retrieved
                self._started = None
                raise
        if self._started.done():
            self._started.result()  # started (every connect after the first): no shield to build
            return
        await asyncio.shield(self._started)

    async def _join(self) -> None:
        if self._layer is None:
            self._layer = get_channel_layer()
        if self._layer is None:
            raise RuntimeError("CHANNEL_LAYERS has no 'default' layer; notifications cannot stream.")
        if self.channel_name is None:
            self.channel_name = await self._layer.new_channel("notifications-hub.")
        await self._layer.group_add(EVENTS_GROUP, self.channel_name)
        # Joined first, then read the head: anything committed later reaches us by message.
        # Only with no stream attached: on a re-join (after a broken receive) streams are
        # waiting for the ids above head, which the caller's catch-up delivers in order.
        newest = await self._newest_id()
        if not self.streams and newest > self.head:
            self.head = newest
            self.window.forget(newest)
        if self._shutdown_hook is None:
            self._shutdown_hook = servers.on_shutdown(self._end_streams)

    def _end_streams(self) -> None:
        for stream in list(self.streams):
            stream.end_for_shutdown()

    async def stop(self) -> None:
        """Cancel every task (logging any that had failed) and leave the events group."""
        tasks, self._tasks, self._loops = list(self._tasks), set(), []
        self._catch_up_task = None
        for task in tasks:
            task.cancel()
        for task, outcome in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
            if isinstance(outcome, Exception):
                logger.error("Hub task %s had failed.", task.get_name(), exc_info=outcome)
        if self._layer is not None and self.channel_name is not None:
            try:
                await self._layer.group_discard(EVENTS_GROUP, self.channel_name)
            except Exception:
                logger.warning("Leaving the events group failed.", exc_info=True)
        self._started = None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["task_failures"] += 1
            logger.error("Hub task %s failed.", task.get_name(), exc_info=task.exception())

    # -- streams ------------------------------------------------------------------------

    async def known_up_to(self, after: int | None) -> int:
        """For a ``Last-Event-ID`` ahead of this hub's ``head``: how far the client already has
        everything (its cursor, but never past the newest id the database holds), else 0.

        A client can be ahead of a process's hub: its page was rendered from the database, or
        its last stream was on another process, while this hub has not yet heard of those ids
        (the in-memory layer does not cross processes; a hub finds them at its tail check).
        They must not be sent to it again. Capped by the database so that a cursor from a
        database since reset (a development ``db.sqlite3`` recreated) does not silence the stream.
        """
        if after is None or after <= self.head:
            return 0
        try:
            return min(after, await self._newest_id())
        except Exception:
            logger.warning("Reading the newest id for a cursor ahead of the hub failed.", exc_info=True)
            return 0

    def attach(self, stream: Stream, after: int | None = None, known: int = 0) -> tuple[int, list[Event] | None]:
        """Register a stream before its replay; returns ``(cursor, recent)``.

        Every id above ``cursor`` (the hub's head, or ``known`` from ``known_up_to`` if that is
        further) reaches the stream through ``deliver``; ids up to it are never written to it.
        ``recent`` is what the viewer missed after ``after`` up to ``cursor`` from the memory
        window, or None when memory does not reach back to ``after`` (or ``after`` is None):
        read in the same step, so the two meet exactly at ``cursor``.
        """
        if self.capabilities is None:
            self._probe(stream)
        self.streams.add(stream)
        heap.streams_grew(len(self.streams))
        viewer = stream.viewer
        if viewer.user_id is not None:
            self._by_user[viewer.user_id].add(stream)
        for group_id in viewer.group_ids:
            self._by_group[group_id].add(stream)
        for category in viewer.muted:
            self._muting[category].add(stream)
        cursor = max(self.head, known)
        stream.sent_through = cursor
        recent = self.window.after(viewer, after) if after is not None else None
        return cursor, recent

    def detach(self, stream: Stream) -> None:
        self.streams.discard(stream)
        viewer = stream.viewer
        if viewer.user_id is not None:
            _discard(self._by_user, viewer.user_id, stream)
        for group_id in viewer.group_ids:
            _discard(self._by_group, group_id, stream)
        for category in viewer.muted:
            _discard(self._muting, category, stream)
        stream.release()

    def new_stream(self, viewer: Viewer, send: Any) -> Stream:
        """A stream whose drops this hub counts (``dropped_<reason>``)."""
        return Stream(viewer, send, on_drop=self._count_drop)

    def count_drop(self, reason: str) -> None:
        self.stats[f"dropped_{reason}"] += 1

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n

    def streams_of_user(self, user_id: int) -> int:
        return len(self._by_user.get(user_id, ()))

    def _probe(self, stream: Stream) -> None:
        """Which server this is and what it lets streams do: once per hub, logged once."""
        self.capabilities = servers.probe(stream.server_send, shutdown_hook=bool(self._shutdown_hook))
        logger.info("notifications: server capabilities: %s", self.capabilities.describe())

    def snapshot(self) -> Snapshot:
        """The hub's numbers; call on its event loop."""
        return Snapshot(
            streams=len(self.streams),
            replaying=sum(1 for stream in self.streams if not stream.live),
            users=len(self._by_user),
            groups=len(self._by_group),
            held=len(self._held),
            head=self.head,
            recent_events=len(self.window),
            tasks=len(asyncio.all_tasks()),
            stats=dict(self.stats),
            capabilities=self.capabilities.flags() if self.capabilities is not None else {},
        )

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

    async def handle(self, message: Any) -> None:
        """Act on one channel-layer message. Never raises: a bad one is logged and counted."""
        try:
            item = parse(message)
        except BadMessage as exc:
            self.stats["bad_messages"] += 1
            logger.error("Dropped a bad channel-layer message: %s", exc)
            return
        try:
            if isinstance(item, Event):
                await self._on_event(item)
            elif isinstance(item, EventBatch):
                await self._on_batch(item)
            elif isinstance(item, ReadEvent):
                self._on_read(item)
            elif isinstance(item, PreferenceChange):
                self.apply_preferences(item)
            else:
                self.apply_identity(item)
        except Exception:
            # Whatever went wrong, the rows are the truth: count it and repair from the database.
            self.stats["bad_messages"] += 1
            logger.exception("Handling a channel-layer message failed; catching up from the database.")
            self._schedule_catch_up()

    def _on_read(self, item: ReadEvent) -> None:
        for stream in list(self._by_user.get(item.user_id, ())):
            stream.push(item.frame)

    def apply_preferences(self, change: PreferenceChange) -> None:
        """Give that user's open streams on this process their muted categories now (SPEC §13).

        From the next event on, the fan-out skips the muted categories for them (and sends
        those it unmuted); notices already sent stay on the page until it reloads.
        """
        self.stats["preference_changes"] += 1
        self._remember_change(change.user_id)  # a stream being set up right now re-reads (consumers)
        for stream in list(self._by_user.get(change.user_id, ())):
            old = stream.viewer.muted
            if old == change.muted:
                continue
            for category in old - change.muted:
                _discard(self._muting, category, stream)
            for category in change.muted - old:
                self._muting[category].add(stream)
            stream.viewer = dataclasses.replace(stream.viewer, muted=change.muted)

    def apply_identity(self, change: IdentityChange) -> None:
        """Follow a change Django reported (``identity``) on this process's streams of that user.

        Sign-out ends the streams of that session; made inactive or deleted ends them all; a
        password change ends those opened under the old password; a group change re-scopes
        them. An ended stream's client reconnects and gets what its session now allows.
        """
        self.stats["identity_changes"] += 1
        changed: list[int | None] = [user_id for user_id, _ in change.groups] or [change.user_id]
        for user_id in changed:
            self._remember_change(user_id)
        for user_id, group_ids in change.groups:
            for stream in list(self._by_user.get(user_id, ())):
                self._regroup(stream, group_ids, change.after)
        if change.user_id is None:
            return
        for stream in list(self._by_user.get(change.user_id, ())):
            viewer = stream.viewer
            if (
                change.end_all
                or (change.end_session is not None and viewer.session == change.end_session)
                or (change.auth is not None and viewer.auth != change.auth)
            ):
                self.stats["identity_ends"] += 1
                stream.close()
                self.detach(stream)

    def identity_mark(self) -> int:
        """A mark to pass to ``identity_changed_since`` later."""
        return self._identity_changes

    def identity_changed_since(self, user_id: int, mark: int) -> bool:
        """Whether an identity change of ``user_id`` was applied after ``mark`` (True when unsure).

        A stream reads its viewer (groups, session) before it attaches; a change applied in
        between would not reach it, so the consumer checks this right before ``attach``.
        """
        if self._identity_changes - mark > len(self._changed_users):
            return True  # more changes since than this hub remembers
        return self._changed_users.get(user_id, 0) > mark

    def _remember_change(self, user_id: int | None) -> None:
        if user_id is None:
            return
        self._identity_changes += 1
        self._changed_users[user_id] = self._identity_changes
        self._changed_users.move_to_end(user_id)
        while len(self._changed_users) > IDENTITY_MEMORY:
            self._changed_users.popitem(last=False)

    def _regroup(self, stream: Stream, group_ids: frozenset[int], after: int) -> None:
        """Give a stream its viewer's new groups; ``after`` is the newest id committed before the change.

        Ids up to ``after`` were decided under the old groups, correctly. If this hub already
        decided a later id of a group just joined under the old ones (the change's message
        came after it), the stream cannot be given it in order: it gets ``reset`` (reason
        ``membership``) and reloads its list instead of passing a notice it may now see.
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
        if self.head > after and self.window.any_for_groups(added, after, self.head) is not False:
            self.stats[f"resets_{MEMBERSHIP}"] += 1
            stream.reset(reset_frame(MEMBERSHIP, self.head), self.head)

    async def _on_event(self, event: Event) -> None:
        if event.id <= self.head:
            self.stats["duplicates_dropped"] += 1
            return
        if event.id == self.head + 1 and self._catch_up_task is None:
            await self._fan_out(event)
            return
        if len(self._held) >= MAX_HELD:
            # The catch-up reads on to the newest id without these hints: nothing is lost.
            self.stats["held_dropped"] += len(self._held)
            logger.warning("Dropping %d held events; the catch-up reads them from the database.", len(self._held))
            self._held.clear()
            self._held_overflowed = True
        self._held.add(event.id)
        self._schedule_catch_up()

    async def _heartbeat_loop(self) -> None:
        """A ``: ping`` comment on every live stream every ``NOTIFICATIONS_HEARTBEAT`` seconds."""
        ping = sse.encode_comment("ping")
        while True:
            await asyncio.sleep(app_settings.HEARTBEAT)
            async for streams in _slices(list(self.streams)):
                for stream in streams:
                    stream.push(ping)

    async def _maintenance_loop(self) -> None:
        """Check the newest id (finds a lost last message) and re-join before group expiry."""
        since_join = 0.0
        rejoin_every = max(1.0, float(getattr(self._layer, "group_expiry", 86400)) / 4)
        while True:
            await asyncio.sleep(TAIL_CHECK_SECONDS)
            since_join += TAIL_CHECK_SECONDS
            await self.check_tail()
            if heap.sweep(time.monotonic()):
                self.stats["heap_sweeps"] += 1
            if since_join >= rejoin_every:
                since_join = 0.0
                try:
                    await self._layer.group_add(EVENTS_GROUP, self.channel_name)
                except Exception:
                    logger.warning("Re-joining the events group failed.", exc_info=True)

    async def check_tail(self) -> None:
        """Catch up if the database knows of an id above ``head`` (a lost message nothing followed)."""
        try:
            newest = await self._newest_id()
        except Exception:
            logger.warning("Tail check failed.", exc_info=True)
            return
        if newest > self.head:
            self.stats["tail_repairs"] += 1
            self._schedule_catch_up()

    async def _fan_out(self, event: Event) -> None:
        """Deliver one event to every local stream that may see it, ``FANOUT_SLICE`` at a time.

        ``head`` moves first: a stream that attaches while the slices are written replays this
        id (from the hub's memory or the database) and is not in the list being written.
        """
        if self._fanning is None:
            self._fanning = asyncio.Lock()
        async with self._fanning:
            id = event.id
            if id <= self.head:  # a catch-up got there while this one waited for the lock
                return
            streams, user_frame, anon_frame, update_of = self._advance(event)
            async for some in _slices(streams):
                for stream in some:
                    stream.deliver(id, user_frame if stream.viewer.user_id is not None else anon_frame, update_of)

    async def _on_batch(self, batch: EventBatch) -> None:
        """A bulk send's events in one pass, each by the rules of one event (``_on_event``).

        Under the fan-out lock once for the whole batch: each next id moves ``head`` and the
        window and goes to its streams at once; a duplicate, a gap (held, then caught up) or a
        running catch-up are ``_on_event``'s, which then decides without waiting. The loop
        runs once every ``FANOUT_SLICE`` writes, counted across events (a batch of 1,000
        personal notices is 16 turns, not 1,000 slices of one).
        """
        self.stats["batches"] += 1
        if self._fanning is None:
            self._fanning = asyncio.Lock()
        async with self._fanning:
            budget = FANOUT_SLICE
            for event in batch.events:
                id = event.id
                if id != self.head + 1 or self._catch_up_task is not None:
                    await self._on_event(event)  # dropped or held: decided before any await
                    continue
                streams, user_frame, anon_frame, update_of = self._advance(event)
                for stream in streams:
                    if budget == 0:
                        await asyncio.sleep(0)
                        budget = FANOUT_SLICE
                    budget -= 1
                    stream.deliver(id, user_frame if stream.viewer.user_id is not None else anon_frame, update_of)

    def _advance(self, event: Event) -> tuple[list[Stream], bytes, bytes, int | None]:
        """``event`` is the next id: move ``head`` and the memory window to it, count it, and
        return its recipients (``_recipients``), for one event or each of a batch alike."""
        self.head = event.id
        self.window.add(event)
        self.stats["events"] += 1
        recipients = self._recipients(event)
        self.stats["deliveries"] += len(recipients[0])
        return recipients

    def _recipients(self, event: Event) -> tuple[list[Stream], bytes, bytes, int | None]:
        """Who gets ``event`` on this process, decided in memory for one event or a batch alike:
        the local streams of its audience, less those that muted its category (never an
        ``error``) and all of them once it has expired; the frames for signed-in and anonymous
        viewers; and the notice an update is about (conflated per stream, SPEC §14)."""
        if event.audience == "everyone":
            streams = list(self.streams)
        else:
            index = self._by_user if event.audience == "user" else self._by_group
            streams = list(index.get(event.target or 0, ()))
        user_frame, anon_frame = event.live_frames
        if event.expires is not None and event.expired(time.time()):
            streams = []  # a catch-up reached it after its expiry: nobody lists it any more
        elif event.category and event.level != "error":
            muting = self._muting.get(event.category)
            if muting:
                streams = [stream for stream in streams if stream not in muting]
        return streams, user_frame, anon_frame, (event.notice if event.kind == UPDATE else None)

    def _schedule_catch_up(self) -> None:
        if self._catch_up_task is None:
            self._catch_up_task = self._spawn(self._catch_up(), "notifications-hub-catch-up")

    async def _catch_up(self) -> None:
        """Deliver, in order, every id above ``head`` from the database.

        Held messages are only hints of how far to read: every id below a published one is
        committed (writers commit in id order), so one read after ``upto`` was seen returns
        every row up to it that exists; ids it does not return were rolled back or deleted.
        A failed read is retried after ``CATCH_UP_RETRY`` seconds, doubling up to ``CATCH_UP_MAX_RETRY``.
        """
        self.stats["catch_ups"] += 1
        retry = CATCH_UP_RETRY
        try:
            while True:
                try:
                    if self._held_overflowed:  # the hints were dropped: read on to the newest id
                        self._held.add(await self._newest_id())
                        self._held_overflowed = False
                    upto = max(self._held, default=0)
                    rows = await self._fetch_after(self.head, CATCH_UP_BATCH)
                except Exception:
                    self.stats["catch_up_errors"] += 1
                    logger.warning("Catch-up read failed; retrying in %.1fs.", retry, exc_info=True)
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, CATCH_UP_MAX_RETRY)
                    continue
                retry = CATCH_UP_RETRY
                for event in rows:
                    await self._fan_out(event)
                if len(rows) == CATCH_UP_BATCH:
                    continue
                self.head = max(self.head, upto)
                self._held = {id for id in self._held if id > self.head}
                if not self._held:
                    return
        finally:
            self._catch_up_task = None


async def _slices(streams: list[Stream]) -> AsyncIterator[list[Stream]]:
    """``streams`` ``FANOUT_SLICE`` at a time, with one turn of the event loop between slices."""
    for start in range(0, len(streams), FANOUT_SLICE):
        if start:
            await asyncio.sleep(0)
        yield streams[start : start + FANOUT_SLICE]


def _discard(index: dict[Any, set[Stream]], key: int | str, stream: Stream) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(stream)
        if not members:
            del index[key]


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per process in a server), created on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub


def current_hub() -> Hub | None:
    """The running event loop's hub if there is one (metrics read it without creating one)."""
    return _hubs.get(asyncio.get_running_loop())

