"""The inbox's reads on PostgreSQL at size (issue 14): 1,000 users, 100,000 notices.

Starts a throwaway PostgreSQL cluster on a free 127.0.0.1 port (tests.support.pg_redis), seeds a
mix of everyone / group / personal notices (some archived, read, muted, expired), then for one
typical user times each read the inbox makes — the first page, a ``before`` page deep in history,
each filter, the unread count, a replay of 500 missed — and prints p50/p99 and every SQL
statement's ``EXPLAIN``. Bounded: a fixed seed size and a fixed number of runs.

    python -m bench.inbox_queries [--runs 40] [--out docs/inbox-plans.txt]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

USERS = 1000
GROUPS = 20
NOTICES = 100_000
CATEGORIES = ["deploy", "billing", "security", "reports", ""]


def seed() -> tuple[Any, list[int]]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.utils import timezone

    from notifications.models import Archive, Notification, Preference, ReadMark

    rng = random.Random(7)
    User = get_user_model()
    users = User.objects.bulk_create([User(username=f"user{i}", password="!") for i in range(USERS)])
    groups = Group.objects.bulk_create([Group(name=f"group{i}") for i in range(GROUPS)])
    through = User.groups.through
    through.objects.bulk_create(
        [through(user_id=u.pk, group_id=groups[(i + k) % GROUPS].pk) for i, u in enumerate(users) for k in (0, 7)]
    )
    now = timezone.now()
    rows = []
    for i in range(NOTICES):
        kind = rng.random()
        recipient = users[rng.randrange(USERS)] if kind < 0.3 else None
        group = groups[rng.randrange(GROUPS)] if 0.3 <= kind < 0.6 else None
        rows.append(Notification(
            title=f"notice {i}", body="x" * 80, level=rng.choice(["info", "info", "warning", "error", "success"]),
            category=rng.choice(CATEGORIES), recipient=recipient, group=group,
            expires_at=now - timedelta(hours=1) if rng.random() < 0.05 else None,
            created_at=now - timedelta(seconds=NOTICES - i),
        ))
    Notification.objects.bulk_create(rows, batch_size=5000)
    viewer_user = users[3]
    visible = list(Notification.objects.visible_to(viewer_user).values_list("id", flat=True))
    ReadMark.objects.bulk_create([ReadMark(user=viewer_user, notification_id=n) for n in visible if n % 2 == 0])
    Archive.objects.bulk_create([Archive(user=viewer_user, notification_id=n) for n in visible if n % 10 == 1])
    Preference.objects.update_or_create(user=viewer_user, defaults={"muted": ["billing"]})
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return viewer_user, visible


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    from tests.support.pg_redis import postgres_cluster

    with postgres_cluster() as pg:
        os.environ["DATABASE_URL"] = pg.create_database("notifications_inbox_bench")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from notifications import replay, services
        from notifications.models import Notification, Viewer
        from notifications.views import ListQuery

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        user, visible = seed()
        print(f"seeded {NOTICES} notices, {USERS} users in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        viewer = Viewer.of(user)
        deep = sorted(visible)[len(visible) // 20]  # a page 95 % of the way back in history
        newest = Notification.objects.newest_id()
        inbox_ids = sorted(Notification.objects.inbox(viewer).values_list("id", flat=True))
        after_500 = inbox_ids[-501]  # exactly 500 missed in the inbox

        cases: list[tuple[str, Callable[[], Any]]] = [
            ("list: first page (50)", lambda: ListQuery().page(viewer, 50)),
            ("list: before= deep in history", lambda: ListQuery(before=deep).page(viewer, 50)),
            ("list: unread=1", lambda: ListQuery(unread=True).page(viewer, 50)),
            ("list: category=deploy", lambda: ListQuery(category="deploy").page(viewer, 50)),
            ("list: archived=1", lambda: ListQuery(archived=True).page(viewer, 50)),
            ("list: muted=1", lambda: ListQuery(muted=True).page(viewer, 50)),
            ("unread count", lambda: services.unread_count(viewer)),
            ("replay: 500 missed (database)", lambda: replay.from_database.func(viewer, after_500, newest, 500)),
        ]
        report = [f"# Inbox reads on PostgreSQL: {NOTICES:,} notices, {USERS:,} users, viewer in 2 of {GROUPS} groups",
                  f"# {args.runs} runs each; load average {os.getloadavg()[0]:.1f}", ""]
        table = ["| read | queries | p50 ms | p99 ms |", "|---|---|---|---|"]
        for name, fn in cases:
            with CaptureQueriesContext(connection) as captured:
                fn()
            sqls = [q["sql"] for q in captured.captured_queries]
            p50, p99 = timed(fn, args.runs)
            table.append(f"| {name} | {len(sqls)} | {p50:.2f} | {p99:.2f} |")
            queries = f"{len(sqls)} quer{'y' if len(sqls) == 1 else 'ies'}"
            report.append(f"## {name}: {queries}, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            for sql in sqls:
                with connection.cursor() as cursor:
                    cursor.execute("EXPLAIN " + sql)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                report += ["", "```", sql, "", plan, "```"]
            report.append("")
        text = "\n".join(table) + "\n\n" + "\n".join(report)
        print(text)
        if args.out:
            with open(args.out, "w") as out:
                out.write(text)
        connection.close()


if __name__ == "__main__":
    main()
