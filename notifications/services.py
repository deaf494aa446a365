"""The only writers of notifications and read state: store, then publish after commit.

Everything that sends (admin, JSON API, ``manage.py notify``) calls :func:`notify` (one notice)
or :func:`notify_many` (one notice per recipient, SPEC §15). Delivery goes through the channel
layer to one group that every process's hub joins (see ``hub``); each message (``events.Event``,
or ``events.EventBatch`` for many) carries ids, audiences and the pre-encoded SSE frames.

Ids follow commit order: every writer holds the sequence lock (``lock_sequence``) from taking
its id until it commits. On PostgreSQL that is a transaction-level advisory lock, and a single
``notify()`` outside a transaction takes lock, id and row in one autocommitted ``INSERT``
(``ordered_id``): one round trip instead of four (docs/deployment.md, "Writes").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.utils import timezone

from . import events
from .events import EVENT_TYPE, EVENTS_GROUP, READ_TYPE, dumps, notification_frame  # noqa: F401  (re-exported)
from .models import Level, Notification, ReadMark, StreamState, Viewer

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

def event_message(notification: Notification) -> dict[str, Any]:
    """The channel-layer message for a new notification: frames encoded once, here."""
    return events.Event.of(notification).to_message()


#: The PostgreSQL advisory lock (``pg_advisory_xact_lock``) every writer holds from taking its
#: id until it commits ("noti" in ASCII). Advisory locks are per database.
SEQUENCE_LOCK_KEY = 0x6E6F7469
#: Most events in one ``events.EventBatch`` message, and most bytes of frames in one: a bulk
#: send of 10,000 is 10 messages, each well under what Redis and msgpack handle in one piece.
BATCH_MAX_EVENTS = 1000
BATCH_MAX_BYTES = 1 << 20
#: Seconds a publish from outside a server may take before it is given up (the rows are the truth).
PUBLISH_TIMEOUT = 10.0


def lock_sequence() -> None:
    """Serialise writers until commit, so ids are handed out in commit order.

    A PostgreSQL sequence value is taken at insert, not at commit: without this a reader of
    ``id > cursor`` could pass over a row that commits late. On PostgreSQL the lock is the
    advisory lock ``SEQUENCE_LOCK_KEY`` (what ``ordered_id`` takes inside the INSERT); the
    ``StreamState`` row is also made sure of and locked, for ``prune_notifications``. SQLite
    allows one writer at a time already (``select_for_update`` is a no-op there).
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCE_LOCK_KEY])
    StreamState.objects.select_for_update().get_or_create(pk=1)


def ordered_id() -> Any:
    """On PostgreSQL, an id for an INSERT that first takes the sequence lock, then ``nextval``.

    Lock, id and row in one statement: in autocommit it is also the commit, so a lone
    ``notify()`` is one round trip. ``OFFSET 0`` keeps the lock's subquery from being folded
    into the outer select, so the lock is held before the sequence moves. None elsewhere
    (the caller takes ``lock_sequence()`` in a transaction instead). One expression per
    process, made once: building a ``RawSQL`` and its output field per call, and Django
    copying it, cost ~40 µs of Python per ``notify()``.
    """
    if connection.vendor != "postgresql":
        return None
    global _the_ordered_id
    if _the_ordered_id is None:
        meta = Notification._meta
        _the_ordered_id = _OrderedId(
            "(SELECT nextval(pg_get_serial_sequence(%s, %s))"
            " FROM (SELECT pg_advisory_xact_lock(%s) OFFSET 0) AS locked)",
            (connection.ops.quote_name(meta.db_table), meta.pk.column, SEQUENCE_LOCK_KEY),
        )
    return _the_ordered_id


class _OrderedId(models.Expression):
    """``ordered_id``'s SQL as a constant expression: nothing to resolve, shared and never changed."""

    def __init__(self, sql: str, params: tuple[Any, ...]) -> None:
        super().__init__(output_field=models.BigIntegerField())
        self.sql, self.params = sql, params

    def resolve_expression(self, *args: Any, **kwargs: Any) -> _OrderedId:
        return self

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, tuple[Any, ...]]:
        return self.sql, self.params


_the_ordered_id: _OrderedId | None = None


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
    # A user or group looked up by name was found just now: no second query for it.
    checked = [name for name, value in (("recipient", recipient), ("group", group)) if isinstance(value, str)]
    _validate(notification, checked=checked)
    return _store(notification)


def send(notification: Notification) -> Notification:
    """Validate, store an unsaved notification and publish it after commit (see ``notify``).

    Runs ``full_clean()`` (the link rule, text and size limits of ``Notification.clean()``)
    whoever built the instance, so nothing reaches the table or a stream unchecked; raises
    ``ValidationError`` with nothing stored.
    """
    if notification.pk is not None:
        raise ValueError("send() stores new notifications; this one is saved already.")
    _validate(notification, checked=())
    return _store(notification)


def _validate(notification: Notification, *, checked: Iterable[str]) -> None:
    """``full_clean()``, less the existence query of the relations in ``checked`` (just looked up)."""
    notification.full_clean(exclude=list(checked), validate_unique=False, validate_constraints=False)


def _store(notification: Notification) -> Notification:
    """Insert in commit order and publish after commit (the caller validated)."""
    if connection.vendor != "postgresql":
        with transaction.atomic():
            lock_sequence()
            notification.save(force_insert=True)
            transaction.on_commit(lambda: publish(event_message(notification)))
        return notification
    notification.id = ordered_id()
    try:
        # No transaction of our own: alone, the INSERT commits; in the caller's atomic block,
        # the lock it took is held until that commits.
        notification.save(force_insert=True)
    except BaseException:
        notification.id = None
        raise
    transaction.on_commit(lambda: publish(event_message(notification)))
    return notification


def notify_many(
    title: str,
    *,
    recipients: Sequence[AbstractBaseUser | str],
    body: str = "",
    level: str = Level.INFO,
    url: str = "",
    **fields: Any,
) -> list[Notification]:
    """One notice per recipient (a user or a username), stored in one transaction (SPEC §15).

    Returned in the order given, with ids in that order and in commit order. All or nothing:
    an unknown user, a duplicate, no recipients, or ``recipient``/``group`` given as well raise
    ``ValidationError`` and store none. Published after commit, in as few channel-layer
    messages as ``BATCH_MAX_EVENTS``/``BATCH_MAX_BYTES`` allow; a rollback sends nothing.
    Other keyword arguments are model fields, the same for every notice.

    Per recipient it costs an id, a tuple and two frames made by splicing the id into frames
    encoded once (``_bulk_events``): on PostgreSQL the ids are drawn under the sequence lock
    and the rows go in as one ``INSERT … SELECT … FROM unnest(…)`` (``_insert_many``).
    """
    for name in ("recipient", "group"):
        if name in fields:
            raise ValidationError({name: [f"Give recipients or {name}, not both."]})
    user_ids, given = _resolve_users(recipients)
    template = Notification(title=title, body=body, level=level, url=url, **fields)
    _validate(template, checked=("recipient", "group"))
    template.created_at = timezone.now()
    with transaction.atomic():
        lock_sequence()
        notifications = _insert_many(template, user_ids)
        transaction.on_commit(lambda: publish_events(_bulk_events(notifications)))
    for notification in notifications:  # users given as instances stay attached (no query to read them)
        user = given.get(notification.recipient_id or 0)
        if user is not None:
            Notification.recipient.field.set_cached_value(notification, user)
    return notifications


def _insert_many(template: Notification, user_ids: list[int]) -> list[Notification]:
    """Rows like ``template``, one per user id, ids increasing in that order; under the lock."""
    meta = Notification._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    if connection.vendor != "postgresql":
        values = [getattr(template, f.attname) for f in meta.concrete_fields]
        rows = [_row(values, meta, None, user_id) for user_id in user_ids]
        Notification.objects.bulk_create(rows, batch_size=1000)
        return rows
    table = connection.ops.quote_name(meta.db_table)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        # Ids first (the lock is held, so they follow commit order), then every row in one statement.
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                       [table, meta.pk.column, len(user_ids)])
        ids = sorted(row[0] for row in cursor.fetchall())
        columns, selects, params = [quote(str(meta.pk.column))], ["u.id"], []
        for f in fields:
            columns.append(quote(str(f.column)))
            if f.attname == "recipient_id":
                selects.append("u.recipient")
            else:
                selects.append(f"CAST(%s AS {f.cast_db_type(connection)})")
                params.append(f.get_db_prep_save(f.pre_save(template, add=True), connection))
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(selects)} "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS u(id, recipient)",
            [*params, ids, user_ids],
        )
    values = [getattr(template, f.attname) for f in meta.concrete_fields]
    return [_row(values, meta, id, user_id) for id, user_id in zip(ids, user_ids, strict=True)]


def _row(values: list[Any], meta: Any, id: int | None, user_id: int) -> Notification:
    """An instance from the template's values with this id and recipient: ``Model.from_db``
    (all fields, positionally: Django's fast path); unsaved while ``id`` is None."""
    row = list(values)
    for index, f in enumerate(meta.concrete_fields):
        if f.primary_key:
            row[index] = id
        elif f.attname == "recipient_id":
            row[index] = user_id
    notification = Notification.from_db(connection.alias, [f.attname for f in meta.concrete_fields], row)
    notification._state.adding = id is None
    return notification


#: A stand-in id spliced out of frames encoded once for a bulk send: the frames of notices that
#: differ only in id and recipient differ only where this number stands (``_bulk_events``).
_ID_MARK = 918_273_645_546_372_819


def _bulk_events(notifications: Sequence[Notification]) -> list[events.Event]:
    """Events for ``notify_many``'s notices (alike but for id and recipient): each frame encoded once.

    The frames of the first notice are encoded with ``_ID_MARK`` as its id and split there;
    each event's frames are the pieces joined by its id. Checked against a real encoding of
    the first notice; anything unexpected (the mark inside the text, another audience) falls
    back to encoding each notice.
    """
    if not notifications:
        return []
    first = notifications[0]
    if first.audience != "user":
        return [events.Event.of(n) for n in notifications]
    real_id = first.id
    try:
        first.id = _ID_MARK
        frames = [notification_frame(first, read=False), notification_frame(first, read=True)]
    finally:
        first.id = real_id
    mark = str(_ID_MARK).encode()
    pieces = [frame.split(mark) for frame in frames]
    if any(len(p) != 3 for p in pieces):
        return [events.Event.of(n) for n in notifications]
    (user_pieces, read_pieces) = pieces
    made = [
        events.Event(n.id, "user", n.recipient_id, frame := str(n.id).encode().join(user_pieces), frame,
                     str(n.id).encode().join(read_pieces))
        for n in notifications
    ]
    if made[0] != events.Event.of(first):
        return [events.Event.of(n) for n in notifications]
    return made


def _resolve_users(recipients: Sequence[AbstractBaseUser | str]) -> tuple[list[int], dict[int, Any]]:
    """User ids for ``recipients`` in the order given (one query for the names), and the users
    given as instances by id; all or nothing."""
    if isinstance(recipients, str) or not isinstance(recipients, Sequence):
        raise ValidationError({"recipients": ["recipients must be a list of users or usernames."]})
    if not recipients:
        raise ValidationError({"recipients": ["Give at least one recipient."]})
    User = get_user_model()
    names = [r for r in recipients if isinstance(r, str)]
    found: dict[str, int] = {}
    if names:
        field = User.USERNAME_FIELD
        found = dict(User._default_manager.filter(**{f"{field}__in": set(names)}).values_list(field, "pk"))
    ids: list[int] = []
    given: dict[int, Any] = {}
    seen: set[int] = set()
    problems = []
    for value in recipients:
        if isinstance(value, str):
            pk = found.get(value)
            if pk is None:
                problems.append(f"No user is called {value!r}.")
                continue
            label = value
        elif isinstance(value, User) and value.pk is not None:
            pk, label = value.pk, value.get_username()
            given[pk] = value
        else:
            problems.append(f"{value!r} is not a saved user or a username.")
            continue
        if pk in seen:
            problems.append(f"{label!r} is listed twice.")
            continue
        seen.add(pk)
        ids.append(pk)
    if problems:
        shown = problems[:10] + ([f"…and {len(problems) - 10} more."] if len(problems) > 10 else [])
        raise ValidationError({"recipients": [" ".join(shown)]})
    return ids, given


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

    In a server's worker thread (a sync view under ``sync_to_async``) it runs on the server's
    event loop, as ``async_to_sync`` does; elsewhere (a shell, a command, a task queue) on the
    calling thread's own long-lived loop (``_thread_loop``), so a burst of sends starts no
    thread, loop or Redis connection per call and hands nothing to another thread.
    """
    publish_many([message])


def publish_many(messages: Sequence[dict[str, Any]]) -> None:
    """``publish`` each message in order, in one hop to the event loop (a bulk send's batches
    then wait once for a server's loop, not once each behind the fan-out of the one before)."""
    layer = get_channel_layer()
    if layer is None:
        logger.warning("No channel layer configured: %d message(s) not delivered live.", len(messages))
        return

    async def send_all() -> None:
        for message in messages:
            try:
                await layer.group_send(EVENTS_GROUP, message)
            except Exception:
                logger.exception("Publishing %s %s failed; streams will catch up from the database.",
                                 message["type"], message.get("id"))

    try:
        if _in_server_thread():
            async_to_sync(send_all)()
        elif _loop_running_here():
            _publisher().run(send_all(), PUBLISH_TIMEOUT)
        else:
            _thread_loop().run_until_complete(asyncio.wait_for(send_all(), PUBLISH_TIMEOUT))
    except Exception:
        logger.exception("Publishing %d message(s) failed; streams will catch up from the database.", len(messages))


def publish_events(items: Sequence[events.Event]) -> None:
    """Publish events (in id order) as ``events.EventBatch`` messages, or one ``Event`` alone."""
    messages = batch_messages(items)
    if len(messages) == 1:
        publish(messages[0])
    elif messages:
        publish_many(messages)


def batch_messages(items: Sequence[events.Event]) -> list[dict[str, Any]]:
    """Channel-layer messages for ``items``: up to ``BATCH_MAX_EVENTS``/``BATCH_MAX_BYTES`` each."""
    messages: list[dict[str, Any]] = []
    chunk: list[events.Event] = []
    size = 0
    for item in items:
        if chunk and (len(chunk) >= BATCH_MAX_EVENTS or size + item.size > BATCH_MAX_BYTES):
            messages.append(_message_of(chunk))
            chunk, size = [], 0
        chunk.append(item)
        size += item.size
    if chunk:
        messages.append(_message_of(chunk))
    return messages


def _message_of(chunk: list[events.Event]) -> dict[str, Any]:
    return chunk[0].to_message() if len(chunk) == 1 else events.EventBatch(tuple(chunk)).to_message()


def _in_server_thread() -> bool:
    """Whether this thread runs sync code for an event loop of this process (``sync_to_async``)."""
    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return False
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop is not None and loop.is_running()


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_thread_local = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's own event loop for publishing, kept between calls (a new one after a fork).

    Sync code outside a server (a shell, a command, a task queue's worker) publishes on it in
    its own thread: no hand-over to another thread and back per call, which cost a quarter of
    a ``notify()`` with four writer processes on two cores (docs/deployment.md, "Writes").
    """
    loop = getattr(_thread_local, "loop", None)
    if loop is None or loop.is_closed() or _thread_local.pid != os.getpid():
        loop = _thread_local.loop = asyncio.new_event_loop()
        _thread_local.pid = os.getpid()
    return loop


class _Publisher:
    """One event loop on a daemon thread: publishes from sync code called on a running event
    loop that is not a server's (``asyncio.run`` around sync code), which cannot run another."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="notifications-publisher", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise


_publisher_lock = threading.Lock()
_the_publisher: _Publisher | None = None


def _publisher() -> _Publisher:
    """The process's publisher (a new one in a forked child: threads do not survive a fork)."""
    global _the_publisher
    with _publisher_lock:
        if _the_publisher is None or _the_publisher.pid != os.getpid():
            _the_publisher = _Publisher()
        return _the_publisher


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
