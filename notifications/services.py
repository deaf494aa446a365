"""The only writers of notifications and read state: store, then publish after commit.

Everything that sends (admin, JSON API, ``manage.py notify``) calls :func:`notify`. Delivery
goes through the channel layer, once per event, to one group that every process's hub joins
(see ``hub``); each message (``events.Event``) carries the id, the audience and the pre-encoded
SSE frames.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import events
from .events import EVENT_TYPE, EVENTS_GROUP, READ_TYPE, dumps, notification_frame  # noqa: F401  (re-exported)
from .models import Archive, Level, Notification, Preference, ReadMark, StreamState, Viewer

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

#: The most categories one user may mute (a bound on what each stream's Viewer carries).
MAX_MUTED = 200

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
    category: str = "",
    data: dict[str, Any] | None = None,
    expires_at: dt.datetime | str | float | None = None,
) -> Notification:
    """Store a notification and deliver it to every open stream that may see it, once.

    ``recipient`` (a user or a username) and ``group`` (a Group or a name) are exclusive;
    neither means everyone. ``category`` (a slug), ``data`` (a JSON object, ≤ 8 KiB) and
    ``expires_at`` (a datetime, ISO 8601 text or seconds from now; see ``parse_expiry``)
    are SPEC §13. Raises ``ValidationError`` (nothing stored) for bad input.
    Delivery happens after the surrounding transaction commits; a rollback sends nothing.
    """
    notification = Notification(
        title=title,
        body=body,
        level=level,
        url=url,
        recipient=_resolve_user(recipient),
        group=_resolve_group(group),
        category=category,
        data={} if data is None else data,
        expires_at=parse_expiry(expires_at),
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
        if ids is None:  # "all": what the inbox counts
            unread = Notification.objects.unread_by(viewer)
        else:  # archived, muted or expired ones too, when named
            unread = Notification.objects.visible_to(viewer).with_read(viewer).filter(  # type: ignore[misc]
                is_read=False, pk__in=ids
            )
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


def mark_unread(viewer: Viewer, ids: list[int]) -> int:
    """Mark notifications unread again for a signed-in viewer (SPEC §13); returns the new unread count.

    Every open stream of that user gets ``event: read`` with ``"read": false`` after commit.
    """
    user_id = _signed_in(viewer)
    with transaction.atomic():
        ReadMark.objects.filter(user_id=user_id, notification_id__in=ids).delete()
        count = unread_count(viewer)
        message = events.ReadEvent(user_id, events.read_frame(ids, count, read=False)).to_message()
        transaction.on_commit(lambda: publish(message))
    return count


def archive(viewer: Viewer, ids: list[int], archived: bool = True) -> int:
    """Archive (or, ``archived=False``, unarchive) notifications for a signed-in viewer (SPEC §13).

    Callers check visibility first (a 404). Every open stream of that user gets
    ``event: archive`` after commit (through the per-user path ``read`` takes). Returns the
    new unread count.
    """
    user_id = _signed_in(viewer)
    with transaction.atomic():
        if archived:
            Archive.objects.bulk_create(
                [Archive(user_id=user_id, notification_id=pk) for pk in ids], ignore_conflicts=True, batch_size=1000
            )
        else:
            Archive.objects.filter(user_id=user_id, notification_id__in=ids).delete()
        count = unread_count(viewer)
        message = events.ReadEvent(user_id, events.archive_frame(ids, archived, count)).to_message()
        transaction.on_commit(lambda: publish(message))
    return count


def preferences(viewer: Viewer) -> dict[str, Any]:
    """A signed-in viewer's preferences as the API shows them: ``{"muted": [...]}`` (sorted)."""
    user_id = _signed_in(viewer)
    muted = Preference.objects.filter(user_id=user_id).values_list("muted", flat=True).first() or []
    return {"muted": sorted(muted)}


def set_preferences(viewer: Viewer, *, muted: list[str]) -> dict[str, Any]:
    """Replace a signed-in viewer's muted categories; open streams of theirs follow at once.

    ``muted`` must be a list of category slugs (``ValidationError`` otherwise, nothing stored).
    Every process's hub re-scopes that user's open streams after commit (``PreferenceChange``).
    """
    user_id = _signed_in(viewer)
    if not isinstance(muted, list) or not all(isinstance(c, str) for c in muted):
        raise ValidationError({"muted": [f"muted must be a list of category slugs, got {muted!r:.80}."]})
    field = Notification._meta.get_field("category")
    problems = []
    for category in muted:
        try:
            field.run_validators(category)
            if not category:
                raise ValidationError("empty")
        except ValidationError:
            problems.append(category)
    if problems:
        raise ValidationError({"muted": [f"Not a category slug (≤ 50 letters, digits, - or _): {problems[0]!r:.80}."]})
    if len(muted) > MAX_MUTED:
        raise ValidationError({"muted": [f"At most {MAX_MUTED} categories may be muted, got {len(muted)}."]})
    chosen = sorted(set(muted))
    with transaction.atomic():
        Preference.objects.update_or_create(user_id=user_id, defaults={"muted": chosen})
        message = events.PreferenceChange(user_id, frozenset(chosen)).to_message()
        # The unread count changes with what is muted: open pages' badges follow at once
        # (``event: read`` naming no ids only carries the new count).
        count = unread_count(dataclasses.replace(viewer, muted=frozenset(chosen)))
        count_message = events.ReadEvent(user_id, events.read_frame([], count)).to_message()
        transaction.on_commit(lambda: publish(message))
        transaction.on_commit(lambda: publish(count_message))
    return {"muted": chosen}


def _signed_in(viewer: Viewer) -> int:
    if viewer.user_id is None:
        raise ValueError("Anonymous viewers have no inbox state.")
    return viewer.user_id


def parse_expiry(value: dt.datetime | str | float | None, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """An expiry as senders give it: a datetime, ISO 8601 text, or seconds from now (a number,
    or text of one). ``ValidationError`` for anything else; a time without a zone is in the
    current time zone. Whether it lies in the future is ``Notification.clean()``'s rule."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                moment = parse_datetime(text)
            except ValueError:
                moment = None
            if moment is None:
                raise ValidationError(
                    {"expires_at": [f"The expiry must be ISO 8601 or seconds from now, got {text!r:.80}."]}
                ) from None
            value = moment
    if isinstance(value, dt.datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e10:  # NaN fails too
        return (now or timezone.now()) + dt.timedelta(seconds=float(value))
    raise ValidationError({"expires_at": [f"The expiry must be ISO 8601 or seconds from now, got {value!r:.80}."]})
