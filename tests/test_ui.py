"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real gateway
process fed by `simulate`: sign in, the vendors' figures as /v1/stats gives them, a new callback
in the live feed without a reload, a message's timeline by search, a wrong token refused.

Screenshots go to the test's directory, and also to $SCREENSHOTS_DIR when set (the README's come
from `SCREENSHOTS_DIR=docs/screenshots pytest tests/test_ui.py`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests import http_client
from tests.conftest import API_TOKEN, ENV, GatewayProcess, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: the CI machine runs the tests as root, where chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def simulate(gateway: GatewayProcess, provider: str, *args: str) -> str:
    path = {"twilio": "/webhooks/twilio/main", "vonage": "/webhooks/vonage/main",
            "vonage-sms": "/webhooks/vonage-sms/main"}[provider]
    # A process of its own: Playwright's sync API keeps an event loop running in this thread.
    result = subprocess.run([sys.executable, "-m", "gateway", "simulate", provider, *args, "--config",
                             str(gateway.tmp_path / "config.yaml"), "--url", gateway.url + path],
                            capture_output=True, text=True, env={**os.environ, **ENV}, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    target = os.environ.get("SCREENSHOTS_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, Path(target) / name)


def sign_in(page: Page, gateway: GatewayProcess, token: str) -> None:
    page.goto(gateway.url + "/ui")
    expect(page).to_have_url(gateway.url + "/ui/login")
    page.fill("#token", token)
    page.click("button[type=submit]")


def test_an_empty_store_says_what_to_do(browser: Browser, gateway_process: GatewayProcess, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, gateway_process, API_TOKEN)
    expect(page.locator("#vendors .empty")).to_be_visible()
    expect(page.locator("#vendors .empty code")).to_have_text("status-gateway simulate twilio --scenario lifecycle")
    expect(page.locator("#refused .empty")).to_contain_text("every callback's signature verified")
    shot(page, tmp_path, "dashboard-empty.png")


def test_the_dashboard_compares_the_vendors_follows_the_feed_and_finds_a_message(
        browser: Browser, gateway_process: GatewayProcess, tmp_path: Path) -> None:
    gateway = gateway_process
    for scenario in ("lifecycle", "lifecycle", "failure", "opted-out", "spam-filtered", "invalid-number"):
        simulate(gateway, "twilio", "--scenario", scenario)
    for scenario in ("lifecycle", "failure", "opted-out", "unreachable"):
        simulate(gateway, "vonage", "--scenario", scenario)
    simulate(gateway, "vonage-sms", "--scenario", "lifecycle")
    forged = http_client.post(gateway.url + "/webhooks/twilio/main", content=b"MessageSid=SM1&MessageStatus=delivered",
                              headers={"Content-Type": "application/x-www-form-urlencoded",
                                       "X-Twilio-Signature": "Zm9yZ2Vk"})
    assert forged.status_code == 403

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, gateway, "not-the-token")
    expect(page.locator(".error")).to_contain_text("not this gateway's API token")  # and no session
    assert page.context.cookies() == []
    page.fill("#token", API_TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(gateway.url + "/ui")
    cookie = page.context.cookies()[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and API_TOKEN not in cookie["value"]

    # The vendors' numbers are /v1/stats' numbers.
    stats = http_client.get(gateway.url + "/v1/stats?by=provider&since=7d", headers=AUTH).json()["groups"]
    assert {g["key"] for g in stats} == {"twilio", "vonage"}
    table = page.locator("#vendor-table")
    for group in stats:
        row = table.locator("tbody tr", has=page.locator(f"th:text-is('{group['key']}')"))
        expect(row.locator("td").nth(0)).to_have_text(str(group["messages"]))
        expect(row.locator("td").nth(3)).to_have_text(f"{group['delivery_rate'] * 100:.1f}%")
    expect(page.locator("#reasons-chart svg")).to_be_visible()
    expect(page.locator("#rate-chart svg path.series")).to_have_count(2)
    expect(page.locator("#country-table tbody tr")).to_have_count(2)  # US by Twilio, GB by Vonage
    # The quarantine's writer keeps it beside the callbacks: a reload shows it once kept.
    wait_until(lambda: http_client.get(gateway.url + "/v1/refused", headers={
        "Authorization": f"Bearer {API_TOKEN}"}).json()["counts"] != [])
    page.reload()
    expect(page.locator("#refused tbody tr")).to_have_count(1)
    expect(page.locator("#refused tbody tr")).to_contain_text("twilio-main")
    expect(page.locator("#refused tbody tr")).to_contain_text("invalid_signature")

    # A callback that arrives now shows in the live feed, without a reload.
    expect(page.locator("#live.on")).to_have_count(1)
    page.evaluate("window.__loaded = true")
    simulate(gateway, "twilio", "delivered", "--message-id", "SM" + "f" * 32)
    expect(page.locator(f"#feed li[data-message-id='{'SM' + 'f' * 32}']")).to_have_count(1)
    assert page.evaluate("window.__loaded") is True  # the same page: nothing reloaded it
    shot(page, tmp_path, "dashboard.png")

    # Search a message: its timeline.
    output = simulate(gateway, "vonage", "--scenario", "lifecycle")
    message_id = output.split("vonage message ")[1].split()[0]
    page.fill("#message-id", message_id)
    page.click("#search button")
    expect(page.locator("#timeline")).to_contain_text(f"vonage {message_id}")
    expect(page.locator("#timeline tbody tr")).to_have_count(2)
    expect(page.locator("#timeline tbody tr").nth(1)).to_contain_text("delivered")
    page.fill("#message-id", "no-such-message")
    page.click("#search button")
    expect(page.locator("#timeline")).to_contain_text("No message no-such-message")

    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    phone.context.add_cookies([cookie])
    phone.goto(gateway.url + "/ui")
    expect(phone.locator("#vendor-table tbody tr")).to_have_count(2)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than a phone: tables scroll inside their cards
    shot(phone, tmp_path, "dashboard-phone.png")


def test_the_session_cookie_reads_but_does_not_change(gateway_process: GatewayProcess) -> None:
    """/v1 takes the dashboard's cookie for reads only; no cookie and no token is 401."""
    gateway = gateway_process
    assert http_client.get(gateway.url + "/v1/stats").status_code == 401
    login = http_client.post(gateway.url + "/ui/login", content=f"token={API_TOKEN}".encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert login.status_code == 303 and login.headers["location"] == "/ui"
    session = login.headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in login.headers["set-cookie"] and "SameSite=strict" in login.headers["set-cookie"]
    assert "Secure" in login.headers["set-cookie"]  # public_url is https: TLS may end at a proxy in front
    assert http_client.get(gateway.url + "/v1/stats", headers={"Cookie": session}).status_code == 200
    redeliver = http_client.post(gateway.url + "/v1/deliveries/x/redeliver", headers={"Cookie": session})
    assert redeliver.status_code == 401
    forged = session.split("=")[0] + "=9999999999." + "0" * 64
    assert http_client.get(gateway.url + "/v1/stats", headers={"Cookie": forged}).status_code == 401
    wrong = http_client.post(gateway.url + "/ui/login", content=b"token=nope",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
