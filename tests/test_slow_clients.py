"""The slow-client rule measures the client, not the burst (issue 12): a stream whose server send
waits (flow control, as under uvicorn) is dropped only when its client takes nothing for
``NOTIFICATIONS_SLOW_CLIENT_TIMEOUT`` with more than ``WATCH_BYTES`` unsent, or at once past
``MAX_UNSENT_BYTES``. Daphne's buffer is the same rule on Twisted's transport
(tests/integration/test_guarantees.py)."""

from __future__ import annotations

import asyncio

import pytest

from notifications import stream as stream_module
from notifications.models import Viewer
from notifications.stream import Stream
from tests.support import eventually

pytestmark = pytest.mark.timeout(20)

FRAME = b"data: " + b"x" * 4000 + b"\n\n"


class Client:
    """A server send that waits while its client does not read, and a client reading at ``rate`` frames per turn."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.got: list[bytes] = []

    async def send(self, message: dict) -> None:
        await self.reading.wait()
        await asyncio.sleep(0.002)  # a slow reader: ~500 frames a second
        self.got.append(message["body"])


def open_stream(client: Client, drops: list[str]) -> Stream:
    stream = Stream(Viewer(), client.send, on_drop=drops.append)
    stream.go_live(b"", 0)
    return stream


def burst(stream: Stream, count: int, start: int = 1) -> None:
    for id in range(start, start + count):
        stream.deliver(id, FRAME)


async def test_a_reader_slower_than_the_burst_is_never_dropped(settings):
    settings.NOTIFICATIONS_SLOW_CLIENT_TIMEOUT = 0.1
    client, drops = Client(), []
    stream = open_stream(client, drops)
    burst(stream, 1500)  # 6 MB at once: past WATCH_BYTES, read over ~3 s, much longer than the timeout
    client.reading.set()
    await eventually(lambda: len(client.got) == 1500, timeout=15, what="every frame read")
    assert drops == [] and not stream.closed


async def test_a_client_that_reads_nothing_is_dropped_after_the_timeout(settings):
    settings.NOTIFICATIONS_SLOW_CLIENT_TIMEOUT = 0.1
    client, drops = Client(), []
    stream = open_stream(client, drops)
    burst(stream, 400)
    assert not stream.closed  # watched, not yet dropped: a burst alone is no verdict
    await eventually(lambda: stream.closed, timeout=5, what="the stalled stream is dropped")
    assert drops == ["outbox"]


async def test_a_client_that_stops_reading_half_way_is_dropped(settings):
    settings.NOTIFICATIONS_SLOW_CLIENT_TIMEOUT = 0.2
    client, drops = Client(), []
    stream = open_stream(client, drops)
    client.reading.set()
    burst(stream, 600)
    await eventually(lambda: len(client.got) > 50, what="some frames read")
    client.reading.clear()
    await eventually(lambda: stream.closed, timeout=5, what="dropped once it stopped")
    assert drops == ["outbox"]


async def test_past_the_memory_bound_a_stream_is_dropped_at_once(settings):
    settings.NOTIFICATIONS_SLOW_CLIENT_TIMEOUT = 60
    client, drops = Client(), []
    stream = open_stream(client, drops)
    big = b"x" * (1 << 20)
    for id in range(1, stream_module.MAX_UNSENT_BYTES // len(big) + 3):
        stream.deliver(id, big)
    assert stream.closed and drops == ["outbox"]


async def test_max_age_closes_streams_by_the_second_one_timer_for_many_and_forgets_released_ones():
    from notifications.stream import _Expiry

    loop = asyncio.get_running_loop()
    ended: list[int] = []

    def sender(n: int):
        async def send(message: dict) -> None:
            if not message.get("more_body", True):
                ended.append(n)
        return send

    streams = [Stream(Viewer(), sender(n)) for n in range(3)]
    for stream in streams:
        stream.go_live(b"", 0)
    timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
    for stream in streams:
        stream.expire_after(0.0)  # at the next whole second of loop time
    expiry = _Expiry.of(loop)
    assert len(expiry.buckets) == 1 and len(loop._scheduled) == timers_before + 1  # type: ignore[attr-defined]
    streams[1].release()  # the client left: not closed later, not kept in the bucket
    assert streams[1] not in next(iter(expiry.buckets.values()))
    await eventually(lambda: sorted(ended) == [0, 2], timeout=3)
    assert expiry.buckets == {}


def test_a_stream_released_outside_its_loop_leaves_its_bucket():
    from notifications.stream import _Expiry

    loop = asyncio.new_event_loop()
    try:
        stream = Stream(Viewer(), lambda message: None)

        async def arm() -> None:
            stream.expire_after(60.0)

        loop.run_until_complete(arm())
        [bucket] = _Expiry.of(loop).buckets.values()
        assert stream in bucket
        stream.release()  # no loop running here (a sync clean-up path)
        assert stream not in bucket and stream.closed
    finally:
        loop.close()
