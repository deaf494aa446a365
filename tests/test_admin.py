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


def test_admin_edit_does_not_resend(admin_client, published, django_capture_on_commit_callbacks):
    n = Notification.objects.create(title="old")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/notifications/notification/{n.id}/change/", form(title="new"))
    n.refresh_from_db()
    assert n.title == "old"  # a sent notice is read-only
    assert published == []


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
