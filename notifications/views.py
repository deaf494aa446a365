"""The page and the JSON API, thin: parse, call services / querysets, respond."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .conf import app_settings
from .models import Notification, Viewer

PAGE_SIZE = 50
API_MAX_LIMIT = 100


def _viewer(request: HttpRequest) -> Viewer:
    return Viewer.of(request.user)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    viewer = _viewer(request)
    items: list[dict[str, Any]] = []
    if viewer.user_id is not None or app_settings.PUBLIC:
        rows = Notification.objects.visible_to(viewer).with_read(viewer).order_by("-id")[:PAGE_SIZE]
        signed_in = viewer.user_id is not None
        items = [row.payload(read=row.is_read if signed_in else None) for row in rows]
    last_id = max((item["id"] for item in items), default=None)
    return render(
        request,
        "notifications/index.html",
        {
            "items": items,
            "last_event_id": last_id,
            "stream_allowed": viewer.user_id is not None or app_settings.PUBLIC,
        },
    )


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_GET
def api_list(request: HttpRequest) -> JsonResponse:
    viewer = _viewer(request)
    if viewer.user_id is None and not app_settings.PUBLIC:
        return _error(403, "Sign in to list notifications.")
    queryset = Notification.objects.visible_to(viewer).with_read(viewer).order_by("-id")
    try:
        limit = int(request.GET.get("limit", API_MAX_LIMIT))
        after = int(request.GET["after"]) if "after" in request.GET else None
    except ValueError:
        return _error(400, "limit and after must be integers.")
    if limit < 1:
        return _error(400, "limit must be at least 1.")
    if after is not None:
        queryset = queryset.filter(id__gt=after)
    signed_in = viewer.user_id is not None
    results = [row.payload(read=row.is_read if signed_in else None) for row in queryset[: min(limit, API_MAX_LIMIT)]]
    unread = sum(1 for r in results if r.get("read") is False)  # replaced by an indexed count in the API issue
    return JsonResponse({"results": results, "unread_count": unread})
