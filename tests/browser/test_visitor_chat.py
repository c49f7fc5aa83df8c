"""The visitor's chat in real Chromium against a real Daphne: the queue, talking with an
advisor, reloads and dropped connections (issue 2, visitor points 1-5)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from advice.models import Conversation, Message
from tests.browser.visitor import Advisor, send_message, start_chat, token_of
from tests.factories import make_advisor

pytestmark = pytest.mark.browser


def test_a_visitor_starts_a_chat_and_sees_their_place_in_the_queue(shared_server, context):
    first, second = context.browser.new_context(), context.browser.new_context()
    try:
        page_one, page_two = first.new_page(), second.new_page()
        start_chat(page_one, shared_server)
        expect(page_one.locator("[data-queue-position]")).to_have_text("You are next in the queue.")
        expect(page_one.locator("[data-queue-wait]")).to_contain_text("Estimated wait")
        expect(page_one.get_by_text("If you are in danger now, call 112.").first).to_be_visible()

        start_chat(page_two, shared_server)
        expect(page_two.locator("[data-queue-position]")).to_have_text(
            "You are number 2 in the queue."
        )
        conversation = Conversation.objects.order_by("created_at").first()
        assert conversation.status == Conversation.Status.WAITING
        assert (conversation.language, conversation.writer) == ("en", "young")

        # The first leaves the queue: the second moves up, live.
        page_one.get_by_role("button", name="Leave the queue").click()
        page_one.get_by_role("button", name="Yes, leave").click()
        expect(page_one.get_by_role("heading", name="You left the queue")).to_be_visible()
        expect(page_two.locator("[data-queue-position]")).to_have_text("You are next in the queue.")
        conversation.refresh_from_db()
        assert conversation.status == Conversation.Status.ABANDONED
    finally:
        first.close()
        second.close()


def test_the_token_lives_only_in_session_storage_and_no_cookie_outlives_the_browser(
    shared_server, page
):
    start_chat(page, shared_server)
    token = token_of(page)
    assert token and len(token) >= 22
    assert token not in page.url
    assert page.evaluate("() => sessionStorage.length") == 1
    assert page.evaluate("() => localStorage.length") == 0
    for cookie in page.context.cookies():
        assert cookie["expires"] == -1, cookie["name"]  # a session cookie
        assert token not in cookie["value"]


def test_an_urgent_answer_puts_the_visitor_first(shared_server, context):
    start_chat(context.new_page(), shared_server)
    urgent = context.browser.new_context()
    try:
        page = urgent.new_page()
        start_chat(page, shared_server, safe_now="no")
        expect(page.locator("[data-queue-position]")).to_have_text("You are next in the queue.")
        assert Conversation.objects.get(safe_now="no").urgent
    finally:
        urgent.close()


def test_a_visitor_and_an_advisor_talk_live_with_typing_shown_both_ways(shared_server, page):
    alice = make_advisor("alice")
    start_chat(page, shared_server)
    history_length = page.evaluate("() => history.length")
    title = page.title()
    advisor = Advisor(shared_server, alice)
    try:
        conversation = advisor.take_first_waiting()
        expect(page.get_by_role("heading", name="You are chatting with an advisor")).to_be_visible()
        expect(page.get_by_text("An advisor has joined the chat.")).to_be_visible()

        # The visitor types: the advisor is told.
        page.get_by_label("Your message").press_sequentially("Hej", delay=20)
        advisor.receive_until("typing", conversation=conversation, **{"from": "visitor"})
        send_message(page, "Hej, jag behöver prata")
        got = advisor.receive_until("message", conversation=conversation, **{"from": "visitor"})
        assert got["text"] == "Hej, jag behöver prata"

        advisor.send({"type": "typing", "conversation": conversation})
        expect(page.get_by_text("The advisor is writing…")).to_be_visible()
        advisor.send(
            {
                "type": "send",
                "conversation": conversation,
                "client_id": "a1",
                "text": "Hej! Jag finns här.",
            }
        )
        reply = page.locator(".message--theirs").filter(has_text="Hej! Jag finns här.")
        expect(reply).to_be_visible()
        expect(page.get_by_text("The advisor is writing…")).to_be_hidden()

        # Neither the title nor the history changes while chatting (QE-10, QE-13).
        assert page.title() == title
        assert page.evaluate("() => history.length") == history_length

        advisor.send({"type": "close", "conversation": conversation, "outcome": "advice_given"})
        expect(page.get_by_role("heading", name="The chat has ended")).to_be_visible()
        expect(page.get_by_text("The advisor has ended the chat.")).to_be_visible()
        expect(page.get_by_role("button", name="Start a new chat")).to_be_visible()
        expect(page.get_by_label("Your message")).to_be_hidden()
    finally:
        advisor.close()


def test_the_visitor_ends_an_active_chat(shared_server, page):
    alice = make_advisor("alice")
    start_chat(page, shared_server)
    advisor = Advisor(shared_server, alice)
    try:
        conversation = advisor.take_first_waiting()
        expect(page.get_by_role("heading", name="You are chatting with an advisor")).to_be_visible()
        page.get_by_role("button", name="End the chat").click()
        page.get_by_role("button", name="Yes, leave").click()
        expect(page.get_by_role("heading", name="The chat has ended")).to_be_visible()
        left = advisor.receive_until("message", conversation=conversation, event="visitor_left")
        assert left["data"]["reason"] == "visitor_ended"
        # Starting again begins a new conversation.
        page.get_by_role("button", name="Start a new chat").click()
        expect(page.get_by_role("heading", name="Start a chat")).to_be_visible()
        assert token_of(page) is None
    finally:
        advisor.close()


def test_a_reload_keeps_the_conversation_and_shows_no_message_twice(shared_server, page):
    alice = make_advisor("alice")
    start_chat(page, shared_server)
    advisor = Advisor(shared_server, alice)
    try:
        conversation = advisor.take_first_waiting()
        send_message(page, "första")
        advisor.send(
            {"type": "send", "conversation": conversation, "client_id": "a1", "text": "svar ett"}
        )
        expect(page.get_by_text("svar ett")).to_be_visible()
        send_message(page, "andra")
        token = token_of(page)

        page.reload()
        expect(page.get_by_text("andra")).to_be_visible()
        assert token_of(page) == token
        texts = page.locator(".message__text").all_inner_texts()
        assert texts == ["första", "svar ett", "andra"]
        expect(page.locator(".message--event")).to_have_count(1)  # "An advisor has joined"
        assert Conversation.objects.count() == 1
    finally:
        advisor.close()


def test_a_dropped_connection_resumes_and_a_text_sent_meanwhile_arrives_once(daphne_server, page):
    from tests.live import Daphne

    alice = make_advisor("alice")
    start_chat(page, daphne_server)
    advisor = Advisor(daphne_server, alice)
    conversation = advisor.take_first_waiting()
    expect(page.get_by_role("heading", name="You are chatting with an advisor")).to_be_visible()
    send_message(page, "innan")
    advisor.close()

    daphne_server.kill()
    expect(page.get_by_text("The connection was lost. Trying again…")).to_be_visible()
    page.get_by_label("Your message").fill("medan det var nere")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator(".message--pending")).to_have_count(1)

    restarted = Daphne(port=daphne_server.port, DJANGO_ALLOW_ASYNC_UNSAFE="").start()
    try:
        expect(page.locator(".message--pending")).to_have_count(0, timeout=20_000)
        expect(page.get_by_text("The connection was lost. Trying again…")).to_be_hidden()
        advisor = Advisor(restarted, alice)
        advisor.send({"type": "resume", "conversations": {}})
        got = advisor.receive_until("message", conversation=conversation, text="medan det var nere")
        assert got["from"] == "visitor"
        advisor.send(
            {"type": "send", "conversation": conversation, "client_id": "a2", "text": "Jag ser det"}
        )
        expect(page.get_by_text("Jag ser det")).to_be_visible()
        texts = page.locator(".message__text").all_inner_texts()
        assert texts == ["innan", "medan det var nere", "Jag ser det"]
        stored = [m.text for m in Message.objects.filter(sender="visitor").order_by("seq")]
        assert stored == ["innan", "medan det var nere"]
        advisor.close()
    finally:
        restarted.stop()
