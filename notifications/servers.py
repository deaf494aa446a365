"""What the fan-out needs to know about the ASGI server it runs in, beyond ASGI itself.

ASGI tells an application neither that the server is shutting down while responses are
still open, nor how many bytes a client has left unread. Both matter to long-lived streams;
this module finds them out per server and answers "unknown" anywhere else.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


def transport_of(send: Any) -> Any:
    """Daphne's TCP transport behind the server's ``send`` (see ``fanout._body_send``), if it shows
    its write buffer.

    Daphne's ``send`` is ``functools.partial(server.handle_reply, protocol)``; the protocol is
    a Twisted ``Request`` whose channel's transport is a ``FileDescriptor`` with
    ``dataBuffer``, ``offset`` and ``_tempDataLen``. Any other server (or a test) gives None.
    """
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    transport = getattr(getattr(protocol, "channel", None), "transport", None)
    needed = ("dataBuffer", "offset", "_tempDataLen", "producerPaused", "abortConnection")
    return transport if all(hasattr(transport, name) for name in needed) else None


def on_shutdown(callback: Callable[[], object]) -> bool:
    """Run ``callback`` when daphne starts shutting down (SIGTERM); False if not under daphne.

    daphne cancels every application on shutdown and then drops the connections, so a
    stream would end without its last chunk. Ending the responses first makes SIGTERM a
    clean end of stream, after which ``EventSource`` reconnects (elsewhere) and replays.
    """
    if "twisted.internet.reactor" not in sys.modules:
        return False
    from twisted.internet import reactor

    if not reactor.running:  # type: ignore[attr-defined]
        return False
    reactor.addSystemEventTrigger("before", "shutdown", callback)  # type: ignore[attr-defined,arg-type]
    return True
