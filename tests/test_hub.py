"""The hub on its own: a fake channel layer and injected database reads, driven through public methods.

No Django database here: ``newest_id`` and ``fetch_after`` read a dict of "committed rows".
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from notifications import hub as hub_module
from notifications.events import EVENTS_GROUP, Event, EventBatch, ReadEvent
from notifications.hub import FANOUT_SLICE, Hub
from notifications.models import Viewer
from notifications.window import Window
from tests.support import eventually
from tests.support.hub import Database, FakeLayer, Recorder, publish, user_streams

pytestmark = pytest.mark.timeout(20)


def event(id: int, audience: str = "everyone", target: int | None = None, *, read: bool = True) -> Event:
    return Event(id, audience, target, f"user {id}".encode(), f"anon {id}".encode(),
                 f"read {id}".encode() if read else None)


def live_streams(hub: Hub, count: int, viewer: Viewer | None = None) -> list[Recorder]:
    sends = []
    for _ in range(count):
        send = Recorder()
        stream = hub.new_stream(viewer or Viewer(), send)
        cursor, _ = hub.attach(stream)
        stream.go_live(b"", cursor)
        sends.append(send)
    return sends


def anon(*ids: int) -> list[bytes]:
    return [f"anon {id}".encode() for id in ids]


# -- order, exactly once ---------------------------------------------------------------------------


async def test_start_joins_the_events_group_and_takes_the_newest_id_as_head(harness):
    hub, layer, db = harness
    db.commit(event(1), event(2))
    await hub.start()
    assert hub.channel_name in layer.groups[EVENTS_GROUP]
    assert hub.head == 2
    await hub.stop()
    assert hub.channel_name not in layer.groups[EVENTS_GROUP]


async def test_events_in_order_reach_every_stream_once(harness):
    hub, layer, db = harness
    await hub.start()
    (send,) = live_streams(hub, 1)
    await publish(layer, db, event(1), event(2), event(1))
    await eventually(lambda: hub.stats["duplicates_dropped"] == 1)
    assert send.frames == anon(1, 2)
    assert db.fetches == []  # in order: no database read


async def test_a_gap_is_filled_from_the_database_in_order(harness):
    hub, layer, db = harness
    await hub.start()
    (send,) = live_streams(hub, 1)
    db.commit(event(1), event(2))  # committed, but the layer lost their messages
    await publish(layer, db, event(3))
    await eventually(lambda: send.frames == anon(1, 2, 3))
    assert hub.stats["catch_ups"] == 1 and hub.head == 3


async def test_messages_held_during_a_catch_up_are_delivered_once_in_order(harness):
    hub, layer, db = harness
    await hub.start()
    (send,) = live_streams(hub, 1)
    gate = asyncio.Event()
    fetch = db.fetch_after

    async def slow_fetch(after: int, limit: int) -> list[Event]:
        await gate.wait()
        return await fetch(after, limit)

    hub._fetch_after = slow_fetch  # the injected read, slowed: messages pile up meanwhile
    db.commit(event(1))
    await publish(layer, db, event(2), event(3), event(4), event(3))
    await eventually(lambda: hub.snapshot().held == 3)  # 2, 3, 4 held (3 twice: one hint)
    gate.set()
    await eventually(lambda: hub.head == 4)
    assert send.frames == anon(1, 2, 3, 4)
    assert hub.snapshot().held == 0


async def test_a_rolled_back_id_is_skipped_once_the_catch_up_shows_it_never_committed(harness):
    hub, layer, db = harness
    await hub.start()
    (send,) = live_streams(hub, 1)
    await publish(layer, db, event(2))  # id 1 was rolled back: never committed, never published
    await eventually(lambda: hub.head == 2)
    await publish(layer, db, event(3))
    await eventually(lambda: send.frames == anon(2, 3))
    assert hub.stats["catch_ups"] == 1


async def test_a_catch_up_reads_past_one_batch(harness, monkeypatch):
    monkeypatch.setattr(hub_module, "CATCH_UP_BATCH", 3)
    hub, layer, db = harness
    await hub.start()
    (send,) = live_streams(hub, 1)
    db.commit(*(event(id) for id in range(1, 9)))
    await publish(layer, db, event(9))
    await eventually(lambda: hub.head == 9)
    assert send.frames == anon(*range(1, 10))
    assert [after for after, _ in db.fetches] == [0, 3, 6, 9]


async def test_a_lost_last_message_is_found_by_the_tail_check(harness):
    hub, layer, db = harness
    await hub.start()
    (send,) = live_streams(hub, 1)
    db.commit(event(1))  # nothing follows it
    await hub.check_tail()
    await eventually(lambda: send.frames == anon(1))
    assert hub.stats["tail_repairs"] == 1


async def test_a_failed_catch_up_read_backs_off_and_retries(harness, monkeypatch, caplog):
    monkeypatch.setattr(hub_module, "CATCH_UP_RETRY", 0.01)
    monkeypatch.setattr(hub_module, "CATCH_UP_MAX_RETRY", 0.02)
    hub, layer, db = harness
    await hub.start()
    (send,) = live_streams(hub, 1)
    db.fail_fetches = 3
    db.commit(event(1))
    await publish(layer, db, event(2))
    await eventually(lambda: send.frames == anon(1, 2))
    assert hub.stats["catch_up_errors"] == 3
    assert "retrying in 0.0s" in caplog.text  # 0.01, 0.02, then capped at 0.02


async def test_beyond_the_hold_limit_hints_are_dropped_and_the_catch_up_reads_to_the_newest(harness, monkeypatch):
    monkeypatch.setattr(hub_module, "MAX_HELD", 3)
    hub, layer, db = harness
    await hub.start()
    (send,) = live_streams(hub, 1)
    gate = asyncio.Event()
    fetch = db.fetch_after

    async def slow_fetch(after: int, limit: int) -> list[Event]:
        await gate.wait()
        return await fetch(after, limit)

    hub._fetch_after = slow_fetch
    db.commit(event(1))
    await publish(layer, db, *(event(id) for id in range(2, 8)))
    await eventually(lambda: hub.stats["held_dropped"] == 3)
    assert hub.snapshot().held <= 3
    gate.set()
    await eventually(lambda: hub.head == 7)
    assert send.frames == anon(*range(1, 8))  # nothing lost: the rows are the truth


# -- failures that must not stop the hub -------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "not a dict",
        {"type": "notifications.unknown"},
        {"type": "notifications.event", "id": "7", "audience": "everyone", "user_frame": b"", "anon_frame": b""},
        {"type": "notifications.event", "id": 7, "audience": "user", "target": None, "user_frame": b"",
         "anon_frame": b""},
        {"type": "notifications.event", "v": 99, "id": 7, "audience": "everyone", "user_frame": b"",
         "anon_frame": b""},
        {"type": "notifications.read", "user_id": 1},
    ],
)
async def test_a_bad_message_is_logged_and_counted_and_the_loop_goes_on(harness, caplog, bad):
    hub, layer, db = harness
    await hub.start()
    (send,) = live_streams(hub, 1)
    layer.queue.put_nowait(bad)
    await publish(layer, db, event(1))
    await eventually(lambda: send.frames == anon(1))
    assert hub.stats["bad_messages"] == 1
    assert "bad channel-layer message" in caplog.text


async def test_a_failing_receive_rejoins_and_catches_up(harness):
    hub, layer, db = harness
    layer.fail_receives = 2
    await hub.start()
    (send,) = live_streams(hub, 1)
    db.commit(event(1))  # published while the layer was down
    await eventually(lambda: send.frames == anon(1), timeout=5)
    # the start, then one re-join per failure
    await eventually(lambda: (hub.stats["layer_errors"], layer.joins) == (2, 3), timeout=5)
    await publish(layer, db, event(2))
    await eventually(lambda: send.frames == anon(1, 2))


async def test_stop_logs_a_task_that_had_failed(harness, caplog):
    hub, layer, db = harness

    async def broken() -> int:
        raise RuntimeError("tail read exploded")

    await hub.start()
    hub._spawn(broken(), "notifications-hub-test")  # type: ignore[arg-type]
    await eventually(lambda: hub.stats["task_failures"] == 1)
    assert "notifications-hub-test failed" in caplog.text
    with caplog.at_level(logging.ERROR):
        await hub.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("notifications-hub")]


# -- streams ---------------------------------------------------------------------------------------


async def test_a_stream_replaying_collects_live_events_and_writes_them_after_its_replay(harness):
    hub, layer, db = harness
    await hub.start()
    send = Recorder()
    stream = hub.new_stream(Viewer(), send)
    cursor, recent = hub.attach(stream, 0)
    assert (cursor, recent) == (0, [])
    await publish(layer, db, event(1), event(2))
    await eventually(lambda: hub.head == 2)
    assert send.frames == []  # replaying
    assert hub.snapshot().replaying == 1
    stream.go_live(b"replay+hello", 1)  # the replay covered id 1
    assert send.frames == [b"replay+hello", b"anon 2"]


async def test_pending_overflow_closes_the_stream_and_is_counted(harness, monkeypatch):
    from notifications import stream as stream_module

    monkeypatch.setattr(stream_module, "MAX_PENDING", 3)
    hub, layer, db = harness
    await hub.start()
    send = Recorder()
    stream = hub.new_stream(Viewer(), send)
    hub.attach(stream, None)
    await publish(layer, db, *(event(id) for id in range(1, 5)))
    await eventually(lambda: hub.head == 4)
    assert stream.closed
    assert hub.snapshot().stats["dropped_pending"] == 1
    stream.go_live(b"hello", 0)
    assert send.frames == []  # the response ended; nothing more is written


async def test_read_events_reach_only_that_users_live_streams(harness):
    hub, layer, db = harness
    await hub.start()
    ann = live_streams(hub, 2, Viewer(user_id=7, username="ann"))
    bob = live_streams(hub, 1, Viewer(user_id=8, username="bob"))
    layer.queue.put_nowait(ReadEvent(7, b"read!").to_message())
    await eventually(lambda: all(s.frames == [b"read!"] for s in ann))
    assert bob[0].frames == []


async def test_attach_reads_the_memory_window_in_the_same_step(harness):
    hub, layer, db = harness
    await hub.start()
    live_streams(hub, 1)
    await publish(layer, db, event(1), event(2, "user", 9), event(3))
    await eventually(lambda: hub.head == 3)
    cursor, recent = hub.attach(hub.new_stream(Viewer(), Recorder()), 1)
    assert cursor == 3 and [e.id for e in recent or []] == [3]  # 2 is someone else's
    assert hub.attach(hub.new_stream(Viewer(), Recorder()), None)[1] is None


# -- fan-out in slices -----------------------------------------------------------------------------


async def test_a_broadcast_larger_than_a_slice_reaches_every_stream_once_in_order(harness):
    hub, layer, db = harness
    await hub.start()
    sends = live_streams(hub, 3 * FANOUT_SLICE + 5)
    await publish(layer, db, event(1), event(2), event(3))
    # head moves when a fan-out starts; its slices are written over the next loop turns.
    await eventually(lambda: all(len(s.frames) == 3 for s in sends))
    assert {tuple(s.frames) for s in sends} == {tuple(anon(1, 2, 3))}
    assert hub.stats["deliveries"] == 3 * len(sends)


async def test_a_fan_out_lets_other_work_run_between_slices(harness):
    hub, layer, db = harness
    await hub.start()
    sends = live_streams(hub, 4 * FANOUT_SLICE)
    reached: list[int] = []

    async def meanwhile() -> None:
        await eventually(lambda: any(s.frames for s in sends), interval=0)
        reached.append(sum(1 for s in sends if s.frames))

    watcher = asyncio.create_task(meanwhile())
    await publish(layer, db, event(1))
    await asyncio.wait_for(watcher, 5)
    assert 0 < reached[0] < len(sends)  # ran while the broadcast was half written
    await eventually(lambda: all(s.frames == anon(1) for s in sends))


async def test_a_stream_that_attaches_mid_fan_out_gets_that_event_from_its_replay_not_twice(harness):
    hub, layer, db = harness
    await hub.start()
    sends = live_streams(hub, 4 * FANOUT_SLICE)
    late = Recorder()

    async def attach_meanwhile() -> int:
        await eventually(lambda: any(s.frames for s in sends), interval=0)
        stream = hub.new_stream(Viewer(), late)
        cursor, _ = hub.attach(stream, None)
        stream.go_live(b"", cursor)  # its replay (empty here) covered everything up to the cursor
        return cursor

    attaching = asyncio.create_task(attach_meanwhile())
    await publish(layer, db, event(1))
    assert await asyncio.wait_for(attaching, 5) == 1  # id 1 is in its replay range...
    await publish(layer, db, event(2))
    await eventually(lambda: late.frames == anon(2))  # ...so the fan-out did not write it again


async def test_targeted_events_go_only_to_their_audience_across_slices(harness):
    hub, layer, db = harness
    await hub.start()
    mine = live_streams(hub, FANOUT_SLICE + 3, Viewer(user_id=7, username="ann", group_ids=frozenset({3})))
    others = live_streams(hub, FANOUT_SLICE, Viewer(user_id=8, username="bob"))
    await publish(layer, db, event(1, "user", 7), event(2, "group", 3), event(3))
    await eventually(lambda: hub.head == 3)
    assert all(s.frames == [b"user 1", b"user 2", b"user 3"] for s in mine)
    assert all(s.frames == [b"user 3"] for s in others)


# -- the memory window -----------------------------------------------------------------------------


def test_the_window_is_capped_in_count_and_bytes():
    window = Window(max_events=3, max_bytes=1000)
    for id in range(1, 6):
        window.add(event(id))
    assert [e.id for e in window.after(Viewer(), 2) or []] == [3, 4, 5]
    assert window.after(Viewer(), 1) is None  # id 2 is no longer held: the caller reads the database
    big = b"x" * 600
    window.add(Event(6, "everyone", None, big, big, b"r"))
    assert [e.id for e in window.after(Viewer(), 5) or []] == [6]  # alone over the byte cap, still kept
    assert window.after(Viewer(), 4) is None
    assert window.after(Viewer(), 7) == []  # beyond head: nothing memory could know of


def test_events_without_a_read_frame_empty_the_window():
    window = Window()
    window.add(event(1))
    window.add(event(2, read=False))  # published by a process that does not encode read_frame
    assert window.after(Viewer(), 0) is None
    assert window.after(Viewer(), 2) == []


# -- identity changes (issue 12 rows 1 and 2) ----------------------------------------------------


ALICE = Viewer(user_id=7, username="alice", group_ids=frozenset({1}), session="s-one", auth="a-one")


async def test_joining_a_group_delivers_its_events_from_then_on(harness):
    from notifications.events import IdentityChange

    hub, layer, db = harness
    await hub.start()
    [(stream, send)] = user_streams(hub, ALICE)
    await hub.handle(IdentityChange(groups=((7, frozenset({1, 2})),), after=0).to_message())
    await publish(layer, db, event(1, "group", 2))
    await eventually(lambda: send.frames == [b"user 1"])
    assert stream.viewer.group_ids == {1, 2}


async def test_a_group_event_decided_before_the_join_message_arrived_resets_the_stream(harness):
    """The join committed before id 1 (after=0), but the hub handed id 1 out under the old groups."""
    from notifications.events import IdentityChange

    hub, layer, db = harness
    await hub.start()
    [(stream, send)] = user_streams(hub, ALICE)
    await publish(layer, db, event(1, "group", 2), event(2))
    await eventually(lambda: send.frames == [b"user 2"])
    await hub.handle(IdentityChange(groups=((7, frozenset({1, 2})),), after=0).to_message())
    assert b"event: reset" in send.frames[-1] and b'"reason":"membership"' in send.frames[-1]
    assert b"id: 2" in send.frames[-1]
    assert hub.snapshot().stats["resets_membership"] == 1


async def test_a_join_after_every_event_it_could_concern_needs_no_reset(harness):
    from notifications.events import IdentityChange

    hub, layer, db = harness
    await hub.start()
    [(stream, send)] = user_streams(hub, ALICE)
    await publish(layer, db, event(1, "group", 2), event(2))
    await eventually(lambda: send.frames == [b"user 2"])
    await hub.handle(IdentityChange(groups=((7, frozenset({1, 2})),), after=2).to_message())
    assert send.frames == [b"user 2"]


async def test_leaving_a_group_stops_its_events_and_keeps_the_stream(harness):
    from notifications.events import IdentityChange

    hub, layer, db = harness
    await hub.start()
    [(stream, send)] = user_streams(hub, ALICE)
    await hub.handle(IdentityChange(groups=((7, frozenset()),), after=0).to_message())
    await publish(layer, db, event(1, "group", 1), event(2))
    await eventually(lambda: send.frames == [b"user 2"])
    assert not stream.closed and hub.snapshot().groups == 0


async def test_a_stream_still_replaying_when_its_groups_grow_is_ended_to_replay_again(harness):
    from notifications.events import IdentityChange

    hub, _, _ = harness
    await hub.start()
    [(stream, _send)] = user_streams(hub, ALICE, live=False)
    await hub.handle(IdentityChange(groups=((7, frozenset({1, 2})),), after=0).to_message())
    assert stream.closed and stream not in hub.streams


async def test_sign_out_ends_only_that_sessions_streams(harness):
    from notifications.events import IdentityChange

    hub, _, _ = harness
    await hub.start()
    [(mine, _)] = user_streams(hub, ALICE)
    [(other, _)] = user_streams(hub, Viewer(user_id=7, username="alice", session="s-two", auth="a-one"))
    await hub.handle(IdentityChange(user_id=7, end_session="s-one").to_message())
    assert mine.closed and not other.closed
    assert hub.streams_of_user(7) == 1


async def test_password_change_ends_streams_opened_under_the_old_one(harness):
    from notifications.events import IdentityChange

    hub, _, _ = harness
    await hub.start()
    [(old, _)] = user_streams(hub, ALICE)
    [(new, _)] = user_streams(hub, Viewer(user_id=7, username="alice", session="s-three", auth="a-two"))
    [(bob, _)] = user_streams(hub, Viewer(user_id=8, username="bob", auth="b"))
    await hub.handle(IdentityChange(user_id=7, auth="a-two").to_message())
    assert old.closed and not new.closed and not bob.closed


async def test_inactive_or_deleted_ends_every_stream_of_the_user(harness):
    from notifications.events import IdentityChange

    hub, _, _ = harness
    await hub.start()
    streams = user_streams(hub, ALICE, 3)
    await hub.handle(IdentityChange(user_id=7, end_all=True).to_message())
    assert all(stream.closed for stream, _ in streams) and hub.streams_of_user(7) == 0
    assert hub.snapshot().stats["identity_ends"] == 3


@pytest.mark.parametrize("message", [
    {"type": "notifications.identity", "groups": "nope", "after": 1},
    {"type": "notifications.identity", "groups": [[1]], "after": 1},
    {"type": "notifications.identity", "user_id": "7", "end_all": True},
    {"type": "notifications.identity", "user_id": 7},
])
async def test_a_bad_identity_message_is_counted_and_ends_nothing(harness, message):
    hub, _, _ = harness
    await hub.start()
    [(stream, _)] = user_streams(hub, ALICE)
    await hub.handle(message)
    assert not stream.closed and hub.snapshot().stats["bad_messages"] == 1


async def test_identity_marks_tell_which_users_changed_since(harness):
    from notifications.events import IdentityChange
    from notifications.hub import IDENTITY_MEMORY

    hub, _, _ = harness
    mark = hub.identity_mark()
    await hub.handle(IdentityChange(user_id=7, end_all=True).to_message())
    await hub.handle(IdentityChange(groups=((8, frozenset({1})), (9, frozenset())), after=0).to_message())
    assert hub.identity_changed_since(7, mark) and hub.identity_changed_since(8, mark)
    assert hub.identity_changed_since(9, mark) and not hub.identity_changed_since(10, mark)
    later = hub.identity_mark()
    assert not hub.identity_changed_since(7, later)
    for user_id in range(100, 100 + IDENTITY_MEMORY + 1):  # more than it remembers: unsure is "changed"
        await hub.handle(IdentityChange(user_id=user_id, end_all=True).to_message())
    assert hub.identity_changed_since(10, later)


# -- batches (bulk sends, SPEC §15) ----------------------------------------------------------------


def user_stream(hub: Hub, user_id: int) -> Recorder:
    (send,) = live_streams(hub, 1, Viewer(user_id=user_id, username=f"u{user_id}"))
    return send


def personal(id: int, user_id: int) -> Event:
    return event(id, "user", user_id)


async def publish_batch(layer: FakeLayer, db: Database, *events: Event, commit: bool = True) -> None:
    if commit:
        db.commit(*events)
    layer.queue.put_nowait(EventBatch(tuple(events)).to_message())


async def test_a_batch_reaches_each_user_only_their_notice_once_in_order(harness):
    hub, layer, db = harness
    await hub.start()
    sends = {user_id: user_stream(hub, user_id) for user_id in (10, 11, 12)}
    (anonymous,) = live_streams(hub, 1)
    await publish_batch(layer, db, personal(1, 10), personal(2, 11), personal(3, 12), personal(4, 10))
    await eventually(lambda: hub.head == 4)
    assert sends[10].frames == [b"user 1", b"user 4"]
    assert sends[11].frames == [b"user 2"] and sends[12].frames == [b"user 3"]
    assert anonymous.frames == []
    assert db.fetches == [] and hub.stats["batches"] == 1 and hub.stats["events"] == 4


async def test_a_batch_after_a_lost_message_is_caught_up_in_order_from_the_database(harness):
    hub, layer, db = harness
    await hub.start()
    send = user_stream(hub, 10)
    db.commit(personal(1, 10))  # committed, its message lost
    await publish_batch(layer, db, personal(2, 10), personal(3, 10))
    await eventually(lambda: send.frames == [b"user 1", b"user 2", b"user 3"])
    assert hub.stats["catch_ups"] == 1 and hub.head == 3


async def test_a_batch_overlapping_what_was_delivered_sends_only_the_new_ones(harness):
    hub, layer, db = harness
    await hub.start()
    send = user_stream(hub, 10)
    await publish(layer, db, personal(1, 10), personal(2, 10))
    await publish_batch(layer, db, personal(2, 10), personal(3, 10))  # a duplicate delivery of 2
    await eventually(lambda: hub.head == 3)
    assert send.frames == [b"user 1", b"user 2", b"user 3"]
    assert hub.stats["duplicates_dropped"] == 1


async def test_a_bad_batch_is_counted_and_delivers_none_of_it(harness, caplog):
    hub, layer, db = harness
    await hub.start()
    send = user_stream(hub, 10)
    message = EventBatch((personal(1, 10), personal(2, 10))).to_message()
    message["events"][1][2] = "ten"  # a bad target in the second entry: the whole batch is refused
    layer.queue.put_nowait(message)
    await publish(layer, db, personal(1, 10), commit=False)
    await eventually(lambda: hub.head == 1)
    assert hub.stats["bad_messages"] == 1 and "entry 1" in caplog.text
    assert send.frames == [b"user 1"]


async def test_a_large_batch_reaches_thousands_of_streams_each_its_own(harness):
    hub, layer, db = harness
    await hub.start()
    n = 3 * FANOUT_SLICE + 5
    sends = [user_stream(hub, 100 + i) for i in range(n)]
    await publish_batch(layer, db, *[personal(i + 1, 100 + i) for i in range(n)])
    await eventually(lambda: hub.head == n)
    assert [s.frames for s in sends] == [[f"user {i + 1}".encode()] for i in range(n)]
    assert hub.stats["deliveries"] == n


async def test_a_preference_change_counts_as_a_change_for_streams_being_set_up(harness):
    from notifications.events import PreferenceChange

    hub, _, _ = harness
    mark = hub.identity_mark()
    await hub.handle(PreferenceChange(7, frozenset({"billing"})).to_message())
    assert hub.identity_changed_since(7, mark) and not hub.identity_changed_since(8, mark)


# -- a batch in one pass (issue 16, second round) ---------------------------------------------------


async def test_a_gap_inside_a_batch_holds_the_rest_and_the_catch_up_delivers_all_in_order(harness):
    hub, layer, db = harness
    await hub.start()
    send = user_stream(hub, 10)
    db.commit(personal(3, 10))  # committed, but not in the batch (its own message was lost)
    await publish_batch(layer, db, personal(1, 10), personal(2, 10), personal(4, 10), personal(5, 10))
    await eventually(lambda: hub.head == 5)
    assert send.frames == [b"user 1", b"user 2", b"user 3", b"user 4", b"user 5"]
    assert hub.stats["catch_ups"] == 1 and hub.stats["deliveries"] == 5


async def test_a_batch_arriving_while_a_catch_up_runs_is_held_not_sent_ahead_of_it(harness):
    hub, layer, db = harness
    await hub.start()
    send = user_stream(hub, 10)
    db.commit(personal(1, 10))
    db.fail_fetches = 1  # the catch-up for id 1 waits CATCH_UP_RETRY before it reads again
    await publish(layer, db, personal(2, 10))  # 1 is missing: held, catch-up starts (and fails once)
    await eventually(lambda: hub.stats["catch_up_errors"] == 1)
    await publish_batch(layer, db, personal(3, 10), personal(4, 10))
    await eventually(lambda: hub.head == 4, timeout=5)
    assert send.frames == [b"user 1", b"user 2", b"user 3", b"user 4"]


async def test_a_batch_moves_head_and_window_per_event(harness):
    hub, layer, db = harness
    await hub.start()
    user_stream(hub, 10)
    await publish_batch(layer, db, personal(1, 10), event(2), personal(3, 11))
    await eventually(lambda: hub.head == 3)
    assert hub.window.head == 3 and len(hub.window) == 3 and hub.stats["events"] == 3
    # a reconnect replays the batch from memory, each viewer only what it may see
    assert [e.id for e in hub.window.after(Viewer(user_id=10, username="u10"), 0) or []] == [1, 2]
    assert [e.id for e in hub.window.after(Viewer(), 0) or []] == [2]


async def test_a_batch_yields_every_slice_of_writes_counted_across_its_events(harness):
    hub, layer, db = harness
    await hub.start()
    n = 4 * FANOUT_SLICE
    sends = [user_stream(hub, 100 + i) for i in range(n)]
    seen: list[int] = []

    async def meanwhile() -> None:  # runs once per turn of the loop while the batch is written
        while hub.stats["deliveries"] < n:
            seen.append(sum(1 for s in sends if s.frames))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(meanwhile())
    await publish_batch(layer, db, *[personal(i + 1, 100 + i) for i in range(n)])
    await asyncio.wait_for(watcher, 5)
    partial = sorted({count for count in seen if 0 < count < n})
    assert partial == [FANOUT_SLICE, 2 * FANOUT_SLICE, 3 * FANOUT_SLICE]  # 4 turns, not one per event
    await eventually(lambda: all(s.frames == [f"user {i + 1}".encode()] for i, s in enumerate(sends)))


async def test_a_stream_attaching_mid_batch_gets_earlier_ids_by_replay_and_later_ones_live_once(harness):
    hub, layer, db = harness
    await hub.start()
    n = 3 * FANOUT_SLICE
    sends = [user_stream(hub, 100 + i) for i in range(n)]
    late = Recorder()
    viewer = Viewer(user_id=100 + n - 1, username="last")  # the batch's last notice is for this user

    async def attach_meanwhile() -> tuple[int, list[Event] | None]:
        await eventually(lambda: any(s.frames for s in sends), interval=0)
        stream = hub.new_stream(viewer, late)
        cursor, recent = hub.attach(stream, 0)
        stream.go_live(b"".join(e.frame_for(viewer) for e in recent or []), cursor)
        return cursor, recent

    attaching = asyncio.create_task(attach_meanwhile())
    await publish_batch(layer, db, *[personal(i + 1, 100 + i) for i in range(n)], event(n + 1))
    cursor, recent = await asyncio.wait_for(attaching, 5)
    assert 0 < cursor < n and recent == []  # attached part way: nothing of its own before the cursor
    await eventually(lambda: hub.head == n + 1)
    assert late.frames == [f"user {n}".encode(), f"user {n + 1}".encode()]
    assert sends[-1].frames == [f"user {n}".encode(), f"user {n + 1}".encode()]


async def test_a_batch_respects_muting_and_expiry_like_one_event(harness):
    """A bulk send is fanned out in one pass: it must filter exactly as a single event does."""
    from notifications.events import EventBatch

    hub, layer, db = harness
    await hub.start()
    muter = hub.new_stream(Viewer(user_id=7, username="m", muted=frozenset({"billing"})), muter_send := Recorder())
    muter.go_live(b"", hub.attach(muter)[0])
    other = hub.new_stream(Viewer(user_id=8, username="o"), other_send := Recorder())
    other.go_live(b"", hub.attach(other)[0])
    batch = EventBatch((
        Event(1, "user", 7, b"billing 1", b"billing 1", None, "billing", "info", None),
        Event(2, "user", 7, b"error 2", b"error 2", None, "billing", "error", None),
        Event(3, "user", 8, b"expired 3", b"expired 3", None, "", "info", 1.0),
        Event(4, "user", 8, b"fine 4", b"fine 4", None, "billing", "info", None),
    ))
    db.commit(*batch.events)
    layer.queue.put_nowait(batch.to_message())
    await eventually(lambda: hub.head == 4 and other_send.frames == [b"fine 4"])
    assert muter_send.frames == [b"error 2"]  # muted category skipped; error breaks through


# -- a client ahead of this hub ---------------------------------------------------------------------


async def test_a_cursor_ahead_of_the_hub_is_not_sent_again_up_to_what_the_database_holds(harness):
    """A page rendered from the database (or a stream on another process) can hold ids this hub
    has not heard of yet: they are not written again when the hub catches up; a cursor beyond
    the database (a database since reset) counts only up to the newest id it holds."""
    hub, layer, db = harness
    db.commit(*(event(id) for id in range(1, 6)))
    await hub.start()
    assert hub.head == 5
    db.commit(*(event(id) for id in range(6, 10)))  # committed by another process, not yet heard of
    ahead, beyond = Recorder(), Recorder()
    for send, after in ((ahead, 8), (beyond, 500)):
        stream = hub.new_stream(Viewer(), send)
        cursor, recent = hub.attach(stream, after, await hub.known_up_to(after))
        assert recent == [] and cursor == min(after, 9)
        stream.go_live(b"", cursor)
    assert await hub.known_up_to(4) == 0 and await hub.known_up_to(None) == 0
    await hub.check_tail()
    await eventually(lambda: hub.head == 9)
    await publish(layer, db, event(10))
    await eventually(lambda: ahead.frames == anon(9, 10))
    assert beyond.frames == anon(10)
