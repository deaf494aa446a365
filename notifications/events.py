"""The event protocol: channel-layer messages (typed, versioned), SSE frame builders, group and type names.

Every byte a stream sends that is not the ``retry:`` line or a ``: ping`` comment is built here,
and every channel-layer message is made and read here. Imports ``sse`` and ``models`` only;
never the hub, the stream or the consumer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import sse
from .sse import dumps

if TYPE_CHECKING:
    from .models import Notification, Viewer

#: The channel-layer group every process's hub joins; every event goes to it once.
EVENTS_GROUP = "notifications.events"
#: Channel-layer message types (Channels routes on ``type``).
EVENT_TYPE = "notifications.event"
READ_TYPE = "notifications.read"
IDENTITY_TYPE = "notifications.identity"
BATCH_TYPE = "notifications.batch"
PREFERENCES_TYPE = "notifications.preferences"
#: The message format's version. A message without ``v`` is version 1 (sent before the field existed).
VERSION = 1
#: ``reset`` reasons (SPEC §6): more missed than ``NOTIFICATIONS_REPLAY_LIMIT``, or older than what is kept.
TOO_MANY = "too_many"
EXPIRED = "expired"
#: ...and: a group was joined after this stream was handed one of its notices under the old
#: membership (``identity``), so the client reloads its list rather than miss it.
MEMBERSHIP = "membership"
AUDIENCES = frozenset({"everyone", "group", "user"})
#: What an event says about its notice (SPEC §14), also its frame's ``event:`` line.
NOTIFICATION = "notification"
UPDATE = "update"
RETRACT = "retract"
KINDS = frozenset({NOTIFICATION, UPDATE, RETRACT})


class BadMessage(ValueError):
    """A channel-layer message this process cannot read; the hub logs and counts it, then goes on."""


# -- frames ------------------------------------------------------------------------------------


def notification_frame(notification: Notification, *, read: bool | None) -> bytes:
    """``event: notification`` with the notice's JSON (``read`` only for signed-in viewers).

    Its id is the notice's latest event id: a notice created and then updated after a
    viewer's cursor is replayed once, as new, in its latest state (SPEC §14).
    """
    return sse.encode_event(dumps(notification.payload(read=read)), event="notification", id=notification.event_id)


def update_frame(notification: Notification, *, read: bool | None = None) -> bytes:
    """``event: update``: the notice's full JSON as it now is, with its latest event id.

    On the wire it carries no ``read`` (one frame for every viewer; read state has its own
    events, and the client keeps the card's). ``read`` is only for the frames a memory
    replay turns into ``notification`` (``as_notification``).
    """
    return sse.encode_event(dumps(notification.payload(read=read)), event="update", id=notification.event_id)


def retract_frame(notification: Notification) -> bytes:
    """``event: retract``: ``{"id": <notice id>}`` with the retraction's event id."""
    return sse.encode_event(dumps({"id": notification.id}), event="retract", id=notification.event_id)


_UPDATE_LINE = f"event: {UPDATE}\n".encode()
_NOTIFICATION_LINE = f"event: {NOTIFICATION}\n".encode()


def as_notification(frame: bytes) -> bytes:
    """An ``update`` frame (built by ``update_frame``) as the ``notification`` frame of the same
    state: what a viewer who never saw the notice gets (SPEC §14). The ``event:`` line is the
    first line after ``id:`` (``sse.encode_event``), so only that line changes."""
    head, sep, rest = frame.partition(b"\n")
    if not rest.startswith(_UPDATE_LINE):
        raise ValueError("not an update frame")
    return head + sep + _NOTIFICATION_LINE + rest[len(_UPDATE_LINE):]


def hello_frame(username: str | None, cursor: int) -> bytes:
    """``event: hello``: who the stream is for and the id it is complete up to (SPEC §6).

    The anonymous one is kept for its cursor: a connect burst of visitors encodes it once.
    """
    global _anonymous_hello
    if username is None:
        if _anonymous_hello[0] != cursor:
            _anonymous_hello = (cursor, _hello(None, cursor))
        return _anonymous_hello[1]
    return _hello(username, cursor)


def _hello(username: str | None, cursor: int) -> bytes:
    return sse.encode_event(dumps({"user": username, "cursor": cursor}), event="hello", id=cursor)


#: ``(cursor, frame)`` of the last anonymous ``hello``.
_anonymous_hello: tuple[int | None, bytes] = (None, b"")


def reset_frame(reason: str, cursor: int) -> bytes:
    """``event: reset``: the client reloads its list; the id moves it to ``cursor``."""
    return sse.encode_event(dumps({"reason": reason, "cursor": cursor}), event="reset", id=cursor)


def read_frame(ids: list[int] | None, unread_count: int, *, read: bool = True) -> bytes:
    """``event: read`` (no id: read state is not part of the id sequence); ``ids`` None means all.

    ``read`` False: the notices were marked unread again (SPEC §13).
    """
    return sse.encode_event(
        dumps({"ids": sorted(ids) if ids is not None else "all", "read": read, "unread_count": unread_count}),
        event="read",
    )


def archive_frame(ids: list[int], archived: bool, unread_count: int) -> bytes:
    """``event: archive``: notices moved out of (or back into) one user's inbox (SPEC §13)."""
    return sse.encode_event(dumps({"ids": sorted(ids), "archived": archived, "unread_count": unread_count}),
                            event="archive")


# -- channel-layer messages --------------------------------------------------------------------


def _field(message: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = message.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise BadMessage(f"{message.get('type')!r} message: {name!r} must be {_kind_name(kind)}, got {value!r:.80}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _check_version(message: dict[str, Any]) -> None:
    version = message.get("v", 1)
    if version != VERSION:
        raise BadMessage(f"{message.get('type')!r} message of version {version!r}; this process reads {VERSION}")


@dataclass(frozen=True, slots=True)
class Event:
    """A new notification as every hub receives it: id, audience and its frames, encoded once."""

    id: int
    audience: str
    target: int | None
    #: For a signed-in viewer (``"read": false``: new notices are unread for everyone).
    user_frame: bytes
    #: For an anonymous viewer (no ``read`` key).
    anon_frame: bytes
    #: For a memory replay to someone who has read it meanwhile; None from a process that does
    #: not encode it (such events are not replayed from memory).
    read_frame: bytes | None = None
    #: What the fan-out decides muting and expiry on in memory (SPEC §13): the category
    #: ("" for none), the level, and ``expires_at`` as a POSIX timestamp (None: never).
    category: str = ""
    level: str = "info"
    expires: float | None = None
    #: SPEC §14: ``notification``, ``update`` or ``retract``, and the notice's own id (its
    #: creation's event id; None means ``id``, as for every ``notification`` event).
    kind: str = NOTIFICATION
    notice_id: int | None = None

    @property
    def notice(self) -> int:
        return self.id if self.notice_id is None else self.notice_id

    @classmethod
    def of(cls, notification: Notification, kind: str = NOTIFICATION) -> Event:
        """The event of ``kind`` about the notice as it is now; its id is ``notification.event_id``.

        ``update``: ``anon_frame`` carries no ``read`` and is what every live stream gets;
        ``user_frame``/``read_frame`` are kept for a memory replay to a viewer who never saw
        the notice (``as_notification``). ``retract``: the one frame, three times.
        """
        common: dict[str, Any] = {
            "id": notification.event_id,
            "audience": notification.audience,
            "target": notification.audience_target,
            "category": notification.category,
            "level": notification.level,
            "expires": notification.expires_at.timestamp() if notification.expires_at is not None else None,
            "kind": kind,
            "notice_id": notification.id if kind != NOTIFICATION else None,
        }
        if kind == UPDATE:
            return cls(
                user_frame=update_frame(notification, read=False),
                anon_frame=update_frame(notification),
                read_frame=update_frame(notification, read=True),
                **common,
            )
        if kind == RETRACT:
            frame = retract_frame(notification)
            return cls(user_frame=frame, anon_frame=frame, read_frame=frame, **common)
        audience = notification.audience
        user_frame = notification_frame(notification, read=False)
        return cls(
            id=notification.event_id,
            audience=audience,
            target=notification.audience_target,
            user_frame=user_frame,
            # Only "everyone" notices reach anonymous viewers: a personal or group one is not
            # encoded a third time (a bulk send of 10,000 spends its time encoding).
            anon_frame=notification_frame(notification, read=None) if audience == "everyone" else user_frame,
            read_frame=notification_frame(notification, read=True),
            category=notification.category,
            level=notification.level,
            expires=notification.expires_at.timestamp() if notification.expires_at is not None else None,
        )

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now

    @property
    def live_frames(self) -> tuple[bytes, bytes]:
        """``(for signed-in viewers, for anonymous ones)`` on a live stream."""
        if self.kind == UPDATE:
            return self.anon_frame, self.anon_frame
        if self.audience == "everyone":
            return self.user_frame, self.anon_frame
        return self.user_frame, self.user_frame

    def replay_frame(self, viewer: Viewer, after: int, *, read: bool = False) -> bytes | None:
        """What a replay after ``after`` sends for this event (SPEC §14), None for nothing.

        A notice created after ``after`` is new to the viewer: ``notification`` in its latest
        state (a retraction of one is nothing); one created before gets the event as it is.
        """
        if self.kind == NOTIFICATION or (self.kind == RETRACT and self.notice <= after):
            return self.frame_for(viewer, read=read)
        if self.kind == RETRACT:
            return None
        if self.notice <= after:
            return self.anon_frame
        return as_notification(self.frame_for(viewer, read=read))

    def frame_for(self, viewer: Viewer, *, read: bool = False) -> bytes:
        if viewer.user_id is None:
            return self.anon_frame
        if read and self.read_frame is not None:
            return self.read_frame
        return self.user_frame

    @property
    def size(self) -> int:
        """Bytes of its frames (what the memory window counts)."""
        return len(self.user_frame) + len(self.anon_frame) + len(self.read_frame or b"")

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": EVENT_TYPE,
            "v": VERSION,
            "id": self.id,
            "audience": self.audience,
            "target": self.target,
            "user_frame": self.user_frame,
            "anon_frame": self.anon_frame,
        }
        if self.read_frame is not None:
            message["read_frame"] = self.read_frame
        # Left out when empty, so a message without them reads as before (version 1 stays).
        if self.category:
            message["category"] = self.category
        if self.level != "info":
            message["level"] = self.level
        if self.expires is not None:
            message["expires"] = self.expires
        if self.kind != NOTIFICATION:
            message["kind"] = self.kind
            message["notice"] = self.notice
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Event:
        """Validate and read a message; raises ``BadMessage`` saying what was wrong."""
        _check_version(message)
        id = _field(message, "id", int)
        if id < 1:
            raise BadMessage(f"event message: 'id' must be positive, got {id}")
        audience = _field(message, "audience", str)
        if audience not in AUDIENCES:
            raise BadMessage(f"event message: unknown audience {audience!r}")
        target = message.get("target")
        if audience == "everyone":
            target = None
        elif not isinstance(target, int) or isinstance(target, bool):
            raise BadMessage(f"event message: a {audience} event needs an integer 'target', got {target!r:.80}")
        read = message.get("read_frame")
        if read is not None and not isinstance(read, bytes):
            raise BadMessage(f"event message: 'read_frame' must be bytes, got {type(read).__name__}")
        category = message.get("category", "")
        level = message.get("level", "info")
        expires = message.get("expires")
        if not isinstance(category, str) or not isinstance(level, str):
            raise BadMessage(
                f"event message: 'category' and 'level' must be strings, got {category!r:.40}, {level!r:.40}"
            )
        if expires is not None and (not isinstance(expires, int | float) or isinstance(expires, bool)):
            raise BadMessage(f"event message: 'expires' must be a number, got {expires!r:.80}")
        kind = message.get("kind", NOTIFICATION)
        if kind not in KINDS:
            raise BadMessage(f"event message: unknown kind {kind!r:.40}")
        notice = None
        if kind != NOTIFICATION:
            notice = _field(message, "notice", int)
            if not 0 < notice < id:
                raise BadMessage(f"event message: an {kind} needs a 'notice' id below its own {id}, got {notice}")
        return cls(id, audience, target, _field(message, "user_frame", bytes), _field(message, "anon_frame", bytes),
                   read, category, level, None if expires is None else float(expires), kind, notice)


@dataclass(frozen=True, slots=True)
class ReadEvent:
    """Read state changed for one user: every open stream of theirs gets ``frame``."""

    user_id: int
    frame: bytes

    def to_message(self) -> dict[str, Any]:
        return {"type": READ_TYPE, "v": VERSION, "user_id": self.user_id, "frame": self.frame}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ReadEvent:
        _check_version(message)
        return cls(_field(message, "user_id", int), _field(message, "frame", bytes))


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """Django said who a user is changed (``identity``): what their open streams must follow.

    Exactly one of: ``end_all`` (made inactive, deleted); ``end_session`` (a digest of the
    session key that signed out); ``auth`` (the digest of the user's session auth hash now:
    streams opened under another one end); ``groups`` (each user's group ids now, with
    ``after``, the newest notification id committed before the change).
    """

    user_id: int | None = None
    end_all: bool = False
    end_session: str | None = None
    auth: str | None = None
    groups: tuple[tuple[int, frozenset[int]], ...] = ()
    after: int = 0

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": IDENTITY_TYPE, "v": VERSION}
        if self.groups:
            # Pairs, not a dict: msgpack (channels-redis) refuses integer map keys by default.
            message["groups"] = [[user_id, sorted(group_ids)] for user_id, group_ids in self.groups]
            message["after"] = self.after
            return message
        message["user_id"] = self.user_id
        if self.end_all:
            message["end_all"] = True
        elif self.end_session is not None:
            message["end_session"] = self.end_session
        else:
            message["auth"] = self.auth
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> IdentityChange:
        _check_version(message)
        if "groups" in message:
            pairs = message["groups"]
            if not isinstance(pairs, list | tuple):
                raise BadMessage(f"identity message: 'groups' must be a list, got {pairs!r:.80}")
            groups = []
            for pair in pairs:
                try:
                    user_id, group_ids = pair
                    groups.append((int(user_id), frozenset(int(g) for g in group_ids)))
                except (TypeError, ValueError):
                    raise BadMessage(f"identity message: bad 'groups' entry {pair!r:.80}") from None
            return cls(groups=tuple(groups), after=_field(message, "after", int))
        user_id = _field(message, "user_id", int)
        if message.get("end_all") is True:
            return cls(user_id=user_id, end_all=True)
        if "end_session" in message:
            return cls(user_id=user_id, end_session=_field(message, "end_session", str))
        return cls(user_id=user_id, auth=_field(message, "auth", str))


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Many new notifications in one message (a bulk send, SPEC §15), ids strictly increasing.

    Each event travels as a list ``[id, audience, target, user_frame, anon_frame, read_frame,
    category, level, expires]``;
    ``anon_frame`` is None when it equals ``user_frame`` (always, for user and group events:
    anonymous viewers never get them), so a personal notice's frame is not sent twice.
    """

    events: tuple[Event, ...]

    def to_message(self) -> dict[str, Any]:
        rows = [
            [e.id, e.audience, e.target, e.user_frame, e.anon_frame if e.audience == "everyone" else None,
             e.read_frame, e.category, e.level, e.expires]
            for e in self.events
        ]
        return {"type": BATCH_TYPE, "v": VERSION, "events": rows}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> EventBatch:
        """Validate and read a batch; raises ``BadMessage`` naming the first bad entry."""
        _check_version(message)
        rows = message.get("events")
        if not isinstance(rows, list | tuple) or not rows:
            raise BadMessage(f"batch message: 'events' must be a non-empty list, got {rows!r:.80}")
        items: list[Event] = []
        for index, row in enumerate(rows):
            if not isinstance(row, list | tuple) or len(row) != 9:
                raise BadMessage(f"batch message: entry {index} must be a list of 9, got {row!r:.80}")
            id, audience, target, user_frame, anon_frame, read_frame, category, level, expires = row
            try:
                item = Event.from_message({
                    "type": EVENT_TYPE, "id": id, "audience": audience, "target": target, "user_frame": user_frame,
                    "anon_frame": user_frame if anon_frame is None else anon_frame, "read_frame": read_frame,
                    "category": category, "level": level, "expires": expires,
                })
            except BadMessage as exc:
                raise BadMessage(f"batch message, entry {index}: {exc}") from None
            if items and item.id <= items[-1].id:
                raise BadMessage(f"batch message: ids must increase, entry {index} has {item.id} after {items[-1].id}")
            items.append(item)
        return cls(tuple(items))



@dataclass(frozen=True, slots=True)
class PreferenceChange:
    """A user's muted categories now (``services.set_preferences``): their open streams follow at once."""

    user_id: int
    muted: frozenset[str]

    def to_message(self) -> dict[str, Any]:
        return {"type": PREFERENCES_TYPE, "v": VERSION, "user_id": self.user_id, "muted": sorted(self.muted)}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> PreferenceChange:
        _check_version(message)
        muted = _field(message, "muted", (list, tuple))
        if not all(isinstance(category, str) for category in muted):
            raise BadMessage(f"preferences message: 'muted' must be a list of strings, got {muted!r:.80}")
        return cls(_field(message, "user_id", int), frozenset(muted))


def parse(message: Any) -> Event | EventBatch | ReadEvent | IdentityChange | PreferenceChange:
    """The typed form of a channel-layer message; ``BadMessage`` for anything else."""
    if not isinstance(message, dict):
        raise BadMessage(f"a channel-layer message must be a dict, got {type(message).__name__}")
    kind = message.get("type")
    if kind == EVENT_TYPE:
        return Event.from_message(message)
    if kind == BATCH_TYPE:
        return EventBatch.from_message(message)
    if kind == READ_TYPE:
        return ReadEvent.from_message(message)
    if kind == IDENTITY_TYPE:
        return IdentityChange.from_message(message)
    if kind == PREFERENCES_TYPE:
        return PreferenceChange.from_message(message)
    raise BadMessage(f"unknown message type {kind!r:.80}")
