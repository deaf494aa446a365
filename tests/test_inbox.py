"""The inbox (SPEC §13) through Django's test client and the services: category and data on every
sender, unread again, archive, muting, expiry, history pages, and each bad input storing nothing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from notifications import services
from notifications.events import PREFERENCES_TYPE, READ_TYPE, PreferenceChange, parse
from notifications.models import DATA_MAX_BYTES, Archive, Notification, Preference, ReadMark, Viewer

pytestmark = pytest.mark.django_db


def client_for(user=None, csrf=False):
    client = Client(enforce_csrf_checks=csrf)
    if user is not None:
        client.force_login(user)
    return client


def post_json(client, url, body, method="post"):
    return getattr(client, method)(url, json.dumps(body), content_type="application/json")


def frame_data(message):
    """The JSON of the SSE frame a per-user message carries."""
    lines = message["frame"].decode().splitlines()
    event = next(line[len("event: "):] for line in lines if line.startswith("event: "))
    return event, json.loads("".join(line[len("data: "):] for line in lines if line.startswith("data: ")))


# -- category, data, expires_at on every sender ------------------------------------------------


def test_notify_stores_category_data_and_expiry_and_shows_them(published):
    n = services.notify("Invoice", category="billing", data={"invoice": 42, "actor": "ann"}, expires_at=60)
    n.refresh_from_db()
    assert (n.category, n.data) == ("billing", {"invoice": 42, "actor": "ann"})
    assert timezone.now() + dt.timedelta(seconds=50) < n.expires_at <= timezone.now() + dt.timedelta(seconds=60)
    payload = n.payload(read=False)
    assert payload["category"] == "billing" and payload["data"] == {"invoice": 42, "actor": "ann"}
    assert payload["expires_at"].endswith("Z")


def test_the_stream_frame_and_message_carry_category_level_and_expiry(published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        n = services.notify("Down", level="error", category="ops", data={"k": "v"}, expires_at="2099-01-01T00:00:00Z")
    event = parse(published[0])
    assert (event.category, event.level) == ("ops", "error")
    assert event.expires == dt.datetime(2099, 1, 1, tzinfo=dt.UTC).timestamp()
    data = json.loads(event.user_frame.decode().split("data: ", 1)[1].split("\n", 1)[0])
    assert data["category"] == "ops" and data["data"] == {"k": "v"} and data["id"] == n.id


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"category": "not a slug"}, "category"),
        ({"category": "x" * 51}, "category"),
        ({"category": "café!"}, "category"),
        ({"data": [1, 2]}, "data"),
        ({"data": "text"}, "data"),
        ({"data": {"big": "x" * DATA_MAX_BYTES}}, "data"),
        ({"data": {"nul": "a\x00b"}}, "data"),
        ({"data": {"n": float("nan")}}, "data"),
        ({"data": {"s": "\ud800"}}, "data"),
        ({"expires_at": "next tuesday"}, "expires_at"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": -5}, "expires_at"),
        ({"expires_at": float("inf")}, "expires_at"),
    ],
)
def test_bad_category_data_or_expiry_is_a_validation_error_and_nothing_is_stored(kwargs, field, published):
    with pytest.raises(ValidationError) as info:
        services.notify("t", **kwargs)
    assert field in info.value.message_dict
    assert Notification.objects.count() == 0 and published == []


def test_data_at_the_limit_is_accepted(published):
    filler = "x" * (DATA_MAX_BYTES - len('{"k":""}'))
    n = services.notify("t", data={"k": filler})
    assert len(json.dumps(n.data, separators=(",", ":")).encode()) == DATA_MAX_BYTES


def test_api_create_takes_category_data_and_expiry(staff, published):
    response = post_json(client_for(staff), "/notifications/api/", {
        "title": "Invoice", "category": "billing", "data": {"invoice": 7}, "expires_at": "3600",
    })
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["category"], body["data"]) == ("billing", {"invoice": 7}) and body["expires_at"]
    response = post_json(client_for(staff), "/notifications/api/", {"title": "t", "expires_at": 120})
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"title": "t", "category": "a b"}, "category"),
        ({"title": "t", "category": 5}, "category must be a string"),
        ({"title": "t", "data": [1]}, "data must be a JSON object"),
        ({"title": "t", "data": "{}"}, "data must be a JSON object"),
        ({"title": "t", "data": {"x": "y" * 9000}}, "data may be at most"),
        ({"title": "t", "expires_at": "soon"}, "ISO 8601"),
        ({"title": "t", "expires_at": True}, "ISO 8601"),
        ({"title": "t", "expires_at": "2001-01-01T00:00:00Z"}, "future"),
    ],
)
def test_api_create_bad_new_fields_are_400_and_store_nothing(staff, published, body, needle):
    response = post_json(client_for(staff), "/notifications/api/", body)
    assert response.status_code == 400
    assert needle in response.json()["error"]
    assert Notification.objects.count() == 0


def test_command_takes_category_data_and_expiry(capsys):
    call_command("notify", "Invoice", "--category", "billing", "--data", '{"invoice": 3}', "--expires", "90")
    n = Notification.objects.get()
    assert (n.category, n.data) == ("billing", {"invoice": 3}) and n.expires_at is not None
    call_command("notify", "Later", "--expires", "2099-05-01T10:00:00+02:00")
    assert Notification.objects.get(title="Later").expires_at == dt.datetime(2099, 5, 1, 8, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--data", "{nope"], "--data must be JSON"),
        (["--data", "[1]"], "--data must be a JSON object"),
        (["--category", "no spaces"], "category"),
        (["--expires", "tomorrow"], "ISO 8601"),
    ],
)
def test_command_bad_new_options_are_command_errors(args, needle):
    with pytest.raises(CommandError, match=needle):
        call_command("notify", "t", *args)
    assert Notification.objects.count() == 0


def test_admin_add_takes_category_and_data(staff, published):
    response = client_for(staff).post("/admin/notifications/notification/add/", {
        "title": "From admin", "body": "", "level": "info", "url": "", "recipient": "", "group": "",
        "category": "billing", "data": '{"a": 1}', "expires_at_0": "", "expires_at_1": "",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    n = Notification.objects.get()
    assert (n.category, n.data, n.expires_at) == ("billing", {"a": 1}, None)


def test_admin_add_refuses_a_bad_category(staff, published):
    response = client_for(staff).post("/admin/notifications/notification/add/", {
        "title": "x", "body": "", "level": "info", "url": "", "recipient": "", "group": "",
        "category": "not a slug", "data": "{}",
    })
    assert response.status_code == 200 and Notification.objects.count() == 0


# -- unread again, archive ---------------------------------------------------------------------


@pytest.fixture
def three(alice, bob):
    return [Notification.objects.create(title=f"n{i}") for i in range(3)] + [
        Notification.objects.create(title="bob's", recipient=bob)
    ]


def test_unread_again_removes_the_mark_and_tells_open_streams(alice, three, published,
                                                              django_capture_on_commit_callbacks):
    client = client_for(alice)
    n = three[0]
    client.post(f"/notifications/api/{n.id}/read/")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/notifications/api/{n.id}/unread/")
    assert response.status_code == 200
    assert response.json() == {"id": n.id, "read": False, "unread_count": 3}
    assert not ReadMark.objects.filter(user=alice).exists()
    message = published[-1]
    assert message["type"] == READ_TYPE and message["user_id"] == alice.id
    assert frame_data(message) == ("read", {"ids": [n.id], "read": False, "unread_count": 3})


def test_read_events_say_read_true(alice, three, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        client_for(alice).post(f"/notifications/api/{three[0].id}/read/")
    assert frame_data(published[-1]) == ("read", {"ids": [three[0].id], "read": True, "unread_count": 2})


def test_archive_hides_from_list_and_count_and_unarchive_restores(alice, three, published,
                                                                  django_capture_on_commit_callbacks):
    client = client_for(alice)
    n = three[1]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/notifications/api/{n.id}/archive/")
    assert response.json() == {"id": n.id, "archived": True, "unread_count": 2}
    assert frame_data(published[-1]) == ("archive", {"ids": [n.id], "archived": True, "unread_count": 2})
    listed = client.get("/notifications/api/").json()
    assert n.id not in [r["id"] for r in listed["results"]] and listed["unread_count"] == 2
    archived = client.get("/notifications/api/?archived=1").json()
    assert [r["id"] for r in archived["results"]] == [n.id]
    # Archiving twice is fine; bob is unaffected.
    assert client.post(f"/notifications/api/{n.id}/archive/").status_code == 200
    assert Archive.objects.count() == 1
    assert len(client_for(three[3].recipient).get("/notifications/api/").json()["results"]) == 4
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/notifications/api/{n.id}/unarchive/")
    assert response.json() == {"id": n.id, "archived": False, "unread_count": 3}
    assert frame_data(published[-1]) == ("archive", {"ids": [n.id], "archived": False, "unread_count": 3})
    assert n.id in [r["id"] for r in client.get("/notifications/api/").json()["results"]]


@pytest.mark.parametrize("action", ["unread", "archive", "unarchive"])
def test_new_actions_404_for_what_the_caller_may_not_see_and_403_anonymous(alice, three, action):
    bobs = three[3]
    assert client_for(alice).post(f"/notifications/api/{bobs.id}/{action}/").status_code == 404
    assert client_for(alice).post(f"/notifications/api/999999/{action}/").status_code == 404
    assert client_for().post(f"/notifications/api/{three[0].id}/{action}/").status_code == 403
    assert client_for(alice).get(f"/notifications/api/{three[0].id}/{action}/").status_code == 405
    assert not Archive.objects.exists()


@pytest.mark.parametrize("action", ["unread", "archive", "unarchive"])
def test_new_actions_need_csrf(alice, three, action):
    assert client_for(alice, csrf=True).post(f"/notifications/api/{three[0].id}/{action}/").status_code == 403


def test_plain_forms_redirect_back(alice, three):
    response = client_for(alice).post(f"/notifications/api/{three[0].id}/archive/", {"next": "/?before=9"})
    assert response.status_code == 302 and response["Location"] == "/?before=9"


def test_read_all_skips_archived_and_muted(alice, three, published):
    Preference.objects.create(user=alice, muted=["billing"])
    muted = Notification.objects.create(title="bill", category="billing")
    Archive.objects.create(user=alice, notification=three[0])
    client_for(alice).post("/notifications/api/read-all/")
    marked = set(ReadMark.objects.filter(user=alice).values_list("notification_id", flat=True))
    assert marked == {three[1].id, three[2].id}
    assert muted.id not in marked


# -- muting ------------------------------------------------------------------------------------


def test_preferences_get_and_put(alice, published, django_capture_on_commit_callbacks):
    client = client_for(alice)
    Notification.objects.create(title="bill", category="billing")
    Notification.objects.create(title="plain")
    assert client.get("/notifications/api/preferences/").json() == {"muted": []}
    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(client, "/notifications/api/preferences/", {"muted": ["social", "billing", "social"]},
                             "put")
    assert response.status_code == 200 and response.json() == {"muted": ["billing", "social"]}
    assert client.get("/notifications/api/preferences/").json() == {"muted": ["billing", "social"]}
    assert published[-2]["type"] == PREFERENCES_TYPE
    assert parse(published[-2]) == PreferenceChange(alice.id, frozenset({"billing", "social"}))
    # Open pages' badges follow: a read event naming no ids carries the new count.
    assert published[-1]["type"] == READ_TYPE
    assert frame_data(published[-1]) == ("read", {"ids": [], "read": True, "unread_count": 1})
    assert Viewer.of(alice).muted == frozenset({"billing", "social"})


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"muted": ["ok"], "digest": True}, "Unknown field(s): digest"),
        ({}, "muted is required"),
        ({"muted": "billing"}, "list of category slugs"),
        ({"muted": [1]}, "list of category slugs"),
        ({"muted": ["not a slug"]}, "Not a category slug"),
        ({"muted": [""]}, "Not a category slug"),
        ({"muted": ["x" * 51]}, "Not a category slug"),
        ({"muted": [f"c{i}" for i in range(201)]}, "At most 200"),
        ([], "JSON object"),
    ],
)
def test_preferences_bad_input_is_400_and_changes_nothing(alice, published, body, needle):
    Preference.objects.create(user=alice, muted=["keep"])
    response = post_json(client_for(alice), "/notifications/api/preferences/", body, "put")
    assert response.status_code == 400
    assert needle in response.json()["error"]
    assert Preference.objects.get(user=alice).muted == ["keep"] and published == []


def test_preferences_need_a_user_csrf_and_json(alice):
    assert client_for().get("/notifications/api/preferences/").status_code == 403
    assert client_for(alice).post("/notifications/api/preferences/").status_code == 405
    client = client_for(alice, csrf=True)
    assert post_json(client, "/notifications/api/preferences/", {"muted": []}, "put").status_code == 403
    bad = client_for(alice).put("/notifications/api/preferences/", b"{nope", content_type="application/json")
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]


def test_muted_category_not_listed_or_counted_except_errors_and_uncategorised(alice, published):
    Preference.objects.create(user=alice, muted=["billing"])
    muted = Notification.objects.create(title="bill", category="billing")
    loud = Notification.objects.create(title="bill failed", category="billing", level="error")
    plain = Notification.objects.create(title="plain")
    other = Notification.objects.create(title="social", category="social")
    client = client_for(alice)
    body = client.get("/notifications/api/").json()
    assert [r["id"] for r in body["results"]] == [other.id, plain.id, loud.id]
    assert body["unread_count"] == 3
    assert [r["id"] for r in client.get("/notifications/api/?muted=1").json()["results"]] == [muted.id]
    assert [r["id"] for r in client.get("/notifications/api/?category=billing").json()["results"]] == [loud.id]
    assert [r["id"] for r in client.get("/notifications/api/?category=billing&muted=1").json()["results"]] == [
        muted.id
    ]


# -- expiry ------------------------------------------------------------------------------------


def test_expired_notice_not_listed_counted_or_replayed(alice, published):
    gone = Notification.objects.create(title="gone", expires_at=timezone.now() - dt.timedelta(seconds=1))
    kept = Notification.objects.create(title="kept", expires_at=timezone.now() + dt.timedelta(hours=1))
    client = client_for(alice)
    body = client.get("/notifications/api/").json()
    assert [r["id"] for r in body["results"]] == [kept.id] and body["unread_count"] == 1
    assert client.get("/notifications/api/?archived=1").json()["results"] == []
    assert gone.id not in [r["id"] for r in client.get("/notifications/api/?unread=1").json()["results"]]


# -- history -----------------------------------------------------------------------------------


def test_before_pages_walk_the_whole_history_once(alice, bob):
    rows = [Notification.objects.create(title=f"n{i}", **({"recipient": bob} if i % 3 == 0 else {}))
            for i in range(23)]
    visible = [r.id for r in reversed(rows) if r.recipient_id is None]
    client = client_for(alice)
    seen: list[int] = []
    url = "/notifications/api/?limit=4"
    for _ in range(20):
        body = client.get(url).json()
        seen += [r["id"] for r in body["results"]]
        if body["next"] is None:
            break
        assert body["next"] == body["results"][-1]["id"]
        url = f"/notifications/api/?limit=4&before={body['next']}"
    assert seen == visible


def test_before_combines_with_filters_and_after(alice):
    rows = [Notification.objects.create(title=f"n{i}", category="a" if i % 2 else "b") for i in range(10)]
    ReadMark.objects.create(user=alice, notification=rows[7])
    client = client_for(alice)
    body = client.get(f"/notifications/api/?before={rows[9].id}&category=a&unread=1&limit=2").json()
    assert [r["id"] for r in body["results"]] == [rows[5].id, rows[3].id] and body["next"] == rows[3].id
    body = client.get(f"/notifications/api/?before={rows[3].id}&category=a&unread=1&limit=2").json()
    assert [r["id"] for r in body["results"]] == [rows[1].id] and body["next"] is None
    body = client.get(f"/notifications/api/?before={rows[8].id}&after={rows[4].id}").json()
    assert [r["id"] for r in body["results"]] == [rows[7].id, rows[6].id, rows[5].id] and body["next"] is None
    Archive.objects.create(user=alice, notification=rows[2])
    body = client.get(f"/notifications/api/?archived=1&before={rows[5].id}").json()
    assert [r["id"] for r in body["results"]] == [rows[2].id]


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("before=x", "integers"),
        ("after=1.5", "integers"),
        ("unread=yes", "unread must be 1 or 0"),
        ("archived=2", "archived must be 1 or 0"),
        ("muted=maybe", "muted must be 1 or 0"),
        ("category=a%20b", "category must be a slug"),
    ],
)
def test_bad_list_filters_are_400(alice, query, needle):
    response = client_for(alice).get(f"/notifications/api/?{query}")
    assert response.status_code == 400 and needle in response.json()["error"]


def test_page_has_older_link_and_archive_and_unread_forms(alice, settings):
    rows = [Notification.objects.create(title=f"n{i}", category="billing") for i in range(53)]
    ReadMark.objects.create(user=alice, notification=rows[-1])
    client = client_for(alice)
    html = client.get("/notifications/").content.decode()
    assert f'href="?before={rows[3].id}"' in html
    assert f'action="/notifications/api/{rows[-1].id}/archive/"' in html
    assert f'action="/notifications/api/{rows[-1].id}/unread/"' in html
    assert "billing" in html
    older = client.get(f"/notifications/?before={rows[3].id}").content.decode()
    assert f'data-id="{rows[2].id}"' in older and f'data-id="{rows[3].id}"' not in older
    assert client.get("/notifications/?unread=banana").status_code == 400


# -- the inbox replay query stays indexed ------------------------------------------------------


@pytest.mark.skipif("sqlite" not in __import__("django.db").db.connection.vendor, reason="SQLite's EXPLAIN QUERY PLAN")
def test_inbox_replay_query_searches_from_the_cursor_and_looks_up_marks_by_index(alice):
    from django.db import connection

    Preference.objects.create(user=alice, muted=["billing"])
    viewer = Viewer.of(alice)
    query = Notification.objects.inbox(viewer).with_read(viewer).filter(id__gt=5).order_by("id")[:501]
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = [row[-1] for row in cursor.fetchall()]
    text = "\n".join(plan)
    assert not any(step.startswith("SCAN") for step in plan), text
    searches = [step for step in plan if step.startswith("SEARCH notifications_notification")]
    assert searches and all("id>?" in step for step in searches), text
    # archive and read marks: lookups in their (user, notification) unique indexes
    assert sum(step.startswith("SEARCH U0 USING COVERING INDEX") for step in plan) >= 2, text


def _plans(queryset) -> list[str]:
    from django.db import connection

    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return [row[-1] for row in cursor.fetchall()]


@pytest.mark.skipif("sqlite" not in __import__("django.db").db.connection.vendor, reason="SQLite's EXPLAIN QUERY PLAN")
def test_database_replay_reads_each_audience_in_id_order_without_a_sort(alice, monkeypatch):
    """The old-cursor replay (issue 14, speed): no temporary B-tree over every visible row after the cursor."""
    from notifications import replay

    Preference.objects.create(user=alice, muted=["billing"])
    viewer = Viewer.of(alice)
    captured = []
    real = replay.heapq.merge

    def spy(*parts, **kwargs):
        captured.extend(parts)
        return real(*parts, **kwargs)

    monkeypatch.setattr(replay.heapq, "merge", spy)
    replay.missed_rows(viewer, 5, 501)
    # Per audience, by the latest event id of each notice (SPEC §14): an expression index each.
    parts = replay.missed_parts(viewer, 5)
    assert len(parts) == 2 + len(viewer.group_ids)
    for part in parts:
        plan = _plans(part[:501])
        text = "\n".join(plan)
        assert not any("TEMP B-TREE" in step or step.startswith("SCAN") for step in plan), text
    assert len(captured) == len(parts)


@pytest.mark.parametrize("groups", [0, 2, 9])
def test_merged_replay_rows_equal_the_single_query(alice, bob, groups, published):
    from django.contrib.auth.models import Group

    from notifications import replay

    made = [Group.objects.create(name=f"g{i}") for i in range(groups)]
    alice.groups.add(*made)
    other = Group.objects.create(name="not alices")
    targets = [{}, {"recipient": alice}, {"recipient": bob}, {"group": other}] + [{"group": g} for g in made]
    for i in range(60):
        Notification.objects.create(title=f"n{i}", **targets[i % len(targets)])
    viewer = Viewer.of(alice)
    single = Notification.objects.inbox(viewer).with_read(viewer).order_by("id")
    for after, count in ((0, 501), (0, 7), (Notification.objects.order_by("id")[20].id, 5)):
        expected = [n.id for n in single.filter(id__gt=after)[:count]]
        assert [n.id for n in replay.missed_rows(viewer, after, count)] == expected
