"""ASGI ``send`` plumbing for streams: the server's own send behind a consumer's, run without a task.

Imports Channels only (no project module): ``stream`` uses it, ``servers`` probes what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from channels.consumer import AsyncConsumer
from channels.sessions import InstanceSessionWrapper

Send = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


class Resume:
    """Awaitable that finishes a coroutine which suspended on its first step."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Any:
        value = self.first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancellation: pass it on to the send
                try:
                    value = self.coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                value = self.coro.send(sent)
            except StopIteration:
                return


def body_send(send: Send) -> Send:
    """The server's own ``send`` behind a consumer's, for the body frames a stream carries.

    A consumer's ``send`` passes through ``AsyncConsumer.send`` and Channels' session
    middleware (``InstanceSessionWrapper.send``), which acts only on ``http.response.start``
    (it may save the session and set its cookie) and reads two lazy session attributes on
    every message. For a broadcast to thousands of streams that was about a sixth of the
    process's CPU (py-spy, docs/benchmarks.md), so body frames skip both. Unwraps only those
    exact methods: an overridden ``send`` or any other wrapper is kept (``servers.probe`` then
    reports the slow-client cut-off as not armed, at start-up and in the metrics).
    """
    for _ in range(5):
        owner = getattr(send, "__self__", None)
        method = getattr(send, "__func__", None)
        if isinstance(owner, AsyncConsumer) and method is AsyncConsumer.send:
            send = owner.base_send
        elif (
            isinstance(owner, InstanceSessionWrapper)
            and method is InstanceSessionWrapper.send
            and "http.response.body" not in owner.save_message_types
        ):
            send = owner.real_send
        else:
            break
    return send


def run_eagerly(coro: Coroutine[Any, Any, None]) -> Resume | None:
    """Run a send now; return None if it finished without suspending (daphne's never suspends).

    A task per write would cost more than the write itself. When a server's send does wait
    (flow control), the rest of it comes back as an awaitable to finish in a task.
    """
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return Resume(coro, first)
