"""The JSON API (SPEC §7) and the page, through Django's test client."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from notifications.models import Notification, ReadMark

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(alice, bob, group):
    return {
        "everyone": Notification.objects.create(title="all"),
        "group": Notification.objects.create(title="oncall", group=group),
        "alice": Notification.objects.create(title="for alice", recipient=alice),
        "bob": Notification.objects.create(title="for bob", recipient=bob),
    }


def client_for(user=None, csrf=False):
    client = Client(enforce_csrf_checks=csrf)
    if user is not None:
        client.force_login(user)
    return client


def csrf_client(user):
    client = client_for(user, csrf=True)
    client.get("/")  # sets the csrftoken cookie
    return client, client.cookies["csrftoken"].value


def test_list_newest_first_visible_only(alice, data):
    body = client_for(alice).get("/notifications/api/").json()
    assert [r["title"] for r in body["results"]] == ["for alice", "oncall", "all"]
    assert body["unread_count"] == 3
    assert all(r["read"] is False for r in body["results"])


def test_list_after_and_limit(alice, data):
    client = client_for(alice)
    body = client.get("/notifications/api/", {"after": data["group"].id}).json()
    assert [r["id"] for r in body["results"]] == [data["alice"].id]
    body = client.get("/notifications/api/", {"limit": 1}).json()
    assert [r["id"] for r in body["results"]] == [data["alice"].id]
    assert body["unread_count"] == 3


def test_list_limit_capped_at_100(alice):
    Notification.objects.bulk_create([Notification(title=f"n{i}") for i in range(120)])
    body = client_for(alice).get("/notifications/api/", {"limit": 500}).json()
    assert len(body["results"]) == 100


@pytest.mark.parametrize("query", [{"limit": "x"}, {"after": "1.5"}, {"limit": "0"}])
def test_list_bad_parameters_are_400(alice, query):
    response = client_for(alice).get("/notifications/api/", query)
    assert response.status_code == 400
    assert "error" in response.json()


def test_anonymous_lists_everyone_only_without_read_state(data):
    body = client_for().get("/notifications/api/").json()
    assert [r["title"] for r in body["results"]] == ["all"]
    assert "read" not in body["results"][0]
    assert body["unread_count"] == 0


def test_anonymous_list_refused_when_not_public(settings, data):
    settings.NOTIFICATIONS_PUBLIC = False
    response = client_for().get("/notifications/api/")
    assert response.status_code == 403 and "error" in response.json()


def test_mark_read_updates_count_and_is_per_user(alice, bob, data):
    client = client_for(alice)
    response = client.post(f"/notifications/api/{data['everyone'].id}/read/")
    assert response.status_code == 200
    assert response.json() == {"id": data["everyone"].id, "read": True, "unread_count": 2}
    assert client.get("/notifications/api/").json()["unread_count"] == 2
    assert client_for(bob).get("/notifications/api/").json()["unread_count"] == 2  # bob: all + his own
    # twice is fine
    assert client.post(f"/notifications/api/{data['everyone'].id}/read/").json()["unread_count"] == 2


@pytest.mark.parametrize("target", ["bob", "missing"])
def test_mark_read_of_someone_elses_or_missing_is_the_same_404(alice, data, target):
    pk = data["bob"].id if target == "bob" else 999999
    response = client_for(alice).post(f"/notifications/api/{pk}/read/")
    assert response.status_code == 404
    assert response.json() == {"error": "No such notification."}
    assert not ReadMark.objects.exists()


def test_group_notification_not_visible_to_non_member(bob, data):
    client = client_for(bob)
    assert client.post(f"/notifications/api/{data['group'].id}/read/").status_code == 404
    ids = [r["id"] for r in client.get("/notifications/api/").json()["results"]]
    assert data["group"].id not in ids


def test_mark_all_read(alice, data):
    client = client_for(alice)
    assert client.post("/notifications/api/read-all/").json() == {"read": "all", "unread_count": 0}
    assert ReadMark.objects.filter(user=alice).count() == 3
    assert all(r["read"] for r in client.get("/notifications/api/").json()["results"])


def test_anonymous_cannot_mark_read(data):
    assert client_for().post(f"/notifications/api/{data['everyone'].id}/read/").status_code == 403
    assert client_for().post("/notifications/api/read-all/").status_code == 403


def test_get_never_changes_state(alice, data):
    client = client_for(alice)
    assert client.get(f"/notifications/api/{data['everyone'].id}/read/").status_code == 405
    assert client.get("/notifications/api/read-all/").status_code == 405
    assert not ReadMark.objects.exists()


def test_mark_read_without_csrf_is_403_json(alice, data):
    client = client_for(alice, csrf=True)
    response = client.post(f"/notifications/api/{data['everyone'].id}/read/")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]
    assert not ReadMark.objects.exists()


def test_mark_read_with_csrf_header_works(alice, data):
    client, token = csrf_client(alice)
    response = client.post(f"/notifications/api/{data['everyone'].id}/read/", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200


def test_html_form_mark_read_redirects_back(alice, data):
    response = client_for(alice).post(f"/notifications/api/{data['alice'].id}/read/", {"next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert ReadMark.objects.filter(user=alice, notification=data["alice"]).exists()


def test_html_form_refuses_offsite_next(alice, data):
    response = client_for(alice).post("/notifications/api/read-all/", {"next": "https://evil.example/"})
    assert response["Location"] == "/"


def post_json(client, payload, **extra):
    body = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
    return client.post("/notifications/api/", body, content_type="application/json", **extra)


def test_staff_create_201(staff, alice):
    response = post_json(client_for(staff), {"title": "Hi", "body": "b", "level": "error", "recipient": "alice"})
    assert response.status_code == 201
    body = response.json()
    assert body["title"] == "Hi" and body["level"] == "error" and body["audience"] == "user"
    assert Notification.objects.get(pk=body["id"]).recipient == alice


def test_staff_create_needs_csrf(staff):
    client, token = csrf_client(staff)
    assert post_json(client, {"title": "x"}).status_code == 403
    assert post_json(client, {"title": "x"}, HTTP_X_CSRFTOKEN=token).status_code == 201


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ("{not json", "JSON"),
        ("[1, 2]", "object"),
        ({"title": ""}, "title"),
        ({"title": "x", "level": "loud"}, "level"),
        ({"title": "x", "recipient": "alice", "group": "oncall"}, "not both"),
        ({"title": "x", "recipient": "nobody"}, "nobody"),
        ({"title": "x", "colour": "red"}, "colour"),
        ({"title": 5}, "string"),
    ],
)
def test_create_bad_input_is_400_and_stores_nothing(staff, alice, payload, fragment):
    response = post_json(client_for(staff), payload)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert not Notification.objects.exists()


def test_non_staff_create_is_403(alice):
    response = post_json(client_for(alice), {"title": "x"})
    assert response.status_code == 403 and "error" in response.json()
    assert post_json(client_for(), {"title": "x"}).status_code == 403
    assert not Notification.objects.exists()


def test_page_renders_visible_items_as_text(alice, bob):
    Notification.objects.create(title="<script>alert(1)</script>", body="<img src=x onerror=alert(1)>")
    Notification.objects.create(title="bob secret", recipient=bob)
    html = client_for(alice).get("/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "bob secret" not in html
    assert "Signed in as" in html and "alice" in html


def test_page_carries_last_event_id_of_newest_rendered():
    newest = [Notification.objects.create(title=f"n{i}") for i in range(3)][-1]
    html = Client().get("/").content.decode()
    assert f'data-last-event-id="{newest.id}"' in html


def test_page_cursor_covers_notifications_it_may_not_see(alice, bob):
    """Nothing visible rendered still gives a cursor, so the stream misses nothing after it."""
    hidden = Notification.objects.create(title="bob only", recipient=bob)
    html = client_for(alice).get("/").content.decode()
    assert f'data-last-event-id="{hidden.id}"' in html
