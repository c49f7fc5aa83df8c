"""The advisor's console in real Chromium against a real Daphne: the login with password and
TOTP, the live queue, taking, chatting, the interpreter flag, closing with an outcome, typed
errors, a dropped connection, and logging out (issue 2, advisor points 6-9).

The visitors here are real sockets on /ws/chat/ (websockets' sync client): the visitor's page
is tested in test_visitor_chat.py, and the whole flow in two browsers in test_full_flow.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.hashers import ScryptPasswordHasher
from playwright.sync_api import Page, expect
from websockets.sync.client import ClientConnection, connect

from advice.models import AdvisorProfile, Conversation, Message
from tests.factories import PASSWORD, make_advisor, session_cookie, totp_now

pytestmark = pytest.mark.browser


class Visitor:
    """A visitor's socket on the server under test."""

    def __init__(self, server: Any, **start: Any) -> None:
        self.socket: ClientConnection = connect(
            server.ws_url + "/ws/chat/", origin=server.url, open_timeout=5, legacy=True
        )
        self.send({"type": "start", "language": "en", "writer": "young", **start})
        self.token = self.receive_until("started")["token"]

    def send(self, frame: dict[str, Any]) -> None:
        self.socket.send(json.dumps(frame))

    def receive_until(self, frame_type: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {frame_type} frame matching {match} within {timeout} s")
            frame = json.loads(self.socket.recv(timeout=remaining))
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items()):
                return frame

    def close(self) -> None:
        self.socket.close()


def _local_only(route: Any) -> None:
    if route.request.url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:")):
        route.fallback()
    else:
        route.abort()


@pytest.fixture
def console_page(browser) -> Iterator[Page]:
    """A browser for the advisor, in English (the advisor side follows the browser's language;
    the Swedish one has its own test below). Collects what the page reports as errors."""
    context = browser.new_context(locale="en-GB")
    context.route("**/*", _local_only)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    yield page
    context.close()


def advisor(username: str, **options: Any) -> Any:
    """An advisor whose password the server can check: the test process hashes with MD5 for
    speed (tests/conftest.py), which the server, on the service's own settings, does not
    accept; scrypt is one of Django's defaults and quick enough."""
    user = make_advisor(username, **options)
    user.password = ScryptPasswordHasher().encode(PASSWORD, ScryptPasswordHasher().salt())
    user.save(update_fields=["password"])
    return user


def log_in(page: Page, server: Any, user: Any) -> None:
    page.goto(server.url + "/advisor/")
    expect(page).to_have_url(re.compile(r"/advisor/login/$"))
    page.get_by_label("User name").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(re.compile(r"/advisor/verify/$"))
    page.get_by_role("textbox", name="Code").fill(totp_now(user))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/advisor/$"))
    expect(page.locator("#connection")).to_have_text("Connected")


def queue_rows(page: Page):
    return page.locator("#queue-rows tr")


def open_pane(page: Page):
    return page.locator("#conversation-panes .pane:not([hidden])")


def test_an_advisor_logs_in_takes_a_conversation_talks_and_closes_it(daphne_server, console_page):
    page = console_page
    alice = advisor("alice")
    log_in(page, daphne_server, alice)
    expect(page.locator("#queue-count")).to_have_text("Nobody is waiting.")
    expect(page.locator("#capacity")).to_have_text("0 of 3 conversations")

    visitor = Visitor(daphne_server, county="AB")
    try:
        visitor.send({"type": "send", "client_id": "v1", "text": "I wrote this while waiting"})
        visitor.receive_until("ack")

        # The queue shows it, live, with what the visitor chose.
        expect(queue_rows(page)).to_have_count(1)
        expect(page.locator("#queue-count")).to_have_text("1 waiting")
        row = queue_rows(page).first
        for text in ("Web chat", "A young person", "English", "No interpreter", "Stockholms län"):
            expect(row).to_contain_text(text)
        waited = row.locator(".waited")
        expect(waited).to_have_text(re.compile(r"^\d+ s$"))
        first = waited.inner_text()
        expect(waited).not_to_have_text(first)  # it ticks

        # Mark urgent and back.
        row.get_by_role("button", name="Mark urgent").click()
        expect(row.locator(".tag.urgent")).to_have_text("Urgent")
        conversation = Conversation.objects.get()
        row.get_by_role("button", name="Not urgent").click()
        expect(row.locator(".tag.urgent")).to_have_count(0)
        conversation.refresh_from_db()
        assert conversation.urgent is False

        # Take it: it opens with what the visitor wrote while waiting.
        row.get_by_role("button", name="Take").click()
        expect(queue_rows(page)).to_have_count(0)
        pane = open_pane(page)
        expect(pane.locator(".entry.from-visitor .text")).to_have_text(
            ["I wrote this while waiting"]
        )
        expect(pane.get_by_text("You took the conversation.")).to_be_visible()
        expect(page.locator("#capacity")).to_have_text("1 of 3 conversations")
        expect(pane.get_by_label("Your message")).to_be_focused()
        visitor.receive_until("state", status="active")

        # The advisor writes: the visitor sees typing, then the text; Shift+Enter is a new line.
        message_box = pane.get_by_label("Your message")
        message_box.press_sequentially("Hello, I am", delay=15)
        visitor.receive_until("typing", **{"from": "advisor"})
        message_box.press("Shift+Enter")
        message_box.press_sequentially("here for you.", delay=5)
        message_box.press("Enter")
        got = visitor.receive_until("message", **{"from": "advisor"})
        assert got["text"] == "Hello, I am\nhere for you."
        expect(message_box).to_have_value("")
        expect(pane.locator(".entry.mine .text")).to_have_text(["Hello, I am\nhere for you."])
        expect(pane.locator(".entry.pending")).to_have_count(0)

        # The visitor types and writes: the console shows both.
        visitor.send({"type": "typing"})
        expect(pane.get_by_text("The visitor is typing…")).to_be_visible()
        visitor.send({"type": "send", "client_id": "v2", "text": "Thank you"})
        expect(pane.locator(".entry.from-visitor .text").last).to_have_text("Thank you")
        expect(pane.get_by_text("The visitor is typing…")).to_be_hidden()

        # The interpreter flag and its language.
        pane.get_by_label("Interpreter needed").check()
        pane.get_by_label("Interpreter language").select_option("ar")
        pane.get_by_role("button", name="Save").click()
        expect(pane.locator('[data-fact="interpreter"]')).to_have_text("العربية (Arabic)")
        conversation.refresh_from_db()
        assert (conversation.interpreter_needed, conversation.interpreter_language) == (True, "ar")
        pane.get_by_label("Interpreter needed").uncheck()
        pane.get_by_role("button", name="Save").click()
        expect(pane.locator('[data-fact="interpreter"]')).to_have_text("No")

        # Closing needs an outcome from the list.
        pane.get_by_role("button", name="Close conversation").click()
        expect(page.locator("#notices")).to_contain_text("Choose an outcome")
        pane.get_by_label("Outcome").select_option(label="Advice given")
        pane.get_by_role("button", name="Close conversation").click()
        expect(pane.locator(".ended-banner")).to_have_text(
            "Ended: Closed by the advisor Outcome: Advice given"
        )
        expect(pane.get_by_label("Your message")).to_be_disabled()
        expect(pane.get_by_role("button", name="Remove from my list")).to_be_focused()
        expect(page.locator("#capacity")).to_have_text("0 of 3 conversations")
        visitor.receive_until("state", status="closed")
        conversation.refresh_from_db()
        assert (conversation.status, conversation.outcome) == ("closed", "advice_given")
        texts = [m.text for m in Message.objects.filter(event="").order_by("seq")]
        assert texts == ["I wrote this while waiting", "Hello, I am\nhere for you.", "Thank you"]

        pane.get_by_role("button", name="Remove from my list").click()
        expect(page.locator("#conversation-tabs li")).to_have_count(0)
        assert page.problems == []
    finally:
        visitor.close()


def test_the_queue_is_urgent_first_and_the_next_one_is_taken_in_that_order(
    daphne_server, console_page
):
    page = console_page
    alice = advisor("alice")
    log_in(page, daphne_server, alice)
    calm = Visitor(daphne_server, safe_now="yes")
    interpreter = Visitor(daphne_server, interpreter_needed=True, interpreter_language="so")
    urgent = Visitor(daphne_server, safe_now="no")
    try:
        expect(queue_rows(page)).to_have_count(3)
        expect(page.locator("#queue-count")).to_have_text("3 waiting")
        expect(queue_rows(page).nth(0).locator(".tag.urgent")).to_have_text("Urgent")
        expect(queue_rows(page).nth(2)).to_contain_text("Interpreter: Soomaali (Somali)")

        page.get_by_role("button", name="Take the next one").click()
        urgent.receive_until("state", status="active")
        expect(open_pane(page).locator('[data-fact="urgent"]')).to_have_text("Urgent")
        expect(page.locator("#queue-count")).to_have_text("2 waiting")

        # The visitor who leaves while waiting is gone from the queue at once.
        calm.send({"type": "leave"})
        expect(queue_rows(page)).to_have_count(1)
        expect(page.locator("#queue-count")).to_have_text("1 waiting")
    finally:
        for visitor in (calm, interpreter, urgent):
            visitor.close()


def test_a_long_queue_says_how_many_wait_beyond_the_rows_it_lists(daphne_server, console_page):
    from advice.models import QUEUE_SENT_TO_ADVISORS

    for _ in range(QUEUE_SENT_TO_ADVISORS + 3):
        Conversation.start_web(language="en", writer="young")
    log_in(console_page, daphne_server, advisor("alice"))
    expect(queue_rows(console_page)).to_have_count(QUEUE_SENT_TO_ADVISORS)
    expect(console_page.locator("#queue-count")).to_have_text(
        f"{QUEUE_SENT_TO_ADVISORS + 3} waiting. The first {QUEUE_SENT_TO_ADVISORS} are listed."
    )


def test_capacity_and_typed_errors_show_as_calm_notices(daphne_server, console_page):
    page = console_page
    alice = advisor("alice", capacity=2)
    bob = advisor("bob")
    log_in(page, daphne_server, alice)
    visitors = [Visitor(daphne_server) for _ in range(3)]
    try:
        expect(queue_rows(page)).to_have_count(3)
        # The server's capacity, lowered after the console said hello: the server refuses.
        AdvisorProfile.objects.filter(user=alice).update(capacity=1)
        queue_rows(page).nth(0).get_by_role("button", name="Take").click()
        expect(page.locator("#conversation-tabs li")).to_have_count(1)
        queue_rows(page).nth(0).get_by_role("button", name="Take").click()
        expect(page.locator("#notices")).to_contain_text(
            "You already have as many conversations as you can take."
        )
        expect(page.locator("#conversation-tabs li")).to_have_count(1)

        # Reloaded, the console knows the capacity: taking is switched off, and it says why.
        AdvisorProfile.objects.filter(user=alice).update(capacity=1)
        page.reload()
        expect(page.locator("#capacity")).to_have_text(
            "1 of 1 conversations You have as many conversations as you can take."
        )
        expect(page.get_by_role("button", name="Take the next one")).to_be_disabled()
        for button in queue_rows(page).get_by_role("button", name="Take").all():
            expect(button).to_be_disabled()

        # Another advisor takes one while this console is looking: it leaves the queue.
        AdvisorProfile.objects.filter(user=alice).update(capacity=3)
        page.reload()
        expect(queue_rows(page)).to_have_count(2)
        waiting = Conversation.objects.filter(status="waiting").order_by("created_at").first()

        # Bob's console on the same server: what he does shows here at once.
        bob_socket = connect(
            daphne_server.ws_url + "/ws/advisor/",
            origin=daphne_server.url,
            additional_headers={"Cookie": session_cookie(bob)},
            legacy=True,
        )
        try:
            bob_socket.send(json.dumps({"type": "take", "conversation": str(waiting.public_id)}))
            expect(queue_rows(page)).to_have_count(1)
            still_waiting = Conversation.objects.get(status="waiting")
            bob_socket.send(
                json.dumps(
                    {
                        "type": "mark_urgent",
                        "urgent": True,
                        "conversation": str(still_waiting.public_id),
                    }
                )
            )
            expect(queue_rows(page).first.locator(".tag.urgent")).to_have_text("Urgent")
        finally:
            bob_socket.close()
        assert page.problems == []
    finally:
        for visitor in visitors:
            visitor.close()


def test_several_conversations_at_once_and_how_each_ended(daphne_server, console_page):
    page = console_page
    alice = advisor("alice")
    log_in(page, daphne_server, alice)
    first = Visitor(daphne_server)
    second = Visitor(daphne_server)
    try:
        expect(queue_rows(page)).to_have_count(2)
        page.get_by_role("button", name="Take the next one").click()
        expect(page.locator("#conversation-tabs li")).to_have_count(1)
        page.get_by_role("button", name="Take the next one").click()
        expect(page.locator("#conversation-tabs li")).to_have_count(2)
        expect(page.locator("#capacity")).to_have_text("2 of 3 conversations")

        # A text in the conversation that is not open shows as unread on its tab.
        first.receive_until("state", status="active")
        first.send({"type": "send", "client_id": "f1", "text": "Are you there?"})
        first_tab = page.locator("#conversation-tabs .tab").first
        expect(first_tab.locator(".badge")).to_have_text("1 new")
        first_tab.click()
        expect(open_pane(page).locator(".entry.from-visitor .text")).to_have_text(
            ["Are you there?"]
        )
        expect(first_tab.locator(".badge")).to_be_hidden()

        # The visitors end them: each shows ended, with its reason.
        first.send({"type": "leave"})
        expect(open_pane(page).locator(".ended-banner")).to_have_text("Ended: Ended by the visitor")
        expect(first_tab).to_contain_text("ended")
        expect(page.locator("#capacity")).to_have_text("1 of 3 conversations")
        # A quick exit (the visitor's page sends this frame and a beacon).
        second.receive_until("state", status="active")
        second.send({"type": "quick_exit"})
        second_tab = page.locator("#conversation-tabs .tab").nth(1)
        expect(second_tab).to_contain_text("ended")
        second_tab.click()
        expect(open_pane(page).locator(".ended-banner")).to_have_text("Ended: Left by quick exit")
        expect(open_pane(page).locator(".entry.system").last).to_contain_text("Left by quick exit")
        expect(page.locator("#capacity")).to_have_text("0 of 3 conversations")
        assert page.problems == []
    finally:
        first.close()
        second.close()


def test_a_dropped_connection_resumes_without_loss_or_repeats(daphne_server, console_page):
    from tests.live import Daphne

    page = console_page
    alice = advisor("alice")
    log_in(page, daphne_server, alice)
    visitor = Visitor(daphne_server)
    queue_rows(page).first.get_by_role("button", name="Take").click()
    pane = open_pane(page)
    expect(pane.get_by_text("You took the conversation.")).to_be_visible()
    visitor.send({"type": "send", "client_id": "v1", "text": "before"})
    expect(pane.locator(".entry.from-visitor .text")).to_have_text(["before"])
    visitor.close()
    conversation = Conversation.objects.get()

    daphne_server.kill()
    expect(page.locator("#connection")).to_have_text("Connection lost. Reconnecting…")
    # Meanwhile the visitor writes (stored, but no server is there to ring the console) and
    # the advisor writes (it waits in the page).
    conversation.post(sender=Message.Sender.VISITOR, text="while it was down", client_id="v2")
    pane.get_by_label("Your message").fill("typed while offline")
    pane.get_by_label("Your message").press("Enter")
    expect(pane.locator(".entry.pending")).to_have_count(1)

    restarted = Daphne(port=daphne_server.port, DJANGO_ALLOW_ASYNC_UNSAFE="").start()
    try:
        expect(page.locator("#connection")).to_have_text("Connected", timeout=30_000)
        expect(pane.locator(".entry.pending")).to_have_count(0)
        expect(pane.locator(".entry .text")).to_have_text(
            ["before", "while it was down", "typed while offline"]
        )
        seqs = pane.locator(".entry[data-seq]").evaluate_all(
            "entries => entries.map(e => Number(e.dataset.seq))"
        )
        assert seqs == sorted(set(seqs))  # none twice
        stored = [m.text for m in Message.objects.filter(event="").order_by("seq")]
        assert stored == ["before", "while it was down", "typed while offline"]
    finally:
        restarted.stop()


def test_logging_out_ends_the_session_and_the_console(daphne_server, console_page):
    page = console_page
    alice = advisor("alice")
    log_in(page, daphne_server, alice)
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/advisor/login/$"))
    page.goto(daphne_server.url + "/advisor/")
    expect(page).to_have_url(re.compile(r"/advisor/login/$"))


def test_the_console_speaks_swedish_to_a_swedish_browser(daphne_server, browser):
    context = browser.new_context(locale="sv-SE")
    context.route("**/*", _local_only)
    alice = advisor("alice")
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(daphne_server.url + "/advisor/")
        expect(page.locator("html")).to_have_attribute("lang", "sv")
        expect(page.get_by_role("heading", name="Logga in")).to_be_visible()
        page.get_by_label("Användarnamn").fill("alice")
        page.get_by_label("Lösenord").fill(PASSWORD)
        page.get_by_role("button", name="Fortsätt").click()
        page.get_by_role("textbox", name="Kod").fill(totp_now(alice))
        page.get_by_role("button", name="Logga in").click()
        # The words the script shows come from the page, translated there.
        expect(page.locator("#connection")).to_have_text("Ansluten")
        expect(page.get_by_role("heading", name="Kö")).to_be_visible()
        expect(page.locator("#queue-count")).to_have_text("Ingen väntar.")
        expect(page.locator("#capacity")).to_have_text("0 av 3 samtal")
        expect(page.get_by_role("button", name="Ta nästa")).to_be_disabled()
    finally:
        context.close()


def test_sms_details_attachments_and_delivery_marks_show_when_the_server_sends_them(
    daphne_server, console_page
):
    """The SMS channel adds optional fields to the frames (a masked number, attachments,
    delivery states, "delivery" frames). The console's socket here runs through Playwright, which
    passes the real server's frames on and lets the test add such frames the way the server
    will send them."""
    page = console_page
    sockets: list[Any] = []

    def through(ws: Any) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/ws/advisor/$"), through)
    alice = advisor("alice")
    log_in(page, daphne_server, alice)
    visitor = Visitor(daphne_server)
    try:
        queue_rows(page).first.get_by_role("button", name="Take").click()
        pane = open_pane(page)
        expect(pane.get_by_text("You took the conversation.")).to_be_visible()
        conversation = Conversation.objects.get()
        summary = {**conversation.summary(), "channel": "sms", "contact": "+46 70 *** ** 12"}
        inject = sockets[-1].send

        inject(json.dumps({"type": "conversation", "conversation": summary}))
        expect(pane.locator('[data-fact="channel"]')).to_have_text("SMS +46 70 *** ** 12")
        seq = conversation.last_seq
        inject(
            json.dumps(
                {
                    "type": "message",
                    "conversation": summary["id"],
                    "seq": seq + 1,
                    "from": "visitor",
                    "sent_at": "2031-03-04T09:00:00+00:00",
                    "text": "Look",
                    "attachments": 2,
                }
            )
        )
        expect(pane.get_by_text("The sender attached 2 items (not shown).")).to_be_visible()
        inject(
            json.dumps(
                {
                    "type": "message",
                    "conversation": summary["id"],
                    "seq": seq + 2,
                    "from": "advisor",
                    "advisor": alice.pk,
                    "sent_at": "2031-03-04T09:00:05+00:00",
                    "text": "Got it",
                    "delivery": "queued",
                }
            )
        )
        mine = pane.locator(".entry.mine").filter(has_text="Got it")
        expect(mine.locator(".delivery")).to_have_text("Waiting to be sent")
        inject(
            json.dumps(
                {
                    "type": "delivery",
                    "conversation": summary["id"],
                    "seq": seq + 2,
                    "delivery": "delivered",
                }
            )
        )
        expect(mine.locator(".delivery")).to_have_text("Delivered")
        inject(
            json.dumps(
                {
                    "type": "delivery",
                    "conversation": summary["id"],
                    "seq": seq + 2,
                    "delivery": "failed",
                    "delivery_error": "The number is unreachable",
                }
            )
        )
        expect(mine.locator(".delivery")).to_have_text("Not delivered: The number is unreachable")
        # A repeated frame (same seq) is dropped, not shown twice.
        inject(
            json.dumps(
                {
                    "type": "message",
                    "conversation": summary["id"],
                    "seq": seq + 1,
                    "from": "visitor",
                    "sent_at": "2031-03-04T09:00:00+00:00",
                    "text": "Look",
                    "attachments": 2,
                }
            )
        )
        inject(
            json.dumps(
                {
                    "type": "conversation",
                    "conversation": {
                        **summary,
                        "status": "closed",
                        "end_reason": "opted_out",
                    },
                }
            )
        )
        expect(pane.locator(".ended-banner")).to_have_text("Ended: The sender texted STOP")
        expect(pane.locator(".entry .text").filter(has_text="Look")).to_have_count(1)

        # In the queue too: the channel and the masked number.
        waiting = {
            **summary,
            "id": "00000000-0000-4000-8000-000000000001",
            "status": "waiting",
            "end_reason": "",
            "advisor": None,
            "taken_at": None,
        }
        inject(json.dumps({"type": "queue", "waiting": [waiting], "average_wait_seconds": 0}))
        expect(queue_rows(page).first).to_contain_text("SMS +46 70 *** ** 12")
        assert page.problems == []
    finally:
        visitor.close()


def test_a_console_whose_session_ended_while_it_was_away_goes_to_the_login(
    daphne_server, console_page
):
    from django.contrib.sessions.models import Session

    from tests.live import Daphne

    page = console_page
    alice = advisor("alice")
    log_in(page, daphne_server, alice)
    daphne_server.kill()
    expect(page.locator("#connection")).to_have_text("Connection lost. Reconnecting…")
    Session.objects.all().delete()
    restarted = Daphne(port=daphne_server.port, DJANGO_ALLOW_ASYNC_UNSAFE="").start()
    try:
        # The socket is refused at the handshake; the page asks and finds itself logged out.
        expect(page).to_have_url(re.compile(r"/advisor/login/\?ended=revoked$"), timeout=30_000)
        expect(page.get_by_text("Your session has ended. Log in again.")).to_be_visible()
    finally:
        restarted.stop()


def test_notes_an_interpreters_link_and_the_earlier_conversation(daphne_server, console_page):
    from advice import returncodes
    from advice.models import InterpreterInvitation

    page = console_page
    alice = advisor("alice")
    # An earlier conversation, with notes, that a return code linked the new one to.
    earlier, _token, _events = Conversation.start_web(language="en", writer="young")
    earlier.take(alice)
    earlier.post(sender=Message.Sender.VISITOR, text="It is about my brother.", client_id="e1")
    earlier.close(alice, "social_services")
    returncodes.save_note(earlier, alice, "Talked about school; wants a call back.")
    log_in(page, daphne_server, alice)
    visitor = Visitor(daphne_server)
    try:
        expect(queue_rows(page)).to_have_count(1)
        Conversation.objects.filter(status="waiting").update(previous=earlier)
        queue_rows(page).first.get_by_role("button", name="Take").click()
        pane = open_pane(page)
        expect(pane.get_by_text("You took the conversation.")).to_be_visible()
        pane.get_by_text("Interpreter link, notes, earlier conversation").click()

        # The earlier conversation, read-only, with its notes.
        pane.get_by_role("button", name="Read the earlier conversation").click()
        earlier_box = pane.locator('[data-part="earlier-content"]')
        expect(earlier_box).to_contain_text("It is about my brother.")
        expect(earlier_box).to_contain_text("Notes: Talked about school; wants a call back.")
        expect(earlier_box).to_contain_text("Outcome: Referred to social services")

        # Notes on this one.
        pane.get_by_label("Notes", exact=True).fill("Calm now; safe at a friend's.")
        pane.get_by_role("button", name="Save the notes").click()
        expect(pane.locator('[data-part="notes-status"]')).to_have_text(re.compile(r"^Saved "))
        current = Conversation.objects.get(status="active")
        assert returncodes.note_of(current) == "Calm now; safe at a friend's."

        # An interpreter's link: shown once, here; withdrawn again.
        pane.get_by_role("button", name="Create a link for an interpreter").click()
        link = pane.locator('[data-part="invite-link"]')
        expect(link).to_have_value(re.compile(r"/interpreter/#.{40,}$"))
        expect(pane.locator('[data-part="invite-status"]')).to_contain_text("Link not opened yet")
        pane.get_by_role("button", name="Withdraw the invitation").click()
        expect(pane.locator('[data-part="invite-status"]')).to_have_text("Revoked")
        expect(link).to_be_hidden()
        assert InterpreterInvitation.objects.get().status == "revoked"
        expect(pane.get_by_role("button", name="Create a link for an interpreter")).to_be_visible()
        assert page.problems == []
    finally:
        visitor.close()


def test_a_supervisor_deactivates_an_advisor_in_the_admin_and_her_console_closes(
    daphne_server, console_page, browser
):
    page = console_page
    alice = advisor("alice")
    sara = advisor("sara")
    sara.is_superuser = True
    sara.save()
    log_in(page, daphne_server, alice)

    supervisor = browser.new_context(locale="en-GB")
    supervisor.route("**/*", _local_only)
    try:
        admin_page = supervisor.new_page()
        admin_page.set_default_timeout(10_000)
        # The admin's login is the advisor's: password, then the code, then back to the admin.
        admin_page.goto(daphne_server.url + "/admin/")
        expect(admin_page).to_have_url(re.compile(r"/advisor/login/\?next="))
        admin_page.get_by_label("User name").fill("sara")
        admin_page.get_by_label("Password").fill(PASSWORD)
        admin_page.get_by_role("button", name="Continue").click()
        admin_page.get_by_role("textbox", name="Code").fill(totp_now(sara))
        admin_page.get_by_role("button", name="Log in").click()
        expect(admin_page).to_have_url(re.compile(r"/admin/$"))

        admin_page.goto(f"{daphne_server.url}/admin/auth/user/{alice.pk}/change/")
        admin_page.get_by_label("Active").uncheck()
        admin_page.get_by_role("button", name="Save", exact=True).click()
        expect(admin_page.locator(".messagelist")).to_contain_text("was changed successfully")

        # Alice's console is shut and sent to the login page.
        expect(page).to_have_url(re.compile(r"/advisor/login/\?ended=revoked$"))
        alice.refresh_from_db()
        assert alice.is_active is False
    finally:
        supervisor.close()


OPEN_SOCKET = """url => new Promise(resolve => {
  const socket = new WebSocket(url);
  socket.onopen = () => { socket.close(); resolve("open"); };
  socket.onclose = () => resolve("refused");
})"""


def test_a_page_on_another_port_of_the_same_host_cannot_open_the_advisors_socket(
    daphne_server, console_page
):
    """The browser sends the advisor's cookie to every port of the host (and SameSite counts
    them as one site): only the origin check stands between such a page and the socket."""
    import http.server
    import threading

    class AnotherApp(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!doctype html><title>another app</title>")

        def log_message(self, *args: Any) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AnotherApp)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        log_in(console_page, daphne_server, advisor("alice"))
        socket_url = daphne_server.ws_url + "/ws/advisor/"
        # From the console itself the socket opens: the session is good.
        assert console_page.evaluate(OPEN_SOCKET, socket_url) == "open"
        console_page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
        assert console_page.evaluate(OPEN_SOCKET, socket_url) == "refused"
    finally:
        other.shutdown()
