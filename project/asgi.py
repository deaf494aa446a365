"""ASGI entry point: the notification stream through Channels, everything else through Django.

Served by daphne (``runserver``, production) and by uvicorn (production); see
docs/deployment.md. uvicorn also sends the ``lifespan`` scope, answered by
``notifications.servers.lifespan``; daphne never sends it.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs the app registry)
from django.urls import re_path  # noqa: E402

from notifications import servers  # noqa: E402
from notifications.routing import http_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter([*http_urlpatterns, re_path(r"", django_asgi_app)]),
        "lifespan": servers.lifespan,
    },
)
