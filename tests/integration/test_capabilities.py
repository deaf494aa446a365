"""The server capabilities the streams rely on, probed through the real chain under each real server.

``StreamAuth`` → consumer → ``Stream`` → the server's own send: if a release of
Channels, daphne, Twisted or uvicorn moves what the probes reach into, the slow-client cut-off
(or abort, or the shutdown hook) reads 0 in ``/notifications/metrics`` and this test fails.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support import eventually
from tests.support.raw import parse_metrics
from tests.support.servers import SERVERS, SSEClient, login, manage, project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CAPABILITIES = ("slow_client_cutoff", "abort", "shutdown_hook")


@pytest.mark.parametrize("kind", list(SERVERS))
async def test_a_signed_in_stream_under_the_real_server_arms_every_capability(kind, tmp_path):
    env = project_env(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    manage(env, "migrate", "--noinput")
    manage(env, "shell", "-c",
           "from django.contrib.auth import get_user_model as g; g().objects.create_user('alice', password='pw-a-123')")
    server = SERVERS[kind](env=env, log_path=tmp_path / f"{kind}.log").start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            await login(client, "alice", "pw-a-123")  # the session cookie goes through StreamAuth
            async with SSEClient(client, "/notifications/stream/") as stream:
                await stream.read_until(lambda s: s.of_type("hello"))
                async with httpx.AsyncClient(base_url=server.url) as scraper:  # loopback: allowed
                    text = (await scraper.get("/notifications/metrics")).text
        values = parse_metrics(text)
        armed = {name: values.get(f'notifications_capability{{name="{name}"}}') for name in CAPABILITIES}
        assert armed == dict.fromkeys(CAPABILITIES, 1.0), text
        line = await eventually(
            lambda: next((ln for ln in server.log().splitlines() if "server capabilities" in ln), None),
            what="the start-up line in the server's log",
        )
        assert f"server={kind} slow_client_cutoff=yes abort=yes shutdown_hook=yes" in line
    finally:
        server.stop()
