"""The product as ``project.asgi`` serves it, with the broadcast trigger on ``anotify()``.

``POST /bench/broadcast/`` is answered here by a bare ASGI route that awaits
``notifications.services.anotify()``, as the floor's trigger is a bare ASGI route; everything
else (the stream first, through ``with_streams``) is the demo's. The ``product-*`` servers
trigger through a sync Django view instead (``bench/urls.py``), as the admin and the API do.
Comparing the two shows what the trigger costs apart from the fan-out: a Django request under
ASGI (a new thread per request, a thread hop per middleware hook, and a new database
connection in that thread) against one hop to store the row.
"""

from __future__ import annotations

import json
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django_asgi_app = get_asgi_application()

from bench.urls import BODY  # noqa: E402  (needs the app registry)
from notifications.asgi import with_streams  # noqa: E402
from notifications.services import anotify  # noqa: E402


async def triggers(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http" or scope["path"] != "/bench/broadcast/" or scope["method"] != "POST":
        await django_asgi_app(scope, receive, send)
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    k = json.loads(b"".join(chunks) or b"{}").get("k", 0)
    notification = await anotify(f"bench {k}", body=BODY)
    body = json.dumps({"ids": [notification.id]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


application = with_streams(triggers)
