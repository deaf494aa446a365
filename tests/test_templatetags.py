"""The widget tag's cursor: the same newest id the page view uses (``Notification.objects.newest_id()``)."""

from __future__ import annotations

import re

import pytest
from django.template import Context, Template
from django.test import RequestFactory

from notifications.models import Notification
from notifications.services import notify


def render_widget(user, markup: str = "{% notifications_widget %}") -> str:
    request = RequestFactory().get("/")
    request.user = user
    return Template("{% load notifications %}" + markup).render(Context({"request": request, "user": user}))


def cursor_of(html: str) -> str:
    match = re.search(r'data-last-event-id="([^"]*)"', html)
    assert match, html
    return match.group(1)


@pytest.mark.django_db
def test_widget_cursor_is_the_newest_id_even_when_the_newest_notice_is_someone_elses(alice, bob):
    mine = notify("for everyone")
    theirs = notify("for bob only", recipient=bob)
    html = render_widget(alice)
    assert f'data-id="{mine.id}"' in html and f'data-id="{theirs.id}"' not in html
    # The page view's cursor is newest_id(), read before the list; the tag must agree with it.
    assert cursor_of(html) == str(Notification.objects.newest_id()) == str(theirs.id)


@pytest.mark.django_db
def test_widget_cursor_is_set_when_nothing_visible_was_rendered(alice, bob):
    theirs = notify("for bob only", recipient=bob)
    html = render_widget(alice)
    assert "No notifications yet." in html
    # Without a cursor the client would connect "from now", missing whatever commits between
    # the render and the connect.
    assert cursor_of(html) == str(theirs.id)


@pytest.mark.django_db
def test_widget_cursor_on_an_empty_database_is_zero(alice):
    assert cursor_of(render_widget(alice)) == "0"


@pytest.mark.django_db
def test_widget_lists_nothing_newer_than_its_cursor(alice):
    older = notify("older")
    newer = notify("newer")
    html = render_widget(alice, f"{{% notifications_widget last_event_id={older.id} %}}")
    assert cursor_of(html) == str(older.id)
    assert f'data-id="{older.id}"' in html and f'data-id="{newer.id}"' not in html


@pytest.mark.django_db
def test_widget_with_items_but_no_cursor_resumes_after_the_newest_item(alice):
    first = notify("first")
    notify("second")
    items = [first.payload(read=False)]
    html = Template("{% load notifications %}{% notifications_widget items=items %}").render(
        Context({"request": RequestFactory().get("/"), "user": alice, "items": items})
    )
    assert cursor_of(html) == str(first.id)
