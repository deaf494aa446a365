"""Replay after a ``Last-Event-ID``: one answer whether the missed events come from the hub's memory or the database.

The contract (SPEC §6, §10), for a viewer, a cursor ``after``, the hub's ``cursor`` when the
stream attached and ``limit`` (``NOTIFICATIONS_REPLAY_LIMIT``):

1. ``after`` below the pruning horizon → one ``reset`` (reason ``expired``), whatever is kept;
2. else more than ``limit`` visible notices after ``after`` → one ``reset`` (``too_many``);
3. else every notice that changed after ``after`` (SPEC §14), still exists, the viewer may
   see and has in their inbox (not archived, muted or expired: SPEC §13), once, in its
   latest state, in event order: created after ``after`` → ``notification`` with the
   viewer's current read state; created before and updated after → ``update``; retracted
   → ``retract`` (nothing, if it was also created after ``after``). Notices left out do not
   count towards ``limit``.

``from_memory`` and ``from_database`` both keep it; ``tests/test_replay.py`` runs one table
against both. ``replay()`` sends memory answers through a per-loop batch: reconnects that
arrive while one database hop runs are answered together in the next one (one query for
the anonymous ones' ids, one per signed-in viewer, one horizon read), so a reconnect storm
costs a few hops, not one per stream. Imports models, events and the window's type; never
the hub or the stream.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from channels.db import database_sync_to_async

from .events import EXPIRED, RETRACT, TOO_MANY, Event, notification_frame, reset_frame, retract_frame, update_frame
from .models import Notification, NotificationQuerySet, StreamState, Viewer

MEMORY = "memory"
DATABASE = "database"
#: Up to this many groups, a database replay reads each audience (everyone's, the viewer's own,
#: each group's) as its own index range that stops after ``limit + 1`` rows, and merges them;
#: beyond it, one query whose branches the database sorts (fewer round trips).
MERGE_MAX_GROUPS = 8
#: Most memory answers computed in one database hop.
MAX_BATCH = 256
#: Most ids per ``IN (...)`` (SQLite's old limit is 999 parameters).
IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Replay:
    """What a reconnect is sent before ``hello``."""

    #: The frames, in id order (or the one ``reset`` frame).
    frames: list[bytes]
    #: The id up to which the stream is complete once they are written (``>= cursor``).
    through: int
    #: ``expired`` / ``too_many`` when the answer is a reset, else None.
    reset: str | None
    #: ``memory`` or ``database``.
    source: str

    @property
    def body(self) -> bytes:
        return b"".join(self.frames)


async def replay(viewer: Viewer, after: int, cursor: int, limit: int, recent: Sequence[Event] | None) -> Replay:
    """From ``recent`` (the hub's memory, see ``Hub.attach``) when it covers ``after``, else from the database."""
    if recent is not None:
        return await _batch().ask(_Ask(viewer, recent, after, cursor, limit))
    return await from_database(viewer, after, cursor, limit)


def _reset(reason: str, cursor: int, source: str) -> Replay:
    return Replay([reset_frame(reason, cursor)], cursor, reason, source)


@database_sync_to_async
def from_database(viewer: Viewer, after: int, cursor: int, limit: int) -> Replay:
    """The missed rows, read and encoded here: indexed reads for the rows (read state included,
    see ``missed_rows``) and one for the pruning horizon, however many rows.

    Reads past ``cursor`` too (rows the hub has not handed out yet): ids follow commit order,
    so the newest row read bounds a range that is complete.
    """
    rows = missed_rows(viewer, after, limit + 1)
    # The horizon is read after the rows: prune_notifications raises it before it deletes
    # anything, so if the rows query missed a pruned row, this read sees the new horizon.
    if after < StreamState.horizon():
        return _reset(EXPIRED, cursor, DATABASE)
    if len(rows) > limit:
        return _reset(TOO_MANY, cursor, DATABASE)
    signed_in = viewer.user_id is not None
    frames = [
        retract_frame(row) if row.retracted_at is not None
        else update_frame(row) if row.id <= after
        else notification_frame(row, read=bool(getattr(row, "is_read", False)) if signed_in else None)
        for row in rows
    ]
    return Replay(frames, max(cursor, rows[-1].event_id) if rows else cursor, None, DATABASE)


def missed_rows(viewer: Viewer, after: int, count: int) -> list[Notification]:
    """The first ``count`` inbox rows (SPEC §13) that changed after ``after`` (SPEC §14) the
    viewer may see, in event order (``event_id``), with ``is_read``; retracted ones included,
    except those also created after ``after``.

    One query with an ``OR`` of the audiences makes SQLite merge the branches in a temporary
    B-tree before the ``LIMIT``: an old cursor sorted every visible row after it. Each audience
    alone is an index range already in id order that stops after ``count`` rows, so for up to
    ``MERGE_MAX_GROUPS`` groups they are read apart (2 + groups small queries) and merged here.
    The order is the event key ``COALESCE(last_event, id)`` (SPEC §14), an expression index
    per audience (``notif_*_event``).
    """
    parts = missed_parts(viewer, after)
    if len(parts) == 1:
        return list(parts[0][:count])  # type: ignore[index]
    merged = heapq.merge(*(list(part[:count]) for part in parts), key=attrgetter("event_id"))
    return list(itertools.islice(merged, count))


def missed_parts(viewer: Viewer, after: int) -> list[NotificationQuerySet]:
    """The queries ``missed_rows`` reads, each in event order (one alone past ``MERGE_MAX_GROUPS`` groups)."""
    base = (
        Notification.objects.current().archived_by(viewer, False).muted_for(viewer, False)
        .exclude(id__gt=after, retracted_at__isnull=False).with_read(viewer)
    )
    if viewer.user_id is not None and len(viewer.group_ids) > MERGE_MAX_GROUPS:
        return [base.addressed_to(viewer).changed_after(after)]
    rows = base.changed_after(after)
    everyone = rows.filter(recipient__isnull=True, group__isnull=True)
    if viewer.user_id is None:
        return [everyone]
    return [
        everyone,
        rows.filter(recipient_id=viewer.user_id),
        *(rows.filter(group_id=group_id) for group_id in sorted(viewer.group_ids)),
    ]


@dataclass(frozen=True, slots=True)
class _Ask:
    viewer: Viewer
    events: Sequence[Event]
    after: int
    cursor: int
    limit: int


@database_sync_to_async
def from_memory(viewer: Viewer, events: Sequence[Event], after: int, cursor: int, limit: int) -> Replay:
    """The missed events the hub still holds, already encoded (complete up to ``cursor``).

    One query for which of them still exist (an admin may have deleted one; pruning deletes
    old ones), are not archived or expired and, for a signed-in viewer, which they have read
    since; one for the horizon.
    """
    return _from_memory_many([_Ask(viewer, events, after, cursor, limit)])[0]


def _existing(ids: Sequence[int], viewer: Viewer) -> dict[int, bool]:
    """``{id: read}`` for those of ``ids`` that still exist and are in ``viewer``'s inbox (not
    archived, not expired), read state as ``viewer`` sees it. Muting is decided in memory by the
    caller, as the live fan-out does."""
    found: dict[int, bool] = {}
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        rows = Notification.objects.filter(id__in=chunk).current().archived_by(viewer, False).with_read(viewer)
        found.update(rows.values_list("id", "is_read"))  # type: ignore[misc]
    return found


def _from_memory_many(asks: Sequence[_Ask]) -> list[Replay]:
    """``from_memory`` for several reconnects: anonymous viewers share one existence query
    (their read state is always False), each signed-in viewer gets its own; then one horizon
    read for all, after the rows as in ``from_database``."""
    anonymous = Viewer()
    shared_ids = sorted({id for ask in asks if ask.viewer.user_id is None for id in _wanted(ask)})
    shared = _existing(shared_ids, anonymous) if shared_ids else {}
    reads = [
        shared if ask.viewer.user_id is None else _existing(_wanted(ask), ask.viewer) if ask.events else {}
        for ask in asks
    ]
    horizon = StreamState.horizon()
    answers = []
    for ask, read in zip(asks, reads, strict=True):
        if ask.after < horizon:
            answers.append(_reset(EXPIRED, ask.cursor, MEMORY))
            continue
        frames = [
            frame for event in ask.events if event.notice in read
            and (frame := event.replay_frame(ask.viewer, ask.after, read=read[event.notice])) is not None
        ]
        if len(frames) > ask.limit:
            answers.append(_reset(TOO_MANY, ask.cursor, MEMORY))
            continue
        answers.append(Replay(frames, ask.cursor, None, MEMORY))
    return answers


def _wanted(ask: _Ask) -> list[int]:
    """The notices whose state ``ask`` may send: muting is decided in memory, as the live fan-out
    does (archive and expiry by the query); a notice created and retracted after ``after`` is
    nothing to this viewer (SPEC §14)."""
    return [
        event.notice for event in ask.events
        if not ask.viewer.mutes(event.category, event.level)
        and not (event.kind == RETRACT and event.notice > ask.after)
    ]


_answer_many = database_sync_to_async(_from_memory_many)


class _Batch:
    """Memory answers of one event loop, computed ``MAX_BATCH`` at a time in one hop each."""

    def __init__(self) -> None:
        self.waiting: list[tuple[_Ask, asyncio.Future[Replay]]] = []
        self.task: asyncio.Task[None] | None = None

    async def ask(self, ask: _Ask) -> Replay:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Replay] = loop.create_future()
        self.waiting.append((ask, future))
        if self.task is None:
            self.task = loop.create_task(self._run(), name="notifications-replay-batch")
        return await future

    async def _run(self) -> None:
        batch: list[tuple[_Ask, asyncio.Future[Replay]]] = []
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
                try:
                    answers = await _answer_many([ask for ask, _ in batch])
                except Exception as exc:  # each waiting reconnect sees the failure, as it would alone
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for (_, future), answer in zip(batch, answers, strict=True):
                        if not future.done():
                            future.set_result(answer)
                batch = []
        finally:
            self.task = None
            for _, future in batch + self.waiting:  # cancelled (the loop is closing): nobody waits forever
                future.cancel()
            self.waiting = []


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batch] = weakref.WeakKeyDictionary()


def _batch() -> _Batch:
    loop = asyncio.get_running_loop()
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = _Batch()
    return batch
