"""The template tags' markup, through Django's test client (no browser): what works without JavaScript."""

from __future__ import annotations

import re

import pytest
from django.template import Context, Template, TemplateSyntaxError
from django.test import Client, RequestFactory

from notifications.models import Notification, ReadMark

pytestmark = pytest.mark.django_db


def page(user=None) -> str:
    client = Client()
    if user is not None:
        client.force_login(user)
    response = client.get("/")
    assert response.status_code == 200
    return response.content.decode()


def test_signed_in_page_has_badge_forms_and_a_configured_script(alice):
    read = Notification.objects.create(title="old news")
    unread = Notification.objects.create(title="fresh", level="error")
    ReadMark.objects.create(user=alice, notification=read)
    html, item_template = without_item_template(page(alice))
    assert 'class="n-badge" role="status" data-count="1" aria-label="1 unread notification"' in html
    assert f'<li class="n-item level-error unread" data-id="{unread.id}" tabindex="-1">' in html
    assert f'<li class="n-item level-info" data-id="{read.id}" tabindex="-1">' in html
    assert html.count('class="n-read"') == 1  # only the unread one
    assert f'action="/notifications/api/{unread.id}/read/"' in html
    assert 'action="/notifications/api/read-all/"' in html
    assert html.count('name="csrfmiddlewaretoken"') >= 2 and 'name="next" value="/"' in html
    script = re.search(r"<script [^>]*data-notifications-client[^>]*>", html).group(0)
    assert f'data-last-event-id="{unread.id}"' in script
    assert 'data-user="alice"' in script
    assert 'data-read-url="/notifications/api/{id}/read/"' in script
    assert 'data-stream-url="/notifications/stream/"' in script
    assert 'aria-live="polite"' in html and "<noscript>" in html
    assert script.startswith('<script type="module" src="/static/notifications/notifications.js"')
    assert 'data-worker-url="/static/notifications/worker.js"' in script
    # The client clones this rendering of _item.html: every part present, the title a slot.
    assert '<li class="n-item level-info unread" data-id="0" tabindex="-1">' in item_template
    for part in ('class="n-title">{title}</strong>', "<time datetime=", 'class="n-body"', 'class="n-url" href="/"',
                 'action="/notifications/api/0/read/"', 'aria-label="Mark as read: {title}"'):
        assert part in item_template, part


def without_item_template(html: str) -> tuple[str, str]:
    """The page without the widget's ``<template data-n-item-template>``, and that template."""
    match = re.search(r"<template data-n-item-template>(.*?)</template>", html, re.DOTALL)
    assert match, "no item template in the widget"
    return html[: match.start()] + html[match.end() :], match.group(1)


def test_anonymous_page_has_no_badge_and_no_read_forms():
    Notification.objects.create(title="for all")
    html, item_template = without_item_template(page())
    assert "for all" in html
    assert "n-badge" not in html and 'class="n-read' not in html + item_template
    assert 'data-user=""' in html and "data-read-url" not in html


def test_without_public_streams_anonymous_visitors_get_no_client(settings):
    settings.NOTIFICATIONS_PUBLIC = False
    Notification.objects.create(title="hidden")
    html = page()
    assert "hidden" not in html and "data-notifications-client" not in html
    assert "Sign in to receive notifications." in html


def test_unsafe_links_are_not_rendered(alice):
    Notification.objects.filter(pk=Notification.objects.create(title="x").pk).update(url="javascript:alert(1)")
    assert "javascript:" not in page(alice)


def test_tags_work_in_any_template_with_their_own_query(alice):
    Notification.objects.create(title="<b>from a custom page</b>")
    request = RequestFactory().get("/elsewhere/")
    request.user = alice
    html = Template("{% load notifications %}{% notifications_widget limit=5 %}").render(
        Context({"request": request, "user": alice})
    )
    assert "&lt;b&gt;from a custom page&lt;/b&gt;" in html
    assert 'name="next" value="/elsewhere/"' in html
    assert "<h2" in html
    script = Template("{% load notifications %}{% notifications_script last_event_id=7 transport='leader' %}").render(
        Context({"request": request, "user": alice})
    )
    assert script.count("<script") == 1 and "n-list" not in script
    assert 'data-last-event-id="7"' in script and 'data-transport="leader"' in script


def test_unknown_transport_is_a_template_error(alice):
    with pytest.raises(TemplateSyntaxError, match="transport must be one of"):
        Template("{% load notifications %}{% notifications_script transport='carrier-pigeon' %}").render(Context({}))
