"""GET /notifications/metrics: this process's stream counters in the Prometheus text format.

Written by hand (format 0.0.4) rather than with ``prometheus_client``: a dozen counters and
gauges that the hub's public ``Hub.snapshot()`` gives, read on demand on the hub's event loop,
need no registry, no collector classes and no multi-process directory; the product gains no
dependency. Every value is per process (each daphne process answers for itself), so scrape
each process, not the proxy.

Who may read it (``allowed()``; docs/security.md): a request with ``Authorization: Bearer
<NOTIFICATIONS_METRICS_TOKEN>``, an active staff session, and — only while no token is set — a
loopback client whose request carries no forwarding header. Everyone else gets ``403``.
Must not import the consumer.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from .conf import app_settings
from .hub import Snapshot, current_hub

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
#: Headers a proxy adds (and a client can forge): their presence means the peer address is
#: not the client's own, or was rewritten from a header (daphne ``--proxy-headers``, uvicorn).
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")

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
    ("notifications_bad_messages_total", "Channel-layer messages that could not be read or handled (logged).",
     "bad_messages"),
    ("notifications_held_dropped_total", "Out-of-order hints dropped past the hold limit (read from the database).",
     "held_dropped"),
    ("notifications_catch_up_errors_total", "Failed catch-up reads (retried with backoff).", "catch_up_errors"),
    ("notifications_task_failures_total", "Hub background tasks that ended with an exception (logged).",
     "task_failures"),
    ("notifications_identity_changes_total", "Sign-outs, password, active and group changes received.",
     "identity_changes"),
    ("notifications_identity_ends_total", "Streams ended because their user's identity changed.", "identity_ends"),
]
#: ``servers.Capabilities`` flags, exported as ``notifications_capability{name="..."}`` 0 or 1.
CAPABILITIES = ("slow_client_cutoff", "abort", "shutdown_hook")
#: Hub.stats keys ``<prefix><reason>`` exported as one counter with a ``reason`` label (the
#: reasons listed are always exported, at 0 until they happen).
LABELLED = [
    ("notifications_resets_total", "Streams answered with event: reset, by reason.", "resets_",
     ("expired", "too_many", "membership")),
    ("notifications_streams_dropped_total", "Streams the server closed because the client fell behind.",
     "dropped_", ("unread_buffer", "outbox", "pending")),
]


def allowed(request: HttpRequest) -> bool:
    """The bearer token, an active staff session, or (no token set) a direct loopback scraper.

    A server that takes the client address from ``X-Forwarded-For`` (daphne
    ``--proxy-headers``, uvicorn's default from 127.0.0.1) lets anyone who reaches it claim
    127.0.0.1, and a proxy on the same host makes everyone look local: so loopback counts only
    without any forwarding header, and not at all once ``NOTIFICATIONS_METRICS_TOKEN`` is set.
    """
    token = app_settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return True
    if token or any(name in request.META for name in FORWARDING_HEADERS):
        return False
    return request.META.get("REMOTE_ADDR", "") in LOOPBACK


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not allowed(request):
        return HttpResponse(
            "Metrics need the bearer token (NOTIFICATIONS_METRICS_TOKEN) or a staff session.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    response = HttpResponse(render(collect()), content_type=CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response


def collect() -> dict[str, Any]:
    """This process's numbers: the hub's ``snapshot()``, taken on its event loop, plus the layer and RSS.

    Called from Django's worker thread, it hops to the server's event loop (``async_to_sync``
    runs the coroutine there when the thread came from ``sync_to_async``), so nothing reads
    the hub's state from another thread.
    """
    return async_to_sync(_collect_on_loop)()


async def _collect_on_loop() -> dict[str, Any]:
    hub = current_hub()
    snapshot = hub.snapshot() if hub is not None else Snapshot()
    gauges = {key: value for key, value in asdict(snapshot).items() if isinstance(value, int)}
    gauges["hubs"] = int(hub is not None)
    return {
        "stats": dict(snapshot.stats),
        "gauges": gauges,
        "capabilities": dict(snapshot.capabilities),
        "layer": _layer_counts(),
        "rss": _rss_bytes(),
    }


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
    capabilities = snapshot.get("capabilities", {})
    metric("notifications_capability", "gauge",
           "What the server lets streams do (1) or not (0), probed once at the first stream.",
           [(f'{{name="{name}"}}', int(capabilities[name])) for name in CAPABILITIES if name in capabilities])
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
    return {"channels": len(layer.channels), "members": sum(len(m) for m in layer.groups.values())}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
