"""notify(): validation, commit order lock, delivery only after commit."""

from __future__ import annotations

import asyncio

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


@pytest.fixture
async def events_channel(settings):
    """A channel in the events group of a fresh in-memory layer: what every hub would receive."""
    from channels.layers import channel_layers, get_channel_layer

    channel_layers.backends.pop("default", None)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(services.EVENTS_GROUP, channel)
    yield layer, channel
    await layer.flush()
    channel_layers.backends.pop("default", None)


@pytest.mark.django_db(transaction=True)
async def test_anotify_stores_then_publishes_from_the_loop(events_channel, published, alice):
    layer, channel = events_channel
    n = await services.anotify("Export ready", recipient="alice", category="exports", progress=100)
    assert [m for m in published if m["type"] == services.EVENT_TYPE] == []  # not the sync publish's hop
    message = await asyncio.wait_for(layer.receive(channel), 2)
    assert message["type"] == services.EVENT_TYPE and message["id"] == n.id
    assert message["audience"] == "user" and message["target"] == alice.pk
    stored = await Notification.objects.aget(pk=n.id)
    assert (stored.title, stored.category, stored.progress, stored.recipient_id) == (
        "Export ready", "exports", 100, alice.pk)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kwargs", [{"title": ""}, {"title": "ok", "recipient": "nobody"},
                                    {"title": "ok", "progress": 101}])
async def test_anotify_bad_input_raises_and_stores_and_publishes_nothing(events_channel, kwargs):
    layer, channel = events_channel
    title = kwargs.pop("title")
    with pytest.raises(ValidationError):
        await services.anotify(title, **kwargs)
    assert not await Notification.objects.aexists()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.2)


@pytest.mark.django_db(transaction=True)
async def test_anotify_without_a_channel_layer_still_stores(settings, caplog):
    settings.CHANNEL_LAYERS = {}
    from channels.layers import channel_layers

    channel_layers.backends.pop("default", None)
    n = await services.anotify("stored anyway")
    assert await Notification.objects.filter(pk=n.id).aexists()
    assert "not delivered live" in caplog.text
    channel_layers.backends.pop("default", None)
