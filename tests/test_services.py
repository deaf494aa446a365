"""notify(): validation, commit order lock, delivery only after commit."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from notifications import services
from notifications.models import Notification

pytestmark = pytest.mark.django_db


def test_notify_publishes_once_after_commit(django_capture_on_commit_callbacks, published):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        n = services.notify("Hello", body="b", level="success")
    assert len(callbacks) == 1
    assert [m["id"] for m in published] == [n.id]
    message = published[0]
    assert message["type"] == services.EVENT_TYPE and message["audience"] == "everyone"
    assert message["user_frame"].startswith(f"id: {n.id}\nevent: notification\ndata: ".encode())
    assert b'"read":false' in message["user_frame"]
    assert b'"read"' not in message["anon_frame"]


def test_rolled_back_notify_publishes_nothing(django_capture_on_commit_callbacks, published):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                services.notify("never")
                raise RuntimeError
        except RuntimeError:
            pass
    assert callbacks == []
    assert published == []
    assert not Notification.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "ok", "level": "loud"}, "level"),
        ({"title": "ok", "url": "javascript:alert(1)"}, "url"),
        ({"title": "ok", "url": "//evil.example/x"}, "url"),
        ({"title": "ok\ud800"}, "title"),
        ({"title": "ok", "recipient": "nobody"}, "recipient"),
        ({"title": "ok", "group": "nogroup"}, "group"),
    ],
)
def test_bad_input_raises_and_stores_nothing(kwargs, field, published):
    title = kwargs.pop("title")
    with pytest.raises(ValidationError) as info:
        services.notify(title, **kwargs)
    assert field in info.value.message_dict
    assert not Notification.objects.exists()
    assert published == []


def test_both_audiences_is_a_validation_error(alice, group, published):
    with pytest.raises(ValidationError, match="not both"):
        services.notify("x", recipient=alice, group=group)
    assert not Notification.objects.exists()


def test_recipient_and_group_by_name(alice, group, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        to_user = services.notify("u", recipient="alice")
        to_group = services.notify("g", group="oncall")
    assert to_user.recipient == alice and to_user.audience == "user"
    assert to_group.group == group and to_group.audience == "group"
    assert [(m["audience"], m["target"]) for m in published] == [("user", alice.pk), ("group", group.pk)]
