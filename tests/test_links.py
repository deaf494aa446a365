"""The link rule (notifications.links), pure: the shared table in tests/data/link_cases.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notifications.links import has_ascii_control, is_safe_link

CASES = json.loads((Path(__file__).parent / "data" / "link_cases.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES, ids=[repr(c["url"]) for c in CASES])
def test_link_rule_matches_the_shared_table(case):
    assert is_safe_link(case["url"]) is case["ok"], case["why"]


@pytest.mark.parametrize(
    "url",
    ["/\\evil.com", "/\t/evil.com", "/\n/evil.com", "//evil.com", "javascript:alert(1)"],
)
def test_the_issue_examples_are_refused(url):
    assert not is_safe_link(url)


@pytest.mark.parametrize("url", ["HTTPS://ok.example", "/ok?q=1"])
def test_the_issue_examples_are_accepted(url):
    assert is_safe_link(url)


def test_the_table_covers_every_rule():
    urls = {c["url"] for c in CASES}
    assert {"/\\evil.com", "/\t/evil.com", "/\n/evil.com", "//evil.com", "javascript:alert(1)",
            "HTTPS://ok.example", "/ok?q=1"} <= urls
    assert all(set(c) == {"url", "ok", "why"} and isinstance(c["ok"], bool) for c in CASES)


@pytest.mark.parametrize("code", [*range(0x20), 0x7F])
def test_every_ascii_control_is_refused_anywhere(code):
    ch = chr(code)
    assert has_ascii_control(f"/a{ch}b")
    for url in (f"/a{ch}b", f"{ch}/a", f"https://ok.example/{ch}"):
        assert not is_safe_link(url)


def test_the_module_imports_nothing_from_django():
    source = (Path(__file__).parents[1] / "notifications" / "links.py").read_text()
    assert "django" not in source.split('"""', 2)[2]
