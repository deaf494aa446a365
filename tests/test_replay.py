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

from notifications import replay, services
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
    #: SPEC §14: ("update" | "retract", row index) made after every row exists, in order; the
    #: cursor at the ``after_change``-th of them instead of at a row; the kind of each replayed event.
    changes: tuple[tuple[str, int], ...] = ()
    after_change: int | None = None
    kinds: tuple[str, ...] | None = None


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
    # SPEC §14: each notice that changed after the cursor, once, in its latest state, in event order.
    "updated after the cursor: one update, latest state": Case(
        rows=("all", "all"), after=1, changes=(("update", 0), ("update", 0), ("update", 0)), expected=(0,),
        kinds=("update",)),
    "a reconnect in the middle of several updates": Case(
        rows=("mine",), after=0, changes=(("update", 0), ("update", 0), ("update", 0)), after_change=0,
        expected=(0,), kinds=("update",)),
    "created and updated after the cursor: one notification, latest state": Case(
        rows=("all", "mine"), after=0, changes=(("update", 1), ("update", 1)), expected=(1,),
        kinds=("notification",)),
    "retracted after the cursor": Case(rows=("all", "group"), after=1, changes=(("retract", 1),), expected=(1,),
                                       kinds=("retract",)),
    "created and retracted after the cursor: nothing": Case(rows=("all", "all"), after=0,
                                                            changes=(("retract", 1),), expected=()),
    "updated then retracted: one retract": Case(rows=("all",), after=0, changes=(("update", 0), ("retract", 0)),
                                                expected=(0,), kinds=("retract",)),
    "event order, not creation order": Case(
        rows=("all", "all", "mine"), after=0, changes=(("update", 1), ("update", 0)), expected=(2, 1, 0),
        kinds=("notification", "notification", "update")),
    "someone else's update skipped": Case(rows=("all", "other"), after=1, changes=(("update", 1),), expected=()),
    "someone else's retraction skipped": Case(rows=("other", "all"), after=1, changes=(("retract", 0),),
                                              expected=()),
    "anonymous: updates of everyone's only": Case(rows=("all", "mine"), after=1, anonymous=True,
                                                  changes=(("update", 0), ("update", 1)), expected=(0,),
                                                  kinds=("update",)),
    "an update of a muted category skipped": Case(rows=("all", "all"), after=1, categories=((0, "billing"),),
                                                  muted=("billing",), changes=(("update", 0),), expected=()),
    "an update of an archived notice skipped": Case(rows=("all", "all"), after=1, archived=(0,),
                                                    changes=(("update", 0),), expected=()),
    "many updates count once towards the limit": Case(
        rows=("all", "all", "all"), after=-1, limit=3, changes=(("update", 0),) * 4, expected=(1, 2, 0),
        kinds=("notification",) * 3),
    "changed notices count towards the limit": Case(
        rows=("all", "all", "all"), after=2, limit=1, changes=(("update", 0), ("update", 1)), expected="too_many"),
}


def build(case: Case, alice, bob, group) -> tuple[Viewer, int, int, list[int], Window, dict[int, str]]:
    """Store the rows (publishing nothing), fill a memory window as the hub would, then read, delete, prune.

    Also returns each row's final title (updates change it)."""
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
    change_ids = []
    for k, (kind, i) in enumerate(case.changes):
        if kind == "update":
            services.update(rows[i], title=f"n{i} v{k}")
        else:
            services.retract(rows[i])
        change_ids.append(rows[i].event_id)
        window.add(Event.of(rows[i], kind))  # as the hub receives it
    titles = {i: row.title for i, row in enumerate(rows)}
    ids = [row.id for row in rows]
    for i in case.read:
        ReadMark.objects.create(user=alice, notification=rows[i])
    if case.pruned_through is not None:
        StreamState.objects.update_or_create(pk=1, defaults={"pruned_through": ids[case.pruned_through]})
    Notification.objects.filter(id__in=[ids[i] for i in case.deleted]).delete()
    viewer = Viewer() if case.anonymous else Viewer.of(alice)
    after = 0 if case.after < 0 else ids[case.after] if case.after < len(ids) else ids[-1] + case.after
    if case.after_change is not None:
        after = change_ids[case.after_change]
    return viewer, after, max(ids + change_ids), ids, window, titles


@pytest.mark.parametrize("source", [replay.MEMORY, replay.DATABASE])
@pytest.mark.parametrize("name", list(CASES))
async def test_replay_contract(name, source, alice, bob, group, monkeypatch):
    monkeypatch.setattr(services, "publish", lambda message: None)
    case = CASES[name]
    viewer, after, cursor, ids, window, titles = await sync_to_async(build)(case, alice, bob, group)
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
    kinds = case.kinds or ("notification",) * len(case.expected)
    assert [e.type for e in events] == list(kinds)
    payloads = [json.loads(e.data) for e in events]
    assert [p["id"] for p in payloads] == [ids[i] for i in case.expected]
    news = [(i, p) for i, p, kind in zip(case.expected, payloads, kinds, strict=True) if kind == "notification"]
    if case.anonymous:
        assert all("read" not in p for p in payloads)
    else:
        assert [p["read"] for _, p in news] == [i in case.read for i, _ in news]
    for i, p, kind in zip(case.expected, payloads, kinds, strict=True):
        if kind == "update":
            assert "read" not in p  # the card keeps its read state
        if kind != "retract":
            assert p["title"] == titles[i]  # the latest state
    event_ids = [int(e.last_event_id) for e in events]
    assert event_ids == sorted(event_ids) and all(i > after for i in event_ids)
    assert answer.through >= cursor


@pytest.mark.parametrize("name", [
    "read state", "event order, not creation order", "updated then retracted: one retract",
    "a reconnect in the middle of several updates",
])
async def test_both_sources_give_the_same_bytes(name, alice, bob, group, monkeypatch):
    monkeypatch.setattr(services, "publish", lambda message: None)
    case = CASES[name]
    viewer, after, cursor, ids, window, _ = await sync_to_async(build)(case, alice, bob, group)
    memory = await replay.from_memory(viewer, window.after(viewer, after) or [], after, cursor, 500)
    database = await replay.from_database(viewer, after, cursor, 500)
    assert memory.body == database.body and memory.through == database.through


async def test_replay_uses_memory_when_given_and_the_database_otherwise(alice, bob, group):
    viewer, after, cursor, ids, window, _ = await sync_to_async(build)(CASES["some missed"], alice, bob, group)
    assert (await replay.replay(viewer, after, cursor, 500, window.after(viewer, after))).source == replay.MEMORY
    assert (await replay.replay(viewer, after, cursor, 500, None)).source == replay.DATABASE
