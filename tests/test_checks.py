"""System checks: one id per problem, each one triggered."""

from __future__ import annotations

import pytest

from notifications.checks import check_channel_layer, check_settings


def ids(messages):
    return [m.id for m in messages]


def test_defaults_pass(settings):
    assert check_settings() == []


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("NOTIFICATIONS_HEARTBEAT", 0, "notifications.E001"),
        ("NOTIFICATIONS_HEARTBEAT", "15", "notifications.E001"),
        ("NOTIFICATIONS_RETRY_MS", -5, "notifications.E002"),
        ("NOTIFICATIONS_RETRY_MS", 1.5, "notifications.E002"),
        ("NOTIFICATIONS_REPLAY_LIMIT", 0, "notifications.E003"),
        ("NOTIFICATIONS_PUBLIC", "yes", "notifications.E004"),
        ("NOTIFICATIONS_MAX_AGE", -1, "notifications.E005"),
        ("NOTIFICATIONS_RETENTION_DAYS", 0, "notifications.E006"),
        ("NOTIFICATIONS_MAX_STREAMS_PER_USER", 0, "notifications.E007"),
        ("NOTIFICATIONS_MAX_STREAMS_PER_USER", True, "notifications.E007"),
        ("NOTIFICATIONS_SLOW_CLIENT_TIMEOUT", 0, "notifications.E009"),
        ("NOTIFICATIONS_FREEZE_HEAP", "yes", "notifications.E010"),
        ("NOTIFICATIONS_SLOW_CLIENT_TIMEOUT", "10", "notifications.E009"),
    ],
)
def test_bad_value_gets_its_error(settings, name, value, check_id):
    setattr(settings, name, value)
    messages = check_settings()
    assert ids(messages) == [check_id]
    assert repr(value) in messages[0].msg


def test_max_age_below_heartbeat_warns(settings):
    settings.NOTIFICATIONS_HEARTBEAT = 30
    settings.NOTIFICATIONS_MAX_AGE = 10
    assert ids(check_settings()) == ["notifications.W002"]


def test_in_memory_layer_with_debug_off_warns(settings):
    settings.DEBUG = False
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert ids(check_channel_layer()) == ["notifications.W001"]


def test_in_memory_layer_with_debug_on_is_fine(settings):
    settings.DEBUG = True
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert check_channel_layer() == []


def test_redis_layer_with_debug_off_is_fine(settings):
    settings.DEBUG = False
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}}
    assert check_channel_layer() == []


def test_missing_layer_is_an_error(settings):
    settings.CHANNEL_LAYERS = {}
    assert ids(check_channel_layer()) == ["notifications.E008"]


def test_settings_are_read_again_when_django_says_they_changed(settings):
    """``conf`` remembers values per process; ``setting_changed`` (override_settings) renews them."""
    from django.test import override_settings

    from notifications.conf import app_settings

    assert app_settings.RETRY_MS == 3000
    with override_settings(NOTIFICATIONS_RETRY_MS=1234):
        assert app_settings.RETRY_MS == 1234
    assert app_settings.RETRY_MS == 3000
    settings.NOTIFICATIONS_PUBLIC = False
    assert app_settings.PUBLIC is False
