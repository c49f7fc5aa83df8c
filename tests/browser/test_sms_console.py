"""The SMS channel in the advisor's console, in real Chromium against a real Daphne with the
worker inside it: a text (a signed webhook) appears in the queue, the advisor answers, the
local Twilio peer receives the SMS through the real twilio SDK, and Twilio's status callback
turns the answer to delivered in the console, live (issue 3).

Lives in tests/browser/ for the package's Chromium fixtures (tests/browser/conftest.py)."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.hashers import ScryptPasswordHasher
from playwright.sync_api import Page, expect

from tests.factories import PASSWORD, make_advisor, totp_now
from tests.live import Daphne, free_port
from tests.twilio_peer import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    LINE_NUMBER,
    inbound_fields,
    sign,
    status_fields,
)

pytestmark = pytest.mark.browser

SENDER = "+46701234567"


@pytest.fixture
def sms_server(browser, transactional_db, _twilio_api_server) -> Iterator[Daphne]:
    """Daphne with the SMS channel on, the worker inside it, and the SDK's requests going to
    the local Twilio peer (Prism in front of the fake, or the fake)."""
    _twilio_api_server.fake.reset()
    port = free_port()
    server = Daphne(
        port=port,
        DJANGO_ALLOW_ASYNC_UNSAFE="",
        SMS_WORKER_IN_PROCESS="1",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_WEBHOOK_BASE_URL=f"http://127.0.0.1:{port}",
        TWILIO_FROM_NUMBER=LINE_NUMBER,
        TWILIO_API_BASE_URL=_twilio_api_server.url,
    ).start()
    server.twilio = _twilio_api_server
    try:
        yield server
    finally:
        server.stop()
        _twilio_api_server.fake.reset()


def twilio_posts(server: Daphne, path: str, fields: dict[str, str]) -> int:
    """Twilio calls the server: form-encoded, signed for the server's public URL."""
    url = server.url + path
    request = urllib.request.Request(
        url,
        data=urlencode(fields).encode(),
        method="POST",
        headers={
            "X-Twilio-Signature": sign(url, fields),
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def wait_for(condition, timeout: float = 15, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def log_in(page: Page, server: Daphne) -> None:
    user = make_advisor("sara")
    # The server checks passwords with the service's own hashers (the tests' MD5 is not one).
    user.password = ScryptPasswordHasher().encode(PASSWORD, ScryptPasswordHasher().salt())
    user.save(update_fields=["password"])
    page.goto(server.url + "/advisor/")
    page.get_by_label("User name").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("textbox", name="Code").fill(totp_now(user))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/advisor/$"))
    expect(page.locator("#connection")).to_have_text("Connected")


@pytest.fixture
def console(browser) -> Iterator[Page]:
    context = browser.new_context(locale="en-GB")
    context.route(
        "**/*",
        lambda route: (
            route.fallback()
            if route.request.url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:"))
            else route.abort()
        ),
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def test_a_text_is_answered_from_the_console_and_shows_delivered(sms_server, console):
    page = console
    log_in(page, sms_server)

    assert (
        twilio_posts(
            sms_server,
            "/sms/inbound",
            inbound_fields(sender=SENDER, body="Hej! Jag är lärare och oroar mig för en elev."),
        )
        == 200
    )

    # The worker inside the server puts it in the queue: an SMS, from a professional, with
    # the number masked.
    row = page.locator("#queue-rows tr")
    expect(row).to_have_count(1)
    expect(row.first).to_contain_text("SMS")
    expect(row.first).to_contain_text("•••• •• 67")
    row.first.get_by_role("button", name="Take").click()
    pane = page.locator("#conversation-panes .pane:not([hidden])")
    expect(pane.locator(".entry.from-visitor .text")).to_have_text(
        ["Hej! Jag är lärare och oroar mig för en elev."]
    )

    # The advisor answers; the SMS reaches the local Twilio peer through the SDK.
    box = pane.get_by_label("Your message")
    box.fill("Hej! Berätta gärna mer, jag finns här.")
    box.press("Enter")
    fake = sms_server.twilio.fake
    [sent] = wait_for(fake.created, what="the SMS at the Twilio peer")
    assert (sent["to"], sent["from"], sent["body"]) == (
        SENDER,
        LINE_NUMBER,
        "Hej! Berätta gärna mer, jag finns här.",
    )
    mark = pane.locator(".entry.mine .delivery")
    expect(mark).to_have_attribute("data-delivery", "queued")

    # Twilio reports delivery to the status callback URL it was given: the console follows.
    callback = sent["_status_callback"]
    assert callback.startswith(sms_server.url + "/sms/status?o=")
    path = callback.removeprefix(sms_server.url)
    assert (
        twilio_posts(sms_server, path, status_fields(sid=sent["sid"], status="sent", to=SENDER))
        == 204
    )
    expect(mark).to_have_attribute("data-delivery", "sent")
    assert (
        twilio_posts(
            sms_server, path, status_fields(sid=sent["sid"], status="delivered", to=SENDER)
        )
        == 204
    )
    expect(mark).to_have_attribute("data-delivery", "delivered")
    # A late "sent" does not take it back.
    twilio_posts(sms_server, path, status_fields(sid=sent["sid"], status="sent", to=SENDER))
    page.wait_for_timeout(300)
    expect(mark).to_have_attribute("data-delivery", "delivered")
