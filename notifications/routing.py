"""HTTP routes served by Channels consumers; ``project/asgi.py`` sends everything else to Django."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from django.urls import path

from .consumers import NotificationStreamConsumer
from .guard import StreamGuard

#: Consumers don't run Django's middleware: the session and user come from AuthMiddlewareStack;
#: StreamGuard does what Django would before it (ALLOWED_HOSTS, 405 without reading, a body cap).
http_urlpatterns = [
    # Channels' URLRouter takes ASGI apps here; django-stubs types path() for views only.
    path(
        "notifications/stream/",
        StreamGuard(AuthMiddlewareStack(NotificationStreamConsumer.as_asgi())),  # type: ignore[arg-type]
    ),
]
