"""Template tags: ``{% notifications_widget %}`` (badge, list, live client) and ``{% notifications_script %}``.

Reads through the app's querysets and ``services.unread_count``; imports nothing from ``views``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse

from notifications.conf import app_settings
from notifications.links import is_safe_link
from notifications.models import Level, Notification, Viewer
from notifications.services import unread_count as count_unread

register = template.Library()

#: The stream is a Channels route (``notifications/routing.py``), not a Django URL, so it
#: cannot be reversed; pass ``stream_url=`` to a tag if it is routed elsewhere.
STREAM_URL = "/notifications/stream/"
PAGE_SIZE = 50
TRANSPORTS = ("auto", "shared-worker", "leader", "direct")
#: Reversed in place of an id, then swapped for ``{id}``: the client's read URL template.
_ID_SENTINEL = 9081726354
#: The placeholder item rendered into the widget's ``<template data-n-item-template>``: every part
#: of ``_item.html`` present, so the client clones that markup instead of re-implementing it
#: (widget.js fills it; ``{title}`` is its slot for the title in attributes).
ITEM_TEMPLATE = {
    "id": 0, "title": "{title}", "body": "-", "level": "info", "url": "/",
    "created_at": "1970-01-01T00:00:00Z", "read": False, "category": "-",
    "placeholder": True,
}


def _reverse(name: str, *args: Any) -> str:
    """The URL, or "" when the project does not route it (the feature is then left out)."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def _id_url(name: str) -> str:
    """A URL with ``{id}`` in place of a notification's id ("" when not routed)."""
    return _reverse(name, _ID_SENTINEL).replace(str(_ID_SENTINEL), "{id}")


def _user(context: template.Context) -> Any:
    user = context.get("user")
    if user is None and context.get("request") is not None:
        user = getattr(context["request"], "user", None)
    return user if user is not None and user.is_authenticated else None


def _client(
    context: template.Context, *, last_event_id: int | None, stream_url: str, transport: str
) -> dict[str, Any]:
    if transport not in TRANSPORTS:
        raise template.TemplateSyntaxError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}.")
    user = _user(context)
    read_url = _id_url("notifications:read") if user else ""
    request = context.get("request")
    return {
        "stream_url": stream_url,
        "api_url": _reverse("notifications:api-list"),
        "read_url": read_url,
        "unread_url": _id_url("notifications:unread") if user else "",
        "archive_url": _id_url("notifications:archive") if user else "",
        "unarchive_url": _id_url("notifications:unarchive") if user else "",
        "read_all_url": _reverse("notifications:read-all") if user else "",
        "username": user.get_username() if user else "",
        "signed_in": user is not None,
        "last_event_id": last_event_id,
        "transport": transport,
        "csrf_token": context.get("csrf_token"),
        "next": request.get_full_path() if request is not None else "/",
    }


def _item(payload: dict[str, Any], read_url: str, client: dict[str, Any] | None = None,
          archived: bool = False) -> dict[str, Any]:
    """A notification's payload plus what the markup needs (a datetime, a checked link)."""
    item = dict(payload)
    created = payload.get("created_at")
    if isinstance(created, str):
        try:
            item["created"] = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            item["created"] = None
    item["level"] = payload.get("level") if payload.get("level") in Level.values else Level.INFO
    item["url"] = safe_link(payload.get("url"))
    item["read_url"] = read_url.replace("{id}", str(payload["id"])) if read_url else ""
    urls = client or {}
    item["archived"] = archived
    for key, source in (("unread_url", "unread_url"), ("archive_url", "unarchive_url" if archived else "archive_url")):
        template_url = urls.get(source) or ""
        item[key] = template_url.replace("{id}", str(payload["id"])) if template_url else ""
    return item


@register.filter
def safe_link(url: Any) -> str:
    """``url`` if it passes the link rule (``notifications.links``), else "" (render no link).

    Applied where a link is rendered, so a notice stored before the rule existed, or by a raw
    SQL write, still cannot send a reader elsewhere.
    """
    return url if isinstance(url, str) and is_safe_link(url) else ""


@register.inclusion_tag("notifications/_script.html", takes_context=True)
def notifications_script(
    context: template.Context,
    last_event_id: int | None = None,
    stream_url: str = STREAM_URL,
    transport: str = "auto",
) -> dict[str, Any]:
    """Only the client: a deferred ``<script>`` configured by ``data-`` attributes.

    ``last_event_id`` is the newest id the page rendered (nothing before it is repeated).
    The client fires ``notifications:*`` DOM events on ``document`` (docs/client.md).
    """
    return _client(context, last_event_id=last_event_id, stream_url=stream_url, transport=transport)


@register.inclusion_tag("notifications/widget.html", takes_context=True)
def notifications_widget(
    context: template.Context,
    items: list[dict[str, Any]] | None = None,
    unread_count: int | None = None,
    last_event_id: int | None = None,
    stream_allowed: bool | None = None,
    limit: int = PAGE_SIZE,
    heading_level: int = 2,
    stream_url: str = STREAM_URL,
    transport: str = "auto",
    older_url: str | None = None,
    archived: bool = False,
) -> dict[str, Any]:
    """Badge, connection state, mark-all-read, the list (server-rendered) and the client.

    Queries the viewer's newest ``limit`` notifications unless the view passes ``items``
    (payload dicts, newest first), ``unread_count``, ``last_event_id`` and ``stream_allowed``.
    """
    user = _user(context)
    viewer = Viewer.of(user)
    if stream_allowed is None:
        stream_allowed = user is not None or app_settings.PUBLIC
    if items is None:
        # The cursor is the page view's: the newest id of all, read before the list, so the
        # stream sends whatever commits after it even when nothing visible was rendered.
        if last_event_id is None:
            last_event_id = Notification.objects.newest_id()
        items = []
        if stream_allowed:
            rows = (
                Notification.objects.inbox(viewer).with_read(viewer)
                .filter(id__lte=last_event_id).order_by("-id")[:limit]
            )
            items = [row.payload(read=row.is_read if user else None) for row in rows]  # type: ignore[attr-defined]
    if last_event_id is None:
        # The view passed items but no cursor: resume after the newest rendered one (the stream
        # replays anything newer that is visible), or from the newest id if it rendered none.
        last_event_id = max((item["id"] for item in items), default=None) or Notification.objects.newest_id()
    if unread_count is None:
        unread_count = count_unread(viewer) if user and stream_allowed else 0
    client = _client(context, last_event_id=last_event_id, stream_url=stream_url, transport=transport)
    return {
        **client,
        "items": [_item(item, client["read_url"], client, archived) for item in items],
        "older_url": older_url,
        "archived": archived,
        "unread_count": unread_count,
        "stream_allowed": stream_allowed,
        "heading_tag": f"h{min(max(int(heading_level), 1), 6)}",
        "item_template": _item(ITEM_TEMPLATE, client["read_url"], client),
    }
