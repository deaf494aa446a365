"""notifications.heap: when the heap is frozen, refrozen and swept; and that a closed stream leaves no cycle."""

from __future__ import annotations

import asyncio
import gc

import pytest

from notifications import heap


class FakeGC:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def collect(self) -> int:
        self.calls.append("collect")
        return 0

    def get_freeze_count(self) -> int:
        return 0


@pytest.fixture
def fake_gc(monkeypatch):
    fake = FakeGC()
    monkeypatch.setattr(heap, "gc", fake)
    monkeypatch.setattr(heap, "_done", False)
    monkeypatch.setattr(heap, "_frozen_at", None)
    monkeypatch.setattr(heap, "_swept_at", 0.0)
    return fake


def test_nothing_is_frozen_again_before_the_first_stream_froze_the_start_up_heap(fake_gc):
    heap.streams_grew(5000)
    assert fake_gc.calls == [] and not heap.sweep(10_000.0)


def test_frozen_once_then_at_each_doubling_of_at_least_a_thousand_streams(fake_gc):
    heap.freeze_once()
    heap.freeze_once()
    assert fake_gc.calls == ["freeze"]
    froze_at = []
    for streams in range(1, 9001):
        before = len(fake_gc.calls)
        heap.streams_grew(streams)
        if len(fake_gc.calls) > before:
            froze_at.append(streams)
    assert froze_at == [1000, 2000, 4000, 8000]


def test_the_sweep_unfreezes_collects_and_freezes_every_sweep_seconds(fake_gc, monkeypatch):
    monkeypatch.setattr(heap.time, "monotonic", lambda: 100.0)
    heap.freeze_once()
    assert not heap.sweep(100.0 + heap.SWEEP_SECONDS - 1)
    assert heap.sweep(100.0 + heap.SWEEP_SECONDS)
    assert fake_gc.calls == ["freeze", "unfreeze", "collect", "freeze"]
    assert not heap.sweep(100.0 + heap.SWEEP_SECONDS + 1)


def test_switched_off_nothing_is_ever_frozen(fake_gc, settings):
    settings.NOTIFICATIONS_FREEZE_HEAP = False
    heap.freeze_once()
    heap.streams_grew(100_000)
    assert fake_gc.calls == [] and not heap.sweep(1e9)


@pytest.mark.django_db(transaction=True)
async def test_a_closed_stream_leaves_no_reference_cycle(fresh_hub):
    """What makes refreezing safe: a stream's objects are freed by reference counting when it
    closes, so freezing them leaks nothing (only a collection frees objects in a cycle)."""
    from channels.testing import ApplicationCommunicator

    from notifications.hub import get_hub
    from notifications.routing import stream_app

    scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": "/notifications/stream/",
             "query_string": b"", "headers": [(b"host", b"localhost"), (b"last-event-id", b"0")],
             "server": ("127.0.0.1", 8000), "scheme": "http"}

    async def open_and_close(n: int) -> None:
        communicators = [ApplicationCommunicator(stream_app, dict(scope)) for _ in range(n)]
        for communicator in communicators:
            await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
            assert (await communicator.receive_output(5))["status"] == 200
            await communicator.receive_output(5)  # retry, replay and hello
        assert len(get_hub().streams) >= n
        for communicator in communicators:
            await communicator.send_input({"type": "http.disconnect"})
            await communicator.wait(5)

    await open_and_close(5)  # warm: first-use caches, the hub's own tasks
    await asyncio.sleep(0.05)
    gc.collect()
    gc.disable()
    try:
        await open_and_close(50)
        await asyncio.sleep(0.05)
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        kinds = sorted({type(o).__name__ for o in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert get_hub().streams == set()
    assert found < 50, f"{found} objects in cycles after 50 streams closed: {kinds}"
