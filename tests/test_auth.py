"""StreamAuth gives the stream what Channels' AuthMiddlewareStack gives, in one step.

Each case runs both stacks on the same kind of request — no cookie, a live session, a
session whose password changed since (the auth hash check flushes it), a malformed key and
an unknown one — and compares the user, the session key and the ``Set-Cookie`` the inner
app's ``http.response.start`` gets; plus what only StreamAuth does: no thread hop without a
session key, and the viewer resolved in the same hop.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from django.conf import settings
from django.test import Client

from notifications import auth
from notifications.identity import digest
from notifications.models import Viewer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


class Inner:
    """An ASGI app that records its scope and answers ``200`` (through the send it was given)."""

    def __init__(self) -> None:
        self.scope: dict[str, Any] = {}
        self.start: dict[str, Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def set_cookie(self) -> list[bytes]:
        return [value for name, value in self.start.get("headers", []) if name.lower() == b"set-cookie"]


async def run(stack: Any, cookie: str | None) -> Inner:
    inner = Inner()
    headers = [(b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    scope = {"type": "http", "method": "GET", "path": "/notifications/stream/", "headers": headers,
             "query_string": b""}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await stack(inner)(scope, receive, send)
    inner.start = sent[0]
    return inner


def session_key(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return str(client.cookies[settings.SESSION_COOKIE_NAME].value)


@pytest.mark.parametrize("kind", ["none", "live", "stale", "malformed", "unknown"])
async def test_the_same_user_session_and_cookie_as_auth_middleware_stack(kind, alice):
    async def cookie() -> str | None:  # a fresh one per stack: a stale session is flushed by the first
        if kind == "none":
            return None
        if kind == "malformed":
            return "abc"
        if kind == "unknown":
            return "x" * 32
        return await sync_to_async(session_key)(alice)

    channels_cookie, ours_cookie = await cookie(), await cookie()
    if kind == "stale":

        def change_password() -> None:
            alice.set_password("pw-alice-456")
            alice.save()

        await sync_to_async(change_password)()
    theirs = await run(AuthMiddlewareStack, channels_cookie)
    ours = await run(auth.StreamAuth, ours_cookie)
    for inner in (theirs, ours):
        assert inner.scope["user"].is_authenticated is (kind == "live")
        if kind == "live":
            assert inner.scope["user"].pk == alice.pk
    assert (theirs.scope["session"].session_key is None) is (ours.scope["session"].session_key is None)
    assert [c.split(b";")[0] for c in theirs.set_cookie()] == [c.split(b";")[0] for c in ours.set_cookie()]
    if kind == "stale":
        assert ours.set_cookie() and ours.set_cookie()[0].startswith(b'sessionid=""')
    assert ours.scope["cookies"] == ({} if ours_cookie is None else {settings.SESSION_COOKIE_NAME: ours_cookie})


async def test_no_session_key_no_thread_hop(monkeypatch):
    async def hop(scope: Any) -> Any:
        raise AssertionError("resolved a request without a session key in a thread")

    monkeypatch.setattr(auth, "_resolve", hop)
    inner = await run(auth.StreamAuth, None)
    assert not inner.scope["user"].is_authenticated
    user, viewer = inner.scope[auth.VIEWER_KEY]
    assert user is inner.scope["user"] and viewer == Viewer()
    malformed = await run(auth.StreamAuth, "abc")  # not a key Django would look up either
    assert not malformed.scope["user"].is_authenticated


async def test_the_viewer_is_resolved_with_the_user(alice, group):
    key = await sync_to_async(session_key)(alice)
    inner = await run(auth.StreamAuth, key)
    user, viewer = inner.scope[auth.VIEWER_KEY]
    assert user is inner.scope["user"]
    assert viewer.user_id == alice.pk and viewer.username == "alice"
    assert viewer.group_ids == frozenset({group.pk})
    assert viewer.session == digest(key)
    assert not inner.set_cookie()  # an untouched session sets no cookie


async def test_no_session_cookie_no_session_wrapper():
    """A visitor with no session cookie: an empty session and the server's own send (nothing
    to save, no cookie to set); with ``SESSION_SAVE_EVERY_REQUEST`` Channels' wrapper stays."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "headers": [(b"host", b"testserver"), (b"cookie", b"other=1")]}
    inner_scope, inner_send = await auth.StreamAuth(Inner()).authenticate(scope, send, {"mark": 7})
    assert inner_send is send
    assert inner_scope["cookies"] == {"other": "1"} and inner_scope["mark"] == 7
    assert inner_scope["session"].session_key is None and inner_scope["session"].is_empty()
    assert not inner_scope["user"].is_authenticated and inner_scope[auth.VIEWER_KEY][1] == Viewer()
    assert "cookies" not in scope and "session" not in scope  # the caller's scope is not changed


async def test_save_every_request_keeps_channels_session_wrapper(settings):
    settings.SESSION_SAVE_EVERY_REQUEST = True

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "http", "method": "GET", "headers": [(b"host", b"testserver")]}
    _scope, inner_send = await auth.StreamAuth(Inner()).authenticate(scope, send)
    assert inner_send is not send
    assert getattr(inner_send, "__func__", None) is auth.InstanceSessionWrapper.send
