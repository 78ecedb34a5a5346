"""The browser console: its files are served, and it works in a real headless Chromium.

The browser test needs Debian's `chromium` and the `playwright` package (the `console-test`
extra); it skips, saying which is missing, when either is absent. It never downloads a browser.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .conftest import ClientFactory

Client = TestClient[Any, Any]

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def test_the_page_and_its_files_are_served(client: Client) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    html = await page.text()
    assert '<script src="/static/app.js"' in html
    assert "http://" not in html.replace('href="/', "")  # nothing fetched from elsewhere
    for name, content_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = await client.get(f"/static/{name}")
        assert response.status == 200
        assert response.content_type == content_type


@pytest.mark.parametrize("name", ["index.html", "missing.js", "..%2Fconsole.py"])
async def test_only_the_console_files_are_served(client: Client, name: str) -> None:
    response = await client.get(f"/static/{name}")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


@pytest.mark.slow
async def test_the_console_in_a_real_browser(client: Client) -> None:
    async_api = pytest.importorskip(
        "playwright.async_api",
        reason="playwright is not installed (pip install -e '.[console-test]')",
    )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    expect = async_api.expect
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            await page.goto(str(client.make_url("/")))

            rows = page.locator("#objects tbody tr")
            await page.fill("#email", "alice@example.com")
            await page.click("#create-object")
            await expect(rows).to_have_count(1)
            await page.fill("#email", "bob@example.com")
            await page.fill("#phone", "718-555-1234")
            await page.click("#create-object")
            await expect(rows).to_have_count(2)
            alice, bob = [await row.get_attribute("data-object-id") for row in await rows.all()]
            assert alice
            assert bob

            for object_id in (alice, bob):
                await page.fill("#inbox-id", object_id)
                await page.click("#open-inbox")
                await expect(page.locator(f"#inbox-{object_id} .state")).to_have_text("open")

            # Chosen ids: ticking alice fills the ids field.
            await page.check(f"#objects tr[data-object-id='{alice}'] .pick")
            await expect(page.locator("#alert-ids")).to_have_value(alice)
            await page.fill("#alert-text", "Storm warning")
            await page.click("#send-alert")
            await expect(page.locator("#alert-result")).to_contain_text("sent to 1 object")
            alice_alerts = page.locator(f"#inbox-{alice} .alert .text")
            await expect(alice_alerts).to_have_text(["Storm warning"])

            # Everyone.
            await page.check("#alert-all")
            await page.fill("#alert-text", "Drill at noon")
            await page.click("#send-alert")
            await expect(alice_alerts).to_have_text(["Storm warning", "Drill at noon"])
            await expect(page.locator(f"#inbox-{bob} .alert .text")).to_have_text(["Drill at noon"])

            # An API error is shown readably, field by field.
            await page.fill("#email", "not an email")
            await page.click("#create-object")
            error = page.locator("#error")
            await expect(error).to_be_visible()
            await expect(error).to_contain_text("422 validation_failed")
            await expect(error).to_contain_text("email:")
            assert page_errors == []
        finally:
            await browser.close()


KEY = "console-key"
SECRET = "c" * 32


@pytest.mark.slow
async def test_unread_counts_and_acks_across_tabs_with_access_control_on(
    make_client: ClientFactory,
) -> None:
    """Tab A holds the API key and creates the object in the page; tab B, a device without the
    key, opens the same inbox with the pasted token. An alert posted through the API shows as
    unread in both; marking it read in tab A clears tab B's count."""
    async_api = pytest.importorskip(
        "playwright.async_api",
        reason="playwright is not installed (pip install -e '.[console-test]')",
    )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    client = await make_client(API_KEYS=KEY, INBOX_SECRET=SECRET)
    key = {"Authorization": f"Bearer {KEY}"}
    expect = async_api.expect
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page_errors: list[str] = []
            tab_a, tab_b = await browser.new_page(), await browser.new_page()
            for tab in (tab_a, tab_b):
                tab.on("pageerror", lambda error: page_errors.append(str(error)))
                await tab.goto(str(client.make_url("/")))

            # Without the key, the page says why it cannot write.
            await tab_b.click("#create-object")
            await expect(tab_b.locator("#error")).to_contain_text("401 unauthorized")

            await tab_a.fill("#api-key", KEY)
            await tab_a.click("#save-key")
            await expect(tab_a.locator("#key-state")).to_contain_text("an API key is set")
            await tab_a.click("#create-object")
            rows = tab_a.locator("#objects tbody tr")
            await expect(rows).to_have_count(1)
            object_id = await rows.first.get_attribute("data-object-id")
            assert object_id
            token = (await (await client.get(f"/object/{object_id}", headers=key)).json())[
                "inbox_token"
            ]

            await tab_a.fill("#inbox-id", object_id)
            await tab_a.select_option("#inbox-transport", TAB_A_TRANSPORT)
            await tab_a.click("#open-inbox")
            await tab_b.fill("#inbox-id", object_id)
            await tab_b.fill("#inbox-token", token)
            await tab_b.select_option("#inbox-transport", "websocket")
            await tab_b.click("#open-inbox")
            inbox = f"#inbox-{object_id}"
            for tab in (tab_a, tab_b):
                await expect(tab.locator(f"{inbox} .state")).to_have_text("open")
                await expect(tab.locator(f"{inbox} .unread-count")).to_have_text("0 unread")

            for text in ("Storm warning", "Drill at noon"):
                response = await client.post(
                    "/alert", json={"text": text, "object_ids": [int(object_id)]}, headers=key
                )
                assert response.status == 200, await response.text()
            for tab in (tab_a, tab_b):
                await expect(tab.locator(f"{inbox} .alert .text")).to_have_text(
                    ["Storm warning", "Drill at noon"]
                )
                await expect(tab.locator(f"{inbox} .unread-count")).to_have_text("2 unread")

            # Read up to the first in tab B (with the token), then everything in tab A (key).
            await tab_b.locator(f"{inbox} .alert").first.locator("button.ack").click()
            for tab in (tab_a, tab_b):
                await expect(tab.locator(f"{inbox} .unread-count")).to_have_text("1 unread")
            await tab_a.click(f"{inbox} .ack-all")
            for tab in (tab_a, tab_b):
                await expect(tab.locator(f"{inbox} .unread-count")).to_have_text("0 unread")
                await expect(tab.locator(f"{inbox} .alert.unread")).to_have_count(0)
            state = await (await client.get(f"/object/{object_id}", headers=key)).json()
            assert state["unread"] == 0
            assert page_errors == []
        finally:
            await browser.close()


TAB_A_TRANSPORT = "eventsource"  # tab B uses a WebSocket: both kinds of inbox view
