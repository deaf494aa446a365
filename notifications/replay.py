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
against both. Imports models, events and the window's type; never the hub or the stream.
"""

from __future__ import annotations

import heapq
import itertools
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
        return await from_memory(viewer, recent, after, cursor, limit)
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


@database_sync_to_async
def from_memory(viewer: Viewer, events: Sequence[Event], after: int, cursor: int, limit: int) -> Replay:
    """The missed events the hub still holds, already encoded (complete up to ``cursor``).

    One query for which of them still exist (an admin may have deleted one; pruning deletes
    old ones), are not archived or expired and, for a signed-in viewer, which they have read
    since; one for the horizon.
    """
    # Muting is decided in memory, as the live fan-out does; archive and expiry by the query.
    # A notice created and retracted after ``after`` is nothing to this viewer (SPEC §14).
    ids = [
        event.notice for event in events
        if not viewer.mutes(event.category, event.level) and not (event.kind == RETRACT and event.notice > after)
    ]
    read = dict(
        Notification.objects.filter(id__in=ids).current().archived_by(viewer, False)
        .with_read(viewer).values_list("id", "is_read")  # type: ignore[misc]
    ) if ids else {}
    if after < StreamState.horizon():  # after the rows, as in from_database
        return _reset(EXPIRED, cursor, MEMORY)
    frames = [
        frame for event in events if event.notice in read
        and (frame := event.replay_frame(viewer, after, read=read[event.notice])) is not None
    ]
    if len(frames) > limit:
        return _reset(TOO_MANY, cursor, MEMORY)
    return Replay(frames, cursor, None, MEMORY)
