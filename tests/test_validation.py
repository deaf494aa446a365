"""What a notice may hold, at every entry point: notify(), send(), the API, the command, the admin.

The link rule itself is tabled in tests/test_links.py; here each sender refuses what it
refuses, with its own kind of error, and stores nothing.
"""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.template import Context, Template
from django.test import Client

from notifications import models, services
from notifications.models import BODY_MAX_LENGTH, FRAME_MAX_BYTES, Notification

pytestmark = pytest.mark.django_db

#: (title, body, url) that every entry point refuses, and the field the error names.
BAD = [
    pytest.param({"title": "a\x00b"}, "title", id="nul-title"),
    pytest.param({"title": "a\tb"}, "title", id="tab-title"),
    pytest.param({"title": "a\nb"}, "title", id="newline-title"),
    pytest.param({"title": "a\x85b"}, "title", id="c1-title"),
    pytest.param({"title": "x" * 201}, "title", id="long-title"),
    pytest.param({"body": "a\x00b"}, "body", id="nul-body"),
    pytest.param({"body": "a\x1bb"}, "body", id="esc-body"),
    pytest.param({"body": "a\x7fb"}, "body", id="del-body"),
    pytest.param({"body": "x" * (BODY_MAX_LENGTH + 1)}, "body", id="long-body"),
    pytest.param({"url": "/\\evil.com"}, "url", id="backslash-url"),
    pytest.param({"url": "/\t/evil.com"}, "url", id="tab-url"),
    pytest.param({"url": "/\n/evil.com"}, "url", id="newline-url"),
    pytest.param({"url": "//evil.com"}, "url", id="scheme-relative-url"),
    pytest.param({"url": "javascript:alert(1)"}, "url", id="javascript-url"),
    pytest.param({"url": "/" + "x" * 500}, "url", id="long-url"),
]


def fields(**overrides):
    return {"title": "t", "body": "", "url": "", **overrides}


@pytest.mark.parametrize(("bad", "field"), BAD)
def test_notify_raises_validation_error_and_stores_nothing(published, bad, field):
    data = fields(**bad)
    with pytest.raises(ValidationError) as info:
        services.notify(data["title"], body=data["body"], url=data["url"])
    assert field in info.value.message_dict
    assert not Notification.objects.exists() and published == []


@pytest.mark.parametrize(("bad", "field"), BAD)
def test_send_validates_an_instance_built_by_hand(published, bad, field):
    with pytest.raises(ValidationError) as info:
        services.send(Notification(**fields(**bad)))
    assert field in info.value.message_dict
    assert not Notification.objects.exists() and published == []


def test_send_refuses_the_links_it_used_to_store(published):
    for url in ("/\\evil.com", "//evil.com", "javascript:alert(1)", "ftp://x.example/"):
        with pytest.raises(ValidationError):
            services.send(Notification(title="t", url=url))
    assert not Notification.objects.exists()


def test_body_line_endings_become_lf_and_tabs_stay(published):
    n = services.notify("t", body="one\r\ntwo\rthree\n\tfour")
    n.refresh_from_db()
    assert n.body == "one\ntwo\nthree\n\tfour"


def test_the_limits_themselves_are_accepted(published):
    n = services.notify("x" * 200, body="é" * BODY_MAX_LENGTH, url="/" + "x" * 499)
    assert Notification.objects.get(pk=n.pk).body == "é" * BODY_MAX_LENGTH
    assert len(services.notification_frame(n, read=False)) <= FRAME_MAX_BYTES


def test_crlf_counts_once_towards_the_body_limit(published):
    services.notify("t", body="a\r\n" * (BODY_MAX_LENGTH // 2))  # 15,000 submitted, 10,000 stored


def test_the_frame_limit_is_enforced(published, monkeypatch):
    monkeypatch.setattr(models, "FRAME_MAX_BYTES", 600)
    services.notify("fits", body="x" * 300)
    with pytest.raises(ValidationError) as info:
        services.notify("too big", body="x" * 600)
    assert "bytes" in " ".join(info.value.message_dict["__all__"])
    assert list(Notification.objects.values_list("title", flat=True)) == ["fits"]


def test_frame_size_counts_the_longest_id(published):
    n = Notification(title="t")
    before = n.frame_size()
    n.id = 9_223_372_036_854_775_807
    assert before >= n.frame_size()


# The JSON API ---------------------------------------------------------------------------------


def api_client(user):
    client = Client()
    client.force_login(user)
    return client


def post(client, payload):
    return client.post("/notifications/api/", json.dumps(payload), content_type="application/json")


@pytest.mark.parametrize(("bad", "field"), BAD)
def test_api_answers_400_json_and_stores_nothing(staff, published, bad, field):
    response = post(api_client(staff), fields(**bad))
    assert response.status_code == 400
    assert field in response.json()["error"]
    assert not Notification.objects.exists()


def test_api_keeps_crlf_bodies_working(staff, published):
    response = post(api_client(staff), {"title": "t", "body": "a\r\nb"})
    assert response.status_code == 201 and response.json()["body"] == "a\nb"


@pytest.fixture
def plain_staff(db):
    return get_user_model().objects.create_user("editor", password="pw-editor-123", is_staff=True)


def test_api_refuses_staff_without_add_permission(plain_staff, published):
    response = post(api_client(plain_staff), {"title": "t"})
    assert response.status_code == 403
    assert "notifications.add_notification" in response.json()["error"]
    assert not Notification.objects.exists()


def test_api_accepts_a_non_staff_user_with_add_permission(alice, published):
    alice.user_permissions.add(Permission.objects.get(codename="add_notification"))
    response = post(api_client(alice), {"title": "t"})
    assert response.status_code == 201


def test_api_refuses_an_inactive_user_with_the_permission(plain_staff, published):
    plain_staff.user_permissions.add(Permission.objects.get(codename="add_notification"))
    client = api_client(plain_staff)
    plain_staff.is_active = False
    plain_staff.save()
    assert post(client, {"title": "t"}).status_code == 403


def test_api_change_or_delete_permission_does_not_allow_sending(plain_staff, published):
    plain_staff.user_permissions.add(*Permission.objects.filter(codename__in=["change_notification",
                                                                             "delete_notification"]))
    assert post(api_client(plain_staff), {"title": "t"}).status_code == 403


# manage.py notify -----------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "field"), BAD)
def test_command_raises_command_error(published, bad, field):
    data = fields(**bad)
    with pytest.raises(CommandError) as info:
        call_command("notify", data["title"], "--body", data["body"], "--url", data["url"])
    assert field in str(info.value)
    assert not Notification.objects.exists()


# The admin ------------------------------------------------------------------------------------


def admin_form(**overrides):
    return {"title": "t", "body": "", "level": "info", "url": "", "recipient": "", "group": "", **overrides}


@pytest.mark.parametrize(("bad", "field"), BAD)
def test_admin_shows_a_form_error(staff, published, bad, field):
    response = api_client(staff).post("/admin/notifications/notification/add/", admin_form(**bad))
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not Notification.objects.exists()


def test_admin_textarea_crlf_is_stored_as_lf(staff, published):
    response = api_client(staff).post("/admin/notifications/notification/add/",
                                      admin_form(body="line one\r\nline two"))
    assert response.status_code == 302
    assert Notification.objects.get().body == "line one\nline two"


def test_admin_refuses_staff_without_add_permission(plain_staff, published):
    response = api_client(plain_staff).post("/admin/notifications/notification/add/", admin_form())
    assert response.status_code == 403


# The page renders only safe links --------------------------------------------------------------


@pytest.mark.parametrize("url", ["/\\evil.com", "/\t/evil.com", "//evil.com", "javascript:alert(1)"])
def test_a_bad_link_stored_before_the_rule_renders_no_link(alice, url):
    Notification.objects.create(title="old", url=url)  # the ORM write skips clean(), as old rows did
    html = _without_item_template(Client().get("/").content.decode())
    assert "old" in html
    assert 'class="n-url"' not in html


def _without_item_template(html: str) -> str:
    """The page less the widget's ``<template>`` (the client's item markup, whose link is "/")."""
    return re.sub(r"<template data-n-item-template>.*?</template>", "", html, flags=re.DOTALL)


def test_a_good_link_is_rendered(alice):
    Notification.objects.create(title="ok", url="/status?x=1")
    html = Client().get("/").content.decode()
    assert 'class="n-url" href="/status?x=1"' in html


def test_the_safe_link_filter():
    template = Template("{% load notifications %}[{{ u|safe_link }}]")
    assert template.render(Context({"u": "/a"})) == "[/a]"
    assert template.render(Context({"u": "/\\evil.com"})) == "[]"
    assert template.render(Context({"u": None})) == "[]"
