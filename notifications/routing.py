"""The stream's Channels route: ``STREAM_PATH`` and the ASGI app that serves it (used by ``asgi.with_streams``).

Imports the consumer, so import this module only once Django's app registry is ready.
"""

from __future__ import annotations

from django.urls import path

from .auth import StreamAuth
from .consumers import NotificationStreamConsumer
from .guard import StreamGuard

#: Where ``with_streams`` serves the stream (the template tags' default ``stream_url``).
STREAM_PATH = "/notifications/stream/"

#: Consumers don't run Django's middleware: the session, user and viewer come from StreamAuth
#: (Channels' session and ``get_user`` semantics, one thread hop: ``notifications.auth``);
#: StreamGuard does what Django would before it (ALLOWED_HOSTS, 405 without reading, a body cap).
stream_app = StreamGuard(StreamAuth(NotificationStreamConsumer.as_asgi()))

#: For a project that routes by hand with Channels' ``URLRouter`` instead of ``with_streams``.
http_urlpatterns = [
    # Channels' URLRouter takes ASGI apps here; django-stubs types path() for views only.
    path(STREAM_PATH.lstrip("/"), stream_app),  # type: ignore[arg-type]
]
