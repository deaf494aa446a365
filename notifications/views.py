"""The page and the JSON API, thin: parse, call services / querysets, respond."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import services
from .conf import app_settings
from .models import Level, Notification, Viewer

PAGE_SIZE = 50
API_MAX_LIMIT = 100
CREATE_FIELDS = {"title", "body", "level", "url", "recipient", "group"}


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
    if allowed:
        rows = Notification.objects.visible_to(viewer).with_read(viewer).filter(id__lte=cursor).order_by("-id")
        items = _payloads(viewer, rows[:PAGE_SIZE])
    return render(
        request,
        "notifications/inbox.html",
        {
            "items": items,
            "last_event_id": cursor,
            "unread_count": services.unread_count(viewer) if allowed else 0,
            "stream_allowed": allowed,
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
        after = int(request.GET["after"]) if "after" in request.GET else None
    except ValueError:
        return _error(400, "limit and after must be integers.")
    if limit < 1:
        return _error(400, "limit must be at least 1.")
    queryset = Notification.objects.visible_to(viewer).with_read(viewer).order_by("-id")
    if after is not None:
        queryset = queryset.filter(id__gt=after)
    results = _payloads(viewer, queryset[: min(limit, API_MAX_LIMIT)])
    return JsonResponse({"results": results, "unread_count": services.unread_count(viewer)})


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
    for field in CREATE_FIELDS:
        if data.get(field) is not None and not isinstance(data[field], str):
            return _error(400, f"{field} must be a string.")
    if "recipients" in data:
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
            url=data.get("url") or "",
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
    viewer = _viewer(request)
    if viewer.user_id is None:
        return _error(403, "Sign in to mark notifications read.")
    if not Notification.objects.visible_to(viewer).filter(pk=pk).exists():
        return _error(404, "No such notification.")
    count = services.mark_read(viewer, [pk])
    return _read_response(request, {"id": pk, "read": True, "unread_count": count})


@require_POST
def api_read_all(request: HttpRequest) -> HttpResponse:
    viewer = _viewer(request)
    if viewer.user_id is None:
        return _error(403, "Sign in to mark notifications read.")
    count = services.mark_read(viewer, None)
    return _read_response(request, {"read": "all", "unread_count": count})

