"""GET /notifications/metrics: this process's stream counters in the Prometheus text format.

Written by hand (format 0.0.4) rather than with ``prometheus_client``: a dozen counters and
gauges that already live in ``Hub.stats``, read on demand, need no registry, no collector
classes and no multi-process directory; the product gains no dependency. Every value is per
process (each daphne process answers for itself), so scrape each process, not the proxy.

Only staff sessions and loopback clients may read it; everyone else gets ``403``. Must not
import the consumer.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from . import fanout

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})

#: (name, type, help, Hub.stats key) for the hub's counters.
COUNTERS = [
    ("notifications_events_total", "Notifications this process fanned out to its streams (each once).", "events"),
    ("notifications_deliveries_total", "Events handed to local streams (one per stream per event).", "deliveries"),
    ("notifications_replays_total", "Streams opened with a Last-Event-ID that were replayed to.", "replays"),
    (
        "notifications_replays_from_memory_total",
        "Replays served from the hub's recent events (one existence/read query, no row encoding).",
        "replays_from_memory",
    ),
    ("notifications_catch_ups_total", "Database catch-up reads after a gap, a lost or overtaken event.", "catch_ups"),
    ("notifications_duplicates_dropped_total", "Events received again and dropped.", "duplicates_dropped"),
    ("notifications_tail_repairs_total", "Periodic newest-id checks that found a missing event.", "tail_repairs"),
    ("notifications_layer_errors_total", "Failed channel-layer receives (re-joined, then caught up).", "layer_errors"),
    ("notifications_identity_changes_total", "Sign-outs, password, active and group changes received.",
     "identity_changes"),
    ("notifications_identity_ends_total", "Streams ended because their user's identity changed.", "identity_ends"),
]
#: Hub.stats keys ``<prefix><reason>`` exported as one counter with a ``reason`` label (the
#: reasons listed are always exported, at 0 until they happen).
LABELLED = [
    ("notifications_resets_total", "Streams answered with event: reset, by reason.", "resets_",
     ("expired", "too_many", "membership")),
    ("notifications_streams_dropped_total", "Streams the server closed because the client fell behind.",
     "dropped_", ("unread_buffer", "outbox", "pending")),
]


def allowed(request: HttpRequest) -> bool:
    """Staff sessions, and clients on the loopback interface (a scraper on the same host)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return True
    return request.META.get("REMOTE_ADDR", "") in LOOPBACK


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not allowed(request):
        return HttpResponse(
            "Metrics are for staff and for scrapers on this host.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    response = HttpResponse(render(collect()), content_type=CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response


def collect() -> dict[str, Any]:
    """A snapshot of every hub in this process (one per event loop; one under daphne).

    Runs in a worker thread while the hub runs on its loop: only copies and ``len()`` calls,
    which the GIL makes atomic; a dict that changes size while it is copied is copied again.
    """
    stats: dict[str, int] = {}
    gauges = dict.fromkeys(
        ("streams", "replaying", "users", "groups", "held", "head", "hubs", "tasks"), 0
    )
    for loop, hub in _retry(lambda: list(fanout._hubs.items())):
        gauges["hubs"] += 1
        for key, value in _retry(lambda hub=hub: list(dict(hub.stats).items())):
            stats[key] = stats.get(key, 0) + value
        streams = _retry(lambda hub=hub: list(hub.streams))
        gauges["streams"] += len(streams)
        gauges["replaying"] += sum(1 for stream in streams if not stream.live)
        gauges["users"] += len(hub._by_user)
        gauges["groups"] += len(hub._by_group)
        gauges["held"] += len(hub._held)
        gauges["head"] = max(gauges["head"], hub.head)
        if not loop.is_closed():
            gauges["tasks"] += len(asyncio.all_tasks(loop))  # retries concurrent changes itself
    return {"stats": stats, "gauges": gauges, "layer": _layer_counts(), "rss": _rss_bytes()}


def render(snapshot: dict[str, Any]) -> str:
    stats, gauges, layer = snapshot["stats"], snapshot["gauges"], snapshot["layer"]
    lines: list[str] = []

    def metric(name: str, kind: str, help: str, samples: Iterable[tuple[str, int]]) -> None:
        lines.append(f"# HELP {name} {help}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    metric("notifications_open_streams", "gauge", "Open SSE streams in this process.", [("", gauges["streams"])])
    metric("notifications_replaying_streams", "gauge", "Open streams still writing their replay.",
           [("", gauges["replaying"])])
    metric("notifications_indexed_users", "gauge", "Users with at least one open stream.", [("", gauges["users"])])
    metric("notifications_indexed_groups", "gauge", "Groups with at least one open stream.", [("", gauges["groups"])])
    metric("notifications_held_events", "gauge", "Out-of-order events waiting for a catch-up read.",
           [("", gauges["held"])])
    metric("notifications_head_id", "gauge", "Highest id handed out with nothing missing below it.",
           [("", gauges["head"])])
    metric("notifications_hubs", "gauge", "Hubs (one per event loop) in this process.", [("", gauges["hubs"])])
    metric("notifications_event_loop_tasks", "gauge", "asyncio tasks on the hubs' event loops.",
           [("", gauges["tasks"])])
    for name, help, key in COUNTERS:
        metric(name, "counter", help, [("", stats.get(key, 0))])
    for name, help, prefix, reasons in LABELLED:
        counts = dict.fromkeys(reasons, 0)
        counts.update((key[len(prefix):], value) for key, value in stats.items() if key.startswith(prefix))
        metric(name, "counter", help, [(f'{{reason="{reason}"}}', counts[reason]) for reason in sorted(counts)])
    if layer is not None:
        metric("notifications_layer_channels", "gauge", "Channels in the in-memory channel layer.",
               [("", layer["channels"])])
        metric("notifications_layer_group_members", "gauge", "Group memberships in the in-memory channel layer.",
               [("", layer["members"])])
    if snapshot["rss"] is not None:
        metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", [("", snapshot["rss"])])
    metric("notifications_process_info", "gauge", "The process that answered.", [(f'{{pid="{os.getpid()}"}}', 1)])
    return "\n".join(lines) + "\n"


def _layer_counts() -> dict[str, int] | None:
    """Channels and group members of an in-memory layer (Redis keeps its own: not counted)."""
    from channels.layers import InMemoryChannelLayer, channel_layers

    # Only look at a layer that is already built and is in-memory: the Redis layers'
    # attributes need the event loop (channels_redis' pub/sub proxy raises without one).
    layer = channel_layers.backends.get("default")
    if not isinstance(layer, InMemoryChannelLayer):
        return None
    members = _retry(lambda: [len(m) for m in list(layer.groups.values())])
    return {"channels": len(layer.channels), "members": sum(members)}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _retry(read: Any, attempts: int = 20) -> Any:
    """Run a read of loop-owned state from another thread; retry if it changed under us."""
    for _ in range(attempts - 1):
        try:
            return read()
        except RuntimeError:  # "changed size during iteration"
            continue
    return read()
