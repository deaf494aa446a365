"""The only writers of notifications and read state: store, then publish after commit.

Everything that sends (admin, JSON API, ``manage.py notify``) calls :func:`notify`. Delivery
goes through the channel layer, once per event, to one group that every process's hub joins
(see ``fanout``); each message carries the id, the audience and the pre-encoded SSE frames.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

from . import sse
from .models import Level, Notification, ReadMark, StreamState, Viewer

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

#: The channel-layer group every process's hub joins; every event goes to it once.
EVENTS_GROUP = "notifications.events"
EVENT_TYPE = "notifications.event"
READ_TYPE = "notifications.read"


def dumps(data: Any) -> str:
    """Compact JSON on one line (the SSE encoder would split any line break anyway)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def notification_frame(notification: Notification, *, read: bool | None) -> bytes:
    return sse.encode_event(dumps(notification.payload(read=read)), event="notification", id=notification.id)


def reset_frame(reason: str, cursor: int) -> bytes:
    """``event: reset``: the client reloads its list from the API; ``id`` moves its cursor."""
    return sse.encode_event(dumps({"reason": reason, "cursor": cursor}), event="reset", id=cursor)


def event_message(notification: Notification) -> dict[str, Any]:
    """The channel-layer message for a new notification: frames encoded once, here."""
    return {
        "type": EVENT_TYPE,
        "id": notification.id,
        "audience": notification.audience,
        "target": notification.audience_target,
        # A new notification is unread for every signed-in viewer; anonymous viewers get no
        # ``read`` key at all.
        "user_frame": notification_frame(notification, read=False),
        "anon_frame": notification_frame(notification, read=None),
        # For a replay from a hub's memory to someone who has read it meanwhile.
        "read_frame": notification_frame(notification, read=True),
    }


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
    notification.full_clean()
    return send(notification)


def send(notification: Notification) -> Notification:
    """Store an unsaved, validated notification and publish it after commit (see ``notify``)."""
    if notification.pk is not None:
        raise ValueError("send() stores new notifications; this one is saved already.")
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
    database (``fanout.Hub``), so a failure here delays delivery but loses nothing.
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
        data = {"ids": sorted(ids) if ids is not None else "all", "unread_count": count}
        frame = sse.encode_event(dumps(data), event="read")
        transaction.on_commit(lambda: publish({"type": READ_TYPE, "user_id": user_id, "frame": frame}))
    return count
