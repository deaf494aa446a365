"""StreamGuard: an ASGI wrapper that answers what the stream must refuse before anything runs.

Channels consumers run no Django middleware, so the stream would otherwise skip what Django
does for every view: ``Host`` against ``ALLOWED_HOSTS`` (``400``). The guard also answers
non-GET methods with ``405`` without reading the request body, and reads a GET's body only
up to ``BODY_LIMIT`` bytes, counting and dropping it (``413`` beyond), so the consumer never
buffers a body. It runs before ``auth.StreamAuth``: a refused request costs no session
query. Imports nothing from the consumer or the hub.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.http.request import split_domain_port, validate_host

from .hub import get_hub

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Most request-body bytes a GET to the stream may carry (EventSource sends none).
BODY_LIMIT = 1024

#: Django's own logger for refused hosts, so one logging rule covers views and the stream.
host_logger = logging.getLogger("django.security.DisallowedHost")


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header as Django's ``ASGIRequest`` reads it: latin-1, repeats joined by ``,``."""
    values = [value.decode("latin1") for key, value in scope.get("headers", []) if key.lower() == name]
    return ",".join(values) if values else None


def raw_host(scope: Scope) -> str:
    """The host the request names, picked as ``HttpRequest._get_raw_host()`` picks it."""
    forwarded = _header(scope, b"x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
    if forwarded is not None:
        return forwarded
    host = _header(scope, b"host")
    if host is not None:
        return host
    server = scope.get("server")
    name, port = (server[0], str(server[1])) if server else ("unknown", "0")
    secure = scope.get("scheme") == "https"
    return name if port == ("443" if secure else "80") else f"{name}:{port}"


#: ``host_problem``'s answers by host, for the settings in force (cleared when they change);
#: at most ``_HOSTS_KEPT`` of them, so random ``Host`` headers cannot grow it.
_host_answers: dict[str, str | None] = {}
_HOSTS_KEPT = 64


def _forget_hosts(*, setting: str, **kwargs: Any) -> None:
    if setting in ("ALLOWED_HOSTS", "DEBUG", "USE_X_FORWARDED_HOST"):
        _host_answers.clear()


setting_changed.connect(_forget_hosts, dispatch_uid="notifications.guard")


def host_problem(scope: Scope) -> str | None:
    """Why this request's host is refused (Django's ``get_host()`` rule and wording), or None.

    With ``DEBUG`` on and ``ALLOWED_HOSTS`` empty, localhost variants pass, as in Django.
    Answers are remembered per host (a stream's connect asks this for every one).
    """
    host = raw_host(scope)
    try:
        return _host_answers[host]
    except KeyError:
        pass
    answer = _host_problem(host)
    if len(_host_answers) >= _HOSTS_KEPT:
        _host_answers.clear()
    _host_answers[host] = answer
    return answer


def _host_problem(host: str) -> str | None:
    allowed_hosts: Iterable[str] = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(host)
    if domain and validate_host(domain, allowed_hosts):
        return None
    message = f"Invalid HTTP_HOST header: {host!r}."
    if domain:
        return message + f" You may need to add {domain!r} to ALLOWED_HOSTS."
    return message + " The domain name provided is not valid according to RFC 1034/1035."


async def plain(send: Send, status: int, text: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = (text + "\n").encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


class StreamGuard:
    """Wrap the stream's ASGI app: ``StreamGuard(StreamAuth(Consumer.as_asgi()))``.

    For ``http`` scopes, in order: a host outside ``ALLOWED_HOSTS`` → ``400``; a method other
    than GET → ``405`` with ``Allow: GET``, the body left unread; a body over ``body_limit`` →
    ``413``, read no further. Otherwise the inner app sees one empty ``http.request`` message
    and then the real ``receive`` (for ``http.disconnect``). Other scopes pass unchanged.
    """

    def __init__(self, app: ASGIApp, *, body_limit: int = BODY_LIMIT) -> None:
        self.app = app
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        admitted = await self.admit(scope, receive, send)
        if admitted is not None:
            app, scope, receive, send = admitted
            await app(scope, receive, send)

    async def admit(self, scope: Scope, receive: Receive, send: Send) -> tuple[ASGIApp, Scope, Receive, Send] | None:
        """The checks, the session and the user; then the app to run and its arguments, or None
        if the request was answered here. ``asgi.with_streams`` awaits the app itself, so that no
        coroutine of the guard's (nor of ``StreamAuth``'s) lives as long as the stream."""
        problem = host_problem(scope)
        if problem is not None:
            host_logger.warning(problem)
            await plain(send, 400, problem)
            return None
        if scope["method"] != "GET":
            await plain(send, 405, "Method not allowed: the stream takes GET.", [(b"allow", b"GET")])
            return None
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # gone before the request ended: nothing to answer
            received += len(message.get("body", b""))
            if received > self.body_limit:
                await plain(send, 413, f"A request to the stream may carry at most {self.body_limit} body bytes.")
                return None
            if not message.get("more_body", False):
                break
        # Before the session and user are resolved (StreamAuth, inside): the consumer
        # ends the stream if its user's identity changes from here to its attach().
        extra = {IDENTITY_MARK: get_hub().identity_mark()}
        app = self.app
        authenticate = getattr(app, "authenticate", None)
        if authenticate is not None:
            # StreamAuth: its one scope copy carries the mark, and its inner app is returned
            # to be awaited by the caller, so neither a second copy nor its coroutine lives
            # as long as the stream.
            scope, send = await authenticate(scope, send, extra)
            app = app.inner  # type: ignore[attr-defined]  # a StreamAuth (it has authenticate)
        else:
            scope = {**scope, **extra}
        return app, scope, EmptyBodyFirst(receive), send


#: The scope key carrying ``Hub.identity_mark()`` from the guard to the consumer.
IDENTITY_MARK = "notifications.identity_mark"


class EmptyBodyFirst:
    """``receive`` that first says "an empty body, complete", then is the real one.

    A small object rather than a closure and a coroutine: it lives as long as the stream, and
    after the first message it returns the server's own ``receive()`` awaitable unwrapped.
    """

    __slots__ = ("receive", "pending")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.pending = True

    def __call__(self) -> Awaitable[Message]:
        if self.pending:
            self.pending = False
            return _empty_body()
        return self.receive()


async def _empty_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
