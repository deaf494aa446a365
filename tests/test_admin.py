"""The admin: adding sends once after commit; exclusive audiences; list columns and filters."""

from __future__ import annotations

import pytest
from django.test import Client

from notifications.models import Notification, ReadMark

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(staff):
    client = Client()
    client.force_login(staff)
    return client


def form(**fields):
    return {"title": "", "body": "", "level": "info", "url": "", "recipient": "", "group": "", **fields}


def test_admin_add_sends_once_after_commit(admin_client, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post("/admin/notifications/notification/add/", form(title="Deploy", level="warning"))
    assert response.status_code == 302
    n = Notification.objects.get()
    assert len(callbacks) == 1
    assert [m["id"] for m in published] == [n.id]


def test_admin_edit_updates_once_after_commit(admin_client, published, django_capture_on_commit_callbacks):
    n = Notification.objects.create(title="old")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(f"/admin/notifications/notification/{n.id}/change/",
                                     {"title": "new", "body": "", "level": "warning", "url": "", "progress": "40",
                                      "data": "{}"})
    assert response.status_code == 302, response.content.decode()[:2000]
    n.refresh_from_db()
    assert (n.title, n.level, n.progress) == ("new", "warning", 40)
    assert n.last_event is not None and n.last_event > n.id and n.updated_at is not None
    assert len(callbacks) == 1
    assert [(m.get("kind"), m["id"], m["notice"]) for m in published] == [("update", n.last_event, n.id)]


def test_admin_edit_rejects_progress_out_of_range_and_changes_nothing(admin_client, published):
    n = Notification.objects.create(title="old")
    response = admin_client.post(f"/admin/notifications/notification/{n.id}/change/",
                                 {"title": "new", "body": "", "level": "info", "url": "", "progress": "101",
                                  "data": "{}"})
    assert response.status_code == 200
    assert "less than or equal to 100" in response.content.decode()
    n.refresh_from_db()
    assert (n.title, n.last_event) == ("old", None)
    assert published == []


def test_admin_delete_retracts(admin_client, published, django_capture_on_commit_callbacks):
    n = Notification.objects.create(title="oops")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/notifications/notification/{n.id}/delete/", {"post": "yes"})
    assert response.status_code == 302
    n.refresh_from_db()  # a tombstone: kept for replay, gone from the admin and every list
    assert n.retracted_at is not None
    assert [(m.get("kind"), m["notice"]) for m in published] == [("retract", n.id)]
    assert ">oops</a>" not in admin_client.get("/admin/notifications/notification/").content.decode()


def test_admin_bulk_delete_retracts_each(admin_client, published, django_capture_on_commit_callbacks):
    a, b = Notification.objects.create(title="a"), Notification.objects.create(title="b")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/admin/notifications/notification/",
                          {"action": "delete_selected", "_selected_action": [a.id, b.id], "post": "yes"})
    assert Notification.objects.filter(retracted_at__isnull=False).count() == 2
    assert [m["notice"] for m in published] == [a.id, b.id]


def test_admin_rejects_both_audiences(admin_client, alice, group, published):
    response = admin_client.post(
        "/admin/notifications/notification/add/", form(title="x", recipient=alice.pk, group=group.pk)
    )
    assert response.status_code == 200
    assert "one user or one group, not both" in response.content.decode()
    assert not Notification.objects.exists()
    assert published == []


def test_change_list_shows_columns_and_read_count(admin_client, alice, bob, group):
    n = Notification.objects.create(title="Maintenance", level="warning", group=group)
    ReadMark.objects.create(user=alice, notification=n)
    ReadMark.objects.create(user=bob, notification=n)
    html = admin_client.get("/admin/notifications/notification/").content.decode()
    assert "Maintenance" in html and "group: oncall" in html
    assert "read by" in html.lower()
    assert '<td class="field-read_by">2</td>' in html


@pytest.mark.parametrize(("audience", "expected"), [("everyone", {"all"}), ("group", {"g"}), ("user", {"u"})])
def test_audience_filter(admin_client, alice, group, audience, expected):
    Notification.objects.create(title="all")
    Notification.objects.create(title="g", group=group)
    Notification.objects.create(title="u", recipient=alice)
    html = admin_client.get(f"/admin/notifications/notification/?audience={audience}").content.decode()
    shown = {t for t in ("all", "g", "u") if f">{t}</a>" in html}
    assert shown == expected


def test_level_filter(admin_client):
    Notification.objects.create(title="bad", level="error")
    Notification.objects.create(title="fine", level="info")
    html = admin_client.get("/admin/notifications/notification/?level__exact=error").content.decode()
    assert ">bad</a>" in html and ">fine</a>" not in html
