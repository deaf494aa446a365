"""The app's settings, one typed property each, with defaults, read at use time (never at import).

A stream's connect reads several of them, and ``getattr(settings, name, default)`` for a
setting the project left out raises and catches an ``AttributeError`` inside Django each time
(about 1.5 µs). So values are remembered per process and forgotten when Django's
``setting_changed`` signal names them (``override_settings``, pytest-django's ``settings``),
which is the only supported way to change settings at run time.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    "NOTIFICATIONS_HEARTBEAT": 15,
    "NOTIFICATIONS_RETRY_MS": 3000,
    "NOTIFICATIONS_REPLAY_LIMIT": 500,
    "NOTIFICATIONS_PUBLIC": True,
    "NOTIFICATIONS_MAX_AGE": 3600,
    "NOTIFICATIONS_RETENTION_DAYS": 30,
    "NOTIFICATIONS_MAX_STREAMS_PER_USER": 20,
    "NOTIFICATIONS_METRICS_TOKEN": None,
    "NOTIFICATIONS_SLOW_CLIENT_TIMEOUT": 10,
    "NOTIFICATIONS_FREEZE_HEAP": True,
}


_values: dict[str, Any] = {}


def setting(name: str) -> Any:
    """The raw value of a NOTIFICATIONS_* setting, or its default (what the checks validate)."""
    try:
        return _values[name]
    except KeyError:
        value = _values[name] = getattr(settings, name, DEFAULTS[name])
        return value


def _forget(*, setting: str, **kwargs: Any) -> None:
    _values.pop(setting, None)


setting_changed.connect(_forget, dispatch_uid="notifications.conf")


class Settings:
    @property
    def HEARTBEAT(self) -> float:
        """Seconds between ``: ping`` comments on an idle stream."""
        return float(setting("NOTIFICATIONS_HEARTBEAT"))

    @property
    def RETRY_MS(self) -> int:
        """The ``retry:`` sent when a stream opens, in milliseconds."""
        return int(setting("NOTIFICATIONS_RETRY_MS"))

    @property
    def REPLAY_LIMIT(self) -> int:
        """Most notifications replayed on one reconnect; more missed → ``reset``."""
        return int(setting("NOTIFICATIONS_REPLAY_LIMIT"))

    @property
    def PUBLIC(self) -> bool:
        """Whether anonymous visitors may stream "everyone" notices (else 403)."""
        return bool(setting("NOTIFICATIONS_PUBLIC"))

    @property
    def MAX_AGE(self) -> float:
        """Seconds before the server closes a stream (±10 % jitter) so load rebalances."""
        return float(setting("NOTIFICATIONS_MAX_AGE"))

    @property
    def RETENTION_DAYS(self) -> float:
        """Days notifications are kept for replay; older ones are pruned."""
        return float(setting("NOTIFICATIONS_RETENTION_DAYS"))

    @property
    def MAX_STREAMS_PER_USER(self) -> int:
        """Open streams one signed-in user may hold in one process; one more gets 429."""
        return int(setting("NOTIFICATIONS_MAX_STREAMS_PER_USER"))

    @property
    def SLOW_CLIENT_TIMEOUT(self) -> float:
        """Seconds a client with over 1 MiB unsent may read nothing before its stream is dropped."""
        return float(setting("NOTIFICATIONS_SLOW_CLIENT_TIMEOUT"))

    @property
    def FREEZE_HEAP(self) -> bool:
        """``gc.freeze()`` at the first stream and as streams grow, swept now and then (``notifications.heap``)."""
        return bool(setting("NOTIFICATIONS_FREEZE_HEAP"))

    @property
    def METRICS_TOKEN(self) -> str | None:
        """Bearer token for ``/notifications/metrics``; set, it replaces the loopback allowance."""
        value = setting("NOTIFICATIONS_METRICS_TOKEN")
        return value if isinstance(value, str) and value else None


app_settings = Settings()
