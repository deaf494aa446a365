"""The demo's own views: the CSRF failure page (a site-wide choice, so not the app's)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.csrf import csrf_failure as django_csrf_failure


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: JSON for the notifications API (its scripts read JSON), Django's page elsewhere."""
    if request.path.startswith(reverse("notifications:api-list")):
        return JsonResponse(
            {"error": f"CSRF check failed: {reason}. Send the csrftoken cookie's value in X-CSRFToken."}, status=403
        )
    return django_csrf_failure(request, reason)
