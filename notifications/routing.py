"""The stream's Channels route: ``STREAM_PATH`` and the ASGI app that serves it (used by ``asgi.with_streams``).

Imports the consumer, so import this module only once Django's app registry is ready.
"""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from django.urls import path

from .consumers import NotificationStreamConsumer

#: Where ``with_streams`` serves the stream (the template tags' default ``stream_url``).
STREAM_PATH = "/notifications/stream/"

#: Consumers don't run Django's middleware: the session and user come from AuthMiddlewareStack.
stream_app = AuthMiddlewareStack(NotificationStreamConsumer.as_asgi())

#: For a project that routes by hand with Channels' ``URLRouter`` instead of ``with_streams``.
http_urlpatterns = [
    path(STREAM_PATH.lstrip("/"), stream_app),
]
