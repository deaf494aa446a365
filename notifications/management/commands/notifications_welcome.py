"""Prints where the site is and, when no superuser exists yet, how to make one (used by `make run`)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Print the site URL and, if there is no superuser yet, the command that creates one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    def handle(self, *args: Any, url: str, **options: Any) -> None:
        self.stdout.write(f"Notifications: {url}  (admin: {url}admin/)")
        if not get_user_model()._default_manager.filter(is_superuser=True).exists():
            self.stdout.write("No superuser yet. Create one with:\n    .venv/bin/python manage.py createsuperuser")
