"""The hub and the stream with notices that change (SPEC §14): update and retract events reach exactly
their audience, gaps left by superseded updates are repaired, the memory window keeps the latest event
per notice, and a stream conflates fast updates (at most about 10 a second, the latest always, in order)."""

from __future__ import annotations

import asyncio
import time

import pytest

from notifications import stream as stream_module
from notifications.events import BadMessage, Event, parse
from notifications.models import Viewer
from notifications.window import Window
from tests.support import eventually
from tests.support.hub import Recorder, publish, user_streams

pytestmark = pytest.mark.timeout(20)

ALICE = Viewer(user_id=7, username="alice", group_ids=frozenset({1}))
BOB = Viewer(user_id=8, username="bob")


def created(id: int, *, audience: str = "everyone", target: int | None = None) -> Event:
    return Event(id, audience, target, f"user {id}".encode(), f"anon {id}".encode(), f"read {id}".encode())


def changed(id: int, notice: int, kind: str = "update", *, audience: str = "everyone",
            target: int | None = None, category: str = "") -> Event:
    frame = f"{kind} {notice}@{id}".encode()
    if kind == "retract":  # one frame for everyone, as Event.of builds it
        return Event(id, audience, target, frame, frame, frame, category, "info", None, kind, notice)
    return Event(id, audience, target, frame + b" user", frame, frame + b" read", category, "info", None, kind, notice)


async def test_updates_and_retractions_reach_exactly_the_audience(harness):
    hub, layer, db = harness
    await hub.start()
    [(_, alice)] = user_streams(hub, ALICE)
    [(_, bob)] = user_streams(hub, BOB)
    await publish(layer, db, created(1, audience="user", target=7), changed(2, 1, audience="user", target=7),
                  created(3, audience="group", target=1), changed(4, 3, "retract", audience="group", target=1),
                  changed(5, 1, audience="user", target=7))
    await eventually(lambda: hub.head == 5)
    # Live updates are one frame for every viewer (``anon_frame``: no per-viewer read state).
    await eventually(lambda: alice.frames == [b"user 1", b"update 1@2", b"user 3", b"retract 3@4", b"update 1@5"])
    assert bob.frames == []


async def test_a_muted_category_skips_its_updates_too(harness):
    hub, layer, db = harness
    await hub.start()
    [(_, muter)] = user_streams(hub, Viewer(user_id=9, username="m", muted=frozenset({"billing"})))
    [(_, other)] = user_streams(hub, BOB)
    await publish(layer, db, created(1), changed(2, 1, category="billing"))
    await eventually(lambda: other.frames == [b"user 1", b"update 1@2"])
    assert muter.frames == [b"user 1"]


async def test_superseded_update_ids_count_as_gone_in_a_gap_repair(harness):
    hub, layer, db = harness
    await hub.start()
    [(_, alice)] = user_streams(hub, ALICE)
    # 2 and 3 were updates of notice 1 that 4 superseded: the database holds only its latest event.
    db.commit(created(1), changed(4, 1))
    await publish(layer, db, changed(4, 1), commit=False)
    await eventually(lambda: hub.head == 4)
    assert alice.frames == [b"user 1", b"update 1@4"]
    assert hub.stats["catch_ups"] == 1


def test_the_window_keeps_the_latest_event_per_notice():
    window = Window(max_events=3)
    window.add(created(1))
    window.add(created(2))
    window.add(changed(3, 1))
    window.add(changed(4, 1))
    assert [e.id for e in window.after(ALICE, 0) or []] == [2, 4]
    assert window.bytes == created(2).size + changed(4, 1).size
    window.add(created(5))
    window.add(created(6))  # evicts notice 2's event (the oldest), not notice 1's latest
    assert window.floor == 2
    assert [e.id for e in window.after(ALICE, 2) or []] == [4, 5, 6]
    assert window.after(ALICE, 1) is None


def test_update_and_retract_messages_round_trip_and_are_read_strictly():
    for event in (changed(5, 2), changed(6, 2, "retract", audience="user", target=3)):
        assert parse(event.to_message()) == event
    assert "kind" not in created(1).to_message()  # a new notice's message is as before
    message = changed(5, 2).to_message()
    with pytest.raises(BadMessage, match="unknown kind"):
        parse({**message, "kind": "rename"})
    with pytest.raises(BadMessage, match="below its own"):
        parse({**message, "notice": 5})
    with pytest.raises(BadMessage, match="'notice'"):
        parse({k: v for k, v in message.items() if k != "notice"})


def test_replay_frames_of_each_kind():
    update = changed(5, 2)
    assert update.replay_frame(ALICE, 3) == b"update 2@5"
    retract = changed(6, 2, "retract")
    assert retract.replay_frame(ALICE, 3) == b"retract 2@6"
    assert retract.replay_frame(ALICE, 1) is None  # created and retracted after the cursor


# -- conflation ------------------------------------------------------------------------------


def live_stream(viewer: Viewer = ALICE) -> tuple[stream_module.Stream, Recorder]:
    send = Recorder()
    stream = stream_module.Stream(viewer, send)
    stream.go_live(b"", 0)
    return stream, send


async def test_fast_updates_are_conflated_latest_last_in_order():
    stream, send = live_stream()
    start = time.monotonic()
    id = 1
    stream.deliver(id, b"new 1")
    for step in range(200):  # a job reporting in a tight loop: about 2 s at 100 a second
        id += 1
        stream.deliver(id, f"u{step}".encode(), update_of=1)
        await asyncio.sleep(0.01)
    last = f"u{199}".encode()
    await eventually(lambda: send.frames[-1] == last)
    elapsed = time.monotonic() - start
    updates = send.frames[1:]
    assert len(updates) <= elapsed / stream_module.UPDATE_INTERVAL + 2, (len(updates), elapsed)
    assert len(updates) >= 5  # intermediate states still flow while the job runs
    steps = [int(f[1:]) for f in updates]
    assert steps == sorted(steps)  # never backwards
    assert stream.sent_through == id
    stream.release()


async def test_frames_behind_a_held_update_wait_and_keep_their_order():
    stream, send = live_stream()
    stream.deliver(1, b"u1 a", update_of=1)
    stream.deliver(2, b"u1 b", update_of=1)  # too soon: held
    stream.deliver(3, b"other")  # behind it
    stream.deliver(4, b"u1 c", update_of=1)  # replaces b, goes after "other"
    assert send.frames == [b"u1 a"]
    assert stream.sent_through == 1  # the cursor never passes an update it did not send
    await eventually(lambda: send.frames == [b"u1 a", b"other", b"u1 c"])
    assert stream.sent_through == 4
    stream.release()


async def test_updates_of_other_notices_are_not_held():
    stream, send = live_stream()
    for id in range(1, 6):
        stream.deliver(id, f"u{id}".encode(), update_of=id)
    assert send.frames == [b"u1", b"u2", b"u3", b"u4", b"u5"]
    stream.release()


async def test_a_reset_drops_held_frames_it_covers():
    stream, send = live_stream()
    stream.deliver(1, b"u1", update_of=1)
    stream.deliver(2, b"u2", update_of=1)
    stream.reset(b"reset", 2)
    await asyncio.sleep(stream_module.UPDATE_INTERVAL * 1.5)
    assert send.frames == [b"u1", b"reset"]
    stream.release()


async def test_the_hub_passes_updates_to_the_stream_conflation(harness):
    hub, layer, db = harness
    await hub.start()
    [(_, alice)] = user_streams(hub, ALICE)
    await publish(layer, db, created(1), *(changed(i, 1) for i in range(2, 40)))
    await eventually(lambda: alice.frames and alice.frames[-1] == b"update 1@39")
    assert len(alice.frames) < 10
    assert alice.frames[0] == b"user 1"
