"""An interpreter joins a live web chat, in three browsers against a real Daphne: the visitor on
the chat page, the advisor in the console, the interpreter on the page the invitation link
opens. The interpreter gets in only after the visitor says yes; in the other run the visitor
says no and the interpreter never sees a word."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from advice.models import ConversationEvent, InterpreterInvitation, Message
from tests.browser.test_advisor_console import _local_only, advisor, log_in, open_pane, queue_rows

pytestmark = pytest.mark.browser


@pytest.fixture
def pages(browser) -> Iterator[dict[str, Page]]:
    """One context each (own cookies and storage), in English; page errors are collected."""
    contexts = {}
    pages = {}
    for who in ("visitor", "advisor", "interpreter"):
        context = browser.new_context(locale="en-GB")
        context.route("**/*", _local_only)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.problems = []
        page.on("pageerror", lambda error, page=page: page.problems.append(str(error)))
        contexts[who], pages[who] = context, page
    yield pages
    for context in contexts.values():
        context.close()


def start_chat_needing_an_interpreter(page: Page, server: Any) -> None:
    page.goto(server.url + "/en/chat/")
    page.get_by_label("A young person").check()
    page.locator("#interpreter-yes").check()
    page.locator("#interpreter-language").select_option("ar")
    page.get_by_label("I want an interpreter who is not from my local community").check()
    page.get_by_label("A woman").check()
    page.get_by_role("button", name="Start the chat").click()
    expect(page.locator("[data-queue-position]")).not_to_be_empty()


def invite_an_interpreter(pages: dict[str, Page], server: Any) -> tuple[Any, str]:
    """The advisor takes the visitor's chat and creates an interpreter's link."""
    visitor, console = pages["visitor"], pages["advisor"]
    alice = advisor("alice")
    log_in(console, server, alice)
    start_chat_needing_an_interpreter(visitor, server)
    expect(queue_rows(console)).to_have_count(1)
    row = queue_rows(console).first
    expect(row).to_contain_text("Arabic")
    queue_rows(console).first.get_by_role("button", name="Take").click()
    expect(visitor.get_by_role("heading", name="You are chatting with an advisor")).to_be_visible()
    pane = open_pane(console)
    pane.get_by_text("Interpreter link, notes, earlier conversation").click()
    pane.get_by_role("button", name="Create a link for an interpreter").click()
    link = pane.locator('[data-part="invite-link"]')
    expect(link).to_have_value(re.compile(r"/interpreter/#.{40,}$"))
    expect(
        visitor.locator(".message--event").filter(
            has_text="The advisor has invited an interpreter."
        )
    ).to_be_visible()
    return pane, link.input_value()


def say(page: Page, text: str) -> None:
    page.get_by_label("Your message").fill(text)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(
        page.locator(".message--mine:not(.message--pending)").filter(has_text=text)
    ).to_have_count(1)


def test_the_interpreter_joins_once_the_visitor_says_yes(daphne_server, pages):
    visitor, interpreter = pages["visitor"], pages["interpreter"]
    pane, link = invite_an_interpreter(pages, daphne_server)
    say(visitor, "This I wrote before any interpreter.")

    # The interpreter opens the link: the secret leaves the address bar, the visitor is asked.
    interpreter.goto(link)
    expect(interpreter.locator("[data-status]")).to_contain_text("is being asked")
    assert "#" not in interpreter.url
    consent = visitor.get_by_role("alertdialog", name="May an interpreter join?")
    expect(consent).to_be_visible()
    expect(pane.locator('[data-part="invite-status"]')).to_contain_text("consent")
    # The link is spent: opening it again, anywhere, gets nowhere.
    assert InterpreterInvitation.objects.get().status == "waiting"

    consent.get_by_role("button", name="Yes, the interpreter may join").click()
    expect(consent).to_be_hidden()
    expect(interpreter.locator("[data-status]")).to_contain_text("You are in the conversation")
    expect(interpreter.locator("[data-language]")).to_contain_text("Arabic")
    expect(
        visitor.locator(".message--event").filter(has_text="The interpreter has joined the chat.")
    ).to_be_visible()

    # From now on everyone reads everyone; nothing from before reached the interpreter.
    say(visitor, "Now the interpreter can read this.")
    expect(interpreter.locator("[data-log] .ip-msg--visitor")).to_have_text(
        ["VisitorNow the interpreter can read this."]
    )
    expect(interpreter.get_by_text("This I wrote before any interpreter.")).to_have_count(0)
    interpreter.get_by_label("Your message").fill("Jag tolkar för er.")
    interpreter.get_by_role("button", name="Send", exact=True).click()
    from_interpreter = visitor.locator(".message--theirs").filter(has_text="Jag tolkar för er.")
    expect(from_interpreter).to_contain_text("Interpreter")
    expect(pane.get_by_text("Jag tolkar för er.")).to_be_visible()
    pane.get_by_label("Your message").fill("Tack. Välkommen.")
    pane.get_by_label("Your message").press("Enter")
    expect(interpreter.locator("[data-log] .ip-msg--advisor")).to_contain_text("Tack. Välkommen.")

    # The advisor shares the earlier part with one action.
    pane.get_by_role("button", name="Show the interpreter the earlier messages").click()
    expect(interpreter.locator("[data-history]")).to_be_visible()
    interpreter.locator("[data-history] summary").click()
    expect(interpreter.locator("[data-history-log]")).to_contain_text(
        "This I wrote before any interpreter."
    )

    # The interpreter leaves; everyone is told, and it is all on the record.
    interpreter.once("dialog", lambda dialog: dialog.accept())
    interpreter.get_by_role("button", name="Leave the conversation").click()
    expect(interpreter.locator("[data-status]")).to_contain_text("You have left")
    expect(
        visitor.locator(".message--event").filter(has_text="The interpreter has left the chat.")
    ).to_be_visible()
    assert interpreter.evaluate("() => sessionStorage.length") == 0
    kinds = list(
        ConversationEvent.objects.filter(kind__startswith="interpreter_")
        .order_by("id")
        .values_list("kind", flat=True)
    )
    assert kinds == [
        "interpreter_invited",
        "interpreter_waiting",
        "interpreter_joined",
        "interpreter_shared",
        "interpreter_left",
    ]
    assert Message.objects.filter(sender="interpreter").count() == 1
    for page in pages.values():
        assert page.problems == []


def test_the_visitor_says_no_and_the_interpreter_never_gets_in(daphne_server, pages):
    visitor, interpreter = pages["visitor"], pages["interpreter"]
    pane, link = invite_an_interpreter(pages, daphne_server)
    interpreter.goto(link)
    expect(interpreter.locator("[data-status]")).to_contain_text("is being asked")

    consent = visitor.get_by_role("alertdialog", name="May an interpreter join?")
    consent.get_by_role("button", name="No, thank you").click()
    expect(consent).to_be_hidden()
    expect(interpreter.locator("[data-status]")).to_contain_text("said no")
    expect(interpreter.locator("[data-chat]")).to_be_hidden()
    expect(
        visitor.locator(".message--event").filter(has_text="You said no to the interpreter.")
    ).to_be_visible()
    expect(pane.locator('[data-part="invite-status"]')).to_contain_text("said no")

    # The chat goes on without the interpreter, who sees none of it, even after a reload.
    say(visitor, "Only for the advisor.")
    interpreter.reload()
    expect(interpreter.locator("[data-status]")).to_contain_text(
        "Open the invitation link the advisor sent you."
    )
    expect(interpreter.get_by_text("Only for the advisor.")).to_have_count(0)
    # And the spent link does not work a second time.
    interpreter.goto(link)
    expect(interpreter.locator("[data-status]")).to_contain_text("already been used")
    assert InterpreterInvitation.objects.get().status == "refused"
    assert not Message.objects.filter(sender="interpreter").exists()
    for page in pages.values():
        assert page.problems == []


# --- the chat page: opening hours and return codes ----------------------------------------------


def test_a_closed_line_says_when_it_opens_and_refuses_the_start(daphne_server, pages):
    from datetime import time as clock
    from datetime import timedelta

    from django.utils import timezone

    from advice.models import Conversation, OpeningException, OpeningSchedule, WeeklyHours

    visitor = pages["visitor"]
    schedule = OpeningSchedule.objects.create(county="")
    for day in range(7):
        WeeklyHours.objects.create(schedule=schedule, weekday=day, opens=clock(0), closes=clock(0))
    today = timezone.localdate()
    for offset in (0, 1):  # closed today and tomorrow: opens the day after, at midnight
        OpeningException.objects.create(schedule=schedule, date=today + timedelta(days=offset))

    visitor.goto(daphne_server.url + "/en/chat/")
    notice = visitor.get_by_role("region", name="The chat is closed just now")
    expect(notice).to_be_visible()
    expect(notice.locator("[data-line-opens-at]")).not_to_be_empty()
    expect(notice.locator(".numbers__number")).to_have_text(
        ["112", "020-50 50 50", "116 111", "114 14"]
    )
    visitor.get_by_label("A young person").check()
    visitor.get_by_role("button", name="Start the chat").click()
    expect(visitor.get_by_role("heading", name="Start a chat")).to_be_visible()
    expect(notice).to_be_visible()
    assert not Conversation.objects.exists()

    # Open again: the chat starts.
    schedule.delete()
    visitor.get_by_role("button", name="Start the chat").click()
    expect(visitor.locator("[data-queue-position]")).not_to_be_empty()
    assert Conversation.objects.count() == 1
    assert visitor.problems == []


def test_a_return_code_at_the_end_links_the_next_chat(daphne_server, pages):
    from advice.models import Conversation
    from tests.browser.visitor import Advisor, start_chat

    visitor = pages["visitor"]
    alice = advisor("alice")
    console = Advisor(daphne_server, alice)
    try:
        start_chat(visitor, daphne_server)
        conversation = console.take_first_waiting()
        expect(
            visitor.get_by_role("heading", name="You are chatting with an advisor")
        ).to_be_visible()
        console.send({"type": "close", "conversation": conversation, "outcome": "advice_given"})
        expect(visitor.get_by_role("heading", name="The chat has ended")).to_be_visible()

        visitor.get_by_role("button", name="Get a return code").click()
        words = visitor.locator(".return-code__word")
        expect(words).to_have_count(3)
        code = " ".join(words.all_inner_texts())
        expires = visitor.locator("[data-return-code-expires]")
        expect(expires).to_contain_text("The code works until")

        # A new chat: a wrong code is refused calmly, the right one links the two.
        visitor.get_by_role("button", name="Start a new chat").click()
        visitor.get_by_label("A young person").check()
        visitor.get_by_text("Have you chatted with us before and got a return code?").click()
        visitor.get_by_label("Your return code (three words)").fill("fel fel fel")
        visitor.get_by_role("button", name="Start the chat").click()
        expect(visitor.locator("[data-error-for='return_code']")).to_have_text(
            "That return code does not work. Check the words, or start without the code."
        )
        visitor.get_by_label("Your return code (three words)").fill(code.upper())
        visitor.get_by_role("button", name="Start the chat").click()
        expect(visitor.locator("[data-queue-position]")).not_to_be_empty()
        later = Conversation.objects.get(status="waiting")
        assert str(later.previous.public_id) == conversation
        assert visitor.problems == []
    finally:
        console.close()
