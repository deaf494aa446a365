"""Counts every SQL statement a server process runs (for "DB queries per reconnect").

Installed from the bench settings modules: each new database connection gets an execute
wrapper. Imports only Django's signal and nothing that needs settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db.backends.signals import connection_created

_lock = threading.Lock()
_total = 0


def _count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    global _total
    with _lock:  # statements run in Django's worker threads
        _total += 1
    return execute(sql, params, many, context)


def _on_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


def install() -> None:
    connection_created.connect(_on_connection, dispatch_uid="bench-querycount")


def queries() -> int:
    """Statements run so far in this process."""
    return _total
