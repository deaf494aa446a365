"""docs/security.md names the tests that hold each line: every named test must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_threat_model_names_exists():
    doc = (ROOT / "docs" / "security.md").read_text()
    current = None
    missing = []
    for path, name in re.findall(r"`(?:([\w/]+\.py))?::(test_\w+)", doc):
        current = path or current
        assert current is not None, name
        source = (ROOT / "tests" / current).read_text()
        if not re.search(rf"def {name}\b", source):
            missing.append(f"{current}::{name}")
    assert missing == []
    assert len(re.findall(r"::test_\w+", doc)) >= 20
