"""The visitor's pages through Django's test client, and the quick exit on the server.

Headers (SAFETY.md H-1..H-4, H-6), the quick-exit markup (QE-1), /exit/ (QE-9), what the
pages and their script must never contain (QE-10..QE-13), the interruption and safety pages
(QE-14), and the quick-exit beacon and socket frame ending a conversation (issue 4 point 3)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client

from advice.models import Conversation, ConversationEvent, Message
from tests.factories import START, advisor_socket, make_advisor, receive_until, visitor_socket

ROOT = Path(__file__).resolve().parent.parent
VISITOR_PAGES = ["/", "/en/", "/chat/", "/en/chat/", "/about/", "/en/about/"]
# Words a tab title or a history entry must not show to someone looking over a shoulder (QE-13).
TITLE_DENY_LIST = ["heder", "våld", "chatt", "chat", "hjälp", "help", "honour", "violence"]
FRONT_END = [
    *sorted((ROOT / "chat" / "static" / "chat").glob("*.js")),
    *sorted((ROOT / "templates" / "chat").glob("*.html")),
    ROOT / "templates" / "base.html",
]


class Page(HTMLParser):
    """The parts of a page these tests look at."""

    FOCUSABLE = {"a", "button", "input", "select", "textarea"}

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[dict[str, str]] = []
        self.title = ""
        self._in_title = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.elements.append((tag, attributes))
        if tag == "script":
            self.scripts.append(attributes)
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def find_all(self, tag: str, **attributes: str) -> list[dict[str, str]]:
        return [
            attrs
            for t, attrs in self.elements
            if t == tag and all(attrs.get(k.replace("_", "-")) == v for k, v in attributes.items())
        ]

    def first_focusable(self) -> tuple[str, dict[str, str]]:
        for tag, attrs in self.elements:
            if tag == "a" and "href" not in attrs:
                continue
            if tag in self.FOCUSABLE and attrs.get("type") != "hidden":
                return tag, attrs
        raise AssertionError("nothing focusable")


def get(client: Client, path: str) -> tuple[Any, Page]:
    response = client.get(path)
    assert response.status_code == 200, path
    return response, Page(response.content.decode())


def config_of(page_html: str) -> dict[str, Any]:
    match = re.search(
        r'<script id="visitor-config" type="application/json">(.*?)</script>', page_html, re.S
    )
    assert match
    return json.loads(match.group(1))


# --- headers -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*VISITOR_PAGES, "/exit/"])
def test_every_visitor_page_is_no_store_no_referrer_and_nosniff(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert response["Referrer-Policy"] == "no-referrer"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.parametrize("path", [*VISITOR_PAGES, "/exit/"])
def test_the_content_security_policy_is_strict_and_the_pages_need_no_inline_code(client, path):
    response = client.get(path)
    header = response["Content-Security-Policy"]
    policy = dict((*part.strip().split(" ", 1), "")[:2] for part in header.split(";"))
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    scripts = policy["script-src"]
    assert "'self'" in scripts
    assert "unsafe-inline" not in header
    assert "unsafe-eval" not in header
    assert not re.search(r"https?://|wss?://", header)
    # No page uses a nonce: every script is a file from 'self' or a JSON data block, so Django
    # leaves the nonce out of the header (scripts are then only 'self': stricter still).
    page = Page(response.content.decode())
    for script in page.scripts:
        assert script.get("src", "").startswith("/static/") or (
            script.get("type") == "application/json"
        ), script
    html = response.content.decode()
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)
    assert "<style" not in html


def test_two_requests_never_share_a_nonce(client):
    first = client.get("/").headers["Content-Security-Policy"]
    second = client.get("/").headers["Content-Security-Policy"]
    nonces = re.findall(r"'nonce-([^']+)'", first + second)
    assert len(nonces) == len(set(nonces))


@pytest.mark.parametrize("path", VISITOR_PAGES)
def test_a_visitor_gets_no_cookie_that_outlives_the_browser(client, path):
    response = client.get(path)
    for name, cookie in response.cookies.items():
        assert not cookie["expires"], name
        assert not cookie["max-age"], name
        assert cookie["httponly"], name
        assert cookie["samesite"] == "Strict", name


def test_exit_sets_no_cookie_at_all(client):
    assert not client.get("/exit/").cookies


def test_production_settings_add_hsts_and_secure_host_only_cookies():
    """H-6 and H-5 with HTTPS=true, in a process of their own (settings are read at start)."""
    script = """
import json, django
django.setup()
from django.test import Client
response = Client().get("/chat/", secure=True, headers={"X-Forwarded-Proto": "https"})
cookies = {name: dict(c) for name, c in response.cookies.items()}
print(json.dumps({"status": response.status_code, "headers": dict(response.headers),
                  "cookies": cookies}))
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "HTTPS": "true"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 200
    headers = answer["headers"]
    hsts = headers["Strict-Transport-Security"]
    assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 31536000
    assert "includeSubDomains" in hsts
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert list(answer["cookies"]) == ["__Host-csrftoken"]
    cookie = answer["cookies"]["__Host-csrftoken"]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
    assert cookie["path"] == "/" and not cookie["domain"]
    assert not cookie["expires"] and not cookie["max-age"]


# --- the quick-exit markup -----------------------------------------------------------------


@pytest.mark.parametrize("path", VISITOR_PAGES)
def test_every_page_has_exactly_one_quick_exit_and_a_skip_link_to_it_first(client, path):
    _response, page = get(client, path)
    [exit_link] = page.find_all("a", data_quick_exit="")
    assert exit_link["href"] == settings.QUICK_EXIT_URL
    assert {"noreferrer", "nofollow"} <= set(exit_link["rel"].split())
    tag, first = page.first_focusable()
    assert tag == "a" and "data-quick-exit-skiplink" in first
    assert first["href"] == settings.QUICK_EXIT_URL
    assert "noreferrer" in first["rel"].split()


def test_the_quick_exit_url_is_a_setting_with_a_neutral_default():
    expected = os.environ.get("QUICK_EXIT_URL", "https://www.smhi.se/")
    assert expected == settings.QUICK_EXIT_URL


def test_a_quick_exit_url_that_is_not_a_web_address_stops_the_start():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "QUICK_EXIT_URL": "javascript:void(0)",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "QUICK_EXIT_URL" in result.stderr


def test_exit_answers_200_with_clear_site_data_and_no_store(client):
    response = client.get("/exit/")
    assert response.status_code == 200  # Firefox ignores Clear-Site-Data on a redirect
    directives = {d.strip() for d in response["Clear-Site-Data"].split(",")}
    assert {'"cache"', '"cookies"', '"storage"'} <= directives
    assert "no-store" in response["Cache-Control"]
    page = Page(response.content.decode())
    [exit_link] = page.find_all("a", data_quick_exit="")
    assert exit_link["href"] == settings.QUICK_EXIT_URL
    assert page.find_all("meta", http_equiv="refresh")  # leaves without JavaScript too


# --- no traces -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "forbidden",
    [
        "serviceWorker.register",
        "Notification",
        "PushManager",
        "localStorage.setItem",
        "indexedDB.open",
        'rel="manifest"',
        "pushState",
        "new Audio",
        "<audio",
        "vibrate(",
        "document.cookie",
        "window.open(",
    ],
)
def test_the_front_end_never_uses_what_would_leave_a_trace(forbidden):
    assert FRONT_END
    for path in FRONT_END:
        assert forbidden not in path.read_text(), f"{forbidden} in {path.relative_to(ROOT)}"


def test_the_script_changes_the_title_only_at_exit_and_stores_only_the_token():
    script = (ROOT / "chat" / "static" / "chat" / "chat.js").read_text()
    assert script.count("document.title =") == 1
    assert "document.title = config.exitTitle" in script
    assert script.count("sessionStorage.setItem(") == 1
    assert "sessionStorage.setItem(TOKEN_KEY, token)" in script
    assert "history.replaceState" not in script  # not even that: the chat is one page
    assert "location.replace(config.exitUrl)" in script


# What the chat form may ask (issue 2 point 1, issue 4 points 10 and 15). Nothing else: no name,
# e-mail, phone or free-text identity field (QE-12, D-6).
ASKED = {"language", "writer", "interpreter_needed", "interpreter_language", "county", "safe_now"}
ASKED_LATER = {"interpreter_outside_community", "interpreter_gender", "return_code"}
# The only text a visitor types outside the chat itself: a return code of three random words.
TEXT_FIELDS = {"return_code"}


def test_the_chat_form_asks_only_the_listed_questions_and_autocompletes_nothing(client):
    _response, page = get(client, "/en/chat/")
    fields = [(tag, attrs) for tag, attrs in page.elements if tag in ("input", "select")]
    names = {attrs["name"] for _tag, attrs in fields}
    assert ASKED <= names <= ASKED | ASKED_LATER
    for form in page.find_all("form"):
        assert form["autocomplete"] == "off"
    [textarea] = page.find_all("textarea")
    assert textarea["name"] == "message"
    assert textarea["autocomplete"] == "off"
    assert int(textarea["maxlength"]) == settings.MAX_MESSAGE_LENGTH
    for tag, attrs in fields:
        kind = attrs.get("type", "text")
        assert kind not in ("email", "tel", "password", "url"), attrs
        if tag == "input" and kind not in ("radio", "checkbox"):
            assert attrs["name"] in TEXT_FIELDS, attrs
            assert attrs["autocomplete"] == "off"


def test_the_chat_form_offers_the_service_languages_and_the_21_counties(client):
    _response, page = get(client, "/en/chat/")
    languages = [o["value"] for o in page.find_all("option") if "data-url" in o]
    assert languages == [code for code, _name in settings.LANGUAGES]
    county_select = re.search(
        r'<select id="county".*?</select>', client.get("/en/chat/").content.decode(), re.S
    ).group(0)
    assert county_select.count("<option") == 22  # 21 län and "I'd rather not say"


@pytest.mark.parametrize("path", VISITOR_PAGES)
def test_the_title_and_favicon_are_static_and_neutral(client, path):
    _response, page = get(client, path)
    assert page.title == settings.VISITOR_PAGE_TITLE
    for word in TITLE_DENY_LIST:
        assert word not in page.title.lower()
    [icon] = page.find_all("link", rel="icon")
    assert icon["href"] == "/static/chat/favicon.svg"


def test_the_favicon_is_our_own_small_svg():
    icon = (ROOT / "chat" / "static" / "chat" / "favicon.svg").read_text()
    assert icon.startswith("<svg") and "http://www.w3.org/2000/svg" in icon
    assert "<text" not in icon and "<image" not in icon and "href" not in icon


# --- the interruption page and the safety page (QE-14) -------------------------------------


def test_the_start_page_explains_the_exit_and_that_history_stays_before_the_chat(client):
    response, page = get(client, "/en/")
    text = response.content.decode()
    assert "Exit this page" in text
    assert "Shift key 3 times" in text
    assert "history is not erased" in text
    hrefs = [a.get("href") for a in page.find_all("a")]
    assert "/en/about/" in hrefs
    assert "/en/chat/" in hrefs


def test_the_chat_form_repeats_the_exit_and_history_warning(client):
    text = client.get("/en/chat/").content.decode()
    assert "Shift key 3 times" in text and "history is not erased" in text


def test_the_safety_page_says_what_the_service_keeps_and_how_to_browse_privately(client):
    text = client.get("/en/about/").content.decode()
    for phrase in (
        "private window",
        "IP address",
        "keeps the conversation",
        "Close the tab",
        "112",
        "020-50 50 50",
        "116 111",
    ):
        assert phrase in text, phrase


def test_the_pages_speak_swedish_by_default_and_the_script_gets_its_words_translated(client):
    response, _page = get(client, "/chat/")
    html = response.content.decode()
    assert '<html lang="sv"' in html
    assert "Lämna sidan" in html
    strings = config_of(html)["strings"]
    assert strings["shiftTwoMore"] != "Shift, press 2 more times to exit."
    assert strings["positionNext"] != "You are next in the queue."
    english = config_of(client.get("/en/chat/").content.decode())
    assert english["strings"]["positionNext"] == "You are next in the queue."
    assert english["chat"] == {
        "socketPath": "/ws/chat/",
        "language": "en",
        "maxLength": settings.MAX_MESSAGE_LENGTH,
    }


# --- the quick-exit beacon ----------------------------------------------------------------


@pytest.fixture
def browser_client() -> Client:
    """A client that, like a browser, must pass the CSRF check."""
    return Client(enforce_csrf_checks=True)


def beacon(client: Client, token: str | None, *, csrf: bool = True) -> Any:
    html = client.get("/en/chat/").content.decode()
    data = {"token": token} if token is not None else {}
    if csrf:
        data["csrfmiddlewaretoken"] = config_of(html)["csrfToken"]
    return client.post("/exit/", data, headers={"Origin": "http://testserver"})


def start_conversation(**options: Any) -> tuple[Conversation, str]:
    conversation, token, _events = Conversation.start_web(language="en", writer="young", **options)
    return conversation, token


@pytest.mark.django_db(transaction=True)
def test_the_beacon_ends_a_waiting_conversation_as_quick_exit_and_revokes_the_token(
    browser_client,
):
    conversation, token = start_conversation()
    response = beacon(browser_client, token)
    assert response.status_code == 200
    assert response.json() == {"status": "ended"}
    assert '"storage"' in response["Clear-Site-Data"]
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.ABANDONED
    assert conversation.end_reason == Conversation.EndReason.QUICK_EXIT
    assert conversation.token_hash is None
    event = conversation.events.get(kind=ConversationEvent.Kind.ABANDONED)
    assert event.data == {"reason": "quick_exit"}
    left = conversation.messages.get(event=Message.Event.VISITOR_LEFT)
    assert left.data == {"reason": "quick_exit"}


@pytest.mark.django_db(transaction=True)
def test_a_second_beacon_with_the_same_token_is_refused_and_changes_nothing(browser_client, caplog):
    conversation, token = start_conversation()
    assert beacon(browser_client, token).status_code == 200
    events, messages = conversation.events.count(), conversation.messages.count()
    with caplog.at_level(logging.INFO):
        second = beacon(browser_client, token)
        browser_client.get("/en/no-such-page/")
    assert second.status_code == 404
    assert second.json()["code"] == "invalid_token"
    assert (conversation.events.count(), conversation.messages.count()) == (events, messages)
    # The usual end of a quick exit (the frame ended it, then the beacon came) leaves no log
    # line; another page's 404 still does.
    logged = [r.getMessage() for r in caplog.records if r.name == "django.request"]
    assert logged == ["Not Found: /en/no-such-page/"]


@pytest.mark.django_db(transaction=True)
def test_the_beacon_ends_an_active_conversation_and_its_advisor_is_told(browser_client):
    advisor = make_advisor("alice")
    conversation, token = start_conversation()
    conversation.take(advisor)
    assert beacon(browser_client, token).status_code == 200
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.CLOSED
    assert conversation.end_reason == Conversation.EndReason.QUICK_EXIT
    assert conversation.messages.filter(
        event=Message.Event.VISITOR_LEFT, data__reason="quick_exit"
    ).exists()


@pytest.mark.django_db(transaction=True)
def test_a_beacon_after_the_advisor_closed_still_revokes_the_token(browser_client):
    advisor = make_advisor("alice")
    conversation, token = start_conversation()
    conversation.take(advisor)
    conversation.close(advisor, "advice_given")
    assert beacon(browser_client, token).status_code == 200
    conversation.refresh_from_db()
    assert conversation.end_reason == Conversation.EndReason.ADVISOR_CLOSED
    assert conversation.token_hash is None


@pytest.mark.django_db(transaction=True)
def test_the_beacon_must_pass_the_csrf_check(browser_client):
    conversation, token = start_conversation()
    response = beacon(browser_client, token, csrf=False)
    assert response.status_code == 403
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.WAITING
    assert conversation.token_hash


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("token", [None, "", "not-a-token", "x" * 500])
def test_a_beacon_without_a_valid_token_gets_a_typed_error(browser_client, token):
    conversation, _token = start_conversation()
    response = beacon(browser_client, token)
    assert response.status_code in (400, 404)
    assert response.json()["code"] in ("missing_field", "invalid_token")
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.WAITING


def test_exit_answers_only_get_and_post(client):
    assert client.put("/exit/").status_code == 405


def test_the_twilio_views_stay_the_only_csrf_exempt_ones():
    from chat import views

    for name in ("start", "safety", "chat", "exit_page"):
        assert not getattr(getattr(views, name), "csrf_exempt", False)


# --- the quick-exit socket frame ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_quick_exit_frame_ends_the_conversation_closes_the_socket_and_tells_the_advisor():
    advisor = await database_sync_to_async(make_advisor)("alice")
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    token = (await receive_until(visitor, "started"))["token"]
    console, connected = await advisor_socket(advisor)
    assert connected
    queue = await receive_until(console, "queue")
    conversation_id = queue["waiting"][0]["id"]
    await console.send_json_to({"type": "take", "conversation": conversation_id})
    await receive_until(visitor, "state", status="active")

    await visitor.send_json_to({"type": "quick_exit"})
    output = await visitor.receive_output(timeout=3)
    while output["type"] == "websocket.send":  # what was on its way before the exit
        output = await visitor.receive_output(timeout=3)
    assert output == {"type": "websocket.close", "code": 4000}
    left = await receive_until(
        console, "message", conversation=conversation_id, event="visitor_left"
    )
    assert left["data"] == {"reason": "quick_exit"}
    ended = await receive_until(console, "conversation")
    assert ended["conversation"]["end_reason"] == "quick_exit"

    again = await visitor_socket()
    await again.send_json_to({"type": "resume", "token": token, "last_seq": 0})
    error = await receive_until(again, "error")
    assert error["code"] == "invalid_token"
    await again.disconnect()
    await console.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_quick_exit_frame_before_any_conversation_is_a_typed_error():
    visitor = await visitor_socket()
    await visitor.send_json_to({"type": "quick_exit"})
    error = await receive_until(visitor, "error")
    assert (error["code"], error["ref"]) == ("no_conversation", "quick_exit")
    await visitor.disconnect()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/en/",
        "/en/chat/",
        "/en/about/",
        "/exit/",
        "/interpreter/",
        "/advisor/",
        "/advisor/login/",
        "/admin/login/",
    ],
)
def test_head_answers_wherever_get_does(browser_client, url):
    """Uptime monitors and link checkers ask with HEAD: the same status and headers, no body."""
    got = browser_client.get(url)
    head = browser_client.head(url)
    assert got.status_code in (200, 302)
    assert head.status_code == got.status_code
    assert head.get("Location") == got.get("Location")
    assert head["Cache-Control"] == got["Cache-Control"]
    assert head.content == b""
