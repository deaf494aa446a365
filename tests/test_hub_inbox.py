"""The hub's inbox paths (SPEC §13): muting decided in memory per stream, preference changes on open
streams, expired events not fanned out, archive/unread frames on the per-user path, and the new
channel-layer message read strictly."""

from __future__ import annotations

import time

import pytest

from notifications.events import PREFERENCES_TYPE, Event, PreferenceChange, ReadEvent, archive_frame, parse
from notifications.models import Viewer
from tests.support import eventually
from tests.support.hub import publish, user_streams

pytestmark = pytest.mark.timeout(20)


ALICE = Viewer(user_id=7, username="alice", muted=frozenset({"billing"}))
BOB = Viewer(user_id=8, username="bob")


def event(id: int, category: str = "", level: str = "info", *, expires: float | None = None,
          audience: str = "everyone", target: int | None = None) -> Event:
    return Event(id, audience, target, f"user {id}".encode(), f"anon {id}".encode(), f"read {id}".encode(),
                 category, level, expires)


async def test_a_muted_category_skips_the_muter_and_reaches_everyone_else(harness):
    hub, layer, db = harness
    await hub.start()
    [(_, alice)] = user_streams(hub, ALICE)
    [(_, bob)] = user_streams(hub, BOB)
    await publish(layer, db, event(1, "billing"), event(2, "social"), event(3))
    await eventually(lambda: bob.frames == [b"user 1", b"user 2", b"user 3"])
    await eventually(lambda: alice.frames == [b"user 2", b"user 3"])
    assert hub.stats["deliveries"] == 5


async def test_error_breaks_through_a_mute(harness):
    hub, layer, db = harness
    await hub.start()
    [(_, alice)] = user_streams(hub, ALICE)
    await publish(layer, db, event(1, "billing", "error"), event(2, "billing", "warning"))
    await eventually(lambda: hub.head == 2)
    assert alice.frames == [b"user 1"]


async def test_a_muted_personal_notice_is_skipped_too(harness):
    hub, layer, db = harness
    await hub.start()
    [(_, alice)] = user_streams(hub, ALICE)
    await publish(layer, db, event(1, "billing", audience="user", target=7), event(2, audience="user", target=7))
    await eventually(lambda: alice.frames == [b"user 2"])


async def test_a_preference_change_reaches_open_streams_at_once(harness):
    hub, layer, db = harness
    await hub.start()
    [(stream, alice)] = user_streams(hub, ALICE)
    [(_, bob)] = user_streams(hub, BOB)
    await hub.handle(PreferenceChange(7, frozenset({"social"})).to_message())
    assert stream.viewer.muted == {"social"} and stream.viewer.username == "alice"
    await publish(layer, db, event(1, "billing"), event(2, "social"))
    await eventually(lambda: bob.frames == [b"user 1", b"user 2"])
    assert alice.frames == [b"user 1"]
    await hub.handle(PreferenceChange(7, frozenset()).to_message())
    await publish(layer, db, event(3, "social"))
    await eventually(lambda: alice.frames == [b"user 1", b"user 3"])
    assert hub.stats["preference_changes"] == 2


async def test_a_stream_that_leaves_is_forgotten_by_the_mute_index(harness):
    hub, layer, db = harness
    await hub.start()
    [(stream, _)] = user_streams(hub, ALICE)
    assert hub._muting["billing"] == {stream}
    hub.detach(stream)
    assert "billing" not in hub._muting


async def test_an_event_past_its_expiry_is_not_fanned_out(harness):
    hub, layer, db = harness
    await hub.start()
    [(_, bob)] = user_streams(hub, BOB)
    await publish(layer, db, event(1, expires=time.time() - 1), event(2, expires=time.time() + 3600))
    await eventually(lambda: bob.frames == [b"user 2"])


async def test_archive_frames_go_to_every_stream_of_that_user_only(harness):
    hub, layer, db = harness
    await hub.start()
    alices = user_streams(hub, ALICE, 2)
    [(_, bob)] = user_streams(hub, BOB)
    frame = archive_frame([5], True, 0)
    await hub.handle(ReadEvent(7, frame).to_message())
    assert [send.frames for _, send in alices] == [[frame], [frame]] and bob.frames == []


def test_event_messages_round_trip_category_level_and_expiry():
    e = event(4, "ops", "error", expires=1234.5)
    assert parse(e.to_message()) == e
    plain = event(5)
    message = plain.to_message()
    assert "category" not in message and "level" not in message and "expires" not in message
    assert parse(message) == plain


@pytest.mark.parametrize(
    "message",
    [
        {"type": PREFERENCES_TYPE, "user_id": "7", "muted": []},
        {"type": PREFERENCES_TYPE, "user_id": 7, "muted": "billing"},
        {"type": PREFERENCES_TYPE, "user_id": 7, "muted": [1]},
        {"type": PREFERENCES_TYPE, "v": 9, "user_id": 7, "muted": []},
        {**event(1).to_message(), "category": 5},
        {**event(1).to_message(), "expires": "soon"},
        {**event(1).to_message(), "expires": True},
    ],
)
async def test_bad_inbox_messages_are_counted_and_change_nothing(harness, message):
    hub, layer, db = harness
    [(stream, _)] = user_streams(hub, ALICE)
    await hub.handle(message)
    assert hub.stats["bad_messages"] == 1
    assert stream.viewer.muted == {"billing"} and hub.head == 0
