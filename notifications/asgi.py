"""``with_streams(app)``: the notification stream in front of any ASGI app (SPEC §12, step 4).

Imports Channels and the consumer only when ``with_streams`` is called, so a project's
``asgi.py`` calls it after ``get_asgi_application()``, as it does for Channels' own routers.
Imports nothing from the project.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from . import servers

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def with_streams(app: ASGIApp) -> StreamsRouter:
    """Serve ``GET /notifications/stream/`` and hand every other scope to ``app`` unchanged.

    ``app`` is Django's ASGI app or the project's own ``ProtocolTypeRouter`` (with its
    websockets): every ``http`` request outside the stream path, every ``websocket``
    connection and the ``lifespan`` scope reach it as they would without this wrapper.
    The stream gets the session's user as Channels' ``AuthMiddlewareStack`` gives it (``auth.StreamAuth``).
    """
    return StreamsRouter(app)


class StreamsRouter:
    """The ASGI app ``with_streams`` returns; ``app`` is the wrapped application.

    ``lifespan`` (sent by uvicorn, never by daphne or ``runserver``) goes to ``app`` first, so
    its own startup and shutdown handling is untouched; this router only adds one step: after
    ``app`` has finished its shutdown, and before the server is told so, the process's hub
    leaves the channel layer (the Redis core layer would otherwise keep queueing events for a
    process that is gone). An app that does not speak lifespan at all — Django's handler and a
    ``ProtocolTypeRouter`` without a ``"lifespan"`` entry raise before reading any message —
    gets it answered here instead (``servers.lifespan``), where the server would otherwise log
    "lifespan unsupported" and skip the shutdown event.
    """

    def __init__(self, app: ASGIApp) -> None:
        from .routing import STREAM_PATH, stream_app  # needs the app registry: not at import time

        self.app = app
        self.stream_path = STREAM_PATH
        self.stream_app: ASGIApp = stream_app  # type: ignore[assignment]  # asgiref's Scope vs a dict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._is_stream(scope):
            admit = getattr(self.stream_app, "admit", None)
            if admit is None:
                await self.stream_app(scope, receive, send)
                return
            # StreamGuard.admit, then its app awaited here: no guard coroutine per stream.
            admitted = await admit(scope, receive, send)
            if admitted is not None:
                app, scope, receive, send = admitted
                await app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _is_stream(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # ASGI: ``path`` includes ``root_path`` when mounted
            path = path[len(root):] or "/"
        return path == self.stream_path

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        received: list[str] = []
        answered_startup = False
        shut_down = False

        async def app_receive() -> Message:
            message = await receive()
            received.append(message["type"])
            return message

        async def app_send(message: Message) -> None:
            nonlocal answered_startup, shut_down
            if message["type"].startswith("lifespan.startup."):
                answered_startup = True
            elif message["type"].startswith("lifespan.shutdown."):
                await servers.leave_channel_layer()
                shut_down = True
            await send(message)

        try:
            await self.app(scope, app_receive, app_send)
        except Exception:
            if received:
                # The app speaks lifespan and failed in it: report that unchanged, but still
                # leave the layer if the failure came at shutdown.
                if received[-1] == "lifespan.shutdown" and not shut_down:
                    await servers.leave_channel_layer()
                raise
            logger.info("The ASGI app does not handle lifespan; with_streams answers it for the notification hub.")
            await servers.lifespan(scope, receive, send)
            return
        if not received and not answered_startup:
            # Returned at once without reading: as unsupported, answered here.
            await servers.lifespan(scope, receive, send)
