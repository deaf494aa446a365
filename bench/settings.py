"""Settings for the product under benchmark: the project's, plus bench-only trigger URLs.

Nothing here changes how notifications are stored or delivered; ``bench.urls`` only adds
endpoints that call ``notifications.services.notify()`` in the server process (the same
path the admin takes) and a SQL statement counter.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "insecure-key-for-benchmarks-only")

from bench import gclog, querycount  # noqa: E402
from project.settings import *  # noqa: E402,F403

ROOT_URLCONF = "bench.urls"
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"notifications": {"handlers": ["console"], "level": "WARNING"}},
}

querycount.install()
gclog.install_from_env()
