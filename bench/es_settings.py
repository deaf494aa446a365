"""Settings for django-eventstream under benchmark: the project's, plus the eventstream app.

Events are stored with eventstream's ``DjangoModelStorage`` so that a reconnect with
``Last-Event-ID`` replays what it missed, as our product does.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "insecure-key-for-benchmarks-only")

from bench import querycount  # noqa: E402
from project.settings import *  # noqa: E402,F403
from project.settings import INSTALLED_APPS  # noqa: E402

INSTALLED_APPS = [*INSTALLED_APPS, "django_eventstream"]
ROOT_URLCONF = "bench.es_urls"
DEBUG = False
EVENTSTREAM_STORAGE_CLASS = "django_eventstream.storage.DjangoModelStorage"

querycount.install()
