"""The Server-Sent Events wire format, pure: bytes in, bytes out. Imports nothing from Django.

Follows the WHATWG HTML "Server-sent events" section: lines end with LF, a blank line ends an
event, a line starting with ``:`` is a comment, ``data`` may span several lines, and ``id`` /
``event`` values must not contain CR, LF or NUL (a NUL makes browsers ignore the id).
"""

from __future__ import annotations

import json
import re
from typing import Any

_FIELD_UNSAFE = re.compile(r"[\r\n\x00]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Longest Last-Event-ID we parse: ids are database primary keys, 20 digits cover any int64.
MAX_ID_LENGTH = 20


def dumps(data: Any) -> str:
    """Compact JSON on one line (``encode_event`` would split any line break anyway)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _clean_field(value: str) -> str:
    return _FIELD_UNSAFE.sub("", value)


def encode_event(data: str, *, event: str | None = None, id: int | str | None = None) -> bytes:
    """One event block. ``data`` may hold any line breaks; each line becomes a ``data:`` line."""
    lines = []
    if id is not None:
        lines.append(f"id: {_clean_field(str(id))}")
    if event is not None:
        lines.append(f"event: {_clean_field(event)}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_id(id: int | str) -> bytes:
    """An id-only block: moves the browser's last event id without firing any handler."""
    return f"id: {_clean_field(str(id))}\n\n".encode()


def encode_comment(text: str = "") -> bytes:
    """A comment (``: text``): keeps proxies from closing an idle stream, wakes no listener."""
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode() + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    """The reconnection delay the browser should use, in milliseconds."""
    if milliseconds < 0:
        raise ValueError(f"retry must be a non-negative number of milliseconds, got {milliseconds}")
    return f"retry: {int(milliseconds)}\n\n".encode()


def parse_last_event_id(raw: str | bytes | None) -> int | None:
    """Parse a ``Last-Event-ID`` header or ``last_event_id`` query value.

    Returns ``None`` when there is no value (absent or empty: the browser sends no header when
    its id is empty). Raises ``ValueError`` with a message fit for a 400 response otherwise.
    """
    if raw is None:
        return None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("Last-Event-ID must be a non-negative integer, got undecodable bytes") from None
    text = raw.strip(" \t")
    if text == "":
        return None
    if len(text) > MAX_ID_LENGTH or not text.isascii() or not text.isdigit():
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise ValueError(f"Last-Event-ID must be a non-negative integer, got {shown!r}")
    return int(text)
