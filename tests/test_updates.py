"""Notices that change (SPEC §14): one event sequence, ``services.update``/``retract``/``job``, the API's
PATCH and DELETE — after commit only, bad input a clear error that changes nothing."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import Client

from notifications import services
from notifications.events import EVENT_TYPE, Event, parse
from notifications.models import Notification, ReadMark, Viewer

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit fires for real


@pytest.fixture
def published(monkeypatch):
    """Event messages the services publish (identity messages of the user fixtures left out)."""
    sent: list[dict] = []
    monkeypatch.setattr(services, "publish", lambda m: sent.append(m) if m["type"] == EVENT_TYPE else None)
    return sent


def client_for(user=None):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_updates_and_retractions_take_the_next_ids_of_the_one_sequence(published):
    a = services.notify("a")
    services.update(a, progress=10)
    b = services.notify("b")
    services.update(a, progress=20)
    services.retract(b)
    c = services.notify("c")
    ids = [m["id"] for m in published]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert ids == [a.id, a.id + 1, b.id, b.id + 1, b.id + 2, c.id]
    assert [m.get("kind", "notification") for m in published] == [
        "notification", "update", "notification", "update", "retract", "notification"]
    assert Notification.objects.newest_id() == c.id
    services.update(a, title="a2")
    assert Notification.objects.newest_id() == c.id + 1


def test_update_changes_only_what_is_given_and_streams_the_full_json(published, alice):
    n = services.notify("Exporting", recipient=alice, category="jobs", data={"k": 1})
    services.update(n, progress=45, body="45 %")
    row = Notification.objects.get()
    assert (row.title, row.body, row.progress, row.category, row.data) == ("Exporting", "45 %", 45, "jobs", {"k": 1})
    event = parse(published[-1])
    assert isinstance(event, Event) and event.kind == "update" and event.notice == n.id and event.id == row.last_event
    assert event.audience == "user" and event.target == alice.id
    frame = event.live_frames[0].decode()
    assert frame.startswith(f"id: {row.last_event}\nevent: update\ndata: ")
    payload = json.loads(frame.split("data: ", 1)[1])
    assert payload["id"] == n.id and payload["progress"] == 45 and payload["updated_at"].endswith("Z")
    assert "read" not in payload  # one frame for every viewer; read state has its own events


def test_an_update_that_changes_nothing_sends_nothing(published):
    n = services.notify("same", body="x")
    services.update(n, body="x")
    assert len(published) == 1 and Notification.objects.get().last_event is None


def test_concurrent_field_updates_compose(published):
    n = services.notify("t")
    stale = Notification.objects.get(pk=n.pk)
    services.update(n, body="from one")
    services.update(stale, progress=5)  # re-read under the lock: the body survives
    row = Notification.objects.get()
    assert (row.body, row.progress) == ("from one", 5)
    assert stale.body == "from one"


@pytest.mark.parametrize(("fields", "message"), [
    ({"progress": 101}, "from 0 to 100"),
    ({"progress": -1}, "from 0 to 100"),
    ({"progress": 4.5}, "integer"),
    ({"progress": True}, "integer"),
    ({"level": "loud"}, "not a valid choice"),
    ({"title": ""}, "cannot be blank"),
    ({"url": "javascript:alert(1)"}, "link"),
    ({"data": [1]}, "JSON object"),
])
def test_bad_updates_are_validation_errors_that_change_nothing(published, fields, message):
    n = services.notify("t")
    with pytest.raises(ValidationError) as info:
        services.update(n, **fields)
    assert message in str(info.value)
    row = Notification.objects.get()
    assert (row.title, row.level, row.progress, row.last_event, row.updated_at) == ("t", "info", None, None, None)
    assert len(published) == 1


def test_a_rolled_back_update_or_retraction_is_never_published(published, django_capture_on_commit_callbacks):
    n = services.notify("t")
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError), \
            transaction.atomic():
        services.update(n, progress=50)
        services.retract(n)
        raise RuntimeError("rollback")
    assert callbacks == [] and len(published) == 1
    row = Notification.objects.get()
    assert (row.progress, row.retracted_at, row.last_event) == (None, None, None)


def test_update_publishes_after_commit_only(published):
    n = services.notify("t")
    with transaction.atomic():
        services.update(n, progress=1)
        services.retract(n)
        assert len(published) == 1
    assert [m.get("kind") for m in published] == [None, "update", "retract"]


def test_retract_leaves_a_tombstone_out_of_every_list_and_count(published, alice):
    n = services.notify("gone", recipient=alice)
    services.retract(n)
    services.retract(n)  # twice: nothing more
    assert [m.get("kind") for m in published] == [None, "retract"]
    assert n.retracted_at is not None
    viewer = Viewer.of(alice)
    assert not Notification.objects.visible_to(viewer).exists()
    assert services.unread_count(viewer) == 0
    assert client_for(alice).get("/notifications/api/").json()["results"] == []
    assert client_for(alice).post(f"/notifications/api/{n.id}/read/").status_code == 404
    with pytest.raises(ValidationError, match="retracted"):
        services.update(n, title="back")


def test_retract_frame_is_the_notice_id(published):
    n = services.notify("x")
    services.retract(n)
    event = parse(published[-1])
    assert event.live_frames[0] == f"id: {n.last_event}\nevent: retract\ndata: {{\"id\":{n.id}}}\n\n".encode()


def test_notify_takes_progress_and_rejects_it_out_of_range(published):
    assert services.notify("job", progress=0).progress == 0
    with pytest.raises(ValidationError, match="from 0 to 100"):
        services.notify("job", progress=200)
    assert Notification.objects.count() == 1


# -- the job helper --------------------------------------------------------------------------


def test_job_sends_reports_progress_and_ends_success_at_100(published, alice):
    with services.job("Exporting", recipient=alice, done="Exported 3 rows") as job:
        job.progress(30)
        job.progress(30)  # unchanged: not written
        job.progress(60, body="2 of 3")
    row = Notification.objects.get()
    assert (row.level, row.progress, row.body, row.recipient_id) == ("success", 100, "Exported 3 rows", alice.id)
    assert [m.get("kind", "notification") for m in published] == ["notification", "update", "update", "update"]
    assert json.loads(parse(published[0]).user_frame.decode().split("data: ", 1)[1])["progress"] == 0


def test_job_ends_error_with_the_exception_message_and_reraises(published):
    with pytest.raises(KeyError), services.job("Import") as job:
        job.progress(10)
        raise KeyError("no such column: price")
    row = Notification.objects.get()
    assert row.level == "error" and "no such column: price" in row.body and row.progress == 10


def test_job_progress_out_of_range_is_an_error(published):
    with pytest.raises(ValidationError), services.job("x") as job:
        job.progress(150)
    assert Notification.objects.get().level == "error"


# -- the API ---------------------------------------------------------------------------------


def patch(client, pk, body, raw=False):
    return client.patch(f"/notifications/api/{pk}/", body if raw else json.dumps(body),
                        content_type="application/json")


def test_patch_updates_and_answers_the_notice_as_it_now_is(staff, published):
    n = services.notify("Exporting")
    response = patch(client_for(staff), n.id, {"progress": 45, "body": "45 %"})
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["progress"], body["body"], body["title"]) == (n.id, 45, "45 %", "Exporting")
    assert body["updated_at"] is not None
    assert parse(published[-1]).kind == "update"


def test_patch_progress_null_clears_it(staff, published):
    n = services.notify("job", progress=50)
    assert patch(client_for(staff), n.id, {"progress": None}).json()["progress"] is None


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"progress": 101}, 400, "from 0 to 100"),
    ({"progress": "50"}, 400, "integer"),
    ({"level": "loud"}, 400, "Unknown level"),
    ({"recipient": "bob"}, 400, "Unknown field(s): recipient"),
    ({}, 400, "Nothing to change"),
    ({"title": 5}, 400, "title must be a string"),
    ({"data": "x"}, 400, "data must be a JSON object"),
    ("[", 400, "must be JSON"),
])
def test_patch_bad_input_is_400_and_changes_nothing(staff, published, body, status, message):
    n = services.notify("t")
    response = patch(client_for(staff), n.id, body, raw=isinstance(body, str))
    assert response.status_code == status
    assert message in response.json()["error"]
    assert Notification.objects.get().last_event is None and len(published) == 1


def test_patch_and_delete_need_their_permissions(alice, staff, published):
    from django.contrib.auth.models import Permission

    n = services.notify("t")
    assert patch(client_for(), n.id, {"title": "x"}).status_code == 403
    response = patch(client_for(alice), n.id, {"title": "x"})
    assert response.status_code == 403 and "notifications.change_notification" in response.json()["error"]
    assert client_for(alice).delete(f"/notifications/api/{n.id}/").status_code == 403
    alice.user_permissions.add(Permission.objects.get(codename="change_notification"))
    alice = type(alice).objects.get(pk=alice.pk)  # a fresh permission cache
    assert patch(client_for(alice), n.id, {"title": "x"}).status_code == 200
    response = client_for(alice).delete(f"/notifications/api/{n.id}/")
    assert response.status_code == 403 and "delete_notification" in response.json()["error"]
    assert Notification.objects.get().retracted_at is None


def test_delete_retracts_with_204_then_404(staff, published):
    n = services.notify("t")
    client = client_for(staff)
    assert client.delete(f"/notifications/api/{n.id}/").status_code == 204
    assert Notification.objects.get().retracted_at is not None
    assert client.delete(f"/notifications/api/{n.id}/").status_code == 404
    assert patch(client, n.id, {"title": "x"}).status_code == 404
    assert patch(client, 999_999, {"title": "x"}).status_code == 404


def test_detail_takes_only_patch_and_delete(staff):
    n = services.notify("t")
    assert client_for(staff).get(f"/notifications/api/{n.id}/").status_code == 405


def test_patch_needs_csrf(staff):
    n = services.notify("t")
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert patch(client, n.id, {"title": "x"}).status_code == 403
    assert Notification.objects.get().title == "t"


def test_read_state_survives_an_update(alice, published):
    n = services.notify("t", recipient=alice)
    ReadMark.objects.create(user=alice, notification=n)
    services.update(n, progress=3)
    assert client_for(alice).get("/notifications/api/").json()["results"][0]["read"] is True


def test_create_takes_progress_but_not_for_many_recipients(staff, alice, published):
    client = client_for(staff)
    response = client.post("/notifications/api/", json.dumps({"title": "job", "progress": 5}),
                           content_type="application/json")
    assert response.status_code == 201 and response.json()["progress"] == 5
    response = client.post("/notifications/api/", json.dumps({"title": "job", "progress": 500}),
                           content_type="application/json")
    assert response.status_code == 400 and "from 0 to 100" in response.json()["error"]
    response = client.post("/notifications/api/", json.dumps({"title": "j", "progress": 5, "recipients": ["alice"]}),
                           content_type="application/json")
    assert response.status_code == 400 and "single notice" in response.json()["error"]
    assert Notification.objects.count() == 1
