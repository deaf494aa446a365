"""Identity changes Django reports, sent to every process's hub so that open streams follow them.

A stream captures who is looking (``models.Viewer``) when it opens and may stay open for an
hour. When Django says that a user signed out, was made inactive or deleted, changed their
password, or joined or left a group, this module publishes one channel-layer message after
the change commits; every process's hub then ends or re-scopes that user's open streams
(``Hub.apply_identity``; the message is ``events.IdentityChange``). What Django does not signal (a raw SQL ``UPDATE``, a
``QuerySet.update()``) is not seen here: such a change reaches a stream when it next
reconnects, at the latest after ``NOTIFICATIONS_MAX_AGE``.

Group changes carry ``after``: the newest notification id committed before the change, read
while holding the writers' sequence lock (``services.lock_sequence``). Every id up to it was
decided under the old membership correctly; a hub that already handed a stream ids above it
under the old membership checks whether one of them belonged to a group just joined, and if
so tells the stream to ``reset`` (reload its list) instead of letting it pass a notice it was
not allowed to decide on.

Session keys and password hashes never travel: messages carry a keyed digest of them.
Imports nothing from the hub or the consumer.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model, user_logged_out
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from .digests import auth_digest, digest
from .events import IdentityChange

if TYPE_CHECKING:
    pass

#: Fields of the user model whose change can make a session invalid or the user unable to sign in.
AUTH_FIELDS = frozenset({"password", "is_active"})
_DISPATCH_UID = "notifications.identity"


def _publish_on_commit(change: IdentityChange) -> None:
    from .services import publish  # not at import time: apps.ready() imports this module

    message = change.to_message()
    transaction.on_commit(lambda: publish(message))


def _on_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """The site's logout: end the streams of that session (Django flushes it right after this signal)."""
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if user is None or user.pk is None or not key:
        return
    _publish_on_commit(IdentityChange(user_id=user.pk, end_session=digest(key)))


def _on_user_saved(sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any) -> None:
    """Made inactive → end every stream; password changed → end streams of sessions it invalidated."""
    if created or instance.pk is None:
        return
    if update_fields is not None and not AUTH_FIELDS & set(update_fields):
        return  # e.g. login's last_login update
    if not getattr(instance, "is_active", True):
        _publish_on_commit(IdentityChange(user_id=instance.pk, end_all=True))
        return
    auth = auth_digest(instance)
    if auth is not None:
        _publish_on_commit(IdentityChange(user_id=instance.pk, auth=auth))


def _on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.pk is not None:
        _publish_on_commit(IdentityChange(user_id=instance.pk, end_all=True))


def _on_groups_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[Any] | None, **kwargs: Any
) -> None:
    """A user's groups changed (``user.groups.add()``, the admin's user form, ``group.user_set.remove()``…)."""
    if action == "pre_clear" and reverse:
        # group.user_set.clear(): remember who was in it, since post_clear gets no pk_set.
        instance._notifications_cleared = list(sender.objects.filter(group_id=instance.pk).values_list(
            "user_id", flat=True
        ))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if not reverse:
        user_ids = [instance.pk]
    elif action == "post_clear":
        user_ids = getattr(instance, "_notifications_cleared", [])
    else:
        user_ids = sorted(pk_set or ())
    if not user_ids:
        return
    from .models import Notification
    from .services import lock_sequence

    with transaction.atomic():
        # Holding the writers' lock: ids up to ``after`` committed before this change, later
        # ones commit after it (they wait for this transaction).
        lock_sequence()
        after = Notification.objects.newest_id()
        groups: dict[Any, set[int]] = defaultdict(set)
        for user_id, group_id in sender.objects.filter(user_id__in=user_ids).values_list("user_id", "group_id"):
            groups[user_id].add(group_id)
    pairs = tuple((user_id, frozenset(groups.get(user_id, ()))) for user_id in user_ids)
    _publish_on_commit(IdentityChange(groups=pairs, after=after))


def connect() -> None:
    """Connect the receivers (``NotificationsConfig.ready``); a user model without groups gets no group receiver."""
    User = get_user_model()
    user_logged_out.connect(_on_logged_out, dispatch_uid=_DISPATCH_UID)
    post_save.connect(_on_user_saved, sender=User, dispatch_uid=_DISPATCH_UID)
    post_delete.connect(_on_user_deleted, sender=User, dispatch_uid=_DISPATCH_UID)
    groups = getattr(User, "groups", None)
    through = getattr(getattr(groups, "rel", None), "through", None)
    if through is not None:
        m2m_changed.connect(_on_groups_changed, sender=through, dispatch_uid=_DISPATCH_UID)
