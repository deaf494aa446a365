"""The page at ``/``: include it at the site root (or anywhere) in the project's URLconf."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="notifications-index"),
]
