"""Keyed digests of session keys and session auth hashes: what may travel between processes.

``identity`` publishes them when a user signs out or changes password; ``models.Viewer``
keeps them for each open stream. Imports Django's settings only.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def digest(value: str) -> str:
    """A keyed, one-way digest of a session key or session auth hash, safe to send between processes."""
    key = ("notifications.identity:" + settings.SECRET_KEY).encode()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def auth_digest(user: AbstractBaseUser) -> str | None:
    """The digest of the user's session auth hash (it changes with the password), if the model has one."""
    get_hash = getattr(user, "get_session_auth_hash", None)
    return digest(get_hash()) if callable(get_hash) else None
