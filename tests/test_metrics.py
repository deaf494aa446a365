"""GET /notifications/metrics: who may read it, the text format, and that it counts the hub."""

from __future__ import annotations

import asyncio
import re

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from notifications import stream as stream_module
from notifications.hub import get_hub
from notifications.models import Viewer
from notifications.services import notify
from tests.support import eventually
from tests.support.consumer import ConsumerStream

pytestmark = pytest.mark.timeout(30)

URL = "/notifications/metrics"
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="[^"\\]*"(,[a-z_]+="[^"\\]*")*\})? -?\d+(\.\d+)?$')


def values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["203.0.113.7", "10.0.0.2", "::ffff:10.0.0.2", "2001:db8::1"])
def test_anonymous_remote_client_is_refused(address):
    response = Client(REMOTE_ADDR=address).get(URL)
    assert response.status_code == 403
    assert "notifications_" not in response.content.decode()


@pytest.mark.django_db
def test_signed_in_non_staff_remote_client_is_refused(alice):
    client = Client(REMOTE_ADDR="203.0.113.7")
    client.force_login(alice)
    assert client.get(URL).status_code == 403


@pytest.mark.django_db
def test_staff_session_may_read_from_anywhere(staff):
    client = Client(REMOTE_ADDR="203.0.113.7")
    client.force_login(staff)
    response = client.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "notifications_open_streams" in response.content.decode()


@pytest.mark.django_db
def test_inactive_staff_is_refused(staff):
    client = Client(REMOTE_ADDR="203.0.113.7")
    client.force_login(staff)
    staff.is_active = False
    staff.save()
    assert client.get(URL).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_loopback_scraper_may_read_without_a_session(address):
    response = Client(REMOTE_ADDR=address).get(URL)
    assert response.status_code == 200


@pytest.mark.django_db
def test_only_get():
    assert Client(REMOTE_ADDR="127.0.0.1").post(URL).status_code == 405


@pytest.mark.django_db
def test_text_format_is_valid_prometheus_exposition():
    text = Client(REMOTE_ADDR="127.0.0.1").get(URL).content.decode()
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in declared, f"{name} declared twice"
            declared[name] = ""
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge") and name in declared
            declared[name] = kind
        else:
            assert SAMPLE.match(line), line
            name = line.split("{")[0].split(" ")[0]
            assert declared.get(name), f"sample before its TYPE: {line}"
            if declared[name] == "counter":
                assert name.endswith("_total"), name
    for required in (
        "notifications_open_streams",
        "notifications_events_total",  # notifications published (fanned out) by this process
        "notifications_deliveries_total",
        "notifications_replays_total",
        "notifications_resets_total",
        "notifications_catch_ups_total",
        "notifications_streams_dropped_total",
    ):
        assert required in declared, required


# -- the numbers follow the hub ---------------------------------------------------------------


def has(kind, count=1):
    return lambda s: len(s.of_type(kind)) >= count


async def scrape() -> dict[str, float]:
    """The view as a scraper on this host sees it, from a worker thread like Django's."""
    response = await sync_to_async(lambda: Client(REMOTE_ADDR="127.0.0.1").get(URL))()
    assert response.status_code == 200
    return values(response.content.decode())


@pytest.mark.django_db(transaction=True)
async def test_counts_streams_events_and_deliveries_then_nothing_left_behind(fresh_hub, alice):
    before = await scrape()
    anon = await ConsumerStream().open()
    signed = await ConsumerStream(alice).open()
    await anon.read_until(has("hello"))
    await signed.read_until(has("hello"))
    during = await scrape()
    assert during["notifications_open_streams"] == 2
    assert during["notifications_indexed_users"] == 1
    assert during["notifications_indexed_groups"] == 1  # alice's group
    assert during["notifications_layer_group_members"] == 1  # one hub channel, however many streams
    await sync_to_async(notify)("to all")
    await sync_to_async(notify)("to alice", recipient=alice)
    await anon.read_until(has("notification"))
    await signed.read_until(has("notification", 2))
    after = await scrape()
    assert after["notifications_events_total"] - before["notifications_events_total"] == 2
    assert after["notifications_deliveries_total"] - before["notifications_deliveries_total"] == 3
    assert after["notifications_head_id"] == max(signed.notification_ids())
    await anon.close()
    await signed.close()
    gone = await scrape()
    assert gone["notifications_open_streams"] == 0
    assert gone["notifications_indexed_users"] == 0
    assert gone["notifications_indexed_groups"] == 0
    assert gone["notifications_replaying_streams"] == 0
    assert gone["notifications_layer_channels"] == 1


@pytest.mark.django_db(transaction=True)
async def test_replays_and_resets_are_counted(fresh_hub, settings):
    settings.NOTIFICATIONS_REPLAY_LIMIT = 1
    first = await sync_to_async(notify)("one")
    await sync_to_async(notify)("two")
    before = await scrape()
    stream = await ConsumerStream(headers=[(b"last-event-id", str(first.id).encode())]).open()
    await stream.read_until(has("hello"))
    await stream.close()
    stream = await ConsumerStream(headers=[(b"last-event-id", b"0")]).open()
    await stream.read_until(has("hello"))
    assert stream.of_type("reset")
    await stream.close()
    after = await scrape()
    assert after["notifications_replays_total"] - before["notifications_replays_total"] == 2
    key = 'notifications_resets_total{reason="too_many"}'
    assert after[key] - before[key] == 1


async def test_a_stream_that_cannot_keep_up_is_dropped_and_counted(settings):
    """A server whose send waits (flow control) and a client that never reads: bounded."""
    settings.NOTIFICATIONS_SLOW_CLIENT_TIMEOUT = 0.05
    hub = get_hub()
    gate = asyncio.Event()
    sent: list[dict] = []

    async def slow_send(message: dict) -> None:
        await gate.wait()
        sent.append(message)

    stream = hub.new_stream(Viewer(), slow_send)
    hub.attach(stream)
    stream.go_live(b"", 0)
    before = hub.stats["dropped_outbox"]
    frame = b"data: " + b"x" * 1000 + b"\n\n"
    for i in range(1, stream_module.WATCH_BYTES // len(frame) + 10):
        stream.deliver(i, frame)
    await eventually(lambda: stream.closed, what="the stalled stream is dropped")
    assert hub.snapshot().stats["dropped_outbox"] == before + 1
    gate.set()
    await eventually(lambda: sent and sent[-1]["more_body"] is False, what="the queued frames drain")
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert len(sent) == 2  # the blocked frame, then the end: the queue was dropped, not sent
    hub.detach(stream)


@pytest.mark.django_db(transaction=True)
async def test_metrics_are_read_on_the_hubs_event_loop(fresh_hub, monkeypatch):
    """The view hops to the loop for the hub's snapshot; it never reads the hub from its thread."""
    import threading

    hub = get_hub()
    await hub.start()
    threads = []
    original = hub.snapshot

    def snapshot():
        threads.append(threading.get_ident())
        return original()

    monkeypatch.setattr(hub, "snapshot", snapshot)
    await scrape()
    assert threads == [threading.get_ident()]


@pytest.mark.django_db(transaction=True)
async def test_capabilities_are_exported_once_a_stream_showed_the_server(fresh_hub):
    before = await scrape()
    assert not any(name.startswith("notifications_capability") for name in before)
    stream = await ConsumerStream().open()
    await stream.read_until(has("hello"))
    after = await scrape()
    # ApplicationCommunicator is no known server: every probe answers 0, visibly.
    assert {name: value for name, value in after.items() if name.startswith("notifications_capability")} == {
        'notifications_capability{name="slow_client_cutoff"}': 0,
        'notifications_capability{name="abort"}': 0,
        'notifications_capability{name="shutdown_hook"}': 0,
    }
    await stream.close()
