"""The stream consumer, driven with ApplicationCommunicator and a real in-memory channel layer."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from notifications.hub import get_hub
from notifications.services import notify
from tests.support import eventually
from tests.support.consumer import ConsumerStream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30), pytest.mark.usefixtures("fresh_hub")]


anotify = sync_to_async(notify)


def has(kind, count=1):
    return lambda s: len(s.of_type(kind)) >= count


@pytest.fixture(params=["database", "memory"])
async def replay_from(request):
    """Run a replay test twice: from the database (hub started by the stream), and from the
    hub's memory of recent events (hub running while the notifications are published)."""
    if request.param == "memory":
        await get_hub().start()
    return request.param


async def settle(replay_from, *notifications):
    """With the hub running, wait until it has handed the notifications out (remembers them)."""
    if replay_from == "memory":
        newest = max(n.id for n in notifications)
        await eventually(lambda: get_hub().head >= newest, timeout=3, what="the hub receives the notifications")


def assert_replayed_from(replay_from):
    assert get_hub().stats["replays_from_memory"] == (1 if replay_from == "memory" else 0)


async def test_headers_retry_first_then_hello_with_cursor():
    stream = await ConsumerStream().open()
    assert stream.status == 200
    assert stream.headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert b"no-cache" in stream.headers[b"cache-control"]
    assert stream.headers[b"x-accel-buffering"] == b"no"
    first = await stream.read_chunk()
    assert first == b"retry: 3000\n\n"
    await stream.read_until(has("hello"))
    hello = stream.of_type("hello")[0]
    assert json.loads(hello.data) == {"user": None, "cursor": 0}
    assert hello.last_event_id == "0"
    await stream.close()


async def test_live_broadcast_reaches_anonymous_and_user_once(alice):
    anon = await ConsumerStream().open()
    signed = await ConsumerStream(alice).open()
    await anon.read_until(has("hello"))
    await signed.read_until(has("hello"))
    assert json.loads(signed.of_type("hello")[0].data)["user"] == "alice"
    n = await anotify("Maintenance at 6", body="two\nlines", level="warning")
    await anon.read_until(has("notification"))
    await signed.read_until(has("notification"))
    anon_data = json.loads(anon.of_type("notification")[0].data)
    user_data = json.loads(signed.of_type("notification")[0].data)
    assert anon_data["id"] == n.id and anon.of_type("notification")[0].last_event_id == str(n.id)
    assert anon_data["body"] == "two\nlines"
    assert anon_data["audience"] == "everyone"
    assert "read" not in anon_data
    assert user_data["read"] is False
    await anon.nothing_more()
    await signed.nothing_more()
    await anon.close()
    await signed.close()


async def test_targeted_notifications_reach_only_their_audience(alice, bob, group):
    streams = {
        "anon": await ConsumerStream().open(),
        "alice": await ConsumerStream(alice).open(),
        "bob": await ConsumerStream(bob).open(),
    }
    for s in streams.values():
        await s.read_until(has("hello"))
    to_alice = await anotify("For alice", recipient=alice)
    to_group = await anotify("For oncall", group=group)
    to_bob = await anotify("For bob", recipient="bob")
    everyone = await anotify("For all")
    for s in streams.values():
        await s.read_until(lambda s: everyone.id in s.notification_ids())
        await s.nothing_more(0.2)
    assert streams["anon"].notification_ids() == [everyone.id]
    assert streams["alice"].notification_ids() == [to_alice.id, to_group.id, everyone.id]
    assert streams["bob"].notification_ids() == [to_bob.id, everyone.id]
    for s in streams.values():
        await s.close()


async def test_replay_by_header_returns_exactly_the_missed_ones_in_order(alice, bob, group, replay_from):
    first = await anotify("one")
    await anotify("bob only", recipient=bob)
    second = await anotify("two", recipient=alice)
    in_group = await anotify("for alice's group", group=group)
    third = await anotify("three")
    await settle(replay_from, third)
    stream = await ConsumerStream(alice, headers=[(b"last-event-id", str(first.id).encode())]).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == [second.id, in_group.id, third.id]
    hello = stream.of_type("hello")[0]
    assert json.loads(hello.data)["cursor"] == third.id
    assert_replayed_from(replay_from)
    await stream.close()


async def test_header_wins_over_query_parameter():
    a = await anotify("a")
    b = await anotify("b")
    c = await anotify("c")
    stream = await ConsumerStream(
        query=f"last_event_id={a.id}".encode(), headers=[(b"Last-Event-ID", str(b.id).encode())]
    ).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == [c.id]
    await stream.close()


async def test_query_parameter_replays_without_header():
    a = await anotify("a")
    b = await anotify("b")
    stream = await ConsumerStream(query=f"last_event_id={a.id}".encode()).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == [b.id]
    await stream.close()


async def test_replay_never_includes_someone_elses_notification(alice, bob, replay_from):
    secret = await anotify("secret", recipient=bob)
    await settle(replay_from, secret)
    stream = await ConsumerStream(alice, headers=[(b"last-event-id", b"0")]).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == []
    assert_replayed_from(replay_from)
    await stream.close()


async def test_id_beyond_newest_replays_nothing_and_hello_has_current_cursor():
    n = await anotify("x")
    stream = await ConsumerStream(headers=[(b"last-event-id", b"999999")]).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == []
    assert json.loads(stream.of_type("hello")[0].data)["cursor"] == n.id
    await stream.close()


async def test_more_missed_than_replay_limit_sends_reset(settings, replay_from):
    settings.NOTIFICATIONS_REPLAY_LIMIT = 3
    for i in range(4):
        last = await anotify(f"n{i}")
    await settle(replay_from, last)
    stream = await ConsumerStream(headers=[(b"last-event-id", b"0")]).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == []
    reset = stream.of_type("reset")[0]
    assert json.loads(reset.data)["reason"] == "too_many"
    assert stream.parser.last_event_id == str(last.id)
    await stream.close()


async def test_exactly_replay_limit_is_replayed(settings, replay_from):
    settings.NOTIFICATIONS_REPLAY_LIMIT = 3
    sent = [await anotify(f"n{i}") for i in range(3)]
    await settle(replay_from, *sent)
    stream = await ConsumerStream(headers=[(b"last-event-id", b"0")]).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == [n.id for n in sent]
    assert stream.of_type("reset") == []
    assert_replayed_from(replay_from)
    await stream.close()


@pytest.mark.parametrize("bad", [b"abc", b"-1", b"1.5", b"99999999999999999999999"])
async def test_malformed_last_event_id_is_400_text(bad):
    stream = await ConsumerStream(headers=[(b"last-event-id", bad)]).open()
    assert stream.status == 400
    assert stream.headers[b"content-type"].startswith(b"text/plain")
    await stream.read_chunk()
    assert b"non-negative integer" in stream.body
    assert stream.ended


async def test_malformed_query_id_is_400():
    stream = await ConsumerStream(query=b"last_event_id=x1").open()
    assert stream.status == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
async def test_other_methods_are_405(method):
    stream = await ConsumerStream(method=method).open()
    assert stream.status == 405
    assert stream.headers[b"allow"] == b"GET"


async def test_anonymous_refused_when_not_public(settings):
    settings.NOTIFICATIONS_PUBLIC = False
    stream = await ConsumerStream().open()
    assert stream.status == 403


async def test_signed_in_allowed_when_not_public(settings, alice):
    settings.NOTIFICATIONS_PUBLIC = False
    stream = await ConsumerStream(alice).open()
    assert stream.status == 200
    await stream.close()


async def test_heartbeat_comment_arrives(settings):
    settings.NOTIFICATIONS_HEARTBEAT = 0.1
    stream = await ConsumerStream().open()
    await stream.read_until(lambda s: "ping" in s.parser.comments, timeout=3)
    await stream.close()


async def test_disconnect_leaves_nothing_subscribed(alice):
    hub = get_hub()
    streams = [await ConsumerStream(alice).open() for _ in range(3)] + [await ConsumerStream().open()]
    for s in streams:
        await s.read_until(has("hello"))
    assert len(hub.streams) == 4
    assert hub.streams_of_user(alice.pk) == 3
    for s in streams:
        await s.close()
    assert hub.streams == set()
    assert hub.streams_of_user(alice.pk) == 0
    snapshot = hub.snapshot()
    assert (snapshot.streams, snapshot.users, snapshot.groups) == (0, 0, 0)


async def test_per_user_stream_cap_answers_429(settings, alice):
    settings.NOTIFICATIONS_MAX_STREAMS_PER_USER = 2
    ok = [await ConsumerStream(alice).open() for _ in range(2)]
    refused = await ConsumerStream(alice).open()
    assert [s.status for s in ok] == [200, 200]
    assert refused.status == 429
    for s in ok:
        await s.close()


async def test_max_age_closes_the_stream(settings):
    settings.NOTIFICATIONS_MAX_AGE = 0.2
    stream = await ConsumerStream().open()
    await stream.read_until(lambda s: s.ended, timeout=3)
    assert stream.of_type("hello")
    await stream.communicator.send_input({"type": "http.disconnect"})
    await stream.communicator.wait(2)
    assert get_hub().streams == set()


async def test_rolled_back_notification_is_never_streamed():
    from django.db import transaction

    stream = await ConsumerStream().open()
    await stream.read_until(has("hello"))

    def rolled_back():
        try:
            with transaction.atomic():
                notify("never")
                raise RuntimeError("abort")
        except RuntimeError:
            pass

    await sync_to_async(rolled_back)()
    kept = await anotify("kept")
    await stream.read_until(has("notification"))
    assert stream.notification_ids() == [kept.id]
    await stream.close()


async def test_lost_layer_message_is_recovered_from_the_database():
    """A message the layer dropped (a capacity drop, a Redis outage) still arrives, in order."""
    stream = await ConsumerStream().open()
    await stream.read_until(has("hello"))
    hub = get_hub()
    # Store one without publishing it, as if the layer had lost its message.
    from notifications.models import Notification

    lost = await sync_to_async(Notification.objects.create)(title="lost")
    after = await anotify("after")
    await stream.read_until(has("notification", 2))
    assert stream.notification_ids() == [lost.id, after.id]
    assert hub.stats["catch_ups"] >= 1
    await stream.close()


async def test_events_that_arrive_during_replay_are_sent_once_after_it(alice):
    """Subscribe first, replay, then hand over: nothing between replay and live, nothing twice."""
    before = await anotify("before")
    stream = ConsumerStream(alice, headers=[(b"last-event-id", b"0")])
    hub = get_hub()
    await hub.start()
    # Deliver a live event straight to the hub while the stream is attached but still replaying.
    from notifications import replay

    original = replay.from_database

    async def slow_replay(*args):
        result = await original(*args)
        live = await anotify("during")
        await eventually(lambda: hub.head >= live.id, what="the hub fans it out to this pending stream")
        return result

    replay.from_database = slow_replay
    try:
        await stream.open()
        await stream.read_until(has("notification", 2))
    finally:
        replay.from_database = original
    ids = stream.notification_ids()
    assert ids[0] == before.id and len(ids) == 2 and ids[1] > before.id
    await stream.nothing_more()
    await stream.close()


async def test_read_event_reaches_every_stream_of_that_user_only(alice, bob):
    from notifications.models import Viewer
    from notifications.services import mark_read

    n = await anotify("all")
    tab1, tab2 = await ConsumerStream(alice).open(), await ConsumerStream(alice).open()
    other = await ConsumerStream(bob).open()
    for s in (tab1, tab2, other):
        await s.read_until(has("hello"))
    viewer = await sync_to_async(Viewer.of)(alice)
    await sync_to_async(mark_read)(viewer, [n.id])
    for s in (tab1, tab2):
        await s.read_until(has("read"))
        assert json.loads(s.of_type("read")[0].data) == {"ids": [n.id], "read": True, "unread_count": 0}
    await other.nothing_more()
    for s in (tab1, tab2, other):
        await s.close()


async def test_replay_reflects_current_read_state(alice, replay_from):
    from notifications.models import Viewer
    from notifications.services import mark_read

    a = await anotify("a")
    b = await anotify("b")
    await settle(replay_from, b)
    await sync_to_async(mark_read)(await sync_to_async(Viewer.of)(alice), [a.id])
    stream = await ConsumerStream(alice, headers=[(b"last-event-id", b"0")]).open()
    await stream.read_until(has("hello"))
    reads = {json.loads(e.data)["id"]: json.loads(e.data)["read"] for e in stream.of_type("notification")}
    assert reads == {a.id: True, b.id: False}
    assert_replayed_from(replay_from)
    await stream.close()


async def test_replay_leaves_out_a_notification_deleted_since(replay_from):
    from notifications.models import Notification

    a = await anotify("a")
    gone = await anotify("deleted by an admin")
    c = await anotify("c")
    await settle(replay_from, c)
    await sync_to_async(Notification.objects.filter(pk=gone.pk).delete)()
    stream = await ConsumerStream(headers=[(b"last-event-id", b"0")]).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == [a.id, c.id]
    assert json.loads(stream.of_type("hello")[0].data)["cursor"] == c.id
    assert_replayed_from(replay_from)
    await stream.close()


async def test_a_cursor_older_than_the_hubs_memory_replays_from_the_database(monkeypatch):
    get_hub().window.max_events = 2
    await get_hub().start()
    sent = [await anotify(f"n{i}") for i in range(4)]
    await settle("memory", *sent)
    old = await ConsumerStream(headers=[(b"last-event-id", b"0")]).open()  # memory holds only the last 2
    recent = await ConsumerStream(headers=[(b"last-event-id", str(sent[1].id).encode())]).open()
    for stream in (old, recent):
        await stream.read_until(has("hello"))
    assert old.notification_ids() == [n.id for n in sent]
    assert recent.notification_ids() == [sent[2].id, sent[3].id]
    assert get_hub().stats["replays_from_memory"] == 1 and get_hub().stats["replays"] == 2
    for stream in (old, recent):
        await stream.close()


async def test_a_cursor_below_the_pruning_horizon_gets_reset_expired_from_memory_too():
    """SPEC §6/§10: prune_notifications, then a reconnect the hub's memory still covers → reset."""
    import datetime as dt

    from django.utils import timezone

    from notifications.management.commands.prune_notifications import prune
    from notifications.models import Notification

    await get_hub().start()
    sent = [await anotify(f"n{i}") for i in range(3)]
    await settle("memory", *sent)
    old = timezone.now() - dt.timedelta(days=40)
    await sync_to_async(Notification.objects.filter(id__lte=sent[1].id).update)(created_at=old)
    deleted, horizon = await sync_to_async(prune)(30)
    assert (deleted, horizon) == (2, sent[1].id)
    stream = await ConsumerStream(headers=[(b"last-event-id", str(sent[0].id).encode())]).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == []
    assert json.loads(stream.of_type("reset")[0].data) == {"reason": "expired", "cursor": sent[2].id}
    assert get_hub().stats["replays_from_memory"] == 1 and get_hub().stats["resets_expired"] == 1
    await stream.close()


async def test_an_identity_change_while_the_stream_is_set_up_ends_it(alice, monkeypatch):
    """The viewer is read before attach(): a group change (or sign-out) the hub applies in
    between would never reach this stream, so the stream ends and the client reconnects."""
    from notifications import consumers
    from notifications.events import IdentityChange

    hub = get_hub()
    await hub.start()
    read_viewer = consumers._viewer

    async def viewer_read_while_alice_changes(user, session):
        viewer = await read_viewer(user, session)
        await hub.handle(IdentityChange(groups=((alice.pk, frozenset()),), after=0).to_message())
        return viewer

    monkeypatch.setattr(consumers, "_viewer", viewer_read_while_alice_changes)
    stream = await ConsumerStream(alice).open()
    await stream.read_until(lambda s: s.ended)
    assert stream.of_type("hello") == []
    assert hub.streams_of_user(alice.pk) == 0 and hub.stats["identity_ends"] == 1
    monkeypatch.setattr(consumers, "_viewer", read_viewer)
    again = await ConsumerStream(alice).open()  # nothing changed since: it stays
    await again.read_until(has("hello"))
    assert not again.ended
    await again.close()


def test_as_asgi_is_an_asgi3_app_that_returns_the_consumers_own_coroutine():
    import asyncio

    from asgiref.compatibility import guarantee_single_callable

    from notifications.consumers import NotificationStreamConsumer

    app = NotificationStreamConsumer.as_asgi()
    assert asyncio.iscoroutinefunction(app)  # servers and asgiref take it as ASGI 3
    assert guarantee_single_callable(app) is app
    assert app.consumer_class is NotificationStreamConsumer and app.__name__ == "NotificationStreamConsumer"
    coroutine = app({"type": "http"}, None, None)
    try:
        assert coroutine.cr_code is NotificationStreamConsumer.__call__.__code__  # no wrapper frame
    finally:
        coroutine.close()
