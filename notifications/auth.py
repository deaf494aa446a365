"""StreamAuth: the stream's session, user and viewer in one step (``AuthMiddlewareStack`` took three layers, two hops).

Channels' ``AuthMiddlewareStack`` is ``CookieMiddleware(SessionMiddleware(AuthMiddleware(app)))``:
three coroutines that stay alive for the whole life of a stream (plus ``BaseMiddleware``'s),
four copies of the scope, a thread hop for ``get_user`` on every connect — even for a
visitor with no session cookie, whose answer is known without the database — and then the
consumer's own hop to build the ``Viewer``. For a process holding thousands of streams that
was most of the product's connect time and memory above the floor (docs/benchmarks.md).

``StreamAuth`` keeps Channels' semantics by calling Channels' own code:

* cookies parsed as ``CookieMiddleware`` does (``scope["cookies"]``);
* the session through ``InstanceSessionWrapper`` (``scope["session"]``, and its ``send``
  saves a modified session and sets or deletes the cookie on ``http.response.start``,
  exactly as ``SessionMiddleware``'s);
* the user through ``channels.auth.get_user``'s own function (the session auth hash check,
  and the session flush when it fails), run in the same ``database_sync_to_async`` call
  that builds the ``Viewer`` (its groups query): one thread hop for a signed-in stream,
  none for a request without a (well-formed) session key (``AnonymousUser``, as ``get_user``
  answers for a session without a key, which never reads the session store);
* a request with no session cookie at all (and ``SESSION_SAVE_EVERY_REQUEST`` off) gets an
  empty ``SessionStore`` and the server's own ``send``: Channels' wrapper would save nothing
  and set no cookie for it, so it is not built (the stream never writes the session).

``scope["user"]`` and ``scope["session"]`` are then what ``AuthMiddlewareStack`` gives
(the user itself rather than a lazy proxy of it); the resolved ``Viewer`` is left in
``scope[VIEWER_KEY]`` with the user it was built for, so the consumer reads no more. Imports
Channels and models only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from importlib import import_module
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.sessions import InstanceSessionWrapper
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.base import SessionBase
from django.http import parse_cookie

from .models import ANONYMOUS, Viewer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Scope key holding ``(user, Viewer)``: the viewer ``StreamAuth`` built for that user.
VIEWER_KEY = "notifications.viewer"

#: ``channels.auth.get_user`` without its own thread hop (``database_sync_to_async`` keeps the
#: function it wraps as ``func``), so that it runs inside ``_resolve``'s one hop.
_get_user: Callable[[Scope], Any] = get_user.func
_ANONYMOUS_USER = AnonymousUser()


def _session_store() -> type[SessionBase]:
    """``SESSION_ENGINE``'s ``SessionStore`` (as Channels' ``InstanceSessionWrapper`` imports it)."""
    return import_module(settings.SESSION_ENGINE).SessionStore  # type: ignore[no-any-return]


def cookies_of(scope: Scope) -> dict[str, str]:
    """``scope["cookies"]`` as ``CookieMiddleware`` builds it: the first ``cookie`` header, parsed."""
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            return parse_cookie(value.decode("latin1"))
    return {}


@database_sync_to_async
def _resolve(scope: Scope) -> tuple[Any, Viewer]:
    """The session's user (Channels' ``get_user``: loads the session, checks its auth hash) and its viewer."""
    user = _get_user(scope)
    if not user.is_authenticated:
        return user, ANONYMOUS
    return user, Viewer.of(user, session_key=scope["session"].session_key)


class StreamAuth:
    """Wrap the stream consumer: ``StreamGuard(StreamAuth(Consumer.as_asgi()))``."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope, send = await self.authenticate(scope, send)
        await self.inner(scope, receive, send)

    async def authenticate(
        self, scope: Scope, send: Send, extra: Mapping[str, Any] | None = None
    ) -> tuple[Scope, Send]:
        """The scope for ``inner`` (one copy: ``extra``, cookies, session, user, viewer) and its send.

        ``StreamGuard`` calls this and then ``inner`` itself, so that this coroutine is done
        before the stream starts rather than alive as long as it.
        """
        if "headers" not in scope:
            raise ValueError("StreamAuth takes HTTP scopes (with headers) only.")
        cookies = cookies_of(scope)
        if settings.SESSION_COOKIE_NAME not in cookies and not settings.SESSION_SAVE_EVERY_REQUEST:
            # No session cookie: an empty session that nothing here modifies, so Channels'
            # wrapper would neither save it nor set or delete a cookie. Skip the wrapper (its
            # object, a second scope copy, a lazy session and a send layer per stream).
            inner_scope = {**scope, **(extra or {}), "cookies": cookies, "session": _session_store()(None),
                           "user": _ANONYMOUS_USER, VIEWER_KEY: (_ANONYMOUS_USER, ANONYMOUS)}
            return inner_scope, send
        # One copy of the scope (the wrapper's), with the session in it; its send is
        # SessionMiddleware's (the cookie on http.response.start), skipped for body frames.
        wrapper = InstanceSessionWrapper({**scope, **(extra or {}), "cookies": cookies}, send)
        await wrapper.resolve_session()
        inner_scope = wrapper.scope
        if inner_scope["session"].session_key is not None:
            user, viewer = await _resolve(inner_scope)
        else:
            # No (valid) session key: get_user's answer, known without the session store
            # (one AnonymousUser for all of them: it holds no state of its own).
            user, viewer = _ANONYMOUS_USER, ANONYMOUS
        inner_scope["user"] = user
        inner_scope[VIEWER_KEY] = (user, viewer)
        return inner_scope, wrapper.send
