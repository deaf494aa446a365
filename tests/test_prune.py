"""Retention: prune_notifications deletes in batches and records the horizon; replay resets past it."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.management.commands.prune_notifications import prune
from notifications.models import Notification, ReadMark, StreamState, Viewer
from notifications.services import notify
from tests.support.consumer import ConsumerStream

pytestmark = pytest.mark.timeout(30)


def make(count: int, *, days_old: float = 0, **audience) -> list[int]:
    ids = [notify(f"n{i}", **audience).id for i in range(count)]
    if days_old:
        Notification.objects.filter(id__in=ids).update(created_at=timezone.now() - dt.timedelta(days=days_old))
    return ids


def pruned_through() -> int:
    return StreamState.objects.values_list("pruned_through", flat=True).get(pk=1)


@pytest.mark.django_db
def test_prune_deletes_only_what_is_older_than_retention_and_records_the_horizon(settings, alice):
    settings.NOTIFICATIONS_RETENTION_DAYS = 30
    old = make(5, days_old=31)
    ReadMark.objects.create(user=alice, notification_id=old[0])
    kept = make(3, days_old=29)
    out = StringIO()
    call_command("prune_notifications", stdout=out)
    assert list(Notification.objects.order_by("id").values_list("id", flat=True)) == kept
    assert not ReadMark.objects.exists()
    assert pruned_through() == max(old)
    assert f"Deleted 5 notification(s) older than 30 day(s); pruned through id {max(old)}." in out.getvalue()


@pytest.mark.django_db
def test_prune_deletes_in_batches_not_row_by_row():
    old = make(250, days_old=40)
    with CaptureQueriesContext(connection) as queries:
        deleted, horizon = prune(30, batch_size=100)
    assert (deleted, horizon) == (250, max(old))
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    notification_deletes = [sql for sql in deletes if 'FROM "notifications_notification"' in sql]
    # 3 batches of at most 100 ids: one set-based DELETE each (plus one each for the read marks
    # and the archive marks that cascade).
    assert len(notification_deletes) == 3, notification_deletes
    assert len(deletes) <= 9, deletes
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_prune_raises_the_horizon_before_deleting_anything():
    make(3, days_old=40)
    with CaptureQueriesContext(connection) as queries:
        prune(30, batch_size=2)
    sqls = [q["sql"] for q in queries.captured_queries]
    horizon_update = next(i for i, sql in enumerate(sqls) if sql.startswith('UPDATE "notifications_streamstate"'))
    first_delete = next(i for i, sql in enumerate(sqls) if sql.startswith("DELETE"))
    assert horizon_update < first_delete


@pytest.mark.django_db
def test_prune_never_lowers_the_horizon_and_dry_run_deletes_nothing():
    make(2, days_old=40)
    StreamState.objects.update_or_create(pk=1, defaults={"pruned_through": 10_000})
    out = StringIO()
    call_command("prune_notifications", "--dry-run", stdout=out)
    assert "Would delete 2 notification(s)" in out.getvalue()
    assert Notification.objects.count() == 2
    prune(30)
    assert Notification.objects.count() == 0
    assert pruned_through() == 10_000


@pytest.mark.django_db
def test_prune_with_nothing_old_changes_nothing():
    make(2)
    assert prune(30) == (0, 0)
    assert Notification.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "message"), [(["--days", "-1"], "--days"), (["--batch-size", "0"], "--batch-size")])
def test_prune_rejects_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("prune_notifications", *args)


# -- what a resuming stream sees ------------------------------------------------------------


def has(kind):
    return lambda s: bool(s.of_type(kind))


@pytest.mark.django_db(transaction=True)
async def test_last_event_id_older_than_what_is_kept_gets_reset_expired(fresh_hub):
    old = await sync_to_async(make)(3, days_old=40)
    kept = await sync_to_async(make)(2)
    await sync_to_async(prune)(30)
    stream = await ConsumerStream(headers=[(b"last-event-id", str(old[0]).encode())]).open()
    await stream.read_until(has("hello"))
    assert [e.type for e in stream.events] == ["reset", "hello"]
    reset = json.loads(stream.of_type("reset")[0].data)
    assert reset["reason"] == "expired" and reset["cursor"] == max(kept)
    await stream.close()
    # At the horizon itself nothing is missing: a normal replay.
    stream = await ConsumerStream(headers=[(b"last-event-id", str(max(old)).encode())]).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == kept and not stream.of_type("reset")
    await stream.close()


@pytest.mark.django_db(transaction=True)
async def test_replay_larger_than_the_limit_gets_reset_too_many(fresh_hub, settings):
    settings.NOTIFICATIONS_REPLAY_LIMIT = 3
    ids = await sync_to_async(make)(5)
    stream = await ConsumerStream(query=f"last_event_id={ids[0] - 1}".encode()).open()
    await stream.read_until(has("hello"))
    assert [e.type for e in stream.events] == ["reset", "hello"]
    assert json.loads(stream.of_type("reset")[0].data)["reason"] == "too_many"
    await stream.close()
    stream = await ConsumerStream(query=f"last_event_id={ids[1]}".encode()).open()
    await stream.read_until(has("hello"))
    assert stream.notification_ids() == ids[2:]
    await stream.close()


# -- the replay query is indexed --------------------------------------------------------------


def replay_plan(viewer: Viewer) -> list[str]:
    """EXPLAIN QUERY PLAN of the consumer's replay query (SQLite)."""
    query = Notification.objects.visible_to(viewer).with_read(viewer).filter(id__gt=5).order_by("id")[:501]
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return [row[-1] for row in cursor.fetchall()]


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "sqlite", reason="EXPLAIN QUERY PLAN is SQLite's")
@pytest.mark.parametrize("signed_in", [False, True])
def test_replay_query_searches_indexes_from_the_cursor_never_scans(signed_in, alice, group):
    viewer = Viewer.of(alice) if signed_in else Viewer()
    plan = replay_plan(viewer)
    text = "\n".join(plan)
    assert not any(step.startswith("SCAN") for step in plan), text
    searches = [step for step in plan if step.startswith("SEARCH notifications_notification")]
    # "rowid>?" through a one-column index, "id>?" through a (recipient|group, id) one: both from the cursor.
    assert searches and all("id>?" in step for step in searches), text
    if signed_in:
        # read state: one lookup in the (user, notification) unique index per row
        assert any(step.startswith("SEARCH U0 USING COVERING INDEX") for step in plan), text
