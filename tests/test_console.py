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
