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
import time
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
def shared_server(_module_daphne, transactional_db) -> Iterator[Any]:
    """One Daphne process for all the tests of a module (starting one takes seconds), on the
    test database, emptied after each test. For tests that stop or kill their server, use
    `daphne_server`: a process of their own."""
    yield _module_daphne
    # The database is emptied next (TRUNCATE). A write the server is still finishing for this
    # test (a beacon that came late, a socket closing) would deadlock with it: wait for quiet.
    _wait_until_the_server_is_idle()


def _wait_until_the_server_is_idle(timeout: float = 10) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return  # SQLite waits for its lock instead
    quiet_since = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
            busy = cursor.fetchone()[0]
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 0.2:
            return
        time.sleep(0.02)


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
    # Generous: a loaded CI machine runs several Daphne processes and browsers at once. Tests
    # that expect something NOT to happen wait explicitly and briefly instead.
    page.set_default_timeout(20_000)
    yield page
    page.close()
