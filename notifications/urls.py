"""The app's Django URLs under /notifications/ (the stream is a Channels route: routing.py)."""

from django.urls import path

from . import metrics, views

app_name = "notifications"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("api/", views.api_list, name="api-list"),
    path("api/read-all/", views.api_read_all, name="read-all"),
    path("api/<int:pk>/", views.api_detail, name="detail"),
    path("api/<int:pk>/read/", views.api_read, name="read"),
    path("api/<int:pk>/unread/", views.api_unread, name="unread"),
    path("api/<int:pk>/archive/", views.api_archive, name="archive"),
    path("api/<int:pk>/unarchive/", views.api_unarchive, name="unarchive"),
    path("api/preferences/", views.api_preferences, name="preferences"),
    path("metrics", metrics.metrics_view, name="metrics"),
]
