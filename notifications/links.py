"""The one link rule for a notice's ``url``, pure (imports nothing from Django).

Every entry point (``Notification.clean()``, so the admin, the API, ``manage.py notify``,
``services.notify()`` and ``services.send()``) and every renderer (the ``safe_link`` template
filter; the JS client's twin, tested against ``tests/data/link_cases.json``) use it.
"""

from __future__ import annotations

import re

#: ``http://`` or ``https://`` in any case, then the authority (up to the first ``/ ? #``).
_ABSOLUTE = re.compile(r"\Ahttps?://(?P<authority>[^/?#]*)", re.IGNORECASE)
#: An optional ``:digits`` port at the end of an authority.
_PORT = re.compile(r":[0-9]*\Z")


def has_ascii_control(text: str) -> bool:
    """Whether ``text`` holds U+0000–U+001F or U+007F (what URL parsers strip or choke on)."""
    return any(ch < " " or ch == "\x7f" for ch in text)


def is_safe_link(url: str) -> bool:
    """Whether a browser resolving ``url`` on this site ends up where the text says.

    ``url`` is safe iff it has no ASCII control character (U+0000–U+001F, U+007F: browsers
    delete tabs and newlines inside URLs, so ``/<TAB>/evil.com`` becomes ``//evil.com``), no
    backslash (browsers read ``\\`` as ``/`` in http(s) URLs, so ``/\\evil.com`` is
    ``//evil.com``), no leading or trailing space (the other characters URL parsers trim are
    controls already), and either

    - starts with ``http://`` or ``https://`` (any case) followed by a non-empty host: the
      authority (the text up to the first ``/``, ``?`` or ``#``) without its ``userinfo@`` and
      its ``:port`` is not empty; or
    - starts with ``/`` and the next character (if any) is not ``/`` (a path on this site,
      not a scheme-relative ``//host``).

    The empty string is not a link (callers treat an empty ``url`` as "no link").
    """
    if not url or has_ascii_control(url) or "\\" in url:
        return False
    if url[0] == " " or url[-1] == " ":
        return False
    if url[0] == "/":
        return url[1:2] != "/"
    match = _ABSOLUTE.match(url)
    if match is None:
        return False
    host = match.group("authority").rpartition("@")[2]
    if not host.startswith("["):  # an IPv6 literal keeps its colons
        host = _PORT.sub("", host)
    return host != ""
