"""Helpers for the visitor's browser tests: starting a chat through the real form, and an
advisor on a real WebSocket (the advisor console is another engineer's; its socket is enough)."""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from playwright.sync_api import Page, expect
from websockets.sync.client import ClientConnection, connect

from tests.factories import session_cookie


def start_chat(page: Page, server: Any, *, path: str = "/en/chat/", safe_now: str = "") -> None:
    """Fill in the chat form as a young person and start; returns once the queue place shows."""
    page.goto(server.url + path)
    page.get_by_label("A young person").check()
    if safe_now:
        page.locator(f"input[name='safe_now'][value='{safe_now}']").check()
    page.get_by_role("button", name="Start the chat").click()
    expect(page.locator("[data-queue-position]")).not_to_be_empty()


def send_message(page: Page, text: str) -> None:
    page.get_by_label("Your message").fill(text)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(
        page.locator(".message--mine:not(.message--pending)").filter(has_text=text)
    ).to_have_count(1)


def token_of(page: Page) -> str | None:
    return page.evaluate("() => sessionStorage.getItem('s')")


class Advisor:
    """An OTP-verified advisor's socket, /ws/advisor/, on the server under test."""

    def __init__(self, server: Any, user: Any) -> None:
        self.socket: ClientConnection = connect(
            server.ws_url + "/ws/advisor/",
            origin=server.url,
            additional_headers={"Cookie": session_cookie(user)},
            open_timeout=5,
            legacy=True,
        )

    def receive_until(self, frame_type: str, timeout: float = 5, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {frame_type} frame matching {match} within {timeout} s")
            frame = json.loads(self.socket.recv(timeout=remaining))
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items()):
                return frame

    def send(self, frame: dict[str, Any]) -> None:
        self.socket.send(json.dumps(frame))

    def take_first_waiting(self) -> str:
        queue = self.receive_until("queue")
        while not queue["waiting"]:
            queue = self.receive_until("queue")
        conversation = queue["waiting"][0]["id"]
        self.send({"type": "take", "conversation": conversation})
        return conversation

    def close(self) -> None:
        self.socket.close()


def neutral_page(route: Any) -> None:
    route.fulfill(
        status=200,
        content_type="text/html",
        body="<!doctype html><title>Weather</title><p>Weather</p>",
    )


QUICK_EXIT_URL = settings.QUICK_EXIT_URL
