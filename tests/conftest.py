"""Shared fixtures: users, groups, and helpers that start real servers on free ports."""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str, package: str) -> str:
    """Path of a server binary, or skip (fail under CI: NOTIFICATIONS_REQUIRE_SERVERS=1)."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        message = f"needs {name} from the Debian package {package!r} (apt-get install {package})"
        if os.environ.get("NOTIFICATIONS_REQUIRE_SERVERS") == "1":
            pytest.fail(message + "; NOTIFICATIONS_REQUIRE_SERVERS=1 forbids skipping")
        pytest.skip(message)
    return path


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

    from notifications.fanout import get_hub

    settings.NOTIFICATIONS_HEARTBEAT = 60
    yield
    await get_hub().stop()
    await get_channel_layer().flush()
