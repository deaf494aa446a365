"""manage.py welcome: prints where the demo is and, when no superuser exists yet, how to make one (`make run`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from project.settings import DEV_SECRET_KEY


def createsuperuser_command() -> str:
    """The command line that creates a superuser here, runnable as printed from the checkout.

    Outside ``make run`` DJANGO_DEBUG defaults to off, and then project.settings refuses the
    development secret key: with that key the command must switch debug on itself.
    """
    prefix = "DJANGO_DEBUG=1 " if settings.SECRET_KEY == DEV_SECRET_KEY else ""
    return f"{prefix}.venv/bin/python manage.py createsuperuser"


class Command(BaseCommand):
    help = "Print the site URL and, if there is no superuser yet, the command that creates one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    def handle(self, *args: Any, url: str, **options: Any) -> None:
        self.stdout.write(f"Notifications: {url}  (admin: {url}admin/)")
        if not get_user_model()._default_manager.filter(is_superuser=True).exists():
            self.stdout.write(f"No superuser yet. Create one with:\n    {createsuperuser_command()}")
