"""notifications.servers: the shutdown hook and connection abort per server, and the lifespan handler.

The uvicorn tests run a real ``uvicorn.Server`` in the test's event loop (127.0.0.1, a free
port) with a bare ASGI app, so they show the hook against uvicorn's own shutdown sequence;
``tests/integration`` shows it with the whole project, under daphne and uvicorn processes.
"""

from __future__ import annotations

import asyncio
import functools
import signal
from typing import Any

import pytest

from notifications import servers
from tests.support.servers import free_port, require_module


def uvicorn_module() -> Any:
    require_module("uvicorn", package="uvicorn[standard]")
    import uvicorn

    return uvicorn


# -- on_shutdown -----------------------------------------------------------------------------


async def test_on_shutdown_is_false_outside_a_known_server():
    before = signal.getsignal(signal.SIGTERM)
    assert servers.on_shutdown(lambda: None) is False
    assert signal.getsignal(signal.SIGTERM) is before


async def test_a_handle_exit_that_is_not_uvicorns_is_not_taken_for_it():
    uvicorn_module()

    class Impostor:
        def handle_exit(self, sig: int, frame: Any) -> None: ...

    previous = signal.signal(signal.SIGTERM, Impostor().handle_exit)
    try:
        assert servers.on_shutdown(lambda: None) is False
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_under_uvicorn_the_callback_runs_after_listening_stops_and_before_the_wait():
    """The wrapper schedules the callback, then runs uvicorn's shutdown, whose first step
    (synchronous: close the listeners, mark the connections) comes before the callback."""
    uvicorn = uvicorn_module()
    server = uvicorn.Server(uvicorn.Config(app=None, log_config=None))
    steps: list[str] = []

    async def uvicorns_shutdown(sockets: Any = None) -> None:
        steps.append("stopped listening")
        await asyncio.sleep(0)
        steps.append("waited for connections")

    server.shutdown = uvicorns_shutdown
    previous = signal.signal(signal.SIGTERM, server.handle_exit)  # what capture_signals() does
    try:
        assert servers.on_shutdown(lambda: steps.append("streams ended")) is True
        assert steps == []
        await server.shutdown()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert steps == ["stopped listening", "streams ended", "waited for connections"]


async def test_a_stream_attached_while_uvicorn_already_shuts_down_is_ended_too():
    uvicorn = uvicorn_module()
    server = uvicorn.Server(uvicorn.Config(app=None, log_config=None))
    server.should_exit = True
    ended = asyncio.Event()
    previous = signal.signal(signal.SIGINT, server.handle_exit)
    try:
        assert servers.on_shutdown(ended.set) is True
        await asyncio.wait_for(ended.wait(), 1)
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("hooked", [True, False], ids=["hooked", "control-without-hook"])
async def test_uvicorn_ends_an_open_stream_cleanly_when_it_starts_shutting_down(hooked):
    """A real uvicorn and a response that never ends by itself. With the hook the response gets
    its last chunk as soon as shutdown starts and ``serve()`` returns at once; without it
    uvicorn waits for the whole graceful timeout (1 s here), then cuts the response off."""
    uvicorn = uvicorn_module()
    graceful = 1 if not hooked else 30

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        finish = asyncio.Event()
        registered = servers.on_shutdown(finish.set) if hooked else False
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": f": hooked {registered}\n\n".encode(), "more_body": True})
        await finish.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None, log_level="critical",
                            timeout_graceful_shutdown=graceful)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)
        assert f": hooked {hooked}".encode() in head
        started = loop.time()
        server.should_exit = True  # what uvicorn's SIGTERM/SIGINT handler does
        rest = await asyncio.wait_for(reader.read(), 10)
        await asyncio.wait_for(serving, 10)
        took = loop.time() - started
        writer.close()
    finally:
        server.force_exit = True
        if not serving.done():
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    if hooked:
        assert rest.endswith(b"0\r\n\r\n"), rest  # chunked encoding's last chunk: a clean end
        assert took < 1, f"shutdown took {took:.1f}s"
    else:
        assert not rest.endswith(b"0\r\n\r\n"), rest  # cut off
        assert took >= graceful


# -- abort -------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def abort(self) -> None:
        self.calls.append("abort")

    def abortConnection(self) -> None:  # noqa: N802 (Twisted's name)
        self.calls.append("abortConnection")


def test_abort_knows_uvicorns_send_and_aborts_its_transport():
    uvicorn_module()
    from uvicorn.protocols.http.h11_impl import RequestResponseCycle as H11Cycle
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    for cycle_class in (RequestResponseCycle, H11Cycle):
        cycle = object.__new__(cycle_class)
        cycle.transport = Recorder()
        assert servers.abort(cycle.send) is True
        assert cycle.transport.calls == ["abort"]


def test_abort_knows_daphnes_send_and_aborts_its_transport():
    transport = Recorder()
    transport.dataBuffer, transport.offset, transport._tempDataLen, transport.producerPaused = b"", 0, 0, False

    class Channel:
        pass

    class Request:
        channel = Channel()

    Request.channel.transport = transport

    async def handle_reply(protocol: Any, message: dict[str, Any]) -> None: ...

    assert servers.abort(functools.partial(handle_reply, Request())) is True
    assert transport.calls == ["abortConnection"]


def test_abort_is_false_for_an_unknown_send():
    async def send(message: dict[str, Any]) -> None: ...

    assert servers.abort(send) is False
    assert servers.abort(Recorder().abort) is False  # a bound method of something that is not uvicorn's


# -- lifespan ------------------------------------------------------------------------------------


async def run_lifespan(application: Any, *messages: str) -> list[dict[str, Any]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for kind in messages:
        inbox.put_nowait({"type": kind})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(application({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send), 10)
    return sent


async def test_the_project_answers_uvicorns_lifespan_events():
    from project.asgi import application

    sent = await run_lifespan(application, "lifespan.startup", "lifespan.shutdown")
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


@pytest.mark.django_db(transaction=True)
async def test_lifespan_shutdown_takes_the_hub_out_of_the_channel_layer(fresh_hub):
    from channels.layers import get_channel_layer

    from notifications.events import EVENTS_GROUP
    from notifications.hub import get_hub

    hub = get_hub()
    await hub.start()
    layer = get_channel_layer()
    assert hub.channel_name in layer.groups.get(EVENTS_GROUP, {})
    await run_lifespan(servers.lifespan, "lifespan.startup", "lifespan.shutdown")
    assert hub.channel_name not in layer.groups.get(EVENTS_GROUP, {})
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("notifications-hub")]


# -- the tests' own guard: a missing uvicorn skips, naming the package (fails under CI) ---------------


def test_a_missing_server_package_skips_naming_it_or_fails_under_ci(monkeypatch):
    monkeypatch.delenv("NOTIFICATIONS_REQUIRE_SERVERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"needs no_such_server .*'uvicorn\[standard\]'"):
        require_module("asyncio", "no_such_server", package="uvicorn[standard]")
    monkeypatch.setenv("NOTIFICATIONS_REQUIRE_SERVERS", "1")
    with pytest.raises(pytest.fail.Exception, match="forbids skipping"):
        require_module("no_such_server", package="uvicorn[standard]")
    require_module("asyncio", package="python")  # present: nothing happens
