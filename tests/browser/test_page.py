"""The page as people use it, in real Chromium: live delivery, text as text, restarts, read state, tabs.

Every scenario waits on conditions in the page (never fixed sleeps) and is bounded by pytest-timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import SSEClient, login, manage

from .conftest import Admin, sign_in, titles, wait_state, wait_titles

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DOCS = Path(__file__).resolve().parents[2] / "docs"
#: Removes SharedWorker before any script runs: the tabs must elect a leader instead.
NO_SHARED_WORKER = "delete window.SharedWorker;"


async def new_context(browser, transport: str = "shared-worker", **options):
    context = await browser.new_context(**options)
    if transport == "leader":
        await context.add_init_script(NO_SHARED_WORKER)
    return context


async def transport_of(page) -> str:
    return await page.evaluate("window.DjangoNotifications.transport")


async def test_admin_notification_appears_on_an_open_page_within_a_second(server, browser, open_page, page_errors):
    context = await new_context(browser)
    page = await open_page(context, server)
    assert await transport_of(page) == "shared-worker"
    async with Admin(server) as admin:
        await admin.prepare()
        started = time.monotonic()
        await admin.send("Deploy at six", body="The API will be read-only for 5 minutes.", level="warning")
        await wait_titles(page, ["Deploy at six"], timeout=1)
        assert time.monotonic() - started < 1.0
    item = page.locator(".n-item", has_text="Deploy at six")
    assert await item.get_attribute("class") == "n-item level-warning"
    assert await item.locator(".n-body").text_content() == "The API will be read-only for 5 minutes."
    assert page_errors == []


async def test_xss_payloads_in_title_and_body_render_as_text(server, browser, open_page, page_errors):
    title = '<img src=x onerror="window.__xss = \'title\'">'
    body = "<script>window.__xss = 'body'</script><b>bold</b>\nsecond line"
    context = await new_context(browser)
    page = await open_page(context, server)
    async with Admin(server) as admin:
        await admin.send(title, body=body, level="error")
    await wait_titles(page, [title])

    async def check() -> None:
        item = page.locator(".n-item", has_text=title)
        assert await item.locator(".n-title").text_content() == title
        assert await item.locator(".n-body").text_content() == body
        assert await page.locator(".n-list img, .n-list script, .n-list b").count() == 0
        assert await page.evaluate("window.__xss") is None

    await check()  # inserted live by the client
    await page.reload()
    await wait_state(page, "connected")
    await check()  # rendered by the server
    assert page_errors == []


async def test_server_restart_shows_reconnecting_then_exactly_the_missed_ones_once(
    fresh_server, browser, open_page, page_errors
):
    context = await new_context(browser)
    page = await open_page(context, fresh_server)
    async with Admin(fresh_server) as admin:
        await admin.send("before the restart")
    await wait_titles(page, ["before the restart"])

    fresh_server.stop(signal.SIGKILL)
    await wait_state(page, "reconnecting")
    missed = [f"while down {i}" for i in range(3)]
    for title in missed:
        manage(fresh_server.env, "notify", title)  # straight into the database: nobody is listening
    fresh_server.start()  # same port

    await wait_state(page, "connected", timeout=30)
    await wait_titles(page, missed)
    async with Admin(fresh_server) as admin:
        await admin.send("after the restart")  # live again, and after the replay
    await wait_titles(page, ["after the restart"])
    assert await titles(page) == ["after the restart", *reversed(missed), "before the restart"]
    ids = await page.eval_on_selector_all(".n-item", "els => els.map(e => e.dataset.id)")
    assert len(ids) == len(set(ids))
    assert page_errors == []


@pytest.mark.parametrize("fresh_server", [{"NOTIFICATIONS_REPLAY_LIMIT": "2"}], indirect=True)
async def test_reset_after_a_long_outage_reloads_the_list_from_the_api(fresh_server, browser, open_page, page_errors):
    context = await new_context(browser)
    await context.add_init_script(
        "window.__lists = []; document.addEventListener('notifications:list', e => window.__lists.push(e.detail))"
    )
    page = await open_page(context, fresh_server)
    fresh_server.stop(signal.SIGKILL)
    await wait_state(page, "reconnecting")
    missed = [f"too many to replay {i}" for i in range(3)]  # more than NOTIFICATIONS_REPLAY_LIMIT
    for title in missed:
        manage(fresh_server.env, "notify", title)
    fresh_server.start()
    await wait_titles(page, missed, timeout=30)  # from GET /notifications/api/ after `reset`
    lists = await page.evaluate("window.__lists")
    assert [(d["replace"], len(d["results"])) for d in lists] == [(True, 3)]
    assert await titles(page) == list(reversed(missed))
    await wait_state(page, "connected")
    async with Admin(fresh_server) as admin:
        await admin.send("live after the reset")
    await wait_titles(page, ["live after the reset"])
    assert await titles(page) == ["live after the reset", *reversed(missed)]
    assert page_errors == []


@pytest.mark.parametrize("fresh_server", [{"NOTIFICATIONS_MAX_STREAMS_PER_USER": "1"}], indirect=True)
async def test_a_refused_stream_is_recreated_with_backoff(fresh_server, browser, open_page, page_errors):
    """A 429 (like a proxy's 502/503) closes an EventSource for good; the client opens a new one."""
    async with httpx.AsyncClient(base_url=fresh_server.url) as other:
        await login(other, "alice", "pw-alice-123")
        context = await new_context(browser)
        page = await context.new_page()
        async with SSEClient(other, "/notifications/stream/") as held:  # alice's one allowed stream
            await held.read_until(lambda s: bool(s.of_type("hello")))
            await sign_in(page, fresh_server, "alice", "pw-alice-123")
            await wait_state(page, "reconnecting")
            async with Admin(fresh_server) as admin:
                await admin.send("sent while refused")
            await page.wait_for_function("window.DjangoNotifications.state === 'reconnecting'")
        await wait_state(page, "connected", timeout=30)  # after the held stream closed
        await wait_titles(page, ["sent while refused"])  # replayed from the page's cursor
        assert (await titles(page)).count("sent while refused") == 1
    assert page_errors == []


async def test_expired_session_shows_signed_out(fresh_server, browser, open_page, page_errors):
    context = await new_context(browser)
    page = await context.new_page()
    await sign_in(page, fresh_server, "alice", "pw-alice-123")
    await wait_state(page, "connected")
    await context.clear_cookies()  # the session is gone, as after an expiry
    fresh_server.stop(signal.SIGKILL)
    await wait_state(page, "reconnecting")
    fresh_server.start()
    await wait_state(page, "signed-out", timeout=30)
    assert "signed out" in await page.locator(".n-state").text_content()


@pytest.mark.parametrize("transport", ["shared-worker", "leader"])
async def test_mark_as_read_in_one_tab_updates_the_other(server, browser, open_page, page_errors, transport):
    context = await new_context(browser, transport)
    tab_a = await context.new_page()
    await sign_in(tab_a, server, "alice", "pw-alice-123")
    async with Admin(server) as admin:
        await admin.send("read me A")
        await admin.send("read me B")
    await wait_titles(tab_a, ["read me A", "read me B"])  # the stream, or the page load
    tab_b = await open_page(context, server)
    await wait_state(tab_a, "connected")
    if not await tab_a.locator(".n-read-button").count():
        pytest.fail("no mark-as-read buttons: the read API (notifications:read) is not routed")
    roles = sorted([await transport_of(tab_a), await transport_of(tab_b)])
    assert roles == (["shared-worker"] * 2 if transport == "shared-worker" else ["follower", "leader"])

    before = int(await tab_b.locator(".n-badge").get_attribute("data-count"))
    assert before >= 2
    item = ".n-item:has(.n-title:text-is('read me A'))"
    # Keyboard only: focus the button and press Enter.
    await tab_a.locator(f"{item} .n-read-button").focus()
    await tab_a.keyboard.press("Enter")
    await tab_b.wait_for_selector(f"{item}:not(.unread)")
    await tab_b.wait_for_function(f"document.querySelector('.n-badge').dataset.count === '{before - 1}'")
    assert await tab_b.locator(f"{item} .n-read-button").count() == 0
    label = await tab_b.locator(".n-badge").get_attribute("aria-label")
    assert label == f"{before - 1} unread notification{'s' if before - 1 != 1 else ''}"
    # Focus stayed on the item in tab A, not lost to the page's top (once tab A has applied
    # the read itself: under load tab B can get there first).
    await tab_a.wait_for_selector(f"{item}:not(.unread)")
    assert await tab_a.evaluate("document.activeElement.classList.contains('n-item')")

    await tab_b.locator(".n-read-all button").focus()
    await tab_b.keyboard.press("Enter")
    await tab_a.wait_for_function("document.querySelector('.n-badge').dataset.count === '0'")
    await tab_a.wait_for_selector(".n-item.unread", state="detached")
    assert await tab_a.locator(".n-badge").get_attribute("aria-label") == "0 unread notifications"
    assert page_errors == []


@pytest.mark.parametrize("transport", ["shared-worker", "leader"])
async def test_eight_tabs_all_receive_on_one_stream_and_the_site_still_answers(
    server, browser, open_page, page_errors, transport
):
    context = await new_context(browser, transport)
    async with Admin(server) as admin:
        await admin.wait_open_streams(0)
        tabs = [await open_page(context, server) for _ in range(8)]
        roles = sorted([await transport_of(tab) for tab in tabs])
        if transport == "leader":
            assert roles == ["follower"] * 7 + ["leader"]
        else:
            assert roles == ["shared-worker"] * 8
        await admin.wait_open_streams(1)  # one stream for the whole browser
        title = f"to eight tabs ({transport})"
        await admin.send(title, level="success")
        await asyncio.gather(*(wait_titles(tab, [title]) for tab in tabs))
        for tab in tabs:
            assert (await titles(tab)).count(title) == 1
        # A ninth page load (and an API call) still gets through the 6-connections-per-host limit.
        started = time.monotonic()
        ninth = await context.new_page()
        response = await ninth.goto(server.url + "/", timeout=5000)
        assert response is not None and response.status == 200
        assert await ninth.evaluate("fetch('/notifications/api/?limit=1').then(r => r.status)") == 200
        assert time.monotonic() - started < 5
        await wait_state(ninth, "connected")
        await context.close()
        await admin.wait_open_streams(0)
    assert page_errors == []


@pytest.mark.parametrize(
    ("transport", "how"), [("shared-worker", "close"), ("leader", "close"), ("leader", "crash")]
)
async def test_leader_tab_closes_and_another_takes_over_without_losing_a_notification(
    server, browser, open_page, page_errors, transport, how
):
    """``close`` resigns on pagehide; ``crash`` says nothing, so the lease (3 s) runs out."""
    context = await new_context(browser, transport)
    tabs = [await open_page(context, server) for _ in range(3)]
    if transport == "leader":
        roles = [await transport_of(tab) for tab in tabs]
        assert sorted(roles) == ["follower", "follower", "leader"]
        leader = tabs[roles.index("leader")]
    else:
        leader = tabs[0]  # the tab that started the worker
    others = [tab for tab in tabs if tab is not leader]
    sent = [f"handover {transport} {how} {i}" for i in range(3)]
    async with Admin(server) as admin:
        await admin.send(sent[0])
        await asyncio.gather(*(wait_titles(tab, sent[:1]) for tab in tabs))
        if how == "crash":
            cdp = await context.new_cdp_session(leader)
            async with leader.expect_event("crash", timeout=10_000):
                crashing = asyncio.ensure_future(cdp.send("Page.crash"))  # never answered: the page dies
            crashing.cancel()
            with contextlib.suppress(BaseException):
                await crashing
        else:
            await leader.close()
        await admin.send(sent[1])  # during the handover
        if transport == "leader":
            deadline = time.monotonic() + 10
            while sorted([await transport_of(tab) for tab in others]) != ["follower", "leader"]:
                assert time.monotonic() < deadline, "no tab took over"
                await asyncio.sleep(0.05)
        await admin.send(sent[2])
        await asyncio.gather(*(wait_titles(tab, sent) for tab in others))
        for tab in others:
            have = await titles(tab)
            assert [have.count(title) for title in sent] == [1, 1, 1]
            assert await tab.locator(".n-state").get_attribute("data-state") == "connected"
    assert page_errors == []


async def test_works_without_javascript(server, browser):
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await sign_in(page, server, "alice", "pw-alice-123")
    async with Admin(server) as admin:
        await admin.send("no script needed", body="<i>plain</i>")
    await page.goto(server.url + "/")
    item = page.locator(".n-item", has_text="no script needed")
    assert await item.locator(".n-body").text_content() == "<i>plain</i>"
    assert await page.locator("noscript").count() == 1
    before = int(await page.locator(".n-badge").text_content())
    async with page.expect_navigation():
        await item.locator(".n-read-button").click()  # a plain form POST, redirected back
    assert page.url == server.url + "/"
    item = page.locator(".n-item", has_text="no script needed")
    assert "unread" not in (await item.get_attribute("class")).split()
    assert int(await page.locator(".n-badge").text_content()) == before - 1
    async with page.expect_navigation():
        await page.locator(".n-read-all button").click()
    assert await page.locator(".n-item.unread").count() == 0
    assert await page.locator(".n-badge").text_content() == "0"


async def test_screenshot_of_the_page_with_each_level(fresh_server, browser, page_errors, tmp_path):
    """Light theme, one notification per level. UPDATE_SCREENSHOTS=1 copies it into docs/."""
    context = await new_context(browser, color_scheme="light", viewport={"width": 900, "height": 720})
    page = await context.new_page()
    await sign_in(page, fresh_server, "bob", "pw-bob-123")
    notices = [
        ("Backups verified", "Last night's backup restored cleanly on the staging host.", "success"),
        ("Release 2.4 is out", "Faster search and a new export menu.", "info"),
        ("Disk 85 % full on db-2", "Archive old partitions before Friday.", "warning"),
        ("Payment webhook failing", "Stripe returns 401 since 09:12; retries are queued.", "error"),
    ]
    async with Admin(fresh_server) as admin:
        for title, body, level in notices[:2]:
            await admin.send(title, body=body, level=level, recipient=await _pk(admin, "auth/user", "bob"))
        await page.reload()
        await wait_state(page, "connected")
        for title, body, level in notices[2:]:
            await admin.send(title, body=body, level=level, recipient=await _pk(admin, "auth/user", "bob"),
                             category="billing" if level == "error" else "ops")
        await wait_titles(page, [n[0] for n in notices])
    await page.locator(".n-item:has-text('Backups verified') .n-read-button").click()
    await page.wait_for_selector(".n-item:has-text('Backups verified'):not(.unread)")
    await page.wait_for_function("document.querySelector('.n-badge').dataset.count === '3'")
    await page.evaluate("document.activeElement && document.activeElement.blur()")
    await page.mouse.move(0, 0)
    await page.wait_for_function("document.getAnimations().every(a => a.playState === 'finished')")
    path = tmp_path / "screenshot-page.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, DOCS / "screenshot-page.png")
    assert page_errors == []


async def _pk(admin: Admin, model: str, name: str) -> str:
    import re

    page = await admin.client.get(f"/admin/{model}/?q={name}")
    found = re.findall(rf"/admin/{model}/(\d+)/change/", page.text)
    assert found
    return found[0]


#: Removes SharedWorker and BroadcastChannel: each tab holds its own stream (direct).
NO_SHARING = "delete window.SharedWorker; delete window.BroadcastChannel;"


async def _item_html(page, title: str) -> str:
    """One item's markup, the CSRF token's value and the whitespace between tags normalised."""
    html = await page.locator(".n-item", has_text=title).evaluate("li => li.outerHTML")
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', 'name="csrfmiddlewaretoken" value=""', html)
    return re.sub(r">\s+<", "><", html)


async def test_live_items_have_the_markup_the_server_renders(server, browser, page_errors):
    """The client clones _item.html's <template>: a live item equals the same item after a reload."""
    context = await new_context(browser)
    page = await context.new_page()
    await sign_in(page, server, "alice", "pw-alice-123")
    await wait_state(page, "connected")
    full = ("parity: every part", {"body": "a body <b>", "url": "/status?x=1", "level": "warning"})
    bare = ("parity: title only", {"level": "error"})
    unsafe = ("parity: unsafe link", {"url": "javascript:alert(1)"})
    async with Admin(server) as admin:
        for title, fields in (full, bare):
            await admin.send(title, **fields)
    await page.evaluate(  # a stored URL the link rule refuses, as the API could hand it out
        "n => document.dispatchEvent(new CustomEvent('notifications:notification', {detail: n}))",
        {"id": 10**9, "title": unsafe[0], "body": "", "level": "info", "url": unsafe[1]["url"],
         "created_at": "2024-01-01T00:00:00Z", "read": False},
    )
    await wait_titles(page, [full[0], bare[0], unsafe[0]])
    live = [await _item_html(page, title) for title in (full[0], bare[0])]
    assert 'class="n-url" href="/status?x=1"' in live[0] and "a body &lt;b&gt;" in live[0]
    assert "n-body" not in live[1] and "n-url" not in live[1]
    assert await page.locator(".n-item", has_text=unsafe[0]).locator("a").count() == 0
    await page.reload()
    await wait_state(page, "connected")
    assert [await _item_html(page, title) for title in (full[0], bare[0])] == live
    assert page_errors == []


@pytest.mark.parametrize("sharing", ["direct", "leader"])
async def test_read_marks_do_not_change_notifications_already_dispatched(server, browser, page_errors, sharing):
    """Bug: the owner set ``read`` on the very objects it had dispatched as event details."""
    context = await browser.new_context()
    await context.add_init_script(NO_SHARING if sharing == "direct" else NO_SHARED_WORKER)
    await context.add_init_script(
        "window.__got = []; window.__reads = 0;"
        "document.addEventListener('notifications:notification', e => window.__got.push(e.detail));"
        "document.addEventListener('notifications:read', () => { window.__reads += 1; });"
    )
    page = await context.new_page()
    await sign_in(page, server, "alice", "pw-alice-123")
    await wait_state(page, "connected")
    assert await transport_of(page) == sharing
    title = f"dispatched once ({sharing})"
    async with Admin(server) as admin:
        await admin.send(title)
    await wait_titles(page, [title])
    await page.locator(".n-item", has_text=title).locator(".n-read-button").click()
    await page.wait_for_function("window.__reads >= 2")  # the API's answer, then the stream's `read`
    got = await page.evaluate(f"window.__got.filter(n => n.title === {title!r}).map(n => n.read)")
    assert got == [False]
    assert page_errors == []
