"""Memory replays that arrive together are answered together: the same bytes as one by one, in fewer hops."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from notifications import replay
from notifications.events import Event
from notifications.models import Notification, ReadMark, Viewer
from notifications.window import Window

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


def build(alice, bob, group):
    to = [{}, {"recipient": alice}, {}, {"group": group}, {"recipient": bob}, {}]
    rows = [Notification.objects.create(title=f"n{i}", **kw) for i, kw in enumerate(to)]
    window = Window()
    for row in rows:
        window.add(Event.of(row))
    ReadMark.objects.create(user=alice, notification=rows[1])
    ReadMark.objects.create(user=bob, notification=rows[0])
    rows[2].delete()
    return [row.id for row in rows], window, [Viewer(), Viewer.of(alice), Viewer.of(bob)]


async def test_a_batch_answers_as_each_alone(alice, bob, group, monkeypatch):
    ids, window, viewers = await sync_to_async(build)(alice, bob, group)
    asks = [(viewer, after, limit) for viewer in viewers for after in (0, ids[0], ids[3]) for limit in (500, 1)]
    alone = [await replay.from_memory(v, window.after(v, a) or [], a, ids[-1], limit) for v, a, limit in asks]
    hops = []
    real = replay._answer_many

    async def counted(batch):
        hops.append(len(batch))
        return await real(batch)

    monkeypatch.setattr(replay, "_answer_many", counted)
    together = await asyncio.gather(*(replay.replay(v, a, ids[-1], limit, window.after(v, a)) for v, a, limit in asks))
    assert [(r.body, r.through, r.reset, r.source) for r in together] == [
        (r.body, r.through, r.reset, r.source) for r in alone
    ]
    assert {r.reset for r in together} == {None, "too_many"}
    assert sum(hops) == len(asks) and len(hops) < len(asks)


async def test_a_failed_batch_fails_each_reconnect_and_the_next_one_works(alice, bob, group, monkeypatch):
    ids, window, viewers = await sync_to_async(build)(alice, bob, group)
    real = replay._answer_many

    async def broken(batch):
        raise RuntimeError("database down")

    monkeypatch.setattr(replay, "_answer_many", broken)
    results = await asyncio.gather(*(replay.replay(v, 0, ids[-1], 500, window.after(v, 0)) for v in viewers),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    monkeypatch.setattr(replay, "_answer_many", real)
    answer = await replay.replay(viewers[0], 0, ids[-1], 500, window.after(viewers[0], 0))
    assert answer.source == replay.MEMORY and answer.reset is None
