"""The hub's fan-out on its own: slices, order and exactly-once when one event goes to many streams."""

from __future__ import annotations

import asyncio
from typing import Any

from notifications.fanout import FANOUT_SLICE, Hub

from notifications.models import Viewer


class Recorder:
    """A server ``send`` that never waits and remembers the frames written to it."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.frames.append(message["body"])


def event(id: int, audience: str = "everyone", target: int | None = None) -> dict[str, Any]:
    return {
        "type": "notifications.event",
        "id": id,
        "audience": audience,
        "target": target,
        "user_frame": f"user {id}".encode(),
        "anon_frame": f"anon {id}".encode(),
    }


def live_streams(hub: Hub, count: int, viewer: Viewer | None = None) -> list[Recorder]:
    sends = []
    for _ in range(count):
        send = Recorder()
        stream, cursor = hub.attach(viewer or Viewer(), send)
        stream.go_live(cursor)
        sends.append(send)
    return sends


async def test_a_broadcast_larger_than_a_slice_reaches_every_stream_once_in_order():
    hub = Hub()
    sends = live_streams(hub, 3 * FANOUT_SLICE + 5)
    # Two fan-outs racing (the receive loop and a catch-up): the lock keeps id order per stream.
    await asyncio.gather(hub._fan_out(event(1)), hub._fan_out(event(2)), hub._fan_out(event(3)))
    assert {tuple(s.frames) for s in sends} == {(b"anon 1", b"anon 2", b"anon 3")}
    assert hub.head == 3
    assert hub.stats["deliveries"] == 3 * len(sends)


async def test_a_fan_out_lets_other_work_run_between_slices():
    hub = Hub()
    sends = live_streams(hub, 4 * FANOUT_SLICE)
    reached: list[int] = []

    async def meanwhile() -> None:
        await asyncio.sleep(0)
        reached.append(sum(1 for s in sends if s.frames))

    await asyncio.gather(hub._fan_out(event(1)), meanwhile())
    assert 0 < reached[0] < len(sends)  # ran while the broadcast was half written
    assert all(s.frames == [b"anon 1"] for s in sends)


async def test_a_stream_that_attaches_mid_fan_out_gets_that_event_from_its_replay_not_twice():
    hub = Hub()
    live_streams(hub, 4 * FANOUT_SLICE)
    late = Recorder()
    cursors: list[int] = []

    async def attach_meanwhile() -> None:
        await asyncio.sleep(0)
        stream, cursor = hub.attach(Viewer(), late)
        cursors.append(cursor)
        stream.go_live(cursor)  # its replay (empty here) covered everything up to the cursor

    await asyncio.gather(hub._fan_out(event(1)), attach_meanwhile())
    assert cursors == [1]  # id 1 is in its replay range...
    assert late.frames == []  # ...so the fan-out does not write it again
    await hub._fan_out(event(2))
    assert late.frames == [b"anon 2"]


async def test_an_id_handed_out_while_waiting_for_the_lock_is_not_sent_again():
    hub = Hub()
    sends = live_streams(hub, FANOUT_SLICE + 1)
    await asyncio.gather(hub._fan_out(event(1)), hub._fan_out(event(1)))
    assert all(s.frames == [b"anon 1"] for s in sends)
    assert hub.stats["events"] == 1


async def test_targeted_events_go_only_to_their_audience_across_slices():
    hub = Hub()
    mine = live_streams(hub, FANOUT_SLICE + 3, Viewer(user_id=7, username="ann", group_ids=frozenset({3})))
    others = live_streams(hub, FANOUT_SLICE, Viewer(user_id=8, username="bob"))
    await hub._fan_out(event(1, "user", 7))
    await hub._fan_out(event(2, "group", 3))
    await hub._fan_out(event(3))
    assert all(s.frames == [b"user 1", b"user 2", b"user 3"] for s in mine)
    assert all(s.frames == [b"user 3"] for s in others)


async def test_recent_events_are_capped_in_count_and_bytes(monkeypatch):
    from notifications import fanout

    monkeypatch.setattr(fanout, "RECENT_EVENTS", 3)
    monkeypatch.setattr(fanout, "RECENT_BYTES", 1000)
    hub = Hub()
    for id in range(1, 6):
        await hub._fan_out(event(id) | {"read_frame": b"r"})
    assert [e["id"] for e in hub.recent_after(Viewer(), 2)] == [3, 4, 5]
    assert hub.recent_after(Viewer(), 1) is None  # id 2 is no longer held: the caller reads the database
    big = b"x" * 600
    await hub._fan_out(event(6) | {"user_frame": big, "anon_frame": big, "read_frame": b"r"})
    assert [e["id"] for e in hub.recent_after(Viewer(), 5)] == [6]  # alone over the byte cap, still kept
    assert hub.recent_after(Viewer(), 4) is None
    assert hub.recent_after(Viewer(), 7) is None  # beyond head: the database decides


async def test_events_without_a_read_frame_are_not_replayed_from_memory():
    hub = Hub()
    await hub._fan_out(event(1) | {"read_frame": b"r"})
    await hub._fan_out(event(2))  # published by a process that does not encode read_frame
    assert hub.recent_after(Viewer(), 0) is None
    assert hub.recent_after(Viewer(), 2) == []
