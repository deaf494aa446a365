"""StreamGuard (notifications.guard): Host against ALLOWED_HOSTS, 405 unread, the body cap."""

from __future__ import annotations

import pytest
from channels.testing import ApplicationCommunicator

from notifications.guard import BODY_LIMIT, StreamGuard, host_problem


class Inner:
    """The wrapped app: records the scope and every message it receives, answers 200."""

    def __init__(self) -> None:
        self.calls = 0
        self.received: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        message = await receive()
        self.received.append(message)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def scope(method="GET", host: bytes | None = b"localhost", **extra):
    headers = [(b"host", host)] if host is not None else []
    return {"type": "http", "method": method, "path": "/notifications/stream/", "headers": headers,
            "server": ("127.0.0.1", 8000), "scheme": "http", **extra}


async def run(s, *messages, inner=None):
    inner = inner or Inner()
    communicator = ApplicationCommunicator(StreamGuard(inner), s)
    for message in messages:
        await communicator.send_input(message)
    start = await communicator.receive_output(2)
    body = await communicator.receive_output(2)
    await communicator.wait(2)
    return start, body, inner


def status(start) -> int:
    return start["status"]


async def test_allowed_host_passes_with_an_empty_body():
    start, body, inner = await run(scope(), {"type": "http.request", "body": b"", "more_body": False})
    assert status(start) == 200 and inner.calls == 1
    assert inner.received == [{"type": "http.request", "body": b"", "more_body": False}]


async def test_foreign_host_is_400_text_plain(caplog):
    start, body, inner = await run(scope(host=b"evil.com"))
    assert status(start) == 400 and inner.calls == 0
    assert dict(start["headers"])[b"content-type"] == b"text/plain; charset=utf-8"
    assert b"'evil.com'" in body["body"] and b"ALLOWED_HOSTS" in body["body"]
    assert any(r.name == "django.security.DisallowedHost" for r in caplog.records)


@pytest.mark.parametrize("host", [b"localhost:8000", b"127.0.0.1:1234", b"LOCALHOST"])
def test_allowed_hosts_with_ports_and_case(settings, host):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
    assert host_problem(scope(host=host)) is None


@pytest.mark.parametrize("host", [b"evil.com", b"localhost.evil.com", b"bad host", b"localhost,evil.com", b""])
def test_refused_hosts(settings, host):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
    assert host_problem(scope(host=host)) is not None


def test_duplicate_host_headers_are_joined_and_refused(settings):
    settings.ALLOWED_HOSTS = ["localhost", "evil.com"]
    s = scope()
    s["headers"].append((b"host", b"evil.com"))
    assert host_problem(s) is not None


def test_debug_allows_localhost_only_when_allowed_hosts_is_empty(settings):
    settings.ALLOWED_HOSTS = []
    settings.DEBUG = True
    assert host_problem(scope(host=b"app.localhost:8000")) is None
    assert host_problem(scope(host=b"[::1]:8000")) is None
    assert host_problem(scope(host=b"evil.com")) is not None
    settings.DEBUG = False
    assert host_problem(scope(host=b"localhost")) is not None


def test_without_a_host_header_the_server_address_counts(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    assert host_problem(scope(host=None)) is None
    assert host_problem(scope(host=None, server=("10.0.0.1", 8000))) is not None


def test_x_forwarded_host_counts_only_when_django_is_told_to(settings):
    settings.ALLOWED_HOSTS = ["localhost"]
    s = scope()
    s["headers"].append((b"x-forwarded-host", b"evil.com"))
    assert host_problem(s) is None
    settings.USE_X_FORWARDED_HOST = True
    assert host_problem(s) is not None


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"])
async def test_other_methods_are_405_without_reading_the_body(method):
    # No http.request message is ever sent: a guard that tried to read would time out.
    start, body, inner = await run(scope(method=method))
    assert status(start) == 405 and inner.calls == 0
    assert dict(start["headers"])[b"allow"] == b"GET"


async def test_a_body_within_the_cap_is_dropped_not_passed_on():
    chunk = {"type": "http.request", "body": b"x" * (BODY_LIMIT // 2), "more_body": True}
    last = {"type": "http.request", "body": b"x" * (BODY_LIMIT // 2), "more_body": False}
    start, body, inner = await run(scope(), chunk, last)
    assert status(start) == 200
    assert inner.received == [{"type": "http.request", "body": b"", "more_body": False}]


async def test_a_body_over_the_cap_is_413_and_read_no_further():
    over = {"type": "http.request", "body": b"x" * (BODY_LIMIT + 1), "more_body": True}
    start, body, inner = await run(scope(), over)  # more_body stays True: nothing else is read
    assert status(start) == 413 and inner.calls == 0


async def test_a_client_gone_before_the_body_ends_gets_nothing():
    inner = Inner()
    communicator = ApplicationCommunicator(StreamGuard(inner), scope())
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": True})
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(2)
    assert inner.calls == 0
    assert await communicator.receive_nothing()


async def test_the_inner_app_still_hears_the_disconnect():
    seen: list[str] = []

    async def inner(scope, receive, send):
        seen.append((await receive())["type"])
        seen.append((await receive())["type"])

    communicator = ApplicationCommunicator(StreamGuard(inner), scope())
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(2)
    assert seen == ["http.request", "http.disconnect"]


async def test_other_scope_types_pass_unchanged():
    calls = []

    async def inner(scope, receive, send):
        calls.append(scope["type"])

    communicator = ApplicationCommunicator(StreamGuard(inner), {"type": "lifespan"})
    await communicator.wait(2)
    assert calls == ["lifespan"]


class Recorder(Inner):
    def __init__(self) -> None:
        super().__init__()
        self.scopes: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        self.scopes.append(scope)
        await super().__call__(scope, receive, send)


@pytest.mark.django_db
async def test_the_identity_mark_reaches_the_app_with_stream_auth_in_one_copy():
    from notifications.auth import VIEWER_KEY, StreamAuth
    from notifications.guard import IDENTITY_MARK

    inner = Recorder()
    original = scope()
    communicator = ApplicationCommunicator(StreamGuard(StreamAuth(inner)), original)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(2)
    await communicator.receive_output(2)
    await communicator.wait(2)
    assert status(start) == 200 and inner.calls == 1
    [seen] = inner.scopes
    assert isinstance(seen[IDENTITY_MARK], int) and not seen["user"].is_authenticated
    assert seen[VIEWER_KEY][0] is seen["user"] and "session" in seen and "cookies" in seen
    assert IDENTITY_MARK not in original  # the server's scope is never changed


async def test_the_identity_mark_reaches_any_other_app_in_a_copy():
    from notifications.guard import IDENTITY_MARK

    inner = Recorder()
    original = scope()
    await run(original, {"type": "http.request", "body": b"", "more_body": False}, inner=inner)
    [seen] = inner.scopes
    assert isinstance(seen[IDENTITY_MARK], int) and IDENTITY_MARK not in original


def test_remembered_answers_follow_allowed_hosts_and_stay_bounded(settings):
    from notifications import guard

    settings.ALLOWED_HOSTS = ["localhost"]
    assert host_problem(scope(host=b"example.com")) is not None
    settings.ALLOWED_HOSTS = ["example.com"]  # setting_changed: the remembered refusal is forgotten
    assert host_problem(scope(host=b"example.com")) is None
    for k in range(3 * guard._HOSTS_KEPT):  # an attacker's random Host headers
        assert host_problem(scope(host=f"h{k}.evil.com".encode())) is not None
        assert len(guard._host_answers) <= guard._HOSTS_KEPT
    assert host_problem(scope(host=b"example.com")) is None
