"""GET /notifications/metrics: Prometheus text format, per process (placeholder, see issue 5)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("", content_type="text/plain; version=0.0.4; charset=utf-8")
