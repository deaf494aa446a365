"""ASGI entry point of the demo, in the form of "Add it to your project", step 4 (README).

``with_streams`` serves the notification stream and hands everything else — and uvicorn's
``lifespan`` scope — to Django (notifications/asgi.py). Served by daphne (``runserver``,
production) and by uvicorn (production); see docs/deployment.md.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from notifications.asgi import with_streams  # noqa: E402  (needs the app registry)

application = with_streams(django_asgi_app)
