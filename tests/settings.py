"""Test settings: the project's, with a throwaway secret key and fast timings."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "insecure-key-for-tests-only")

from project.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Integration tests start daphne with NOTIFICATIONS_* values in the environment (JSON).
import json as _json  # noqa: E402

for _name, _value in os.environ.items():
    if _name.startswith("NOTIFICATIONS_") and _name not in ("NOTIFICATIONS_REQUIRE_SERVERS", "NOTIFICATIONS_LOG_LEVEL"):
        globals()[_name] = _json.loads(_value)
