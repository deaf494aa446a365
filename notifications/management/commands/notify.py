"""manage.py notify TITLE [--body] [--level] [--user USERNAME ...] [--group NAME] [--url]
[--category SLUG] [--data JSON] [--expires ISO-8601|SECONDS].

Several ``--user`` send one notice to each of them in one transaction (``notify_many``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from notifications.models import Level
from notifications.services import notify, notify_many


class Command(BaseCommand):
    help = "Send a notification to everyone, one group (--group), or one user each (--user, repeatable)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("title")
        parser.add_argument("--body", default="")
        parser.add_argument("--level", default=Level.INFO, help=f"one of {', '.join(Level.values)}")
        parser.add_argument("--user", dest="usernames", action="append", default=[],
                            help="only this user (a username); repeat for one notice to each")
        parser.add_argument("--group", default=None, help="only this group's members (a group name)")
        parser.add_argument("--url", default="", help="an http(s) URL or a path starting with /")
        parser.add_argument("--category", default="", help="a slug users can filter on and mute")
        parser.add_argument("--data", default=None, help='a JSON object for the site, e.g. \'{"order": 42}\'')
        parser.add_argument("--expires", default=None, help="ISO 8601, or seconds from now")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["level"] not in Level.values:
            raise CommandError(f"Unknown level {options['level']!r}; use one of {', '.join(Level.values)}.")
        usernames: list[str] = options["usernames"]
        if usernames and options["group"]:
            raise CommandError("Give --user or --group, not both.")
        data = None
        if options["data"] is not None:
            try:
                data = json.loads(options["data"])
            except ValueError as exc:
                raise CommandError(f"--data must be JSON: {exc}.") from None
            if not isinstance(data, dict):
                raise CommandError(f"--data must be a JSON object, got {type(data).__name__}.")
        content = {
            "body": options["body"], "level": options["level"], "url": options["url"],
            "category": options["category"], "data": data, "expires_at": options["expires"],
        }
        try:
            if len(usernames) > 1:
                many = notify_many(options["title"], recipients=usernames, **content)
                self.stdout.write(f"Sent {len(many)} notifications ({', '.join(str(n.id) for n in many[:10])}"
                                  f"{', …' if len(many) > 10 else ''}) to users {', '.join(usernames[:10])}"
                                  f"{', …' if len(usernames) > 10 else ''}.")
                return
            notification = notify(options["title"], recipient=usernames[0] if usernames else None,
                                  group=options["group"], **content)
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" if k != "__all__" else " ".join(v)
                                         for k, v in exc.message_dict.items())) from None
        audience = (
            f"user {usernames[0]}" if usernames
            else f"group {options['group']}" if options["group"] else "everyone"
        )
        self.stdout.write(f"Sent notification {notification.id} to {audience}.")
