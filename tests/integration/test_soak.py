"""A short soak (``make soak`` runs the long one): real daphne, writer processes, reconnecting readers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.servers import ROOT
from tests.support.tally import Reader, tally

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(150)
def test_short_soak_loses_nothing_duplicates_nothing_leaks_nothing(tmp_path):
    seconds = os.environ.get("SOAK_TEST_SECONDS", "12")
    result = subprocess.run(
        [sys.executable, "-m", "soak.run", "--seconds", seconds, "--writers", "2", "--rate", "10", "--users", "4",
         "--clients-per-user", "2", "--anonymous", "3", "--max-age", "4", "--drain", "30",
         "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=140,
        env={k: v for k, v in os.environ.items() if not k.startswith("SOAK_")},
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    total = next(line for line in report.splitlines() if line.startswith("total"))
    created, expected, delivered, lost, duplicated, out_of_order, leaked = map(int, total.split()[1:])
    assert created > 50 and expected > 100 and delivered == expected, report
    assert (lost, duplicated, out_of_order, leaked) == (0, 0, 0, 0), report
    assert "mid_replay_drops 0," not in report and "server_closes 0," not in report, report


def _reader(username, first, received, expected):
    reader = Reader(username or "anon", username, None, first_cursor=first, received=list(received))
    reader.expected = set(expected)
    return reader


@pytest.mark.timeout(10)
def test_the_tally_sees_each_kind_of_failure():
    audience = {1: "everyone", 2: "user", 3: "group", 4: "everyone", 5: "user"}
    visible = {"ann": {1, 2, 3, 4}, None: {1, 4}}
    readers = [
        _reader("ann", 0, [1, 3, 2, 2], [1, 2, 3, 4]),  # 4 lost, 2 out of order, 2 twice
        _reader(None, 0, [1, 4, 5], [1, 4]),  # 5 leaked (someone else's)
    ]
    table = tally(readers, audience, visible, {"everyone": 2, "user": 2, "group": 1})
    assert table["everyone"] == {"created": 2, "delivered": 3, "expected": 4, "lost": 1}
    assert table["user"] == {"created": 2, "delivered": 3, "expected": 1, "out_of_order": 1, "duplicated": 1,
                             "leaked": 1}
    assert table["total"]["lost"] == 1 and table["total"]["leaked"] == 1
