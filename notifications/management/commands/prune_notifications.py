"""manage.py prune_notifications [--days N] [--batch-size N] [--dry-run]: drop old notifications.

What is kept is always a contiguous id range: the horizon is the newest id created before
the cutoff, and everything up to it goes. ``StreamState.pruned_through`` is raised to the
horizon (under ``services.lock_sequence()``, like every writer) *before* the first row is
deleted, so a replay that could miss a deleted row sees the new horizon and answers
``reset`` (reason ``expired``) instead of a silent gap. Rows are deleted in batches of
``--batch-size`` ids, one short transaction each, never one row at a time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Max
from django.db.models.functions import Greatest
from django.utils import timezone

from notifications import services
from notifications.conf import app_settings
from notifications.models import Notification, StreamState

BATCH_SIZE = 1000


def prune(days: float, *, batch_size: int = BATCH_SIZE, dry_run: bool = False) -> tuple[int, int]:
    """Delete notifications created more than ``days`` ago. Returns (rows deleted, horizon id)."""
    cutoff = timezone.now() - dt.timedelta(days=days)
    horizon = Notification.objects.filter(created_at__lt=cutoff).aggregate(top=Max("id"))["top"]
    if horizon is None:
        return 0, StreamState.horizon()
    if dry_run:
        return Notification.objects.filter(id__lte=horizon).count(), horizon
    with transaction.atomic():
        services.lock_sequence()
        StreamState.objects.filter(pk=1).update(pruned_through=Greatest("pruned_through", horizon))
    deleted = 0
    while True:
        with transaction.atomic():
            # One batch = one range of ids: the cascade to read marks and the rows themselves
            # go as set-based DELETEs (``WHERE ... IN``), never one statement per row.
            oldest = Notification.objects.filter(id__lte=horizon).order_by("id")
            ids = list(oldest.values_list("id", flat=True)[:batch_size])
            if not ids:
                return deleted, horizon
            _, per_model = Notification.objects.filter(id__gte=ids[0], id__lte=ids[-1]).only("id").delete()
            deleted += per_model.get(Notification._meta.label, 0)


class Command(BaseCommand):
    help = (
        "Delete notifications older than NOTIFICATIONS_RETENTION_DAYS (or --days), in batches. "
        "A stream resuming from a deleted id then gets event: reset (reason: expired)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, default=None, help="override NOTIFICATIONS_RETENTION_DAYS")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"ids per DELETE (default {BATCH_SIZE})")
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        days = app_settings.RETENTION_DAYS if options["days"] is None else options["days"]
        if days < 0:
            raise CommandError(f"--days must not be negative, got {days!r}.")
        if options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be at least 1, got {options['batch_size']!r}.")
        deleted, horizon = prune(days, batch_size=options["batch_size"], dry_run=options["dry_run"])
        verb = "Would delete" if options["dry_run"] else "Deleted"
        self.stdout.write(f"{verb} {deleted} notification(s) older than {days:g} day(s); pruned through id {horizon}.")
