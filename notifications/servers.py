"""What the fan-out needs to know about the ASGI server it runs in, beyond ASGI itself.

ASGI tells an application neither that the server is shutting down while responses are
still open, nor how many bytes a client has left unread. Both matter to long-lived streams;
this module finds them out per server (daphne, uvicorn) and answers "unknown" anywhere else.
It also holds the ASGI ``lifespan`` handler that servers sending lifespan events (uvicorn)
get through ``project/asgi.py``. It imports no server package: it looks only at what the
running server has already loaded. It imports nothing from this app either: the hub registers
its ``stop`` for the lifespan shutdown (``on_lifespan_shutdown``), and ``probe`` reports which
of these capabilities the running server offers, once per process (logged and exported).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import signal
import sys
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: Seconds the lifespan shutdown may spend leaving the channel layer (uvicorn has no limit of its own).
LIFESPAN_SHUTDOWN_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the running server lets the streams do, beyond ASGI (each probe is a reach into its internals)."""

    #: The server, as far as its ``send`` tells: ``daphne``, ``uvicorn`` or ``unknown``.
    server: str
    #: A client that stops reading is cut off (``stream.WATCH_BYTES`` unsent and nothing read
    #: for ``NOTIFICATIONS_SLOW_CLIENT_TIMEOUT``): daphne's transport shows its buffer, and a
    #: server whose send waits shows it by waiting.
    slow_client_cutoff: bool
    #: ``abort()`` can drop a connection at once.
    abort: bool
    #: Streams are ended cleanly when the server starts shutting down (``on_shutdown``).
    shutdown_hook: bool

    def flags(self) -> dict[str, bool]:
        """The boolean capabilities by name (what the metrics export as 0/1)."""
        return {name: value for name, value in asdict(self).items() if isinstance(value, bool)}

    def describe(self) -> str:
        flags = " ".join(f"{name}={'yes' if on else 'NO'}" for name, on in self.flags().items())
        return f"server={self.server} {flags}"


def probe(send: Any, *, shutdown_hook: bool) -> Capabilities:
    """The capabilities behind a stream's server ``send`` (``stream.Stream.server_send``).

    Daphne: its transport shows the write buffer, so both the cut-off and abort work. uvicorn:
    its send waits while the client does not read, so the outbox limit cuts off a slow client,
    and abort works through the cycle's transport. Anything else (a wrapper this app does not
    unwrap, a version whose internals moved): False, so a broken probe shows at start-up.
    """
    if transport_of(send) is not None:
        return Capabilities("daphne", slow_client_cutoff=True, abort=True, shutdown_hook=shutdown_hook)
    cycle = getattr(send, "__self__", None)
    if type(cycle).__module__.startswith("uvicorn."):
        aborts = callable(getattr(getattr(cycle, "transport", None), "abort", None))
        return Capabilities("uvicorn", slow_client_cutoff=aborts, abort=aborts, shutdown_hook=shutdown_hook)
    daphne = isinstance(send, functools.partial) and type(getattr(send.func, "__self__", None)).__module__.startswith(
        "daphne."
    )
    return Capabilities("daphne" if daphne else "unknown", slow_client_cutoff=False, abort=False,
                        shutdown_hook=shutdown_hook)


def transport_of(send: Any) -> Any:
    """Daphne's TCP transport behind the server's ``send`` (see ``asgi_send.body_send``), if it shows
    its write buffer.

    Daphne's ``send`` is ``functools.partial(server.handle_reply, protocol)``; the protocol is
    a Twisted ``Request`` whose channel's transport is a ``FileDescriptor`` with
    ``dataBuffer``, ``offset`` and ``_tempDataLen``. Any other server (or a test) gives None:
    uvicorn's ``send`` waits while the client does not read (flow control), so its buffer
    never grows past its high-water mark and the fan-out's outbox limit applies instead.
    """
    if not (isinstance(send, functools.partial) and send.args):
        return None  # not daphne's: asked once per stream, so no attribute probes (each a caught error)
    transport = getattr(getattr(send.args[0], "channel", None), "transport", None)
    return transport if all(hasattr(transport, name) for name in _DAPHNE_TRANSPORT) else None


#: What ``transport_of`` needs of daphne's transport (Twisted's ``FileDescriptor``).
_DAPHNE_TRANSPORT = ("dataBuffer", "offset", "_tempDataLen", "producerPaused", "abortConnection")


def abort(send: Any) -> bool:
    """Drop the connection behind the server's ``send`` at once; False if the server is unknown.

    For a client that does not read. Under uvicorn a ``send`` then waits for the client
    without limit (``FlowControl.drain``), so the response can never be ended with a last
    chunk; aborting the transport makes uvicorn see the connection lost, release that
    ``send`` (it returns without writing once ``disconnected`` is set) and answer
    ``receive()`` with ``http.disconnect``, after which the consumer detaches. Under daphne
    it is ``abortConnection()`` on the transport ``transport_of`` finds. The client, if it
    is still there, reconnects and replays from its ``Last-Event-ID``.
    """
    daphne_transport = transport_of(send)
    if daphne_transport is not None:
        daphne_transport.abortConnection()
        return True
    # uvicorn: ``send`` is ``RequestResponseCycle.send`` (httptools or h11), bound to a cycle
    # that holds the connection's transport (asyncio's, or uvloop's, which is no subclass of
    # ``asyncio.Transport`` but has the same ``abort()``).
    cycle = getattr(send, "__self__", None)
    abort_transport = getattr(getattr(cycle, "transport", None), "abort", None)
    if type(cycle).__module__.startswith("uvicorn.") and callable(abort_transport):
        abort_transport()
        return True
    return False


def on_shutdown(callback: Callable[[], object]) -> bool:
    """Run ``callback`` in the event loop when the server starts shutting down (SIGTERM, SIGINT).

    Daphne and uvicorn both wait for open responses, or cut them, at shutdown; an SSE
    response never ends by itself. Ending every stream first (the callback writes each
    one's last chunk) makes the shutdown a clean end of stream, after which ``EventSource``
    reconnects (to another process) and replays. Returns False, registering nothing, under
    any other server, a version whose structure is not the expected one, or in tests.
    """
    return _on_daphne_shutdown(callback) or _on_uvicorn_shutdown(callback)


def _on_daphne_shutdown(callback: Callable[[], object]) -> bool:
    """daphne: the Twisted reactor's "before shutdown" trigger.

    daphne cancels every application on shutdown and then drops the connections, so a
    stream would end without its last chunk. The trigger runs before that.
    """
    if "twisted.internet.reactor" not in sys.modules:
        return False
    from twisted.internet import reactor

    if not reactor.running:  # type: ignore[attr-defined]
        return False  # imported (daphne's app config installs the reactor) but another server runs
    reactor.addSystemEventTrigger("before", "shutdown", callback)  # type: ignore[attr-defined,arg-type]
    return True


def _on_uvicorn_shutdown(callback: Callable[[], object]) -> bool:
    """uvicorn (0.29 on; tested: 0.30, 0.54): wrap the running ``Server``'s ``shutdown()``; the callback runs in it.

    On SIGTERM or SIGINT uvicorn's handler only sets ``should_exit``; its main loop then
    calls ``await self.shutdown()``, which stops listening, marks each connection to close
    after its response (``connection.shutdown()``), and waits — for every connection to
    close and every request task to end — up to ``--timeout-graceful-shutdown`` (forever by
    default) before cancelling them. A stream is a response that never finishes, so without
    help every SIGTERM costs that whole timeout and ends the streams cut off, not cleanly.

    Why this hook and not the others in uvicorn's source:

    * ``shutdown()`` is where uvicorn itself starts a graceful shutdown, whatever asked for
      it: SIGTERM, SIGINT, ``--limit-max-requests``, a gunicorn worker's exit, or code that
      sets ``should_exit``. It is a coroutine method of ``Server``, called as
      ``self.shutdown(sockets=...)`` from ``_serve`` (so an instance attribute replaces it),
      with the same first steps, in 0.30 and 0.54 alike (both tested). Nothing in uvicorn is
      modified, and other ``Server`` instances in the process are untouched.
    * The callback is scheduled with ``call_soon`` before the original runs: the original's
      first, synchronous step closes the listening sockets and marks the connections, so
      when the streams end no new one can arrive and each connection closes after its last
      chunk. The streams' tasks then end on ``http.disconnect``, and uvicorn's wait returns
      at once instead of at the timeout.
    * Chaining the signal handler instead would run inside a signal handler (between any
      two bytecodes, so only through ``call_soon_threadsafe``), before uvicorn stops
      listening, for two signals only, and would replace a process-wide handler that
      uvicorn restores and re-raises on exit. The ASGI lifespan ``shutdown`` event comes
      too late: uvicorn sends it only after the wait above.

    The running ``Server`` is found through the one thing it leaves in the process: since
    uvicorn 0.29 ``Server.capture_signals`` installs its bound ``handle_exit`` with
    ``signal.signal`` for SIGINT and SIGTERM (earlier releases used
    ``loop.add_signal_handler``, which leaves nothing to find). No handler of a
    ``uvicorn.server.Server`` (a server started outside the main thread, or a subclass
    that skips ``capture_signals``), or no coroutine ``shutdown``: False, and shutdown waits
    for ``--timeout-graceful-shutdown`` as it would without this app.
    """
    server = _uvicorn_server()
    if server is None:
        return False
    shutdown = getattr(server, "shutdown", None)
    if not inspect.iscoroutinefunction(shutdown):
        return False
    loop = asyncio.get_running_loop()
    if getattr(server, "should_exit", False):
        loop.call_soon(callback)  # already shutting down (a stream attached late): end it too
    original: Callable[..., Awaitable[None]] = shutdown  # type: ignore[assignment]

    @functools.wraps(original)
    async def shutdown_and_end_streams(*args: Any, **kwargs: Any) -> None:
        loop.call_soon(callback)
        await original(*args, **kwargs)

    server.shutdown = shutdown_and_end_streams
    return True


def _uvicorn_server() -> Any:
    """The ``uvicorn.server.Server`` whose ``handle_exit`` handles SIGTERM or SIGINT, or None."""
    module = sys.modules.get("uvicorn.server")
    server_class = getattr(module, "Server", None)
    if not isinstance(server_class, type):
        return None
    for sig in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(sig)
        server = getattr(handler, "__self__", None)
        if isinstance(server, server_class) and getattr(handler, "__name__", "") == "handle_exit":
            return server
    return None


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI ``lifespan`` protocol, for ``ProtocolTypeRouter`` (``project/asgi.py``).

    uvicorn sends a ``lifespan`` scope first; Channels' router and Django's handler both
    reject unknown scope types, which uvicorn reports as "ASGI 'lifespan' protocol appears
    unsupported" and then skips the shutdown event. With this handler startup is plain, and
    at shutdown — after uvicorn has waited for the open responses (``on_shutdown`` ended the
    streams) — the process's hub leaves the channel layer's group, so the Redis core layer
    stops queueing events for a process that is gone (the pub/sub layer forgets it anyway
    when the connection closes). daphne and ``runserver`` send no lifespan events.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await leave_channel_layer()
            await send({"type": "lifespan.shutdown.complete"})
            return


#: What the lifespan shutdown runs, per event loop (the hub registers its ``stop``).
_lifespan_shutdown: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Callable[[], Awaitable[None]]] = (
    weakref.WeakKeyDictionary()
)


def on_lifespan_shutdown(stop: Callable[[], Awaitable[None]]) -> None:
    """Run ``stop`` at the ASGI lifespan shutdown of the running event loop (one per loop; the last wins)."""
    _lifespan_shutdown[asyncio.get_running_loop()] = stop


async def leave_channel_layer() -> None:
    """Run the stop ``on_lifespan_shutdown`` registered for this loop (the hub leaves the layer), bounded in time."""
    stop = _lifespan_shutdown.pop(asyncio.get_running_loop(), None)
    if stop is None:
        return
    try:
        await asyncio.wait_for(stop(), LIFESPAN_SHUTDOWN_TIMEOUT)
    except Exception:  # a broken layer must not turn a clean exit into a failed one
        logger.warning("Leaving the channel layer at shutdown failed.", exc_info=True)

