"""The JS client against the server: its node unit tests, and the protocol constants both sides use.

``node --test tests/js/`` runs here (not as a Makefile line) so that a missing ``node`` skips
through ``require_binary`` like every other binary, and fails under NOTIFICATIONS_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from notifications.models import Level
from notifications.templatetags.notifications import STREAM_URL, TRANSPORTS
from notifications.views import API_MAX_LIMIT
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "notifications/static/notifications/protocol.js"


def server_event_names() -> set[str]:
    """Every ``event:`` type the server writes. Repoint at ``notifications.events`` once it exists."""
    source = "\n".join(path.read_text() for path in (ROOT / "notifications").glob("*.py"))
    return set(re.findall(r"""\bevent=["']([a-z_-]+)["']""", source))


def js_protocol(node: str) -> dict:
    script = (
        f"import * as p from {json.dumps(PROTOCOL.as_uri())};"
        "console.log(JSON.stringify({events: Object.values(p.EVENTS), levels: p.LEVELS, listLimit: p.LIST_LIMIT,"
        " streamUrl: p.DEFAULT_STREAM_URL, transports: p.TRANSPORTS}));"
    )
    out = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def node() -> str:
    return require_binary("node", "nodejs")


def test_node_unit_tests_pass(node):
    files = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests/js").glob("*.test.mjs"))
    assert files
    # Files, not the directory: Node 21+ reads --test arguments as globs.
    out = subprocess.run([node, "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert re.search(r"^# pass [1-9]", out.stdout, re.MULTILINE), out.stdout[-2000:]


def test_protocol_constants_match_the_server(node):
    js = js_protocol(node)
    server = server_event_names()
    assert {"notification", "hello"} <= server, "server_event_names() found no events: repoint it"
    assert set(js["events"]) == server
    assert js["levels"] == list(Level.values)
    assert js["listLimit"] == API_MAX_LIMIT
    assert js["streamUrl"] == STREAM_URL
    assert js["transports"] == list(TRANSPORTS)
