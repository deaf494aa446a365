"""The app's Django URLs under /notifications/ (the stream is a Channels route: routing.py)."""

from django.urls import path

from . import views

app_name = "notifications"

urlpatterns = [
    path("api/", views.api_list, name="api-list"),
]
