"""The page and the JSON API, thin: parse, call services / querysets, respond."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import services
from .conf import app_settings
from .models import CATEGORY_MAX_LENGTH, Level, Notification, NotificationQuerySet, Viewer

SLUG = re.compile(r"[-a-zA-Z0-9_]+")

PAGE_SIZE = 50
API_MAX_LIMIT = 100
CREATE_FIELDS = {"title", "body", "level", "url", "recipient", "group", "category", "data", "expires_at", "progress"}
#: Fields of ``CREATE_FIELDS`` that are not strings (checked on their own).
NON_STRING_FIELDS = {"data", "expires_at", "progress"}
PREFERENCE_FIELDS = {"muted"}
#: The list's boolean filters (SPEC §13) and what they accept.
FLAGS = ("unread", "archived", "muted")
FLAG_VALUES = {"1": True, "true": True, "0": False, "false": False, "": False}


def _viewer(request: HttpRequest) -> Viewer:
    return Viewer.of(request.user)


def _payloads(viewer: Viewer, rows: Any) -> list[dict[str, Any]]:
    signed_in = viewer.user_id is not None
    return [row.payload(read=row.is_read if signed_in else None) for row in rows]


@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    """The viewer's inbox page (``notifications:inbox``); its template extends ``notifications/base.html``."""
    viewer = _viewer(request)
    allowed = viewer.user_id is not None or app_settings.PUBLIC
    items: list[dict[str, Any]] = []
    # The page's cursor is the newest id of all, read before the list: the stream then sends
    # whatever commits after it, even when nothing visible was rendered (PITFALLS §2.7).
    cursor = Notification.objects.newest_id()
    older: str | None = None
    try:
        query = ListQuery.parse(request.GET)
    except ValueError as exc:
        return HttpResponse(f"{exc}\n", status=400, content_type="text/plain; charset=utf-8")
    if allowed:
        page, next_before = query.page(viewer, PAGE_SIZE, upto=cursor)
        items = _payloads(viewer, page)
        if next_before is not None:
            older = query.link(before=next_before)
    return render(
        request,
        "notifications/inbox.html",
        {
            "items": items,
            "last_event_id": cursor,
            "unread_count": services.unread_count(viewer) if allowed else 0,
            "stream_allowed": allowed,
            "older_url": older,
            "filtered_archived": query.archived,
        },
    )


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        parts = []
        for field, errors in exc.message_dict.items():
            text = " ".join(errors)
            parts.append(text if field == "__all__" else f"{field}: {text}")
        return " ".join(parts)
    return " ".join(exc.messages)


@require_http_methods(["GET", "POST"])
def api_list(request: HttpRequest) -> JsonResponse:
    """GET: the caller's notifications, newest first. POST (``add_notification``): send one."""
    if request.method == "POST":
        return _api_create(request)
    viewer = _viewer(request)
    if viewer.user_id is None and not app_settings.PUBLIC:
        return _error(403, "Sign in to list notifications.")
    try:
        limit = int(request.GET.get("limit", API_MAX_LIMIT))
        query = ListQuery.parse(request.GET)
    except ValueError as exc:
        return _error(400, str(exc) if isinstance(exc, FilterError) else "limit, after and before must be integers.")
    if limit < 1:
        return _error(400, "limit must be at least 1.")
    page, next_before = query.page(viewer, min(limit, API_MAX_LIMIT))
    return JsonResponse(
        {"results": _payloads(viewer, page), "next": next_before, "unread_count": services.unread_count(viewer)}
    )


class FilterError(ValueError):
    """A list filter that is not understood; its text is the 400's message."""


@dataclass(frozen=True)
class ListQuery:
    """The list's filters (SPEC §13), parsed from a query string; ``page()`` runs them."""

    after: int | None = None
    before: int | None = None
    unread: bool = False
    archived: bool = False
    muted: bool = False
    category: str | None = None

    @classmethod
    def parse(cls, query: Any) -> ListQuery:
        """``ValueError`` for a non-integer ``after``/``before``, ``FilterError`` for the rest."""
        after = int(query["after"]) if query.get("after") not in (None, "") else None
        before = int(query["before"]) if query.get("before") not in (None, "") else None
        flags = {}
        for name in FLAGS:
            raw = query.get(name, "").strip().lower()
            if raw not in FLAG_VALUES:
                raise FilterError(f"{name} must be 1 or 0, got {raw!r:.40}.")
            flags[name] = FLAG_VALUES[raw]
        category = query.get("category") or None
        if category is not None and not _is_category(category):
            raise FilterError(
                f"category must be a slug of at most {CATEGORY_MAX_LENGTH} characters, got {category!r:.60}."
            )
        return cls(after=after, before=before, category=category, **flags)

    @property
    def filtered(self) -> bool:
        return self.unread or self.archived or self.muted or self.category is not None

    def queryset(self, viewer: Viewer) -> NotificationQuerySet:
        """Visible, not expired; archived or not, muted or not as asked; newest first."""
        rows = (
            Notification.objects.visible_to(viewer).current()
            .archived_by(viewer, self.archived).muted_for(viewer, self.muted)
            .with_read(viewer)
        )
        if self.unread:
            rows = rows.filter(is_read=False)  # type: ignore[misc]
        if self.category is not None:
            rows = rows.filter(category=self.category)
        if self.after is not None:
            rows = rows.filter(id__gt=self.after)
        if self.before is not None:
            rows = rows.filter(id__lt=self.before)
        return rows.order_by("-id")

    def page(self, viewer: Viewer, limit: int, *, upto: int | None = None) -> tuple[list[Notification], int | None]:
        """Up to ``limit`` rows, and the ``before`` of the page after them (None: nothing older)."""
        rows = self.queryset(viewer)
        if upto is not None:
            rows = rows.filter(id__lte=upto)
        found = list(rows[: limit + 1])
        more = len(found) > limit
        page = found[:limit]
        return page, (page[-1].id if more and page else None)

    def link(self, **changes: Any) -> str:
        """The query string of this query with ``changes`` (for the page's "older" link)."""
        params = {**{name: "1" for name in FLAGS if getattr(self, name)}}
        if self.category:
            params["category"] = self.category
        if self.after is not None:
            params["after"] = str(self.after)
        params.update({k: str(v) for k, v in changes.items()})
        return "?" + urlencode(params)


def _is_category(value: str) -> bool:
    return 0 < len(value) <= CATEGORY_MAX_LENGTH and bool(SLUG.fullmatch(value))


def _forbidden_unless(request: HttpRequest, action: str) -> JsonResponse | None:
    """``403`` JSON unless the user holds ``notifications.<action>_notification``, else None.

    The admin's rule (model permissions, ``has_perm`` through the auth backends; superusers
    hold them all, inactive users none), not ``is_staff``: ``add`` to send, ``change`` to
    update, ``delete`` to retract.
    """
    permission = f"notifications.{action}_notification"
    if not request.user.is_authenticated:
        return _error(403, f"Sign in as a user with the {permission} permission.")
    if not request.user.has_perm(permission):
        return _error(403, f"You need the {permission} permission.")
    return None


def _api_create(request: HttpRequest) -> JsonResponse:
    forbidden = _forbidden_unless(request, "add")
    if forbidden is not None:
        return forbidden
    try:
        data = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        return _error(400, "The body must be JSON.")
    if not isinstance(data, dict):
        return _error(400, "The body must be a JSON object.")
    unknown = sorted(set(data) - CREATE_FIELDS - {"recipients"})
    if unknown:
        return _error(400, f"Unknown field(s): {', '.join(unknown)}.")
    for field in CREATE_FIELDS - NON_STRING_FIELDS:
        if data.get(field) is not None and not isinstance(data[field], str):
            return _error(400, f"{field} must be a string.")
    if data.get("data") is not None and not isinstance(data["data"], dict):
        return _error(400, f"data must be a JSON object, got {type(data['data']).__name__}.")
    if "recipients" in data:
        if data.get("progress") is not None:
            return _error(400, "progress is for a single notice (a job's), not for recipients.")
        return _api_create_many(data)
    level = data.get("level") or Level.INFO
    if level not in Level.values:
        return _error(400, f"Unknown level {level!r}; use one of {', '.join(Level.values)}.")
    if data.get("recipient") and data.get("group"):
        return _error(400, "A notification goes to one user or one group, not both.")
    try:
        notification = services.notify(
            data.get("title") or "",
            body=data.get("body") or "",
            level=level,
            url=data.get("url") or "",
            recipient=data.get("recipient") or None,
            group=data.get("group") or None,
            category=data.get("category") or "",
            data=data.get("data"),
            expires_at=data.get("expires_at"),
            progress=data.get("progress"),
        )
    except ValidationError as exc:
        return _error(400, _validation_message(exc))
    return JsonResponse(notification.payload(read=None), status=201)


def _api_create_many(data: dict[str, Any]) -> JsonResponse:
    """``"recipients": [...]``: one notice per username, all or none (SPEC §15)."""
    recipients = data["recipients"]
    if not isinstance(recipients, list) or not all(isinstance(name, str) for name in recipients):
        return _error(400, "recipients must be a list of usernames.")
    if data.get("recipient") is not None or data.get("group") is not None:
        return _error(400, "Give recipients, or recipient or group, not both.")
    level = data.get("level") or Level.INFO
    if level not in Level.values:
        return _error(400, f"Unknown level {level!r}; use one of {', '.join(Level.values)}.")
    try:
        notifications = services.notify_many(
            data.get("title") or "", recipients=recipients, body=data.get("body") or "", level=level,
            url=data.get("url") or "", category=data.get("category") or "", data=data.get("data"),
            expires_at=data.get("expires_at"),
        )
    except ValidationError as exc:
        return _error(400, _validation_message(exc))
    return JsonResponse({"results": [n.payload(read=None) for n in notifications]}, status=201)


def _read_response(request: HttpRequest, body: dict[str, Any]) -> HttpResponse:
    """JSON for scripts; a redirect back for the page's plain HTML forms (no JavaScript)."""
    next_url = request.POST.get("next") if request.content_type != "application/json" else None
    if next_url is not None:
        safe = url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure())
        return HttpResponseRedirect(next_url if safe else "/")
    return JsonResponse(body)


@require_POST
def api_read(request: HttpRequest, pk: int) -> HttpResponse:
    viewer, problem = _visible_or_404(request, pk, "mark notifications read")
    if problem is not None:
        return problem
    count = services.mark_read(viewer, [pk])
    return _read_response(request, {"id": pk, "read": True, "unread_count": count})


@require_POST
def api_read_all(request: HttpRequest) -> HttpResponse:
    viewer = _viewer(request)
    if viewer.user_id is None:
        return _error(403, "Sign in to mark notifications read.")
    count = services.mark_read(viewer, None)
    return _read_response(request, {"read": "all", "unread_count": count})



def _visible_or_404(request: HttpRequest, pk: int, action: str) -> tuple[Viewer, JsonResponse | None]:
    viewer = _viewer(request)
    if viewer.user_id is None:
        return viewer, _error(403, f"Sign in to {action}.")
    if not Notification.objects.visible_to(viewer).filter(pk=pk).exists():
        return viewer, _error(404, "No such notification.")
    return viewer, None


@require_POST
def api_unread(request: HttpRequest, pk: int) -> HttpResponse:
    """Mark one notification unread again (SPEC §13)."""
    viewer, problem = _visible_or_404(request, pk, "mark notifications unread")
    if problem is not None:
        return problem
    count = services.mark_unread(viewer, [pk])
    return _read_response(request, {"id": pk, "read": False, "unread_count": count})


@require_POST
def api_archive(request: HttpRequest, pk: int) -> HttpResponse:
    """Move one notification out of the caller's inbox (SPEC §13)."""
    viewer, problem = _visible_or_404(request, pk, "archive notifications")
    if problem is not None:
        return problem
    count = services.archive(viewer, [pk], True)
    return _read_response(request, {"id": pk, "archived": True, "unread_count": count})


@require_POST
def api_unarchive(request: HttpRequest, pk: int) -> HttpResponse:
    """Move one archived notification back into the caller's inbox (SPEC §13)."""
    viewer, problem = _visible_or_404(request, pk, "unarchive notifications")
    if problem is not None:
        return problem
    count = services.archive(viewer, [pk], False)
    return _read_response(request, {"id": pk, "archived": False, "unread_count": count})


@require_http_methods(["PATCH", "DELETE"])
def api_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """PATCH (``change_notification``): update a sent notice, ``200`` and its JSON; DELETE
    (``delete_notification``): retract it, ``204`` (SPEC §14). Retracted or unknown: ``404``."""
    forbidden = _forbidden_unless(request, "change" if request.method == "PATCH" else "delete")
    if forbidden is not None:
        return forbidden
    notification = Notification.objects.filter(pk=pk, retracted_at__isnull=True).first()
    if notification is None:
        return _error(404, "No such notification.")
    if request.method == "DELETE":
        services.retract(notification)
        return HttpResponse(status=204)
    try:
        data = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        return _error(400, "The body must be JSON.")
    if not isinstance(data, dict):
        return _error(400, "The body must be a JSON object.")
    unknown = sorted(set(data) - set(services.UPDATE_FIELDS))
    if unknown:
        return _error(400, f"Unknown field(s): {', '.join(unknown)}; a notice's {', '.join(services.UPDATE_FIELDS)} "
                           "can be changed.")
    if not data:
        return _error(400, f"Nothing to change: give any of {', '.join(services.UPDATE_FIELDS)}.")
    for field in ("title", "body", "level", "url"):
        if field in data and not isinstance(data[field], str):
            return _error(400, f"{field} must be a string.")
    if "level" in data and data["level"] not in Level.values:
        return _error(400, f"Unknown level {data['level']!r}; use one of {', '.join(Level.values)}.")
    if data.get("data") is not None and not isinstance(data["data"], dict):
        return _error(400, f"data must be a JSON object, got {type(data['data']).__name__}.")
    try:
        services.update(notification, **data)
    except ValidationError as exc:
        return _error(400, _validation_message(exc))
    return JsonResponse(notification.payload(read=None))


@require_http_methods(["GET", "PUT"])
def api_preferences(request: HttpRequest) -> JsonResponse:
    """GET the caller's preferences (``{"muted": [...]}``); PUT the same shape replaces them."""
    viewer = _viewer(request)
    if viewer.user_id is None:
        return _error(403, "Sign in to read or change preferences.")
    if request.method == "GET":
        return JsonResponse(services.preferences(viewer))
    try:
        data = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        return _error(400, "The body must be JSON.")
    if not isinstance(data, dict):
        return _error(400, "The body must be a JSON object.")
    unknown = sorted(set(data) - PREFERENCE_FIELDS)
    if unknown:
        return _error(400, f"Unknown field(s): {', '.join(unknown)}; preferences have: muted.")
    if "muted" not in data:
        return _error(400, "muted is required (a list of category slugs).")
    try:
        return JsonResponse(services.set_preferences(viewer, muted=data["muted"]))
    except ValidationError as exc:
        return _error(400, _validation_message(exc))
