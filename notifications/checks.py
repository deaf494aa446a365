"""Django system checks for the NOTIFICATIONS_* settings and the channel layer; no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .conf import setting as _value

#: Shortest metrics token that passes without a warning (``secrets.token_urlsafe(32)`` gives 43).
METRICS_TOKEN_MIN_LENGTH = 32


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    heartbeat = _value("NOTIFICATIONS_HEARTBEAT")
    if not _is_number(heartbeat) or heartbeat <= 0:
        errors.append(
            Error(
                f"NOTIFICATIONS_HEARTBEAT must be a positive number of seconds, got {heartbeat!r}.",
                id="notifications.E001",
            )
        )
    retry = _value("NOTIFICATIONS_RETRY_MS")
    if not _is_int(retry) or retry < 0:
        errors.append(
            Error(
                f"NOTIFICATIONS_RETRY_MS must be a non-negative integer (milliseconds), got {retry!r}.",
                id="notifications.E002",
            )
        )
    limit = _value("NOTIFICATIONS_REPLAY_LIMIT")
    if not _is_int(limit) or limit < 1:
        errors.append(
            Error(
                f"NOTIFICATIONS_REPLAY_LIMIT must be a positive integer, got {limit!r}.",
                id="notifications.E003",
            )
        )
    public = _value("NOTIFICATIONS_PUBLIC")
    if not isinstance(public, bool):
        errors.append(
            Error(f"NOTIFICATIONS_PUBLIC must be True or False, got {public!r}.", id="notifications.E004")
        )
    max_age = _value("NOTIFICATIONS_MAX_AGE")
    if not _is_number(max_age) or max_age <= 0:
        errors.append(
            Error(
                f"NOTIFICATIONS_MAX_AGE must be a positive number of seconds, got {max_age!r}.",
                id="notifications.E005",
            )
        )
    retention = _value("NOTIFICATIONS_RETENTION_DAYS")
    if not _is_number(retention) or retention <= 0:
        errors.append(
            Error(
                f"NOTIFICATIONS_RETENTION_DAYS must be a positive number of days, got {retention!r}.",
                id="notifications.E006",
            )
        )
    streams = _value("NOTIFICATIONS_MAX_STREAMS_PER_USER")
    if not _is_int(streams) or streams < 1:
        errors.append(
            Error(
                f"NOTIFICATIONS_MAX_STREAMS_PER_USER must be a positive integer, got {streams!r}.",
                id="notifications.E007",
            )
        )
    slow = _value("NOTIFICATIONS_SLOW_CLIENT_TIMEOUT")
    if not _is_number(slow) or slow <= 0:
        errors.append(
            Error(
                f"NOTIFICATIONS_SLOW_CLIENT_TIMEOUT must be a positive number of seconds, got {slow!r}.",
                id="notifications.E009",
            )
        )
    freeze = _value("NOTIFICATIONS_FREEZE_HEAP")
    if not isinstance(freeze, bool):
        errors.append(
            Error(f"NOTIFICATIONS_FREEZE_HEAP must be True or False, got {freeze!r}.", id="notifications.E010")
        )
    token = _value("NOTIFICATIONS_METRICS_TOKEN")
    if token is not None and (not isinstance(token, str) or not token or token != token.strip()):
        errors.append(
            Error(
                "NOTIFICATIONS_METRICS_TOKEN must be None or a non-empty string without surrounding "
                f"white space, got a {type(token).__name__}.",
                id="notifications.E020",
            )
        )
    elif isinstance(token, str) and len(token) < METRICS_TOKEN_MIN_LENGTH:
        errors.append(
            Warning(
                f"NOTIFICATIONS_METRICS_TOKEN is {len(token)} characters long; use at least "
                f"{METRICS_TOKEN_MIN_LENGTH} random ones.",
                hint='python -c "import secrets; print(secrets.token_urlsafe(32))"',
                id="notifications.W020",
            )
        )
    if _is_number(heartbeat) and _is_number(max_age) and 0 < max_age < heartbeat:
        errors.append(
            Warning(
                "NOTIFICATIONS_MAX_AGE is shorter than NOTIFICATIONS_HEARTBEAT: streams close "
                "before their first keep-alive.",
                id="notifications.W002",
            )
        )
    return errors


def check_channel_layer(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    default = layers.get("default")
    if default is None:
        return [
            Error(
                "CHANNEL_LAYERS has no 'default' layer: notifications cannot be delivered live.",
                hint="Use channels.layers.InMemoryChannelLayer for one process, "
                "channels_redis for several.",
                id="notifications.E008",
            )
        ]
    if default.get("BACKEND", "").endswith("InMemoryChannelLayer") and not settings.DEBUG:
        return [
            Warning(
                "The in-memory channel layer is used with DEBUG off. It cannot cross processes: "
                "notifications sent from another process (manage.py notify, a shell, a worker, "
                "another daphne) reach open streams only through each hub's database check, "
                "seconds late.",
                hint="Set REDIS_URL (channels_redis) when you run more than one process.",
                id="notifications.W001",
            )
        ]
    return []
