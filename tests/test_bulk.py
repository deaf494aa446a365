"""Bulk sends (SPEC §15): notify_many, the batch message, the API's ``recipients``, ``notify --user a --user b``.

Everything here runs on the test database (SQLite); ids in commit order under concurrent
writers on PostgreSQL are proved in tests/integration/test_bulk.py and test_scaleout.py.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client

from notifications import events, services
from notifications.events import BATCH_TYPE, BadMessage, Event, EventBatch, parse
from notifications.models import Notification

pytestmark = pytest.mark.django_db


@pytest.fixture
def users(db):
    User = get_user_model()
    return [User.objects.create_user(f"user{i}", password="pw-user-123") for i in range(5)]


# -- notify_many ------------------------------------------------------------------------------------


def test_one_notice_per_recipient_in_the_order_given_published_after_commit(
    users, published, django_capture_on_commit_callbacks
):
    order = [users[3], "user1", users[0], "user4"]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        made = services.notify_many("Export ready", recipients=order, body="b\r\nc", level="success", url="/x")
    assert len(callbacks) == 1
    assert [n.recipient.username for n in made] == ["user3", "user1", "user0", "user4"]
    ids = [n.id for n in made]
    assert ids == sorted(ids) and len(set(ids)) == 4
    rows = {n.id: n for n in Notification.objects.all()}
    assert sorted(rows) == ids
    for n in made:
        stored = rows[n.id]
        assert (stored.title, stored.body, stored.level, stored.url) == ("Export ready", "b\nc", "success", "/x")
        assert stored.recipient_id == n.recipient.pk and stored.group_id is None
    (message,) = published  # several events: one batch message
    batch = parse(message)
    assert isinstance(batch, EventBatch)
    assert [(e.id, e.audience, e.target) for e in batch.events] == [(n.id, "user", n.recipient.pk) for n in made]
    assert all(f'"id":{e.id},'.encode() in e.user_frame and b'"read":false' in e.user_frame for e in batch.events)


def test_a_single_recipient_is_published_as_a_plain_event(users, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        (n,) = services.notify_many("one", recipients=["user2"])
    assert [m["type"] for m in published] == [events.EVENT_TYPE] and published[0]["id"] == n.id


@pytest.mark.parametrize(
    ("recipients", "extra", "fragment"),
    [
        (["user0", "nobody", "user1", "ghost"], {}, "No user is called 'nobody'. No user is called 'ghost'."),
        (["user0", "user1", "user0"], {}, "'user0' is listed twice"),
        ([], {}, "at least one"),
        ("user0", {}, "must be a list"),
        (["user0", 42], {}, "not a saved user"),
        (["user0"], {"recipient": "user1"}, "not both"),
        (["user0"], {"group": "oncall"}, "not both"),
        (["user0", "user1"], {"title": ""}, "title"),
        (["user0", "user1"], {"url": "javascript:alert(1)"}, "url"),
    ],
)
def test_bad_input_is_one_clear_error_and_stores_none(users, group, published, recipients, extra, fragment):
    title = extra.pop("title", "ok")
    with pytest.raises(ValidationError) as info:
        services.notify_many(title, recipients=recipients, **extra)
    assert fragment in " ".join(f"{k}: {' '.join(v)}" for k, v in info.value.message_dict.items())
    assert not Notification.objects.exists()
    assert published == []


def test_an_unsaved_user_object_is_refused(users, published):
    stranger = get_user_model()(username="unsaved")
    with pytest.raises(ValidationError, match="not a saved user"):
        services.notify_many("x", recipients=[users[0], stranger])
    assert not Notification.objects.exists()


def test_a_rolled_back_bulk_send_stores_and_publishes_nothing(users, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError), \
            transaction.atomic():
        services.notify_many("never", recipients=["user0", "user1"])
        raise RuntimeError
    assert callbacks == [] and published == []
    assert not Notification.objects.exists()


def test_a_large_send_is_split_into_bounded_batches(users, monkeypatch):
    monkeypatch.setattr(services, "BATCH_MAX_EVENTS", 3)
    items = [Event(i, "user", i, b"u" * 100, b"a", b"r") for i in range(1, 9)]
    messages = services.batch_messages(items)
    assert [len(m["events"]) if m["type"] == BATCH_TYPE else 1 for m in messages] == [3, 3, 2]
    assert [e.id for m in messages for e in parse(m).events] == list(range(1, 9))
    monkeypatch.setattr(services, "BATCH_MAX_BYTES", 250)  # two events' frames (102 bytes each) fit
    sizes = [len(m["events"]) if m["type"] == BATCH_TYPE else 1 for m in services.batch_messages(items)]
    assert sizes == [2, 2, 2, 2]
    assert services.batch_messages(items[:1]) == [items[0].to_message()]
    assert services.batch_messages([]) == []


# -- the batch message ------------------------------------------------------------------------------


def test_a_batch_round_trips_and_sends_a_personal_frame_once():
    everyone = Event(1, "everyone", None, b"user 1", b"anon 1", b"read 1")
    personal = Event(2, "user", 7, b"user 2", b"anon 2", None)
    group = Event(3, "group", 4, b"user 3", b"anon 3", b"read 3")
    message = EventBatch((everyone, personal, group)).to_message()
    assert message["type"] == BATCH_TYPE and message["v"] == events.VERSION
    assert [row[4] for row in message["events"]] == [b"anon 1", None, None]  # not sent twice
    back = parse(message)
    assert isinstance(back, EventBatch)
    assert back.events[0] == everyone
    assert (back.events[1].id, back.events[1].target, back.events[1].user_frame, back.events[1].read_frame) == (
        2, 7, b"user 2", None)
    assert back.events[2].frame_for(events_viewer(4)) == b"user 3"


def events_viewer(group_id: int):
    from notifications.models import Viewer

    return Viewer(user_id=99, group_ids=frozenset({group_id}))


GOOD_ROW = [1, "user", 7, b"u", None, None, "", "info", None]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"events": []}, "non-empty list"),
        ({"events": "x"}, "non-empty list"),
        ({"events": [[1, "user", 7]]}, "entry 0 must be a list of 9"),
        ({"events": [GOOD_ROW, [1, "user", 8, b"u", None, None, "", "info", None]]}, "ids must increase"),
        ({"events": [GOOD_ROW, [2, "user", None, b"u", None, None, "", "info", None]]},
         "entry 1: event message: a user event needs"),
        ({"events": [[0, "everyone", None, b"u", b"a", None, "", "info", None]]}, "'id' must be positive"),
        ({"events": [[1, "nobody", None, b"u", b"a", None, "", "info", None]]}, "unknown audience"),
        ({"events": [[1, "user", 7, "text", None, None, "", "info", None]]}, "'user_frame' must be bytes"),
        ({"v": 2}, "version 2"),
    ],
)
def test_a_bad_batch_is_refused_saying_what_is_wrong(change, fragment):
    message = {"type": BATCH_TYPE, "v": 1, "events": [GOOD_ROW], **change}
    with pytest.raises(BadMessage, match=fragment.replace("(", r"\(")):
        parse(message)


# -- the API and the command ----------------------------------------------------------------------------


def post(client: Client, payload: object):
    return client.post("/notifications/api/", json.dumps(payload), content_type="application/json")


def admin_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def test_api_recipients_201_with_results_in_the_order_given(staff, users, published):
    response = post(admin_client(staff), {"title": "Hi", "level": "warning", "recipients": ["user2", "user0"]})
    assert response.status_code == 201, response.content
    results = response.json()["results"]
    assert [r["title"] for r in results] == ["Hi", "Hi"] and results[0]["id"] < results[1]["id"]
    assert [Notification.objects.get(pk=r["id"]).recipient.username for r in results] == ["user2", "user0"]
    assert all(r["audience"] == "user" and r["level"] == "warning" for r in results)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"title": "x", "recipients": ["user0", "nobody"]}, "No user is called 'nobody'"),
        ({"title": "x", "recipients": ["user0", "user0"]}, "listed twice"),
        ({"title": "x", "recipients": ["user0"], "recipient": "user1"}, "not both"),
        ({"title": "x", "recipients": ["user0"], "group": "oncall"}, "not both"),
        ({"title": "x", "recipients": "user0"}, "list of usernames"),
        ({"title": "x", "recipients": ["user0", 3]}, "list of usernames"),
        ({"title": "x", "recipients": []}, "at least one"),
        ({"title": "x", "recipients": ["user0"], "level": "loud"}, "Unknown level"),
    ],
)
def test_api_bad_recipients_400_and_nothing_stored(staff, users, group, published, payload, fragment):
    response = post(admin_client(staff), payload)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert not Notification.objects.exists() and published == []


def test_api_recipients_needs_the_add_permission(users, published):
    client = Client()
    client.force_login(users[0])
    response = post(client, {"title": "x", "recipients": ["user1"]})
    assert response.status_code == 403 and "notifications.add_notification" in response.json()["error"]
    assert not Notification.objects.exists()


def test_command_several_users_one_notice_each(users, capsys):
    call_command("notify", "Export ready", "--user", "user1", "--user", "user3", "--body", "b")
    rows = list(Notification.objects.order_by("id"))
    assert [(n.recipient.username, n.title, n.body) for n in rows] == [("user1", "Export ready", "b"),
                                                                       ("user3", "Export ready", "b")]
    assert f"Sent 2 notifications ({rows[0].id}, {rows[1].id}) to users user1, user3." in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--user", "user0", "--user", "nobody"], "No user is called 'nobody'"),
        (["x", "--user", "user0", "--user", "user0"], "listed twice"),
        (["x", "--user", "user0", "--user", "user1", "--group", "oncall"], "not both"),
    ],
)
def test_command_bad_users_is_a_command_error_and_stores_none(users, group, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("notify", *args)
    assert not Notification.objects.exists()


def test_a_batch_keeps_each_events_category_level_and_expiry():
    """The fan-out mutes and expires in memory from these: a batch must carry them like one event."""
    from notifications.events import Event, EventBatch, parse

    one = Event(1, "user", 7, b"u", b"u", None, "billing", "warning", 1_900_000_000.0)
    two = Event(2, "user", 8, b"v", b"v", None, "", "error", None)
    batch = parse(EventBatch((one, two)).to_message())
    assert isinstance(batch, EventBatch) and batch.events == (one, two)


# -- cheaper bulk encoding and publishing (issue 16, second round) -----------------------------------


@pytest.mark.parametrize("title", ["Export ready", "Ünïcode “quotes” \\ and \"escapes\"", "918273645546372819 in it"])
def test_spliced_frames_are_byte_for_byte_what_each_notice_encodes_to(users, published,
                                                                     django_capture_on_commit_callbacks, title):
    with django_capture_on_commit_callbacks(execute=True):
        made = services.notify_many(title, recipients=users, body="line\nbreak", url="/x")
    (message,) = published
    batch = parse(message)
    assert isinstance(batch, EventBatch)
    assert list(batch.events) == [Event.of(n) for n in made]
    assert services._bulk_events(made) == [Event.of(n) for n in made]


def test_a_bulk_send_publishes_all_its_batches_in_one_hop(users, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(services, "BATCH_MAX_EVENTS", 2)
    hops: list[list[dict]] = []
    monkeypatch.setattr(services, "publish_many", hops.append)
    with django_capture_on_commit_callbacks(execute=True):
        made = services.notify_many("x", recipients=users)
    (messages,) = hops
    assert [len(m["events"]) if m["type"] == BATCH_TYPE else 1 for m in messages] == [2, 2, 1]
    ids = [e.id for m in messages for e in (parse(m).events if m["type"] == BATCH_TYPE else [parse(m)])]
    assert ids == [n.id for n in made]


def test_publish_many_sends_in_order_and_a_failing_send_does_not_stop_the_rest(monkeypatch, caplog):
    sent: list[int] = []

    class Layer:
        async def group_send(self, group: str, message: dict) -> None:
            if message["id"] == 2:
                raise ConnectionError("redis went away")
            sent.append(message["id"])

    monkeypatch.setattr(services, "get_channel_layer", Layer)
    services.publish_many([{"type": "t", "id": i} for i in (1, 2, 3)])
    assert sent == [1, 3] and "Publishing t 2 failed" in caplog.text


def test_users_given_as_instances_stay_attached_and_names_cost_one_query(users, django_assert_num_queries):
    with django_assert_num_queries(1):
        ids, given = services._resolve_users([users[1], "user3", "user0"])
    assert ids == [users[1].pk, users[3].pk, users[0].pk] and given == {users[1].pk: users[1]}
    made = services.notify_many("x", recipients=[users[1], "user3"])
    assert made[0].recipient is users[1]
    assert all(not n._state.adding for n in made)


def test_publishing_outside_a_server_runs_on_the_calling_threads_own_loop_kept_between_calls(monkeypatch):
    import asyncio
    import threading

    loops: list[tuple[str, object]] = []

    class Layer:
        async def group_send(self, group: str, message: dict) -> None:
            loops.append((threading.current_thread().name, asyncio.get_running_loop()))

    monkeypatch.setattr(services, "get_channel_layer", Layer)

    def send_twice() -> None:
        services.publish({"type": "t", "id": 1})
        services.publish({"type": "t", "id": 2})

    worker = threading.Thread(target=send_twice, name="a-worker")
    worker.start()
    worker.join(10)
    (thread_a, loop_a), (thread_b, loop_b) = loops
    assert thread_a == thread_b == "a-worker" and loop_a is loop_b  # no hand-over, one loop kept

    async def sync_code_on_a_running_loop() -> None:  # cannot run a second loop here: the publisher thread does
        services.publish({"type": "t", "id": 3})

    asyncio.run(sync_code_on_a_running_loop())
    assert loops[2][0] == "notifications-publisher"
