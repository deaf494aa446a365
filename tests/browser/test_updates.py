"""Notices that change (SPEC §14) in real Chromium: a progress bar moving and completing on two tabs
sharing one stream, a retracted card vanishing from both, and the server-rendered page showing the
latest state."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import Admin, sign_in, wait_titles

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def api(admin: Admin, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    client = admin.client
    token = client.cookies.get("csrftoken")
    response = await client.request(
        method, f"/notifications/api/{path}", content=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "X-CSRFToken": token or "", "Referer": admin.server.url + "/"},
    )
    assert response.status_code in (200, 201, 204), response.text
    return response.json() if response.status_code != 204 else None


def item(title: str) -> str:
    return f".n-item:has(.n-title:text-is('{title}'))"


async def bar_value(page: Any, title: str) -> str | None:
    return await page.locator(f"{item(title)} .n-progress").get_attribute("value")


async def test_a_progress_bar_moves_and_completes_on_two_tabs(browser, server, open_page, page_errors):
    context = await browser.new_context()
    tab_a = await context.new_page()
    await sign_in(tab_a, server, "alice", "pw-alice-123")
    tab_a = await open_page(context, server)
    tab_b = await open_page(context, server)
    async with Admin(server) as admin:
        await admin.client.get("/")  # the csrftoken cookie
        notice = (await api(admin, "POST", "", {"title": "Exporting", "progress": 0}))["id"]
        await wait_titles(tab_b, ["Exporting"])
        for value in (25, 50):
            await api(admin, "PATCH", f"{notice}/", {"progress": value, "body": f"{value} %"})
            for tab in (tab_a, tab_b):
                await tab.wait_for_selector(f"{item('Exporting')} .n-progress[value='{value}']")
        assert await tab_b.locator(f"{item('Exporting')} .n-body").text_content() == "50 %"
        await api(admin, "PATCH", f"{notice}/", {"progress": 100, "level": "success", "body": "done"})
        for tab in (tab_a, tab_b):
            await tab.wait_for_selector(f"{item('Exporting')}.level-success .n-progress[value='100']")
        # Still one card each, in place, unread as before.
        assert await tab_a.locator(item("Exporting")).count() == 1
        assert await tab_a.locator(f"{item('Exporting')}.unread").count() == 1
        # Without a progress, no bar.
        await api(admin, "PATCH", f"{notice}/", {"progress": None})
        await tab_b.wait_for_selector(f"{item('Exporting')} .n-progress", state="detached")
        # A reload renders the latest state on the server.
        await api(admin, "PATCH", f"{notice}/", {"progress": 80, "title": "Exporting (again)"})
        await tab_a.reload()
        await tab_a.wait_for_selector(f"{item('Exporting (again)')} .n-progress[value='80']")
        assert await tab_a.locator(item("Exporting")).count() == 0
    assert page_errors == []
    await context.close()


async def test_a_retracted_card_vanishes_from_both_tabs(browser, server, open_page, page_errors):
    context = await browser.new_context()
    tab_a = await context.new_page()
    await sign_in(tab_a, server, "alice", "pw-alice-123")
    tab_a = await open_page(context, server)
    tab_b = await open_page(context, server)
    async with Admin(server) as admin:
        await admin.client.get("/")
        keep = (await api(admin, "POST", "", {"title": "Keep me"}))["id"]
        oops = (await api(admin, "POST", "", {"title": "Sent by mistake"}))["id"]
        await wait_titles(tab_b, ["Sent by mistake", "Keep me"])
        before = int(await tab_b.locator(".n-badge").get_attribute("data-count"))
        await api(admin, "DELETE", f"{oops}/")
        for tab in (tab_a, tab_b):
            await tab.wait_for_selector(item("Sent by mistake"), state="detached")
            await tab.wait_for_function(f"document.querySelector('.n-badge').dataset.count === '{before - 1}'")
        assert await tab_a.locator(item("Keep me")).count() == 1
        await tab_b.reload()
        await tab_b.wait_for_selector(item("Keep me"))
        assert await tab_b.locator(item("Sent by mistake")).count() == 0
        assert keep
    assert page_errors == []
    await context.close()
