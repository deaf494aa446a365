"""HTTP routes served by Channels consumers; ``project/asgi.py`` sends everything else to Django."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from django.urls import path

from .consumers import NotificationStreamConsumer

#: Consumers don't run Django's middleware: the session and user come from AuthMiddlewareStack.
http_urlpatterns = [
    path("notifications/stream/", AuthMiddlewareStack(NotificationStreamConsumer.as_asgi())),
]
