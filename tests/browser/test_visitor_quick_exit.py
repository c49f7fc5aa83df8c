"""Quick exit and traces in real Chromium against a real Daphne (issue 4 points 1-6, SAFETY.md
QE-2..QE-8). The neutral site is never reached: its navigation is intercepted here, and the
context refuses anything that is not 127.0.0.1."""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import expect
from websockets.sync.client import connect

from advice.models import Conversation
from tests.browser.visitor import (
    QUICK_EXIT_URL,
    Advisor,
    neutral_page,
    send_message,
    start_chat,
    token_of,
)
from tests.factories import make_advisor

pytestmark = pytest.mark.browser

EXIT_PATTERN = QUICK_EXIT_URL + "**"


def eventually(query, timeout: float = 5):
    """The server works on after the page has gone: wait (without asserting on how long) for
    the database to show it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return query()
        except Conversation.DoesNotExist:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def press_shift(page, times: int = 1) -> None:
    for _ in range(times):
        page.keyboard.press("Shift")


def in_a_chat_with_an_advisor(page, server):
    """A visitor in an active conversation with two messages on screen; returns the advisor."""
    advisor = Advisor(server, make_advisor("alice"))
    start_chat(page, server)
    conversation = advisor.take_first_waiting()
    send_message(page, "hemligt ett")
    advisor.send(
        {"type": "send", "conversation": conversation, "client_id": "a1", "text": "hemligt svar"}
    )
    expect(page.get_by_text("hemligt svar")).to_be_visible()
    return advisor, conversation


def test_the_skip_link_to_the_exit_is_the_first_thing_the_keyboard_reaches(shared_server, page):
    for path in ("/", "/chat/", "/about/", "/en/chat/"):
        page.goto(shared_server.url + path)
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => [document.activeElement.hasAttribute('data-quick-exit-skiplink'),"
            " document.activeElement.href]"
        )
        assert focused == [True, QUICK_EXIT_URL], path
        expect(page.locator("[data-quick-exit-skiplink]")).to_be_in_viewport()


def test_the_exit_button_works_without_javascript(shared_server, browser):
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        context.route(
            "**/*",
            lambda route: (
                route.fallback()
                if route.request.url.startswith("http://127.0.0.1:")
                else route.abort()
            ),
        )
        page.route(EXIT_PATTERN, neutral_page)
        page.goto(shared_server.url + "/chat/")
        page.locator("a[data-quick-exit]").click()
        page.wait_for_url(QUICK_EXIT_URL)
        assert page.title() == "Weather"
    finally:
        context.close()


def test_the_exit_button_stays_in_view_when_the_page_scrolls(shared_server, page):
    page.set_viewport_size({"width": 320, "height": 480})
    page.goto(shared_server.url + "/about/")
    page.mouse.wheel(0, 3000)
    page.wait_for_function("() => window.scrollY > 0")
    expect(page.locator("a[data-quick-exit]")).to_be_in_viewport()


def test_three_shifts_leave_at_once_by_replacing_the_page(shared_server, page):
    page.route(EXIT_PATTERN, neutral_page)
    start_chat(page, shared_server)
    history_length = page.evaluate("() => history.length")
    with page.expect_request(EXIT_PATTERN) as request:
        press_shift(page, 3)
    assert request.value.is_navigation_request()
    page.wait_for_url(QUICK_EXIT_URL)
    assert page.evaluate("() => history.length") == history_length


def test_a_tap_on_the_exit_button_leaves_too(shared_server, page):
    page.route(EXIT_PATTERN, neutral_page)
    start_chat(page, shared_server)
    history_length = page.evaluate("() => history.length")
    page.get_by_role("link", name="Exit this page").last.click()
    page.wait_for_url(QUICK_EXIT_URL)
    assert page.evaluate("() => history.length") == history_length
    conversation = eventually(lambda: Conversation.objects.get(end_reason="quick_exit"))
    assert conversation.status == Conversation.Status.ABANDONED


def test_shift_as_a_modifier_or_interrupted_does_not_exit(shared_server, page):
    requests = []
    page.route(EXIT_PATTERN, lambda route: (requests.append(route.request.url), route.abort()))
    page.goto(shared_server.url + "/en/chat/")

    # Shift+A three times: Shift is a modifier, never a press of its own.
    for _ in range(3):
        page.keyboard.press("Shift+A")
    # Shift, x, Shift, Shift: the x starts the count again.
    press_shift(page)
    page.keyboard.press("x")
    press_shift(page, 2)
    page.wait_for_timeout(300)  # room for a navigation that must not come
    assert requests == []
    assert page.url.endswith("/en/chat/")


def test_more_than_five_seconds_between_shifts_starts_the_count_again(shared_server, page):
    requests = []
    page.route(EXIT_PATTERN, lambda route: (requests.append(route.request.url), route.abort()))
    page.clock.install()
    page.goto(shared_server.url + "/en/chat/")
    press_shift(page, 2)
    page.clock.fast_forward(5_100)
    press_shift(page)
    page.wait_for_timeout(300)
    assert requests == []
    expect(page.locator("[data-quick-exit-status]")).to_have_text(
        "Shift, press 2 more times to exit."
    )
    # Within the window, three do leave.
    with page.expect_request(EXIT_PATTERN):
        press_shift(page, 2)


# Runs in the page before its own script (before <html> exists, hence observing the document).
# When the quick exit marks the page as exiting, it
# reports what is left of the page once the exit's task is over (observers run right after it),
# while the navigation to the neutral site is still held. (Playwright's own evaluate() waits
# for a pending navigation to finish, so the page has to tell.)
REPORT_AFTER_EXIT = """
new MutationObserver((changes, observer) => {
  if (!document.documentElement.classList.contains('is-exiting')) return;
  observer.disconnect();
  window.reportAfterExit({
    html: document.documentElement.outerHTML,
    text: document.documentElement.textContent,
    title: document.title,
    bodyChildren: document.body.childElementCount,
    rendered: document.body.innerText,
  });
}).observe(document, {attributes: true, subtree: true, attributeFilter: ['class']});
"""


def test_while_the_neutral_site_loads_no_message_text_is_left_and_the_title_is_neutral(
    shared_server, page
):
    held, reports = [], []
    page.route(EXIT_PATTERN, lambda route: held.append(route))  # never answered
    page.expose_binding("reportAfterExit", lambda _source, report: reports.append(report))
    page.add_init_script(REPORT_AFTER_EXIT)
    advisor, _conversation = in_a_chat_with_an_advisor(page, shared_server)
    try:
        with page.expect_request(EXIT_PATTERN):
            press_shift(page, 3)
        deadline = time.monotonic() + 5
        while not reports and time.monotonic() < deadline:
            page.wait_for_timeout(20)
        [report] = reports
        assert "hemligt" not in report["html"]
        assert "hemligt" not in report["text"]
        assert report["bodyChildren"] == 0
        assert report["rendered"] == ""  # nothing for the accessibility tree either
        assert report["title"] == "www.smhi.se"
    finally:
        for route in held:
            route.abort()
        advisor.close()


def test_back_after_an_exit_never_shows_the_chat(shared_server, page):
    page.route("https://search.example/**", neutral_page)
    page.route(EXIT_PATTERN, neutral_page)
    page.goto("https://search.example/results")
    page.goto(shared_server.url + "/en/")
    page.get_by_role("link", name="Go to the chat").click()
    page.wait_for_url("**/en/chat/")
    advisor, _conversation = in_a_chat_with_an_advisor(page, shared_server)
    try:
        press_shift(page, 3)
        page.wait_for_url(QUICK_EXIT_URL)
        page.go_back()
        page.wait_for_load_state()
        # The site was one history entry, and the exit replaced it: Back leaves the site.
        assert page.url == "https://search.example/results"
        assert "hemligt" not in page.content()
    finally:
        advisor.close()


def test_coming_back_to_the_chat_loads_it_afresh_instead_of_restoring_the_old_page(
    shared_server, page
):
    """Not after an exit (the chat is gone from history then), but after leaving it normally:
    the old page, with its messages, never comes back as it was. Chromium may or may not keep
    a no-store page in its back/forward cache; either way the page that shows is a new one
    (pagehide empties the old one and closes its socket; a restore reloads on pageshow)."""
    page.route("https://elsewhere.example/**", neutral_page)
    advisor, _conversation = in_a_chat_with_an_advisor(page, shared_server)
    try:
        page.evaluate("() => { window.__marker = 1; }")
        page.goto("https://elsewhere.example/")
        page.go_back()
        page.wait_for_load_state()
        # Either a fresh load (the marker is gone) that picks the conversation up again from
        # the server, or a restore that reloads: never the old page as it was.
        expect(page.get_by_text("hemligt svar")).to_be_visible()
        assert page.evaluate("() => window.__marker") is None
    finally:
        advisor.close()


def test_after_an_exit_nothing_is_left_in_the_browser(shared_server, page):
    page.route(EXIT_PATTERN, neutral_page)
    start_chat(page, shared_server)
    send_message(page, "hemligt")
    press_shift(page, 3)
    page.wait_for_url(QUICK_EXIT_URL)
    page.goto(shared_server.url + "/en/")
    assert page.evaluate("() => sessionStorage.length") == 0
    assert page.evaluate("() => localStorage.length") == 0
    assert page.evaluate("async () => (await indexedDB.databases()).length") == 0
    assert (
        page.evaluate("async () => (await navigator.serviceWorker.getRegistrations()).length") == 0
    )
    assert page.evaluate("() => 'Notification' in window ? Notification.permission : 'none'") in (
        "default",
        "none",
    )


def test_the_advisor_sees_the_quick_exit_and_the_old_token_cannot_reconnect(shared_server, page):
    page.route(EXIT_PATTERN, neutral_page)
    advisor, conversation = in_a_chat_with_an_advisor(page, shared_server)
    token = token_of(page)
    try:
        pressed = time.monotonic()
        press_shift(page, 3)
        left = advisor.receive_until("message", conversation=conversation, event="visitor_left")
        latency = time.monotonic() - pressed
        print(f"advisor saw the quick exit {latency * 1000:.0f} ms after the third Shift")
        assert left["data"]["reason"] == "quick_exit"
        ended = advisor.receive_until("conversation")
        assert ended["conversation"]["end_reason"] == "quick_exit"
    finally:
        advisor.close()
    stored = Conversation.objects.get(public_id=conversation)
    assert stored.end_reason == Conversation.EndReason.QUICK_EXIT
    assert stored.token_hash is None

    with connect(shared_server.ws_url + "/ws/chat/", origin=shared_server.url) as visitor:
        visitor.send(json.dumps({"type": "resume", "token": token, "last_seq": 0}))
        frame = json.loads(visitor.recv(timeout=5))
        assert frame["type"] == "error" and frame["code"] == "invalid_token"


def test_an_exit_from_a_page_without_the_chat_still_ends_the_conversation(shared_server, page):
    """On the safety page there is no socket: the keep-alive POST to /exit/ alone ends the
    conversation, passing the CSRF check with the browser-session cookie."""
    page.route(EXIT_PATTERN, neutral_page)
    start_chat(page, shared_server)
    page.get_by_role("link", name="Staying safer online, and what we keep").click()
    page.wait_for_url("**/en/about/")
    page.get_by_role("link", name="Exit this page").last.click()
    page.wait_for_url(QUICK_EXIT_URL)
    conversation = eventually(lambda: Conversation.objects.get(end_reason="quick_exit"))
    assert conversation.status == Conversation.Status.ABANDONED
    assert conversation.token_hash is None
