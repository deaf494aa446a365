"""The stream endpoint: parse → authorise → attach → replay → hello → live. Thin; the hub fans out,
the ``Stream`` writes every byte, ``replay`` answers a ``Last-Event-ID``.

Channels stops an ``AsyncHttpConsumer`` as soon as ``handle()`` returns, and dispatches one
message at a time, so a loop inside ``handle()`` would never see ``http.disconnect``. This
consumer overrides ``http_request`` to keep the response open after ``handle()`` has written
the replay; live events are written by the process's hub, and ``http.disconnect`` ends it.
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import markcoroutinefunction
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer

from . import heap, replay, sse
from .auth import VIEWER_KEY
from .conf import app_settings
from .events import hello_frame
from .guard import IDENTITY_MARK
from .hub import get_hub
from .models import ANONYMOUS, Viewer
from .stream import Stream

logger = logging.getLogger(__name__)

#: A tuple, copied into each response: Channels' session middleware appends its
#: ``Set-Cookie`` to the list a response carries, and a shared list would then send one
#: viewer's cookie (or its deletion) to every later stream.
STREAM_HEADERS = (
    (b"Content-Type", b"text/event-stream; charset=utf-8"),
    (b"Cache-Control", b"no-cache, no-store"),
    (b"X-Accel-Buffering", b"no"),
)


class NotificationStreamConsumer(AsyncHttpConsumer):
    """``GET /notifications/stream/``: Server-Sent Events of the viewer's notifications."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream: Stream | None = None

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> Any:
        """Channels' ``as_asgi()`` without its coroutine: ``app()`` returns the consumer's own.

        Channels' ``app`` awaits the consumer, so its frame lives as long as the stream (about
        300 bytes each, docs/benchmarks.md); this one hands the consumer's coroutine to the
        caller. Marked as a coroutine function, so servers and asgiref see an ASGI 3 app.
        """

        def app(scope: dict[str, Any], receive: Any, send: Any) -> Any:
            return cls(**initkwargs)(scope, receive, send)

        app.consumer_class = cls  # type: ignore[attr-defined]
        app.consumer_initkwargs = initkwargs  # type: ignore[attr-defined]
        functools.update_wrapper(app, cls, updated=())
        return markcoroutinefunction(app)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``AsyncConsumer.__call__`` without two costs per stream (measured in docs/benchmarks.md).

        With no channel layer Channels still runs ``await_many_dispatch([receive])``: a second
        Task per stream waiting on ``receive``, and an ``aclose_old_connections()`` thread hop
        before each message. A stream gets two messages (``http.request``, then
        ``http.disconnect``) and reaches the database only through ``database_sync_to_async``,
        which closes old connections itself; so it awaits ``receive`` directly.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                message = await receive()
                handler = getattr(self, get_handler_name(message), None)
                if handler is None:
                    raise ValueError(f"No handler for message type {message['type']}")
                await handler(message)
        except StopConsumer:
            pass

    async def http_request(self, message: dict[str, Any]) -> None:
        if "body" in message:
            self.body.append(message["body"])
        if message.get("more_body"):
            return
        try:
            await self.handle(b"".join(self.body))
        except BaseException:
            await self.disconnect()
            raise
        if self.stream is None:  # a plain response was sent: finish as Channels would
            await self.disconnect()
            raise StopConsumer()

    async def handle(self, body: bytes) -> None:
        if self.scope["method"] != "GET":
            await self._plain(405, "Method not allowed: the stream takes GET.", [(b"Allow", b"GET")])
            return
        try:
            last_event_id = self._last_event_id()
        except ValueError as exc:
            await self._plain(400, str(exc))
            return
        hub = get_hub()
        # Taken by the guard before the user was resolved; a change to this user from then to
        # attach() ends the stream below.
        mark = self.scope.get(IDENTITY_MARK, hub.identity_mark())
        viewer = await self._viewer()
        if viewer.user_id is None and not app_settings.PUBLIC:
            await self._plain(403, "Sign in to receive notifications.")
            return
        if viewer.user_id is not None and hub.streams_of_user(viewer.user_id) >= app_settings.MAX_STREAMS_PER_USER:
            await self._plain(
                429,
                f"Too many open notification streams for this user (at most {app_settings.MAX_STREAMS_PER_USER}).",
                [(b"Retry-After", b"10")],
            )
            return
        heap.freeze_once()
        try:
            await hub.start()
        except Exception:
            logger.exception("The notifications hub could not subscribe to the channel layer.")
            await self._plain(503, "Notifications are unavailable right now.", [(b"Retry-After", b"5")])
            return

        # Before anything is registered: the one read for a cursor ahead of this hub (rare).
        known = await hub.known_up_to(last_event_id)
        stream = self.stream = hub.new_stream(viewer, self.send)
        await stream.open(STREAM_HEADERS, app_settings.RETRY_MS)
        # Subscribed before the replay query, and the memory window read in the same step:
        # whatever commits meanwhile is either in the replay or arrives live, and go_live()
        # drops what the replay already sent.
        if viewer.user_id is not None and hub.identity_changed_since(viewer.user_id, mark):
            # Signed out, deactivated or regrouped while this stream was being set up: what it
            # read may be stale. End it; the client reconnects and is read afresh.
            hub.count("identity_ends")
            stream.close()
            return
        cursor, recent = hub.attach(stream, last_event_id, known)
        frames = b""
        if last_event_id is not None:
            answer = await replay.replay(viewer, last_event_id, cursor, app_settings.REPLAY_LIMIT, recent)
            hub.count("replays")
            hub.count(f"replays_from_{answer.source}")
            if answer.reset is not None:
                hub.count(f"resets_{answer.reset}")
            frames, cursor = answer.body, answer.through
        stream.go_live(frames + hello_frame(viewer.username, cursor), cursor)
        stream.expire_after(app_settings.MAX_AGE)

    async def _viewer(self) -> Viewer:
        """The viewer ``StreamAuth`` resolved with the user, else (another auth stack) built here."""
        user = self.scope.get("user")
        resolved = self.scope.get(VIEWER_KEY)
        if resolved is not None and resolved[0] is user:
            return resolved[1]  # type: ignore[no-any-return]
        if user is None or not user.is_authenticated:
            return ANONYMOUS
        return await _viewer(user, self.scope.get("session"))

    def _last_event_id(self) -> int | None:
        """The ``Last-Event-ID`` header wins over ``?last_event_id=`` (SPEC §6)."""
        for name, value in self.scope.get("headers", []):
            if name.lower() == b"last-event-id":
                header = sse.parse_last_event_id(value)
                if header is not None:
                    return header
        query_string = self.scope.get("query_string", b"")
        if not query_string:
            return None
        query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
        values = query.get("last_event_id")
        if not values:
            return None
        return sse.parse_last_event_id(values[-1])

    async def _plain(self, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await self.send_response(
            status,
            (text + "\n").encode(),
            headers=[(b"Content-Type", b"text/plain; charset=utf-8"), *(headers or [])],
        )

    async def disconnect(self) -> None:
        if self.stream is not None:
            get_hub().detach(self.stream)
            # The stream holds this consumer's send: without this link the pair is a cycle
            # that only a full garbage collection frees (one per heap growth of a quarter).
            self.stream = None


@database_sync_to_async
def _viewer(user: Any, session: Any) -> Viewer:
    return Viewer.of(user, session_key=getattr(session, "session_key", None) if session is not None else None)
