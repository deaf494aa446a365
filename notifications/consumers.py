"""The stream: parse → authorise → subscribe → replay → hello → live. Thin; the hub does fan-out.

Channels stops an ``AsyncHttpConsumer`` as soon as ``handle()`` returns, and dispatches one
message at a time, so a loop inside ``handle()`` would never see ``http.disconnect``. This
consumer overrides ``http_request`` to keep the response open after ``handle()`` has written
the replay; live events are written by the process's hub, and ``http.disconnect`` ends it.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer

from . import sse
from .conf import app_settings
from .fanout import Stream, get_hub
from .models import Notification, StreamState, Viewer
from .services import dumps, notification_frame, reset_frame

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

    # No channel-layer channel per stream: the hub holds one per process.
    channel_layer_alias = "__notifications_no_layer__"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream: Stream | None = None

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
        user = self.scope.get("user")  # resolved already by AuthMiddleware
        session = self.scope.get("session")
        viewer = await _viewer(user, session) if user is not None and user.is_authenticated else Viewer()
        if viewer.user_id is None and not app_settings.PUBLIC:
            await self._plain(403, "Sign in to receive notifications.")
            return
        hub = get_hub()
        if viewer.user_id is not None and hub.streams_of_user(viewer.user_id) >= app_settings.MAX_STREAMS_PER_USER:
            await self._plain(
                429,
                f"Too many open notification streams for this user (at most {app_settings.MAX_STREAMS_PER_USER}).",
                [(b"Retry-After", b"10")],
            )
            return
        try:
            await hub.start()
        except Exception:
            logger.exception("The notifications hub could not subscribe to the channel layer.")
            await self._plain(503, "Notifications are unavailable right now.", [(b"Retry-After", b"5")])
            return

        await self.send_headers(status=200, headers=list(STREAM_HEADERS))
        await self.send_body(sse.encode_retry(app_settings.RETRY_MS), more_body=True)
        # Subscribed before the replay query: whatever commits meanwhile is either in the
        # replay or arrives live, and go_live() drops what the replay already sent.
        self.stream, cursor = hub.attach(viewer, self.send)
        if last_event_id is not None:
            limit = app_settings.REPLAY_LIMIT
            recent = hub.recent_after(viewer, last_event_id)  # no await since attach: ends at cursor
            if recent is not None:
                frames, replayed_through, reset = await _replay_recent(viewer, recent, cursor, limit)
                hub.stats["replays_from_memory"] += 1
            else:
                frames, replayed_through, reset = await _replay(viewer, last_event_id, cursor, limit)
            hub.stats["replays"] += 1
            if reset is not None:
                hub.stats[f"resets_{reset}"] += 1
            if self.stream.closed:  # ended while replaying (shutdown, fell behind): its response is over
                return
            if frames:  # one write, however many frames (a reconnect storm is thousands of these)
                await self.send_body(b"".join(frames), more_body=True)
            cursor = max(cursor, replayed_through)
        hello = dumps({"user": viewer.username, "cursor": cursor})
        await self.send_body(sse.encode_event(hello, event="hello", id=cursor), more_body=True)
        self.stream.go_live(cursor)
        hub.expire_later(self.stream, app_settings.MAX_AGE)

    def _last_event_id(self) -> int | None:
        """The ``Last-Event-ID`` header wins over ``?last_event_id=`` (SPEC §6)."""
        for name, value in self.scope.get("headers", []):
            if name.lower() == b"last-event-id":
                header = sse.parse_last_event_id(value)
                if header is not None:
                    return header
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
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


@database_sync_to_async
def _viewer(user: Any, session: Any) -> Viewer:
    return Viewer.of(user, session_key=getattr(session, "session_key", None) if session is not None else None)


@database_sync_to_async
def _replay(viewer: Viewer, after: int, cursor: int, limit: int) -> tuple[list[bytes], int, str | None]:
    """Frames for what the viewer missed after ``after``, or one ``reset`` frame.

    Reads past the hub's ``cursor`` too (rows the hub has not handed out yet): ids follow
    commit order, so the newest row read bounds a range that is complete. Returns the frames
    and the id up to which the stream is then complete. One indexed query for the rows (read
    state included) and one for the pruning horizon, however many rows.
    """
    rows = list(
        Notification.objects.visible_to(viewer).with_read(viewer).filter(id__gt=after).order_by("id")[: limit + 1]
    )
    # The horizon is read after the rows: prune_notifications raises it before it deletes
    # anything, so if the rows query missed a pruned row, this read sees the new horizon.
    pruned_through = StreamState.horizon()
    if after < pruned_through:
        return [_reset("expired", cursor)], cursor, "expired"
    if len(rows) > limit:
        return [_reset("too_many", cursor)], cursor, "too_many"
    signed_in = viewer.user_id is not None
    frames = [notification_frame(row, read=getattr(row, "is_read", False) if signed_in else None) for row in rows]
    return frames, (rows[-1].id if rows else cursor), None


async def _replay_recent(
    viewer: Viewer, events: list[dict[str, Any]], cursor: int, limit: int
) -> tuple[list[bytes], int, str | None]:
    """Frames for missed events the hub still holds (``Hub.recent_after``), already encoded.

    One query, and none when nothing was missed: which of them still exist (an admin may
    have deleted one; pruning deletes old ones) and, for a signed-in viewer, which they have
    read since. Complete up to ``cursor``, the hub's head when the stream attached.
    """
    if len(events) > limit:
        return [_reset("too_many", cursor)], cursor, "too_many"
    if not events:
        return [], cursor, None
    read = await _still_there(viewer, [event["id"] for event in events])
    if viewer.user_id is None:
        frames = [event["anon_frame"] for event in events if event["id"] in read]
    else:
        frames = [event["read_frame" if read[event["id"]] else "user_frame"] for event in events if event["id"] in read]
    return frames, cursor, None


@database_sync_to_async
def _still_there(viewer: Viewer, ids: list[int]) -> dict[int, bool]:
    """``{id: read by viewer}`` for those of ``ids`` that still exist."""
    rows = Notification.objects.filter(id__in=ids).with_read(viewer).values_list("id", "is_read")  # type: ignore[misc]
    return dict(rows)


_reset = reset_frame
