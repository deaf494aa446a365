"""django-eventstream's stream and bench-only triggers that call its ``send_event()``."""

from __future__ import annotations

import json
import time

import django_eventstream
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django_eventstream import send_event
from django_eventstream.storage import DjangoModelStorage

from bench import querycount
from bench.urls import BODY


def _payload(k: object) -> dict[str, object]:
    # The same fields as our product's notification JSON, so frames are about the same size.
    return {"title": f"bench {k}", "body": BODY, "level": "info", "url": "", "audience": "everyone",
            "created_at": "2025-01-01T00:00:00.000000Z", "read": False}


def _current(channel: str) -> int:
    return int(DjangoModelStorage().get_current_id(channel))


@csrf_exempt
def broadcast(request: HttpRequest) -> JsonResponse:
    k = json.loads(request.body or b"{}").get("k", 0)
    send_event("broadcast", "message", _payload(k))
    # send_event() returns nothing; the stored counter is the id it just used (one writer).
    return JsonResponse({"ids": [_current("broadcast")]})


@csrf_exempt
def targeted(request: HttpRequest) -> JsonResponse:
    users = json.loads(request.body)["users"]
    sent = []
    for username in users:
        t = time.monotonic()
        send_event(f"user-{username}", "message", _payload(username))
        sent.append([_current(f"user-{username}"), t])
    return JsonResponse({"sent": sent})


def queries(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"queries": querycount.queries()})


urlpatterns = [
    path("bench/broadcast/", broadcast),
    path("bench/targeted/", targeted),
    path("bench/queries/", queries),
    path("events/", include(django_eventstream.urls), {"channels": ["broadcast"]}),
    path("events/user/<str:user>/", include(django_eventstream.urls), {"format-channels": ["user-{user}"]}),
]
