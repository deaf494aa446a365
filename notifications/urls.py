"""The app's Django URLs under /notifications/ (the stream is a Channels route: routing.py)."""

from django.urls import path

from . import metrics, views

app_name = "notifications"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("api/", views.api_list, name="api-list"),
    path("api/read-all/", views.api_read_all, name="read-all"),
    path("api/<int:pk>/read/", views.api_read, name="read"),
    path("metrics", metrics.metrics_view, name="metrics"),
]
