"""One replay contract, two sources: the same table runs against the hub's memory window and the database.

A case gives the rows, what the viewer read, what was deleted or pruned, the viewer's
``Last-Event-ID`` and the limit; both sources must answer exactly the same events (same
bytes), or the same ``reset``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from notifications import replay
from notifications.events import Event
from notifications.models import Archive, Notification, Preference, ReadMark, StreamState, Viewer
from notifications.window import Window
from tests.support.sse import Parser

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


@dataclass(frozen=True)
class Case:
    #: Audience of each row, in id order: "all", "mine" (to the viewer), "group" (the viewer's), "other" (someone else).
    rows: tuple[str, ...]
    #: 0-based row index the viewer's Last-Event-ID points at (-1: before the first row; len(rows) + 5: beyond).
    after: int
    expected: tuple[int, ...] | str  # row indexes replayed, or the reset reason
    limit: int = 500
    read: tuple[int, ...] = ()
    deleted: tuple[int, ...] = ()
    pruned_through: int | None = None  # row index the horizon is raised to
    anonymous: bool = False
    #: SPEC §13: row index → category / level; rows the viewer archived; rows already expired; muted categories.
    categories: tuple[tuple[int, str], ...] = ()
    levels: tuple[tuple[int, str], ...] = ()
    archived: tuple[int, ...] = ()
    expired: tuple[int, ...] = ()
    muted: tuple[str, ...] = ()


CASES = {
    "nothing missed": Case(rows=("all", "all"), after=1, expected=()),
    "some missed": Case(rows=("all", "mine", "all"), after=0, expected=(1, 2)),
    "other audiences skipped": Case(rows=("all", "other", "group", "other", "mine"), after=-1, expected=(0, 2, 4)),
    "anonymous sees only everyone's": Case(rows=("all", "mine", "group", "all"), after=-1, expected=(0, 3),
                                           anonymous=True),
    "read state": Case(rows=("all", "mine", "all"), after=-1, expected=(0, 1, 2), read=(0, 1)),
    "deleted row skipped": Case(rows=("all", "all", "all"), after=-1, expected=(0, 2), deleted=(1,)),
    "too many": Case(rows=("all", "all", "all"), after=-1, expected="too_many", limit=2),
    "exactly the limit": Case(rows=("all", "other", "all"), after=-1, expected=(0, 2), limit=2),
    "deleted rows do not count towards the limit": Case(rows=("all", "all", "all"), after=-1, expected=(0, 2),
                                                        limit=2, deleted=(1,)),
    "below the pruning horizon": Case(rows=("all", "all", "all", "all"), after=0, expected="expired",
                                      pruned_through=1, deleted=(0, 1)),
    "at the pruning horizon": Case(rows=("all", "all", "all"), after=1, expected=(2,), pruned_through=1,
                                   deleted=(0, 1)),
    "cursor beyond newest": Case(rows=("all", "all"), after=7, expected=()),
    "archived skipped": Case(rows=("all", "mine", "all"), after=-1, expected=(0, 2), archived=(1,)),
    "archived do not count towards the limit": Case(rows=("all", "all", "all"), after=-1, expected=(0, 1),
                                                    limit=2, archived=(2,)),
    "expired skipped": Case(rows=("all", "mine", "group"), after=-1, expected=(1,), expired=(0, 2)),
    "muted category skipped": Case(rows=("all", "all", "mine", "all"), after=-1, expected=(0, 3),
                                   categories=((1, "billing"), (2, "billing"), (3, "social")), muted=("billing",)),
    "error breaks through a mute": Case(rows=("all", "all"), after=-1, expected=(1,),
                                        categories=((0, "billing"), (1, "billing")), levels=((1, "error"),),
                                        muted=("billing",)),
    "muted does not count towards the limit": Case(rows=("all", "all", "all"), after=-1, expected=(1, 2), limit=2,
                                                   categories=((0, "billing"),), muted=("billing",)),
    "anonymous: archive and mute are per user": Case(rows=("all", "all"), after=-1, expected=(0, 1), anonymous=True,
                                                     categories=((0, "billing"),), muted=("billing",), archived=(1,)),
}


def build(case: Case, alice, bob, group) -> tuple[Viewer, int, int, list[int], Window]:
    """Store the rows (publishing nothing), fill a memory window as the hub would, then read, delete, prune."""
    to = {"all": {}, "mine": {"recipient": alice}, "group": {"group": group}, "other": {"recipient": bob}}
    categories, levels = dict(case.categories), dict(case.levels)
    past = timezone.now() - dt.timedelta(seconds=1)
    rows = [
        Notification.objects.create(
            title=f"n{i}", category=categories.get(i, ""), level=levels.get(i, "info"),
            expires_at=past if i in case.expired else None, **to[audience],
        )
        for i, audience in enumerate(case.rows)
    ]
    if case.muted:
        Preference.objects.create(user=alice, muted=list(case.muted))
    for i in case.archived:
        Archive.objects.create(user=alice, notification=rows[i])
    window = Window()
    for row in rows:
        window.add(Event.of(row))  # encoded at publish time, before reads and deletes
    ids = [row.id for row in rows]
    for i in case.read:
        ReadMark.objects.create(user=alice, notification=rows[i])
    if case.pruned_through is not None:
        StreamState.objects.update_or_create(pk=1, defaults={"pruned_through": ids[case.pruned_through]})
    Notification.objects.filter(id__in=[ids[i] for i in case.deleted]).delete()
    viewer = Viewer() if case.anonymous else Viewer.of(alice)
    after = 0 if case.after < 0 else ids[case.after] if case.after < len(ids) else ids[-1] + case.after
    return viewer, after, ids[-1], ids, window


@pytest.mark.parametrize("source", [replay.MEMORY, replay.DATABASE])
@pytest.mark.parametrize("name", list(CASES))
async def test_replay_contract(name, source, alice, bob, group):
    case = CASES[name]
    viewer, after, cursor, ids, window = await sync_to_async(build)(case, alice, bob, group)
    if source == replay.MEMORY:
        recent = window.after(viewer, after)
        assert recent is not None, "the window covers every case here"
        answer = await replay.from_memory(viewer, recent, after, cursor, case.limit)
    else:
        answer = await replay.from_database(viewer, after, cursor, case.limit)
    assert answer.source == source
    events = Parser().feed(answer.body)
    if isinstance(case.expected, str):
        assert answer.reset == case.expected
        assert [(e.type, json.loads(e.data)) for e in events] == [
            ("reset", {"reason": case.expected, "cursor": cursor})
        ]
        assert events[0].last_event_id == str(cursor)
        return
    assert answer.reset is None
    assert [e.type for e in events] == ["notification"] * len(case.expected)
    payloads = [json.loads(e.data) for e in events]
    assert [p["id"] for p in payloads] == [ids[i] for i in case.expected]
    if case.anonymous:
        assert all("read" not in p for p in payloads)
    else:
        assert [p["read"] for p in payloads] == [i in case.read for i in case.expected]
    assert answer.through >= cursor


async def test_both_sources_give_the_same_bytes(alice, bob, group):
    case = CASES["read state"]
    viewer, after, cursor, ids, window = await sync_to_async(build)(case, alice, bob, group)
    memory = await replay.from_memory(viewer, window.after(viewer, after) or [], after, cursor, 500)
    database = await replay.from_database(viewer, after, cursor, 500)
    assert memory.body == database.body and memory.through == database.through


async def test_replay_uses_memory_when_given_and_the_database_otherwise(alice, bob, group):
    viewer, after, cursor, ids, window = await sync_to_async(build)(CASES["some missed"], alice, bob, group)
    assert (await replay.replay(viewer, after, cursor, 500, window.after(viewer, after))).source == replay.MEMORY
    assert (await replay.replay(viewer, after, cursor, 500, None)).source == replay.DATABASE
