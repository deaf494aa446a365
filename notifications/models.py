"""Notification, per-user read state, and ``visible_to()``: the only audience filter."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, validate_slug
from django.db import models
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import sse
from .digests import auth_digest, digest
from .links import is_safe_link

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


#: Size limits of a notice (README "Limits", docs/security.md). The title and url limits are the
#: columns' own; the body's is checked in ``clean()`` (a validator would need a migration).
TITLE_MAX_LENGTH = 200
BODY_MAX_LENGTH = 10_000
URL_MAX_LENGTH = 500
#: The largest SSE frame one notice may encode to (UTF-8 bytes, with the longest id). With
#: the limits above a notice stays under about 42 KB; this also bounds fields added later.
FRAME_MAX_BYTES = 64 * 1024
#: Room for the id in a frame measured before the row has one: an ``id: <19 digits>`` line and
#: up to 19 digits in the JSON's ``"id"`` in place of ``null`` (generous by a few bytes).
_ID_ROOM = len("id: \n") + 2 * 19
#: Category slugs (SPEC §13) and the largest ``data`` object, as compact UTF-8 JSON.
CATEGORY_MAX_LENGTH = 50
DATA_MAX_BYTES = 8 * 1024


class Level(models.TextChoices):
    INFO = "info", "Info"
    SUCCESS = "success", "Success"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class Audience(models.TextChoices):
    EVERYONE = "everyone", "Everyone"
    GROUP = "group", "Group"
    USER = "user", "User"


@dataclass(frozen=True)
class Viewer:
    """Who is looking, as plain data: what a stream keeps for its whole life."""

    user_id: int | None = None
    username: str | None = None
    group_ids: frozenset[int] = frozenset()
    is_staff: bool = False
    #: Digests (``identity.digest``) of the session key and of the user's session auth hash,
    #: so that a sign-out or a password change can end this viewer's open streams.
    session: str | None = None
    auth: str | None = None
    #: Categories this user muted (``Preference``): their notices, unless ``error``, are not streamed.
    muted: frozenset[str] = frozenset()

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None

    @classmethod
    def of(cls, user: AbstractBaseUser | AnonymousUser | None, *, session_key: str | None = None) -> Viewer:
        """Build from a Django user (runs one query for the user's groups, if the model has groups)."""
        if user is None or not user.is_authenticated:
            return ANONYMOUS

        groups = getattr(user, "groups", None)
        group_ids = frozenset(groups.values_list("pk", flat=True)) if groups is not None else frozenset()
        muted = Preference.objects.filter(user_id=user.pk).values_list("muted", flat=True).first() or []
        return cls(
            user_id=user.pk,
            username=user.get_username(),
            group_ids=group_ids,
            is_staff=bool(getattr(user, "is_staff", False)),
            session=digest(session_key) if session_key else None,
            auth=auth_digest(user),  # type: ignore[arg-type]
            muted=frozenset(muted),
        )

    def may_see(self, audience: str, target: int | None) -> bool:
        """The in-memory twin of ``visible_to()``, for live events."""
        if audience == Audience.EVERYONE:
            return True
        if audience == Audience.GROUP:
            return target in self.group_ids
        return target is not None and target == self.user_id

    def mutes(self, category: str, level: str) -> bool:
        """Whether this viewer muted a notice of ``category`` and ``level`` (never uncategorised or ``error``)."""
        return bool(category) and level != Level.ERROR and category in self.muted


#: The viewer of every stream without a signed-in user (a frozen value, shared).
ANONYMOUS = Viewer()


def event_key() -> Coalesce:
    """``COALESCE(last_event, id)``: a notice's latest event id in SQL (``Notification.event_id``)."""
    return Coalesce("last_event", "id", output_field=models.BigIntegerField())


class NotificationQuerySet(models.QuerySet["Notification"]):
    def visible_to(self, who: Viewer | AbstractBaseUser | AnonymousUser | None) -> NotificationQuerySet:
        """Notifications this viewer may see: everyone's, their groups', their own (not retracted)."""
        return self.addressed_to(who).filter(retracted_at__isnull=True)

    def addressed_to(self, who: Viewer | AbstractBaseUser | AnonymousUser | None) -> NotificationQuerySet:
        """``visible_to`` with retracted tombstones too: what a replay may say ``retract`` about (SPEC §14)."""
        viewer = who if isinstance(who, Viewer) else Viewer.of(who)
        q = Q(recipient__isnull=True, group__isnull=True)
        if viewer.user_id is not None:
            q |= Q(recipient_id=viewer.user_id)
            if viewer.group_ids:
                q |= Q(group_id__in=sorted(viewer.group_ids))
        return self.filter(q)

    def changed_after(self, after: int) -> NotificationQuerySet:
        """Notices with an event after ``after`` (created, updated or retracted), in event order.

        Tombstones included. ``last_event`` is null until a notice first changes (its event is
        then its id): the key is ``COALESCE(last_event, id)``, which the ``notif_*_event``
        expression indexes hold, per audience, in order.
        """
        return self.alias(event_key=event_key()).filter(event_key__gt=after).order_by("event_key")

    def newest_id(self) -> int:
        """The newest event id ever handed out, as far as the database knows (pruned ones included).

        A cursor below ``StreamState.pruned_through`` would read as "too old" and reset.
        """
        newest = (
            Notification.objects.annotate(event_key=event_key()).order_by("-event_key")
            .values_list("event_key", flat=True).first() or 0
        )
        pruned = StreamState.horizon()
        return max(newest, pruned)

    def unread_by(self, viewer: Viewer) -> NotificationQuerySet:
        """The viewer's inbox (``inbox``) notices they have not read: what the unread count counts."""
        return self.inbox(viewer).with_read(viewer).filter(is_read=False)  # type: ignore[misc]

    def current(self, now: dt.datetime | None = None) -> NotificationQuerySet:
        """Notices not past their ``expires_at`` (SPEC §13)."""
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now or timezone.now()))

    def muted_for(self, viewer: Viewer, muted: bool = True) -> NotificationQuerySet:
        """Only the notices the viewer muted (``muted=False``: only those they did not)."""
        if not viewer.muted:
            return self.none() if muted else self
        q = Q(category__in=sorted(viewer.muted)) & ~Q(level=Level.ERROR)
        return self.filter(q) if muted else self.exclude(q)

    def archived_by(self, viewer: Viewer, archived: bool = True) -> NotificationQuerySet:
        """Only the notices the viewer archived (``archived=False``: only those they did not)."""
        if viewer.user_id is None:
            return self.none() if archived else self
        marks = Archive.objects.filter(user_id=viewer.user_id, notification_id=OuterRef("pk"))
        return self.filter(Exists(marks) if archived else ~Exists(marks))

    def inbox(self, viewer: Viewer) -> NotificationQuerySet:
        """What a viewer's inbox lists, counts and replays: visible, not expired, archived or muted."""
        return self.visible_to(viewer).current().archived_by(viewer, False).muted_for(viewer, False)

    def with_read(self, viewer: Viewer) -> NotificationQuerySet:
        """Annotate ``is_read`` for a signed-in viewer (False for everyone when anonymous)."""
        if viewer.user_id is None:
            return self.annotate(is_read=models.Value(False))
        marks = ReadMark.objects.filter(user_id=viewer.user_id, notification_id=OuterRef("pk"))
        return self.annotate(is_read=Exists(marks))


class Notification(models.Model):
    """A notice. Its id is the SSE event id and follows commit order (see services.notify)."""

    id = models.BigAutoField(primary_key=True)
    title = models.CharField(max_length=TITLE_MAX_LENGTH)
    body = models.TextField(blank=True)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    url = models.CharField(
        max_length=URL_MAX_LENGTH,
        blank=True,
        help_text="Optional link: an http(s) URL or a path starting with / (not //).",
    )
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only this user sees it.",
    )
    group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only this group's members see it.",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    category = models.CharField(
        max_length=CATEGORY_MAX_LENGTH,
        blank=True,
        default="",
        validators=[validate_slug],
        help_text="Optional slug (letters, digits, - and _) users can filter on and mute.",
    )
    data = models.JSONField(
        default=dict,
        blank=True,
        help_text=f"Optional JSON object for the site's own use (at most {DATA_MAX_BYTES:,} bytes encoded).",
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Optional: after this time the notice is no longer listed or replayed."
    )
    #: SPEC §14: a job's progress (null, or 0–100), when the notice last changed, its latest
    #: event id (null while unchanged: its event is then its ``id``; an INSERT cannot know its
    #: own id, and ``notify_many``'s ``bulk_create`` needs no second statement), and when it
    #: was retracted (the row stays as a tombstone, unlisted, so a replay can say ``retract``).
    progress = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(100)],
        help_text="Optional: a job's progress in percent (0–100); empty when it is not a job.",
    )
    updated_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_event = models.BigIntegerField(null=True, blank=True, editable=False)
    retracted_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["recipient", "id"], name="notif_recipient_id"),
            models.Index(fields=["group", "id"], name="notif_group_id"),
            # SPEC §14: every notice by its latest event id, per audience (replay, catch-up).
            models.Index(Coalesce("last_event", "id"), name="notif_event"),
            models.Index(F("recipient"), Coalesce("last_event", "id"), name="notif_recipient_event"),
            models.Index(F("group"), Coalesce("last_event", "id"), name="notif_group_event"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def event_id(self) -> int:
        """The id of this notice's latest event: its creation's (``id``) until it changes."""
        return self.last_event if self.last_event is not None else self.id

    @property
    def audience(self) -> str:
        if self.recipient_id is not None:
            return Audience.USER
        if self.group_id is not None:
            return Audience.GROUP
        return Audience.EVERYONE

    @property
    def audience_target(self) -> int | None:
        return self.recipient_id if self.recipient_id is not None else self.group_id

    def clean(self) -> None:
        """Every rule a notice's content obeys, whoever sends it (``send()`` runs ``full_clean()``).

        Normalises the body's line endings to LF first (a browser's textarea submits CRLF).
        """
        errors: dict[str, list[str]] = {}
        if isinstance(self.body, str):
            self.body = normalise_newlines(self.body)
        if self.recipient_id is not None and self.group_id is not None:
            errors.setdefault("__all__", []).append(
                "A notification goes to one user or one group, not both."
            )
        if self.title and not self.title.strip():
            errors.setdefault("title", []).append("The title may not be only white space.")
        for field in ("title", "body"):
            problem = text_problem(getattr(self, field) or "", allow="" if field == "title" else "\t\n")
            if problem:
                errors.setdefault(field, []).append(problem)
        if len(self.body or "") > BODY_MAX_LENGTH:
            errors.setdefault("body", []).append(
                f"The body may be at most {BODY_MAX_LENGTH:,} characters long, got {len(self.body):,}."
            )
        if self.data is None:  # a form's empty JSON field
            self.data = {}
        data_problem = json_object_problem(self.data)
        if data_problem:
            errors.setdefault("data", []).append(data_problem)
        if self.expires_at is not None and self.pk is None and self.expires_at <= timezone.now():
            errors.setdefault("expires_at", []).append(
                f"The expiry must be in the future, got {self.expires_at.isoformat()}."
            )
        if self.url and not is_safe_link(self.url):
            errors.setdefault("url", []).append(
                f"The link must be an http(s) URL with a host, or a path starting with / (not //), "
                f"without backslashes, control characters or surrounding spaces; got {self.url!r}."
            )
        if not errors:
            size = self.frame_size()
            if size > FRAME_MAX_BYTES:
                errors.setdefault("__all__", []).append(
                    f"The notice encodes to {size:,} bytes; the most one event may take is {FRAME_MAX_BYTES:,}."
                )
        if errors:
            raise ValidationError(errors)

    def frame_size(self) -> int:
        """Bytes of this notice's largest SSE frame, counting the longest id it could get."""
        # events.notification_frame's bytes, built here: the model imports nothing that imports it.
        frame = sse.encode_event(sse.dumps(self.payload(read=False)), event="notification", id=self.event_id)
        return len(frame) + (_ID_ROOM if self.id is None else 0)

    def payload(self, *, read: bool | None) -> dict[str, Any]:
        """The JSON of a ``notification`` event (``read`` only for signed-in viewers)."""
        data: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "level": self.level,
            "url": self.url,
            "created_at": _iso(self.created_at),
            "audience": self.audience,
            "category": self.category,
            "data": self.data if isinstance(self.data, dict) else {},
            "expires_at": _iso(self.expires_at) if self.expires_at is not None else None,
            "progress": self.progress,
            "updated_at": _iso(self.updated_at) if self.updated_at is not None else None,
        }
        if read is not None:
            data["read"] = read
        return data


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def json_object_problem(value: Any) -> str | None:
    """Why ``value`` may not be a notice's ``data``, or None: not an object, not JSON, or too large."""
    if not isinstance(value, dict):
        return f"data must be a JSON object, got {type(value).__name__}."
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        size = len(text.encode())
    except (TypeError, ValueError) as exc:
        return f"data must be JSON: {exc}."
    if "\\u0000" in text:  # PostgreSQL's jsonb refuses NUL
        return "data may not contain NUL characters."
    if size > DATA_MAX_BYTES:
        return f"data may be at most {DATA_MAX_BYTES:,} bytes encoded, got {size:,}."
    return None


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR become LF (what a textarea submits, what a terminal pastes)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_problem(text: str, *, allow: str = "") -> str | None:
    """Why ``text`` may not be stored, or None: a lone surrogate, or a control character
    (Unicode category Cc: U+0000–U+001F, U+007F–U+009F) other than those in ``allow``.

    PostgreSQL refuses NUL in text (``DataError``), SQLite stores it: checked here, so both
    answer with the same ``ValidationError``.
    """
    for ch in text:
        if "\ud800" <= ch <= "\udfff":
            return "Text must be valid Unicode (no lone surrogates)."
        if (ch < " " or "\x7f" <= ch <= "\x9f") and ch not in allow:
            allowed = " (tab and newline are allowed)" if allow else ""
            return f"Control characters are not allowed{allowed}; found U+{ord(ch):04X}."
    return None


class ReadMark(models.Model):
    """One user has read one notification; "mark all read" writes one row per notification."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="read_marks")
    read_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "notification"], name="notif_read_once"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.notification_id}"


class Archive(models.Model):
    """One user archived one notification: out of their inbox, counts and replays until unarchived."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="archives")
    archived_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "notification"], name="notif_archive_once"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} archived {self.notification_id}"


class Preference(models.Model):
    """A user's inbox preferences: the categories they muted (``Viewer.muted``)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    muted = models.JSONField(default=list, blank=True, help_text="Category slugs this user muted.")

    def __str__(self) -> str:
        return f"{self.user_id} mutes {', '.join(self.muted) or 'nothing'}"


class StreamState(models.Model):
    """A single row: locked by every writer so ids follow commit order; remembers pruning."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    pruned_through = models.BigIntegerField(
        default=0, help_text="Every notification with an id up to this one may have been pruned."
    )

    def __str__(self) -> str:
        return f"stream state (pruned through {self.pruned_through})"

    @classmethod
    def horizon(cls) -> int:
        """``pruned_through`` without creating the row (0 before anything was pruned)."""
        return cls.objects.filter(pk=1).values_list("pruned_through", flat=True).first() or 0
