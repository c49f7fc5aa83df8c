"""Shared Playwright fixtures: Debian's Chromium, one browser for the whole browser package, a
fresh context (own cookies and storage) for each test, and a real Daphne server.

Mark browser tests with `pytest.mark.browser`. With CI=true they must run: a missing Chromium
fails them. Elsewhere they are skipped, with the reason, when /usr/bin/chromium is missing.

Playwright's sync API marks this thread's event loop as running for as long as it is started.
So: tests in this package are synchronous (use websockets.sync for socket clients), and while
the package runs, Django's "no ORM calls inside a running event loop" guard is switched off in
the test process only (DJANGO_ALLOW_ASYNC_UNSAFE). The Daphne server under test keeps the
guard: it is started with the variable emptied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        reason = f"Chromium is not installed at {CHROMIUM} (Debian: apt install chromium)"
        if _in_ci():
            pytest.fail(f"CI=true and browser tests must run, but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def daphne_server(browser, transactional_db):
    """A real Daphne process on a free port of 127.0.0.1, on this test's database (overrides the
    fixture of tests/conftest.py only to keep Django's async guard on in the server)."""
    from tests.live import daphne

    with daphne(DJANGO_ALLOW_ASYNC_UNSAFE="") as server:
        yield server


@pytest.fixture(scope="module")
def _module_daphne(browser, django_db_setup) -> Iterator[Any]:
    from tests.live import daphne

    with daphne(DJANGO_ALLOW_ASYNC_UNSAFE="") as server:
        yield server


@pytest.fixture
def shared_server(_module_daphne, transactional_db):
    """One Daphne process for all the tests of a module (starting one takes seconds), on the
    test database, emptied after each test. For tests that stop or kill their server, use
    `daphne_server`: a process of their own."""
    return _module_daphne


def _local_only(route: Any) -> None:
    """Nothing leaves the machine: requests to anything but 127.0.0.1 are refused (tests that
    expect an outbound navigation route it themselves, before this catch-all)."""
    url = route.request.url
    if url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:")):
        route.fallback()
    else:
        route.abort()


@pytest.fixture
def context(browser) -> Iterator[Any]:
    context = browser.new_context(locale="sv-SE")
    context.route("**/*", _local_only)
    yield context
    context.close()


@pytest.fixture
def page(context) -> Iterator[Any]:
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    page.close()
