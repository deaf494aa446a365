"""Shared fixtures: users, groups, and helpers that start real servers on free ports."""

from __future__ import annotations

import pytest

from tests.support import require_binary  # noqa: F401  (tests import it from here too)


@pytest.fixture
def group(db):
    from django.contrib.auth.models import Group

    return Group.objects.create(name="oncall")


@pytest.fixture
def alice(db, group):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("alice", password="pw-alice-123")
    user.groups.add(group)
    return user


@pytest.fixture
def bob(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def staff(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("admin", "admin@example.com", "pw-admin-123")


@pytest.fixture
def published(monkeypatch):
    """Channel-layer messages notify() would publish, captured instead of sent."""
    from notifications import services

    sent: list[dict] = []
    monkeypatch.setattr(services, "publish", sent.append)
    return sent


@pytest.fixture
async def fresh_hub(settings):
    """A hub per test's event loop, stopped afterwards, and an empty in-memory layer."""
    from channels.layers import get_channel_layer

    from notifications.hub import get_hub

    settings.NOTIFICATIONS_HEARTBEAT = 60
    yield
    await get_hub().stop()
    await get_channel_layer().flush()


@pytest.fixture
async def harness():
    """A ``Hub`` on a fake channel layer with injected database reads (``tests.support.hub``): ``(hub, layer, db)``."""
    from notifications.hub import Hub
    from tests.support.hub import Database, FakeLayer

    layer, db = FakeLayer(), Database()
    hub = Hub(layer=layer, newest_id=db.newest_id, fetch_after=db.fetch_after)
    yield hub, layer, db
    await hub.stop()
