"""ASGI entry point for django-eventstream: plain Django (eventstream 5 streams without Channels)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.es_settings")
application = get_asgi_application()
