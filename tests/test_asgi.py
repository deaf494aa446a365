"""with_streams(app): the stream path goes to the consumer, every other scope to the app unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from notifications.asgi import with_streams


class Recorder:
    """An ASGI app that records the scopes it gets and optionally speaks lifespan."""

    def __init__(self, lifespan: str = "none") -> None:
        self.scopes: list[dict[str, Any]] = []
        self.lifespan = lifespan

    async def __call__(self, scope, receive, send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "lifespan":
            if self.lifespan == "none":
                raise ValueError("No application configured for scope type 'lifespan'")
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if self.lifespan == "fails-at-shutdown":
                        raise RuntimeError("app shutdown failed")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})


def http_scope(path: str, **extra: Any) -> dict[str, Any]:
    headers = [(b"host", b"localhost")]
    return {"type": "http", "method": "GET", "path": path, "headers": headers, "query_string": b"", **extra}


async def call(app, scope) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


async def run_lifespan(app, leaves: list[str], *kinds: str) -> list[dict[str, Any]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for kind in kinds:
        inbox.put_nowait({"type": kind})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        leaves.append(message["type"])

    await asyncio.wait_for(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send), 10)
    return sent


@pytest.fixture
def leaves(monkeypatch) -> list[str]:
    """Each time the hub leaves the channel layer, and what the server was sent, in order.

    The real leave is tested in test_servers.py; here only where it comes.
    """
    from notifications import servers

    calls: list[str] = []

    async def leave() -> None:
        calls.append("left")

    monkeypatch.setattr(servers, "leave_channel_layer", leave)
    return calls


@pytest.mark.parametrize(
    "scope",
    [
        http_scope("/"),
        http_scope("/notifications/api/"),
        http_scope("/notifications/stream"),  # no trailing slash: not the stream
        http_scope("/notifications/stream/x"),
        {"type": "websocket", "path": "/notifications/stream/", "headers": [], "query_string": b""},
        {"type": "websocket", "path": "/ws/chat/", "headers": [], "query_string": b""},
    ],
)
async def test_every_other_scope_reaches_the_app_unchanged(scope):
    app = Recorder()
    router = with_streams(app)
    if scope["type"] == "http":
        assert await call(router, scope) == [
            {"type": "http.response.start", "status": 204, "headers": []},
            {"type": "http.response.body", "body": b""},
        ]
    else:
        await router(scope, None, None)
    assert app.scopes == [scope] and app.scopes[0] is scope
    assert router.app is app


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scope", [http_scope("/notifications/stream/", method="POST"),
                                   http_scope("/site/notifications/stream/", method="POST", root_path="/site")])
async def test_the_stream_path_goes_to_the_stream_consumer_not_the_app(scope, fresh_hub):
    app = Recorder()
    sent = await call(with_streams(app), scope)
    assert app.scopes == []
    assert sent[0]["status"] == 405  # the stream route's answer to anything but GET


async def test_lifespan_of_an_app_without_lifespan_is_answered_and_the_hub_leaves(leaves):
    app = Recorder(lifespan="none")
    sent = await run_lifespan(with_streams(app), leaves, "lifespan.startup", "lifespan.shutdown")
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert leaves == ["lifespan.startup.complete", "left", "lifespan.shutdown.complete"] and len(app.scopes) == 1


async def test_lifespan_of_an_app_with_its_own_handling_stays_the_apps_and_the_hub_leaves_after_it(leaves):
    app = Recorder(lifespan="speaks")
    sent = await run_lifespan(with_streams(app), leaves, "lifespan.startup", "lifespan.shutdown")
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    # The app shut down first; the hub left before the server heard "complete".
    assert leaves == ["lifespan.startup.complete", "left", "lifespan.shutdown.complete"]


async def test_an_apps_failing_lifespan_shutdown_is_reported_and_the_hub_still_leaves(leaves):
    app = Recorder(lifespan="fails-at-shutdown")
    with pytest.raises(RuntimeError, match="app shutdown failed"):
        await run_lifespan(with_streams(app), leaves, "lifespan.startup", "lifespan.shutdown")
    assert leaves == ["lifespan.startup.complete", "left"]


async def test_the_demo_project_is_with_streams_around_django():
    from django.core.handlers.asgi import ASGIHandler

    from notifications.asgi import StreamsRouter
    from project.asgi import application

    assert isinstance(application, StreamsRouter) and isinstance(application.app, ASGIHandler)
