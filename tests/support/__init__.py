"""Test support shared by tests/, soak/ and bench/: SSE parsers, clients, server runners, ``eventually()``.

Imports nothing from soak/ or bench/ (they import this), and nothing from pytest at import time
(soak/ and bench/ run outside pytest).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def require_binary(name: str, package: str) -> str:
    """Path of a server binary, or skip (fail under CI: NOTIFICATIONS_REQUIRE_SERVERS=1)."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        import pytest

        message = f"needs {name} from the Debian package {package!r} (apt-get install {package})"
        if os.environ.get("NOTIFICATIONS_REQUIRE_SERVERS") == "1":
            pytest.fail(message + "; NOTIFICATIONS_REQUIRE_SERVERS=1 forbids skipping")
        pytest.skip(message)
    return path


async def eventually(
    condition: Callable[[], T | Awaitable[T]], *, timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> T:
    """Wait until ``condition()`` (sync or async) returns something truthy; return it.

    Polls every ``interval`` seconds up to ``timeout``; then fails with ``what`` and the last value.
    The one waiting helper of the suite: no fixed sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"not met within {timeout}s: {what or condition!r} (last value {value!r})")
        await asyncio.sleep(interval)
