"""visible_to(): the only audience filter; payload format."""

from __future__ import annotations

import datetime as dt

import pytest

from notifications.models import Notification, ReadMark, Viewer

pytestmark = pytest.mark.django_db


def test_visible_to_by_audience(alice, bob, group):
    everyone = Notification.objects.create(title="all")
    to_group = Notification.objects.create(title="g", group=group)
    to_alice = Notification.objects.create(title="a", recipient=alice)
    to_bob = Notification.objects.create(title="b", recipient=bob)
    assert set(Notification.objects.visible_to(None)) == {everyone}
    assert set(Notification.objects.visible_to(alice)) == {everyone, to_group, to_alice}
    assert set(Notification.objects.visible_to(bob)) == {everyone, to_bob}
    assert set(Notification.objects.visible_to(Viewer.of(alice))) == {everyone, to_group, to_alice}


def test_viewer_may_see_matches_queryset(alice, bob, group):
    viewer = Viewer.of(alice)
    assert viewer.may_see("everyone", None)
    assert viewer.may_see("group", group.pk)
    assert viewer.may_see("user", alice.pk)
    assert not viewer.may_see("user", bob.pk)
    assert not Viewer().may_see("group", group.pk)


def test_read_state_is_per_user(alice, bob):
    n = Notification.objects.create(title="all")
    ReadMark.objects.create(user=alice, notification=n)
    assert Notification.objects.with_read(Viewer.of(alice)).get().is_read is True
    assert Notification.objects.with_read(Viewer.of(bob)).get().is_read is False


def test_payload_is_utc_iso_with_audience():
    n = Notification(id=5, title="t", created_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert n.payload(read=None) == {
        "id": 5, "title": "t", "body": "", "level": "info", "url": "",
        "created_at": "2026-01-02T03:04:05Z", "audience": "everyone",
        "category": "", "data": {}, "expires_at": None, "progress": None, "updated_at": None,
    }
    assert n.payload(read=True)["read"] is True
