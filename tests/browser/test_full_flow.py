"""The whole flow in two browsers against a real Daphne (issue 2, "Tests"): a visitor starts a
chat on the visitor's page, an advisor logs in with password and TOTP, takes it, they exchange
a message each way, the advisor closes it, and the visitor sees that it has ended."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from advice.models import Conversation, Message
from tests.browser.test_advisor_console import (
    _local_only,
    advisor,
    log_in,
    open_pane,
    queue_rows,
)
from tests.browser.visitor import send_message, start_chat

pytestmark = pytest.mark.browser


def test_a_visitor_and_an_advisor_talk_from_start_to_end_in_two_browsers(daphne_server, browser):
    visitor_context = browser.new_context(locale="en-GB")
    advisor_context = browser.new_context(locale="en-GB")
    for context in (visitor_context, advisor_context):
        context.route("**/*", _local_only)
    try:
        visitor_page = visitor_context.new_page()
        advisor_page = advisor_context.new_page()
        for page in (visitor_page, advisor_page):
            page.set_default_timeout(10_000)
        alice = advisor("alice")

        # The advisor logs in first; the visitor's chat then appears in the queue, live.
        log_in(advisor_page, daphne_server, alice)
        expect(advisor_page.locator("#queue-count")).to_have_text("Nobody is waiting.")
        start_chat(visitor_page, daphne_server)
        expect(queue_rows(advisor_page)).to_have_count(1)
        row = queue_rows(advisor_page).first
        expect(row).to_contain_text("A young person")
        expect(row).to_contain_text("Web chat")

        row.get_by_role("button", name="Take").click()
        expect(
            visitor_page.get_by_role("heading", name="You are chatting with an advisor")
        ).to_be_visible()
        pane = open_pane(advisor_page)

        # A message each way.
        send_message(visitor_page, "Hi, I need someone to talk to.")
        expect(pane.locator(".entry.from-visitor .text")).to_have_text(
            ["Hi, I need someone to talk to."]
        )
        pane.get_by_label("Your message").fill("I am here. Tell me what is happening.")
        pane.get_by_label("Your message").press("Enter")
        expect(
            visitor_page.locator(".message--theirs").filter(
                has_text="I am here. Tell me what is happening."
            )
        ).to_be_visible()

        # The advisor closes it with an outcome; the visitor sees that it has ended.
        pane.get_by_label("Outcome").select_option(label="Advice given")
        pane.get_by_role("button", name="Close conversation").click()
        expect(pane.locator(".ended-banner")).to_have_text(
            "Ended: Closed by the advisor Outcome: Advice given"
        )
        expect(visitor_page.get_by_role("heading", name="The chat has ended")).to_be_visible()
        expect(visitor_page.get_by_label("Your message")).to_be_hidden()

        conversation = Conversation.objects.get()
        assert (conversation.status, conversation.outcome) == ("closed", "advice_given")
        assert conversation.advisor_id == alice.pk
        texts = [m.text for m in Message.objects.filter(event="").order_by("seq")]
        assert texts == ["Hi, I need someone to talk to.", "I am here. Tell me what is happening."]
    finally:
        visitor_context.close()
        advisor_context.close()
