"""AppConfig: registers the system checks and the identity-change receivers; nothing else runs at startup."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import check_channel_layer, check_settings

        checks.register(check_settings, "notifications")
        checks.register(check_channel_layer, "notifications")

        from . import identity

        identity.connect()
