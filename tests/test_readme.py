"""The README's settings table is the truth about ``notifications/conf.py`` (django-htmx's test_docs idea)."""

from __future__ import annotations

import re
from pathlib import Path

from notifications.conf import DEFAULTS

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_settings() -> dict[str, str]:
    """``{setting: default}`` from the rows of the app-settings table."""
    rows = re.findall(r"^\| `(NOTIFICATIONS_[A-Z_]+)` \| [^|]+ \| `([^`]+)` \|", README.read_text(), re.MULTILINE)
    return dict(rows)


def test_every_setting_is_in_the_readme_table_and_nothing_else():
    assert set(readme_settings()) == set(DEFAULTS)


def test_the_readme_defaults_are_the_code_defaults():
    for name, shown in readme_settings().items():
        assert shown == repr(DEFAULTS[name]) or shown == str(DEFAULTS[name]), (name, shown, DEFAULTS[name])
