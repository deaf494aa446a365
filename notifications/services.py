"""The only writers of notifications and read state: store, then publish after commit.

Everything that sends (admin, JSON API, ``manage.py notify``) calls :func:`notify`. Delivery
goes through the channel layer, once per event, to one group that every process's hub joins
(see ``hub``); each message (``events.Event``) carries the id, the audience and the pre-encoded
SSE frames.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

from . import events
from .events import EVENT_TYPE, EVENTS_GROUP, READ_TYPE, dumps, notification_frame  # noqa: F401  (re-exported)
from .models import Level, Notification, ReadMark, StreamState, Viewer

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

def event_message(notification: Notification) -> dict[str, Any]:
    """The channel-layer message for a new notification: frames encoded once, here."""
    return events.Event.of(notification).to_message()


def lock_sequence() -> None:
    """Serialise writers until commit, so ids are handed out in commit order.

    A PostgreSQL sequence value is taken at insert, not at commit: without this a reader of
    ``id > cursor`` could pass over a row that commits late. SQLite allows one writer at a time
    already (``select_for_update`` is a no-op there).
    """
    StreamState.objects.select_for_update().get_or_create(pk=1)


def notify(
    title: str,
    *,
    body: str = "",
    level: str = Level.INFO,
    url: str = "",
    recipient: AbstractBaseUser | str | None = None,
    group: Group | str | None = None,
) -> Notification:
    """Store a notification and deliver it to every open stream that may see it, once.

    ``recipient`` (a user or a username) and ``group`` (a Group or a name) are exclusive;
    neither means everyone. Raises ``ValidationError`` (nothing stored) for bad input.
    Delivery happens after the surrounding transaction commits; a rollback sends nothing.
    """
    notification = Notification(
        title=title,
        body=body,
        level=level,
        url=url,
        recipient=_resolve_user(recipient),
        group=_resolve_group(group),
    )
    return send(notification)


def send(notification: Notification) -> Notification:
    """Validate, store an unsaved notification and publish it after commit (see ``notify``).

    Runs ``full_clean()`` (the link rule, text and size limits of ``Notification.clean()``)
    whoever built the instance, so nothing reaches the table or a stream unchecked; raises
    ``ValidationError`` with nothing stored.
    """
    if notification.pk is not None:
        raise ValueError("send() stores new notifications; this one is saved already.")
    notification.full_clean()
    with transaction.atomic():
        lock_sequence()
        notification.save(force_insert=True)
        transaction.on_commit(lambda: publish(event_message(notification)))
    return notification


def _resolve_user(value: AbstractBaseUser | str | None) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        User = get_user_model()
        try:
            return User._default_manager.get_by_natural_key(value)
        except User.DoesNotExist:
            raise ValidationError({"recipient": [f"No user is called {value!r}."]}) from None
    return value


def _resolve_group(value: Group | str | None) -> Group | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return Group.objects.get(name=value)
        except Group.DoesNotExist:
            raise ValidationError({"group": [f"No group is called {value!r}."]}) from None
    return value


def publish(message: dict[str, Any]) -> None:
    """Send one message to every process's hub. Never raises: the row is stored already.

    If the layer is down or drops the message, hubs find the gap and read the row from the
    database (``hub.Hub``), so a failure here delays delivery but loses nothing.
    """
    layer = get_channel_layer()
    if layer is None:
        logger.warning("No channel layer configured: notification %s not delivered live.", message.get("id"))
        return
    try:
        async_to_sync(layer.group_send)(EVENTS_GROUP, message)
    except Exception:
        logger.exception(
            "Publishing %s %s failed; streams will catch up from the database.", message["type"], message.get("id")
        )


def unread_count(viewer: Viewer) -> int:
    """Visible notifications the viewer has not read: one query (0 for anonymous viewers)."""
    if viewer.user_id is None:
        return 0
    return Notification.objects.unread_by(viewer).count()


def mark_read(viewer: Viewer, ids: list[int] | None) -> int:
    """Mark notifications read for a signed-in viewer: ``ids``, or every visible one if None.

    Ids the viewer may not see are ignored (callers check visibility first for a 404). Every
    open stream of that user gets ``event: read`` after commit. Returns the new unread count.
    """
    if viewer.user_id is None:
        raise ValueError("Anonymous viewers have no read state.")
    user_id = viewer.user_id
    with transaction.atomic():
        unread = Notification.objects.unread_by(viewer)
        if ids is not None:
            unread = unread.filter(pk__in=ids)
        new_ids = list(unread.values_list("pk", flat=True))
        ReadMark.objects.bulk_create(
            [ReadMark(user_id=user_id, notification_id=pk) for pk in new_ids],
            ignore_conflicts=True,
            batch_size=1000,
        )
        count = unread_count(viewer)
        message = events.ReadEvent(user_id, events.read_frame(ids, count)).to_message()
        transaction.on_commit(lambda: publish(message))
    return count
