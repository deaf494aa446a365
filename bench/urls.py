"""Bench-only URLs for the product: the project's, plus triggers that call ``notify()``.

The triggers are plain sync Django views, so they run as the admin's save does: in
Django's worker thread, ``notify()`` stores the row and publishes after commit through
``async_to_sync(layer.group_send)``; the hub then fans the frame out on the event loop.
"""

from __future__ import annotations

import json
import time

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from bench import querycount
from notifications.services import notify
from project.urls import urlpatterns as project_urlpatterns

BODY = "Benchmark broadcast: the payload is about the size of a short admin notice." * 2


@csrf_exempt
def broadcast(request: HttpRequest) -> JsonResponse:
    """One notification for everyone; returns its id."""
    k = json.loads(request.body or b"{}").get("k", 0)
    notification = notify(f"bench {k}", body=BODY)
    return JsonResponse({"ids": [notification.id]})


@csrf_exempt
def targeted(request: HttpRequest) -> JsonResponse:
    """One notification per listed username, in order; returns ids and the time each was sent."""
    users = json.loads(request.body)["users"]
    sent = []
    for username in users:
        t = time.monotonic()
        notification = notify(f"for {username}", body=BODY, recipient=username)
        sent.append([notification.id, t])
    return JsonResponse({"sent": sent})


def queries(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"queries": querycount.queries()})


urlpatterns = [
    path("bench/broadcast/", broadcast),
    path("bench/targeted/", targeted),
    path("bench/queries/", queries),
    *project_urlpatterns,
]
