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
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import events
from .events import EVENT_TYPE, EVENTS_GROUP, READ_TYPE, dumps, notification_frame  # noqa: F401  (re-exported)
from .models import BODY_MAX_LENGTH, Archive, Level, Notification, Preference, ReadMark, StreamState, Viewer

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

#: The most categories one user may mute (a bound on what each stream's Viewer carries).
MAX_MUTED = 200

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
    ``notify()`` is one round trip. A ``CASE`` is what PostgreSQL documents for forcing an
    evaluation order (the lock is held before the sequence moves); it plans cheaper than the
    earlier subquery (pgbench, docs/deployment.md "Writes": 1.16× instead of 1.30× the plain
    INSERT's time alone, a 9.6k/s instead of 7.7k/s ceiling from 4 clients). The sequence's
    name is looked up once per process. None elsewhere (the caller takes ``lock_sequence()``
    in a transaction instead). One expression per process, made once: building a ``RawSQL``
    and its output field per call, and Django copying it, cost ~40 µs of Python per ``notify()``.
    """
    if connection.vendor != "postgresql":
        return None
    global _the_ordered_id
    if _the_ordered_id is None:
        meta = Notification._meta
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_get_serial_sequence(%s, %s)",
                           [connection.ops.quote_name(meta.db_table), meta.pk.column])
            sequence = cursor.fetchone()[0]
        _the_ordered_id = _OrderedId(
            "CASE WHEN pg_advisory_xact_lock(%s)::text = '' THEN nextval(%s::regclass) END",
            (SEQUENCE_LOCK_KEY, sequence),
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
    category: str = "",
    data: dict[str, Any] | None = None,
    expires_at: dt.datetime | str | float | None = None,
    progress: int | None = None,
) -> Notification:
    """Store a notification and deliver it to every open stream that may see it, once.

    ``recipient`` (a user or a username) and ``group`` (a Group or a name) are exclusive;
    neither means everyone. ``category`` (a slug), ``data`` (a JSON object, ≤ 8 KiB) and
    ``expires_at`` (a datetime, ISO 8601 text or seconds from now; see ``parse_expiry``)
    are SPEC §13; ``progress`` (null or 0–100) SPEC §14. Raises ``ValidationError`` (nothing
    stored) for bad input.
    Delivery happens after the surrounding transaction commits; a rollback sends nothing.
    """
    return _store(_checked(title, body=body, level=level, url=url, recipient=recipient, group=group,
                           category=category, data=data, expires_at=expires_at, progress=progress))


async def anotify(
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
    progress: int | None = None,
) -> Notification:
    """``notify()`` for async code (an async view, a consumer, an ASGI task): same arguments,
    same errors, same result.

    The row is validated and stored in one ``database_sync_to_async`` hop, committed on its
    own (async code holds no transaction), and then published from the event loop it was
    awaited on: no second hop back to the loop, as ``sync_to_async(notify)`` would take.
    """
    notification, message = await database_sync_to_async(_create)(
        title, body=body, level=level, url=url, recipient=recipient, group=group, category=category,
        data=data, expires_at=expires_at, progress=progress)
    await apublish_many([message])
    return notification


def _create(title: str, **fields: Any) -> tuple[Notification, dict[str, Any]]:
    """``notify()``'s validation and insert, committed (no caller's transaction is open in this
    hop), and its channel-layer message, encoded here rather than on the caller's event loop;
    not published (``anotify`` publishes on its own loop)."""
    notification = _store(_checked(title, **fields), deliver=False)
    return notification, event_message(notification)


def _checked(
    title: str,
    *,
    body: str,
    level: str,
    url: str,
    recipient: AbstractBaseUser | str | None,
    group: Group | str | None,
    category: str,
    data: dict[str, Any] | None,
    expires_at: dt.datetime | str | float | None,
    progress: int | None,
) -> Notification:
    """A new, validated, unsaved notification from ``notify()``'s arguments."""
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
        progress=progress,
    )
    problem = progress_problem(progress)
    if problem:
        raise ValidationError({"progress": [problem]})
    # A user or group looked up by name was found just now: no second query for it.
    checked = [name for name, value in (("recipient", recipient), ("group", group)) if isinstance(value, str)]
    _validate(notification, checked=checked)
    return notification


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


def _store(notification: Notification, *, deliver: bool = True) -> Notification:
    """Insert in commit order and publish after commit (the caller validated).

    ``deliver=False``: the caller publishes once the transaction it holds has committed.
    """
    if connection.vendor != "postgresql":
        with transaction.atomic():
            if connection.vendor != "sqlite":
                # SQLite needs no lock of ours: its one write lock is taken at the INSERT
                # (where the id is given) and held until commit, so ids already follow commit
                # order, and the StreamState read would cost a query (0.24 ms) for nothing.
                lock_sequence()
            notification.save(force_insert=True)
            if deliver:
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
    if deliver:
        transaction.on_commit(lambda: publish(event_message(notification)))
    return notification


#: What ``update()`` may change (SPEC §14): content, never the audience or the expiry.
UPDATE_FIELDS = ("title", "body", "level", "url", "progress", "data")
_UNSET: Any = object()


def next_event_id() -> int:
    """The next id of the one event sequence, for an update or a retraction (SPEC §14).

    Call inside ``transaction.atomic()`` after ``lock_sequence()``: the lock is held until
    commit, so event ids follow commit order as notice ids do. PostgreSQL: ``nextval`` of the
    table's id sequence. SQLite (an ``AUTOINCREMENT`` table): ``sqlite_sequence`` moved on by
    one under the database's single write lock; the next INSERT continues after it.
    """
    meta = Notification._meta
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s))",
                           [connection.ops.quote_name(meta.db_table), meta.pk.column])
        elif connection.vendor == "sqlite":
            cursor.execute("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = %s", [meta.db_table])
            if cursor.rowcount != 1:
                raise RuntimeError(f"{meta.db_table} has no AUTOINCREMENT sequence row; store a notice first.")
            cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [meta.db_table])
        else:  # pragma: no cover - the supported databases are the two above
            raise NotImplementedError(f"Updates need PostgreSQL or SQLite, not {connection.vendor}.")
        return int(cursor.fetchone()[0])


def progress_problem(value: Any) -> str | None:
    """Why ``value`` may not be a notice's ``progress`` (null, or an integer 0–100), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"progress must be null or an integer from 0 to 100, got {value!r:.40}."
    if not 0 <= value <= 100:
        return f"progress must be from 0 to 100, got {value}."
    return None


def update(
    notification: Notification,
    *,
    title: str = _UNSET,
    body: str = _UNSET,
    level: str = _UNSET,
    url: str = _UNSET,
    progress: int | None = _UNSET,
    data: dict[str, Any] | None = _UNSET,
) -> Notification:
    """Change a sent notice (any subset of the fields) and stream ``event: update`` after commit.

    The row is re-read under the sequence lock, so concurrent updates of different fields
    compose; the change takes the next event id (``next_event_id``) and ``updated_at``.
    ``ValidationError`` (nothing changed, nothing sent) for bad values, an unknown or
    retracted notice. A change to what the row holds already sends nothing. Returns the
    notice as it now is (``notification`` is refreshed too).
    """
    changes = {name: value for name, value in (("title", title), ("body", body), ("level", level), ("url", url),
                                               ("progress", progress), ("data", data)) if value is not _UNSET}
    problem = progress_problem(changes.get("progress"))
    if problem:
        raise ValidationError({"progress": [problem]})
    if "data" in changes and changes["data"] is None:
        changes["data"] = {}
    if notification.pk is None:
        raise ValueError("update() changes sent notifications; send this one first.")
    with transaction.atomic():
        lock_sequence()
        current = _locked_row(notification.pk)
        if all(getattr(current, name) == value for name, value in changes.items()):
            _refresh(notification, current)
            return notification
        for name, value in changes.items():
            setattr(current, name, value)
        _validate(current, checked=("recipient", "group"))
        current.updated_at = timezone.now()
        current.last_event = next_event_id()
        current.save(update_fields=[*changes, "updated_at", "last_event"])
        event = events.Event.of(current, events.UPDATE)
        transaction.on_commit(lambda: publish(event.to_message()))
    _refresh(notification, current)
    return notification


def retract(notification: Notification) -> Notification:
    """Withdraw a sent notice: open pages remove it (``event: retract`` after commit, SPEC §14).

    The row stays as a tombstone (``retracted_at``; not listed, counted or readable) until
    retention prunes it, so a replay can say ``retract``. Retracting twice sends nothing more.
    """
    if notification.pk is None:
        raise ValueError("retract() withdraws sent notifications; this one was never sent.")
    with transaction.atomic():
        lock_sequence()
        current = _locked_row(notification.pk, retracted=True)
        if current.retracted_at is None:
            current.retracted_at = timezone.now()
            current.last_event = next_event_id()
            current.save(update_fields=["retracted_at", "last_event"])
            event = events.Event.of(current, events.RETRACT)
            transaction.on_commit(lambda: publish(event.to_message()))
    _refresh(notification, current)
    return notification


def _locked_row(pk: int, *, retracted: bool = False) -> Notification:
    """The row as committed now (the caller holds the sequence lock every writer takes)."""
    row = Notification.objects.filter(pk=pk).first()
    if row is None:
        raise ValidationError(f"Notification {pk} does not exist (pruned or deleted).")
    if row.retracted_at is not None and not retracted:
        raise ValidationError(f"Notification {pk} was retracted; it can no longer be updated.")
    return row


def _refresh(notification: Notification, current: Notification) -> None:
    for field in Notification._meta.concrete_fields:
        setattr(notification, field.attname, getattr(current, field.attname))


class Job:
    """A job's notice (``job()``): ``progress(45)`` and ``update(...)`` change it as the job runs."""

    def __init__(self, notification: Notification) -> None:
        self.notification = notification

    def progress(self, percent: int, *, body: str | None = None) -> None:
        """Report ``percent`` (0–100) and, optionally, a new body; nothing is written when unchanged."""
        problem = progress_problem(percent)
        if problem or percent is None:
            raise ValidationError({"progress": [problem or "progress must be an integer from 0 to 100, got None."]})
        fields: dict[str, Any] = {"progress": percent}
        if body is not None:
            fields["body"] = body
        if all(getattr(self.notification, name) == value for name, value in fields.items()):
            return
        update(self.notification, **fields)

    def update(self, **fields: Any) -> None:
        update(self.notification, **fields)


@contextlib.contextmanager
def job(title: str, *, body: str = "", done: str | None = None, **fields: Any) -> Iterator[Job]:
    """Follow a job with one notice (SPEC §14): sent at 0 %, ``job.progress(n)`` as it goes, and
    ``success`` at 100 % when the block ends (``done``: the final body, if given), or ``error``
    with the exception's message (the exception propagates).

    ``fields`` are ``notify()``'s (``recipient``, ``group``, ``category``, ...). Each report is
    its own transaction: use it outside ``transaction.atomic()`` (and outside
    ``ATOMIC_REQUESTS`` views), or nothing is seen until the job ends — or at all if it fails.
    Works wherever ``notify()`` does: a view, a management command, a worker process (with a
    Redis channel layer, the streams of every server process follow).
    """
    if connection.in_atomic_block:
        logger.warning("services.job(%r) inside a transaction: its progress is not seen until it commits.", title)
    notification = notify(title, body=body, progress=0, **fields)
    handle = Job(notification)
    try:
        yield handle
    except BaseException as exc:
        message = str(exc).strip() or type(exc).__name__
        update(notification, level=Level.ERROR, body=message[: BODY_MAX_LENGTH])
        raise
    final: dict[str, Any] = {"level": Level.SUCCESS, "progress": 100}
    if done is not None:
        final["body"] = done
    update(notification, **final)


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
    if "expires_at" in fields:
        fields["expires_at"] = parse_expiry(fields["expires_at"])
    if fields.get("data", {}) is None:
        fields["data"] = {}
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
    like = events.Event.of(first)  # category, level, expiry: the same for every notice of the send
    made = [
        dataclasses.replace(
            like, id=n.id, target=n.recipient_id, user_frame=(frame := str(n.id).encode().join(user_pieces)),
            anon_frame=frame, read_frame=str(n.id).encode().join(read_pieces),
        )
        for n in notifications
    ]
    if made[0] != like:
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
    layer = _layer_for(messages)
    if layer is None:
        return

    async def send_all() -> None:
        await _send_all(layer, messages)

    try:
        if _in_server_thread():
            async_to_sync(send_all)()
        elif _loop_running_here():
            _publisher().run(send_all(), PUBLISH_TIMEOUT)
        else:
            _thread_loop().run_until_complete(asyncio.wait_for(send_all(), PUBLISH_TIMEOUT))
    except Exception:
        logger.exception("Publishing %d message(s) failed; streams will catch up from the database.", len(messages))


async def apublish_many(messages: Sequence[dict[str, Any]]) -> None:
    """``publish_many`` from async code, on the running loop. Never raises."""
    layer = _layer_for(messages)
    if layer is not None:
        await _send_all(layer, messages)


def _layer_for(messages: Sequence[dict[str, Any]]) -> Any:
    """The default channel layer, or None (logged: ``messages`` then reach streams only
    through the hubs' database check)."""
    layer = get_channel_layer()
    if layer is None:
        logger.warning("No channel layer configured: %d message(s) not delivered live.", len(messages))
    return layer


async def _send_all(layer: Any, messages: Sequence[dict[str, Any]]) -> None:
    for message in messages:
        try:
            await layer.group_send(EVENTS_GROUP, message)
        except Exception:
            logger.exception("Publishing %s %s failed; streams will catch up from the database.",
                             message["type"], message.get("id"))


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
