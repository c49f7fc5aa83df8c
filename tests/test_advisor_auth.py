"""The advisor's way in: password, then TOTP (enrolling on the first login), for the console's
pages, its socket and the admin; and the way out: logout, idle and absolute session limits,
deactivated accounts. SAFETY.md O-1 … O-10, C-3, C-4."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import AsyncClient, Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from advice.models import Conversation, Message
from console.auth import AUTHENTICATED_AT, LAST_ACTIVE_AT
from console.consumers import ACTIVITY_WRITE_INTERVAL
from tests.factories import (
    PASSWORD,
    SAME_ORIGIN,
    START,
    application,
    make_advisor,
    receive_until,
    session_cookie,
    totp_now,
    visitor_socket,
)

LOGIN = "/advisor/login/"
VERIFY = "/advisor/verify/"
ENROL = "/advisor/enrol/"
CONSOLE = "/advisor/"
LOGOUT = "/advisor/logout/"
# The steps of the way in answer without a verified session (that is what they are for).
LOGIN_STEPS = {LOGIN, VERIFY, ENROL}
# A moment in the middle of a 30-second TOTP step, so a test's codes do not change under it.
T0 = datetime(2031, 3, 4, 9, 0, 10, tzinfo=UTC)


# --- helpers -------------------------------------------------------------------------------


def english_client() -> Client:
    """A browser that asks for English: the advisor side follows Accept-Language (sv or en),
    and these tests read the English words."""
    return Client(headers={"accept-language": "en"})


def log_in_with_password(client: Client, user: Any) -> Any:
    return client.post(LOGIN, {"username": user.get_username(), "password": PASSWORD})


def log_in_fully(client: Client, user: Any) -> None:
    """Password and TOTP, through the pages, as an advisor does it."""
    assert log_in_with_password(client, user)["Location"] == VERIFY
    response = client.post(VERIFY, {"otp_token": totp_now(user)})
    assert response.status_code == 302, response.content.decode()[:500]
    assert client.get(CONSOLE).status_code == 200


def session_key_of(client: Client) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def codes_around_now(device: TOTPDevice) -> set[str]:
    """The codes the device accepts now (one step of tolerance either side)."""
    now = time.time()
    codes = set()
    for offset in (-1, 0, 1):
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        totp.time = now + offset * device.step
        codes.add(f"{totp.token():0{device.digits}d}")
    return codes


def a_wrong_code(user: Any) -> str:
    device = TOTPDevice.objects.get(user=user)
    accepted = codes_around_now(device)
    return next(f"{n:06d}" for n in range(1000) if f"{n:06d}" not in accepted)


def advisor_urls() -> list[str]:
    """Every page under /advisor/, from the URLconf (O-2)."""
    found: list[str] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for entry in patterns:
            route = str(entry.pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + route)
            elif isinstance(entry, URLPattern) and "<" not in route and "(" not in route:
                found.append("/" + prefix + route)

    walk(get_resolver().url_patterns, "")
    return sorted(u for u in found if u.startswith(CONSOLE) and u != LOGOUT)


def admin_urls(objects: dict[type, Any]) -> list[str]:
    """Every admin page for every registered model (with an object where one is needed),
    from the admin site's own registry."""
    urls = [
        reverse("admin:index"),
        reverse("admin:password_change"),
        reverse("admin:password_change_done"),
        reverse("admin:jsi18n"),
    ]
    app_labels = set()
    for model in admin.site._registry:
        opts = model._meta
        app_labels.add(opts.app_label)
        name = f"admin:{opts.app_label}_{opts.model_name}"
        urls += [reverse(f"{name}_changelist"), reverse(f"{name}_add")]
        obj = objects.get(model)
        if obj is not None:
            urls += [
                reverse(f"{name}_{view}", args=[obj.pk]) for view in ("change", "history", "delete")
            ]
    urls += [reverse("admin:app_list", args=[label]) for label in sorted(app_labels)]
    user_model = next(m for m in objects if m._meta.model_name == "user")
    urls.append(reverse("admin:auth_user_password_change", args=[objects[user_model].pk]))
    return urls


def admin_action_of(url: str) -> tuple[Any, str]:
    match = resolve(url)
    app_label, model_name, action = match.url_name.rsplit("_", 2)[-3:]
    model = apps.get_model(app_label, model_name)
    return admin.site._registry[model], action


def refused(response: Any) -> bool:
    """A page that refuses: a redirect to a step of the way in, or 403."""
    if response.status_code == 403:
        return True
    location = response.get("Location", "")
    return response.status_code == 302 and location.split("?")[0] in LOGIN_STEPS | {
        reverse("admin:login")
    }


@pytest.fixture
def supervisor(db):
    user = make_advisor("sara")
    user.is_superuser = True
    user.save()
    return user


@pytest.fixture
def some_objects(supervisor):
    conversation, _token, _events = Conversation.start_web(language="sv", writer="young")
    return {type(supervisor): supervisor, Conversation: conversation}


# --- O-1, O-7, O-10 ------------------------------------------------------------------------


def test_the_otp_middleware_runs_after_authentication_and_before_the_session_limits():
    middleware = settings.MIDDLEWARE
    auth = middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware")
    otp = middleware.index("django_otp.middleware.OTPMiddleware")
    limits = middleware.index("console.middleware.AdvisorSessionMiddleware")
    assert auth < otp < limits


def test_the_admin_is_an_otp_admin_site_and_no_static_backup_codes_are_installed():
    from django_otp.admin import OTPAdminSite

    assert isinstance(admin.site, OTPAdminSite)
    # O-10: static backup codes would be stored in plain text; the project has none.
    apps = settings.INSTALLED_APPS
    assert not any(app.startswith("django_otp.plugins.otp_static") for app in apps)


# --- O-2: every advisor and admin page needs a verified session ----------------------------


def test_the_url_enumeration_finds_the_console_and_the_admin(some_objects):
    assert CONSOLE in advisor_urls()
    urls = admin_urls(some_objects)
    conversation = some_objects[Conversation]
    assert reverse("admin:advice_conversation_change", args=[conversation.pk]) in urls


def test_every_advisor_and_admin_page_refuses_an_anonymous_visitor(some_objects):
    client = english_client()
    for url in advisor_urls():
        response = client.get(url)
        if url == LOGIN:
            assert response.status_code == 200
        else:
            assert refused(response), (url, response.status_code, response.get("Location"))
            assert response.get("Location", "").startswith(LOGIN), url
    for url in admin_urls(some_objects):
        response = client.get(url)
        assert refused(response), (url, response.status_code, response.get("Location"))


def test_every_advisor_and_admin_page_refuses_a_session_with_only_the_password(
    supervisor, some_objects
):
    client = english_client()
    assert log_in_with_password(client, supervisor)["Location"] == VERIFY
    for url in advisor_urls():
        response = client.get(url)
        if url == VERIFY:
            assert response.status_code == 200  # the step this session is at
        else:
            assert refused(response), (url, response.status_code, response.get("Location"))
            assert response["Location"] == VERIFY, url
    for url in admin_urls(some_objects):
        response = client.get(url)
        assert refused(response), (url, response.status_code, response.get("Location"))


def test_every_advisor_and_admin_page_opens_for_a_verified_session(supervisor, some_objects):
    client = english_client()
    log_in_fully(client, supervisor)
    for url in advisor_urls():
        response = client.get(url)
        if url in LOGIN_STEPS:
            assert response.status_code == 302 and response["Location"] == CONSOLE, url
        else:
            assert response.status_code == 200, url
    as_superuser = RequestFactory().get("/admin/")
    as_superuser.user = supervisor
    for url in admin_urls(some_objects):
        response = client.get(url)
        if response.status_code == 403:
            # Only where the admin lets nobody, not even a superuser (read-only models).
            model_admin, action = admin_action_of(url)
            assert action in ("add", "delete"), url
            assert not getattr(model_admin, f"has_{action}_permission")(as_superuser), url
            continue
        assert response.status_code == 200, (url, response.status_code, response.get("Location"))


def test_the_admin_sends_its_login_through_the_advisor_login_and_back(supervisor):
    client = english_client()
    response = client.get("/admin/", follow=True)
    assert response.redirect_chain[-1][0].startswith(LOGIN)
    assert "next=%2Fadmin%2F" in response.redirect_chain[-1][0]
    response = client.post(
        LOGIN, {"username": supervisor.username, "password": PASSWORD, "next": "/admin/"}
    )
    assert response["Location"] == VERIFY
    response = client.post(VERIFY, {"otp_token": totp_now(supervisor)})
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_the_login_ignores_a_next_address_on_another_site(advisor):
    client = english_client()
    client.post(LOGIN, {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"})
    response = client.post(VERIFY, {"otp_token": totp_now(advisor)})
    assert response["Location"] == CONSOLE


def test_a_wrong_password_is_refused_and_starts_no_session(advisor):
    client = english_client()
    response = client.post(LOGIN, {"username": "alice", "password": "wrong password"})
    assert response.status_code == 200
    assert client.get(CONSOLE)["Location"] == LOGIN


# --- O-3, O-6: enrolment ---------------------------------------------------------------------


def test_a_new_advisor_enrols_a_device_that_stays_unconfirmed_until_a_right_code(db, caplog):
    caplog.set_level(logging.DEBUG)
    user = make_advisor("nina")
    TOTPDevice.objects.filter(user=user).delete()
    client = english_client()
    assert log_in_with_password(client, user)["Location"] == ENROL
    assert client.get(CONSOLE)["Location"] == ENROL
    assert client.get(VERIFY)["Location"] == ENROL

    page = client.get(ENROL)
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]  # O-6
    html = page.content.decode()
    assert "<svg" in html  # drawn here, no outside QR service
    assert not re.search(r'<img[^>]+src="https?:', html)
    device = TOTPDevice.objects.get(user=user)
    assert device.confirmed is False
    secret = "".join(re.search(r'<p class="secret"><code>(.*?)</code>', html).group(1).split())
    secret = re.sub(r"</?span>", "", secret)
    from base64 import b32encode

    assert secret == b32encode(device.bin_key).decode().rstrip("=")
    # The same device (and QR code) on a reload, not a new one each time.
    client.get(ENROL)
    assert TOTPDevice.objects.filter(user=user).count() == 1

    response = client.post(ENROL, {"otp_token": a_wrong_code(user)})
    assert response.status_code == 200
    assert "not right" in response.content.decode()
    device.refresh_from_db()
    assert device.confirmed is False
    assert client.get(CONSOLE)["Location"] == ENROL

    # After the throttle's delay, the right code confirms the device and verifies the session.
    device.throttling_failure_timestamp = None
    device.throttling_failure_count = 0
    device.save()
    response = client.post(ENROL, {"otp_token": totp_now(user)})
    assert response["Location"] == CONSOLE
    device.refresh_from_db()
    assert device.confirmed is True
    assert client.get(CONSOLE).status_code == 200
    # O-6: the secret never reaches a log line.
    assert all(
        device.key not in r.getMessage() and secret not in r.getMessage() for r in caplog.records
    )


def test_an_unconfirmed_device_cannot_verify_a_login(db):
    user = make_advisor("olle", confirmed=False)
    device = TOTPDevice.objects.get(user=user)
    client = english_client()
    assert log_in_with_password(client, user)["Location"] == ENROL
    # Posting straight to the verify step with the unconfirmed device and its right code:
    response = client.post(
        VERIFY, {"otp_device": device.persistent_id, "otp_token": totp_now(user)}
    )
    assert response["Location"] == ENROL
    assert client.get(CONSOLE)["Location"] == ENROL


# --- O-4, O-5: codes are single-use and throttled ------------------------------------------


def test_the_same_code_cannot_be_used_twice(advisor):
    with time_machine.travel(T0, tick=False) as traveller:
        code = totp_now(advisor)
        first = english_client()
        log_in_with_password(first, advisor)
        assert first.post(VERIFY, {"otp_token": code})["Location"] == CONSOLE

        second = english_client()
        log_in_with_password(second, advisor)
        response = second.post(VERIFY, {"otp_token": code})
        assert response.status_code == 200
        assert second.get(CONSOLE)["Location"] == VERIFY

        # The next step's code works: it was the reuse that was refused.
        traveller.shift(30)
        assert second.post(VERIFY, {"otp_token": totp_now(advisor)})["Location"] == CONSOLE


def test_after_a_wrong_code_even_the_right_one_waits_for_the_throttle(advisor):
    with time_machine.travel(T0, tick=False) as traveller:
        client = english_client()
        log_in_with_password(client, advisor)
        response = client.post(VERIFY, {"otp_token": a_wrong_code(advisor)})
        assert "not right" in response.content.decode()

        response = client.post(VERIFY, {"otp_token": totp_now(advisor)})
        assert response.status_code == 200
        assert "Too many wrong codes" in response.content.decode()
        assert client.get(CONSOLE)["Location"] == VERIFY

        traveller.shift(2)  # one failure: a delay of one second
        assert client.post(VERIFY, {"otp_token": totp_now(advisor)})["Location"] == CONSOLE


# --- O-8: the session key changes at each step ----------------------------------------------


def test_the_session_key_changes_at_the_password_and_again_at_the_code(advisor):
    planted = SessionStore()
    planted["planted"] = True
    planted.create()
    client = english_client()
    client.cookies[settings.SESSION_COOKIE_NAME] = planted.session_key

    log_in_with_password(client, advisor)
    after_password = session_key_of(client)
    assert after_password != planted.session_key
    assert not Session.objects.filter(session_key=planted.session_key).exists()

    client.post(VERIFY, {"otp_token": totp_now(advisor)})
    after_code = session_key_of(client)
    assert after_code != after_password
    assert not Session.objects.filter(session_key=after_password).exists()
    assert client.get(CONSOLE).status_code == 200


# --- O-9: idle timeout and absolute lifetime; 7.4.2: deactivation --------------------------


def test_a_session_idle_longer_than_the_limit_is_logged_out(advisor):
    idle = settings.ADVISOR_IDLE_MINUTES
    with time_machine.travel(T0, tick=False) as traveller:
        client = english_client()
        log_in_fully(client, advisor)
        traveller.shift(timedelta(minutes=idle - 1))
        assert client.get(CONSOLE).status_code == 200
        # Activity moves the limit on.
        traveller.shift(timedelta(minutes=idle - 1))
        assert client.get(CONSOLE).status_code == 200
        key = session_key_of(client)

        traveller.shift(timedelta(minutes=idle, seconds=1))
        response = client.get(CONSOLE)
        assert response.status_code == 302
        assert response["Location"] == f"{LOGIN}?ended=idle"
        assert not Session.objects.filter(session_key=key).exists()
        assert client.get(CONSOLE)["Location"] == LOGIN
        page = client.get(response["Location"])
        assert f"after {idle} minutes without activity" in page.content.decode()


def test_a_session_ends_after_its_absolute_lifetime_however_active(advisor):
    lifetime = timedelta(seconds=settings.SESSION_COOKIE_AGE)
    with time_machine.travel(T0, tick=False) as traveller:
        client = english_client()
        log_in_fully(client, advisor)
        step = timedelta(minutes=settings.ADVISOR_IDLE_MINUTES - 5)
        elapsed = timedelta(0)
        while elapsed + step < lifetime:
            traveller.shift(step)
            elapsed += step
            assert client.get(CONSOLE).status_code == 200, elapsed
        traveller.shift(lifetime - elapsed)
        response = client.get(CONSOLE)
        assert response["Location"] == f"{LOGIN}?ended=lifetime"


def test_deactivating_an_advisor_deletes_their_sessions(advisor):
    client = english_client()
    log_in_fully(client, advisor)
    key = session_key_of(client)
    advisor.is_active = False
    advisor.save()
    assert not Session.objects.filter(session_key=key).exists()
    assert client.get(CONSOLE)["Location"] == LOGIN


def test_a_session_of_a_user_who_may_no_longer_log_in_is_cleared_on_the_next_page(advisor):
    client = english_client()
    log_in_fully(client, advisor)
    key = session_key_of(client)
    # Deactivated behind the signal's back (a bulk update): the page still refuses.
    type(advisor).objects.filter(pk=advisor.pk).update(is_active=False)
    response = client.get(CONSOLE)
    assert response["Location"] == f"{LOGIN}?ended=revoked"
    assert not Session.objects.filter(session_key=key).exists()


def test_logging_out_needs_a_post_and_ends_the_session(advisor):
    client = english_client()
    log_in_fully(client, advisor)
    key = session_key_of(client)
    assert client.get(LOGOUT).status_code == 405
    assert client.post(LOGOUT)["Location"] == LOGIN
    assert not Session.objects.filter(session_key=key).exists()
    assert client.get(CONSOLE)["Location"] == LOGIN


def test_the_console_page_offers_a_logout_button_that_posts(advisor):
    client = english_client()
    log_in_fully(client, advisor)
    html = client.get(CONSOLE).content.decode()
    assert re.search(r'<form[^>]*method="post"[^>]*action="/advisor/logout/"', html)


# --- the admin shows no content --------------------------------------------------------------


def test_the_admin_shows_a_conversation_as_metadata_and_events_without_its_content(
    supervisor,
):
    conversation, token, _events = Conversation.start_web(language="sv", writer="young")
    conversation.take(supervisor)
    conversation.post(
        sender=Message.Sender.VISITOR, text="Mitt hemliga meddelande 4711", client_id="v1"
    )
    conversation.close(supervisor, "advice_given")
    client = english_client()
    log_in_fully(client, supervisor)

    page = client.get(reverse("admin:advice_conversation_change", args=[conversation.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "advice_given" in html or "Advice given" in html  # metadata
    assert "Taken" in html or "taken" in html  # the audit trail
    conversation.refresh_from_db()
    message = Message.objects.get(conversation=conversation, client_id="v1")
    for secret in ("hemliga", "4711", token, conversation.token_hash, message.body):
        assert secret not in html
    listing = client.get(reverse("admin:advice_conversation_changelist")).content.decode()
    assert "hemliga" not in listing and token not in listing
    # Read-only for everyone, the superuser too.
    response = client.post(
        reverse("admin:advice_conversation_change", args=[conversation.pk]), {"status": "waiting"}
    )
    assert response.status_code == 403
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.CLOSED


def test_the_admin_edits_an_advisors_profile_on_the_user_page(supervisor):
    client = english_client()
    log_in_fully(client, supervisor)
    html = client.get(reverse("admin:auth_user_change", args=[supervisor.pk])).content.decode()
    for name in ("capacity", "display_name", "languages", "can_see_phone_numbers"):
        assert f"advisor_profile-0-{name}" in html
    # The TOTP secret is not shown for an existing device.
    device = TOTPDevice.objects.get(user=supervisor)
    device_page = client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk]))
    assert device.key not in device_page.content.decode()


# --- C-3, C-4: the advisor socket -----------------------------------------------------------


def timed_session_cookie(user: Any, *, authenticated_at: float, last_active_at: float) -> str:
    cookie = session_cookie(user)
    session = SessionStore(session_key=cookie.split("=", 1)[1])
    session[AUTHENTICATED_AT] = int(authenticated_at)
    session[LAST_ACTIVE_AT] = int(last_active_at)
    session.save()
    return cookie


async def connect_with_cookie(cookie: str | None) -> tuple[WebsocketCommunicator, bool]:
    headers = [*SAME_ORIGIN]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application(), "/ws/advisor/", headers=headers)
    connected, _code = await communicator.connect()
    return communicator, connected


async def closed_within(communicator: WebsocketCommunicator, seconds: float) -> int:
    """Wait (at most `seconds`) for the server to close the socket; returns the close code.
    Frames that arrive first are skipped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        remaining = deadline - loop.time()
        assert remaining > 0, "the socket was not closed in time"
        output = await communicator.receive_output(timeout=remaining)
        if output["type"] == "websocket.close":
            return output.get("code")


socket_test = pytest.mark.django_db(transaction=True)


@socket_test
async def test_the_advisor_socket_refuses_an_anonymous_scope():
    _communicator, connected = await connect_with_cookie(None)
    assert connected is False


@socket_test
async def test_the_advisor_socket_refuses_a_session_with_only_the_password(advisor):
    cookie = await database_sync_to_async(session_cookie)(advisor, verified=False)
    _communicator, connected = await connect_with_cookie(cookie)
    assert connected is False


@socket_test
async def test_the_advisor_socket_refuses_a_session_with_another_users_device(
    advisor, other_advisor
):
    def cookie_with_bobs_device() -> str:
        return session_cookie(advisor, device=TOTPDevice.objects.get(user=other_advisor))

    cookie = await database_sync_to_async(cookie_with_bobs_device)()
    _communicator, connected = await connect_with_cookie(cookie)
    assert connected is False


@socket_test
async def test_the_advisor_socket_refuses_an_unconfirmed_device(db):
    user = await database_sync_to_async(make_advisor)("olle", confirmed=False)
    cookie = await database_sync_to_async(session_cookie)(user)
    _communicator, connected = await connect_with_cookie(cookie)
    assert connected is False


@socket_test
async def test_the_advisor_socket_accepts_a_verified_session(advisor):
    cookie = await database_sync_to_async(session_cookie)(advisor)
    communicator, connected = await connect_with_cookie(cookie)
    assert connected is True
    hello = await receive_until(communicator, "hello")
    assert hello["advisor"]["id"] == advisor.pk
    await communicator.disconnect()


@socket_test
async def test_the_advisor_socket_refuses_a_session_that_has_idled_out(advisor):
    long_ago = time.time() - settings.ADVISOR_IDLE_MINUTES * 60 - 5
    cookie = await database_sync_to_async(timed_session_cookie)(
        advisor, authenticated_at=long_ago, last_active_at=long_ago
    )
    _communicator, connected = await connect_with_cookie(cookie)
    assert connected is False


@socket_test
async def test_logging_out_closes_that_sessions_sockets_within_a_second(advisor):
    cookie = await database_sync_to_async(session_cookie)(advisor)
    other_cookie = await database_sync_to_async(session_cookie)(advisor)
    console, connected = await connect_with_cookie(cookie)
    assert connected
    second_tab, connected = await connect_with_cookie(cookie)
    assert connected
    other_browser, connected = await connect_with_cookie(other_cookie)
    assert connected
    for communicator in (console, second_tab, other_browser):
        await receive_until(communicator, "hello")

    client = AsyncClient()
    client.cookies[settings.SESSION_COOKIE_NAME] = cookie.split("=", 1)[1]
    response = await client.post(LOGOUT)
    assert response.status_code == 302

    assert await closed_within(console, 1) == 4401
    assert await closed_within(second_tab, 1) == 4401
    # The advisor's session in another browser is not the one that ended.
    await other_browser.send_json_to({"type": "ping"})
    assert (await receive_until(other_browser, "pong"))["type"] == "pong"
    await other_browser.disconnect()


@socket_test
async def test_deactivating_an_advisor_closes_their_sockets_and_refuses_new_ones(advisor):
    cookie = await database_sync_to_async(session_cookie)(advisor)
    console, connected = await connect_with_cookie(cookie)
    assert connected
    await receive_until(console, "hello")

    def deactivate() -> None:
        advisor.is_active = False
        advisor.save()

    await database_sync_to_async(deactivate)()
    assert await closed_within(console, 1) == 4401
    _again, connected = await connect_with_cookie(cookie)
    assert connected is False


@socket_test
async def test_a_socket_closes_when_its_session_idles_out_even_if_the_heartbeat_goes_on(advisor):
    now = time.time()
    cookie = await database_sync_to_async(timed_session_cookie)(
        advisor, authenticated_at=now, last_active_at=now
    )
    console, connected = await connect_with_cookie(cookie)
    assert connected
    await receive_until(console, "hello")
    idle = settings.ADVISOR_IDLE_MINUTES * 60
    with time_machine.travel(now + idle - 60, tick=True):
        await console.send_json_to({"type": "ping"})
        await receive_until(console, "pong")
    with time_machine.travel(now + idle + 1, tick=True):
        await console.send_json_to({"type": "ping"})
        assert await closed_within(console, 1) == 4401


@socket_test
async def test_what_the_advisor_does_on_the_socket_keeps_the_session_alive(advisor):
    now = time.time()
    cookie = await database_sync_to_async(timed_session_cookie)(
        advisor, authenticated_at=now, last_active_at=now
    )
    console, connected = await connect_with_cookie(cookie)
    assert connected
    await receive_until(console, "hello")
    idle = settings.ADVISOR_IDLE_MINUTES * 60
    with time_machine.travel(now + idle - 60, tick=True):
        await console.send_json_to({"type": "take_next"})  # an action, even one that fails
        error = await receive_until(console, "error")
        assert error["code"] == "queue_empty"
        # The activity is written after the answer, before the next frame: the pong says the
        # socket is done with the action.
        await console.send_json_to({"type": "ping"})
        await receive_until(console, "pong")
    with time_machine.travel(now + idle + 60, tick=True):
        # The heartbeat alone would have ended it by now; the action moved the limit on.
        await console.send_json_to({"type": "ping"})
        await receive_until(console, "pong")

        def console_page_status() -> int:
            client = english_client()
            client.cookies[settings.SESSION_COOKIE_NAME] = cookie.split("=", 1)[1]
            return client.get(CONSOLE).status_code

        assert await sync_to_async(console_page_status)() == 200
    await console.disconnect()


@socket_test
async def test_an_action_answers_first_and_then_a_session_found_gone_ends_the_socket(advisor):
    """The activity is written after the action (console.consumers.advisor_action); a session
    deleted meanwhile without a logout event (an admin emptied the table) is found there."""
    now = time.time()
    # Last active long enough ago that the action is written.
    cookie = await database_sync_to_async(timed_session_cookie)(
        advisor, authenticated_at=now, last_active_at=now - ACTIVITY_WRITE_INTERVAL - 1
    )
    console, connected = await connect_with_cookie(cookie)
    assert connected
    await receive_until(console, "hello")
    await database_sync_to_async(Session.objects.all().delete)()
    await console.send_json_to({"type": "take_next"})
    error = await receive_until(console, "error")
    assert error["code"] == "queue_empty"
    assert await closed_within(console, 5) == 4401


@socket_test
async def test_an_action_soon_after_the_sessions_last_activity_writes_nothing(advisor):
    """The session already says the advisor was active a moment ago (the console page that
    opened the socket): the first actions on the socket write nothing until
    ACTIVITY_WRITE_INTERVAL has passed since then."""
    now = time.time()
    cookie = await database_sync_to_async(timed_session_cookie)(
        advisor, authenticated_at=now - 5, last_active_at=now - 5
    )
    console, connected = await connect_with_cookie(cookie)
    assert connected
    await receive_until(console, "hello")

    def last_active() -> int:
        return SessionStore(session_key=cookie.split("=", 1)[1])[LAST_ACTIVE_AT]

    await console.send_json_to({"type": "take_next"})
    assert (await receive_until(console, "error"))["code"] == "queue_empty"
    await console.send_json_to({"type": "ping"})
    await receive_until(console, "pong")
    assert await database_sync_to_async(last_active)() == int(now - 5)

    with time_machine.travel(now + ACTIVITY_WRITE_INTERVAL, tick=True):
        await console.send_json_to({"type": "take_next"})
        await receive_until(console, "error")
        await console.send_json_to({"type": "ping"})
        await receive_until(console, "pong")
        assert await database_sync_to_async(last_active)() >= int(now + ACTIVITY_WRITE_INTERVAL)
    await console.disconnect()


@socket_test
async def test_a_socket_closes_at_its_sessions_deadline_without_any_frame(advisor, settings):
    settings.ADVISOR_IDLE_MINUTES = 2 / 60  # two seconds
    cookie = await database_sync_to_async(session_cookie)(advisor)
    console, connected = await connect_with_cookie(cookie)
    assert connected
    await receive_until(console, "hello")
    assert await closed_within(console, 5) == 4401


@socket_test
async def test_a_resuming_console_learns_how_a_conversation_ended_while_it_was_away(advisor):
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    await receive_until(visitor, "started")
    cookie = await database_sync_to_async(session_cookie)(advisor)
    console, _connected = await connect_with_cookie(cookie)
    queue = await receive_until(console, "queue")
    while not queue["waiting"]:
        queue = await receive_until(console, "queue")
    conversation_id = queue["waiting"][0]["id"]
    await console.send_json_to({"type": "take", "conversation": conversation_id})
    joined = await receive_until(console, "message", conversation=conversation_id)
    await console.disconnect()

    await visitor.send_json_to({"type": "leave"})
    await receive_until(visitor, "state", status="closed")
    await visitor.disconnect()

    console, _connected = await connect_with_cookie(cookie)
    await receive_until(console, "hello")
    await console.send_json_to(
        {"type": "resume", "conversations": {conversation_id: joined["seq"]}}
    )
    left = await receive_until(console, "message", conversation=conversation_id)
    assert left["event"] == "visitor_left"
    assert left["seq"] == joined["seq"] + 1
    await console.send_json_to({"type": "resume", "conversations": {"not-an-id": 1}})
    assert (await receive_until(console, "error"))["code"] == "invalid_field"
    await console.disconnect()


def test_the_console_page_passes_its_settings_as_json_and_has_no_inline_code(advisor):
    client = english_client()
    log_in_fully(client, advisor)
    response = client.get(CONSOLE)
    html = response.content.decode()
    config = json.loads(
        re.search(
            r'<script id="console-config" type="application/json">(.*?)</script>', html, re.S
        ).group(1)
    )
    assert config["socket_path"] == "/ws/advisor/"
    assert config["capacity"] == 3
    assert set(config["labels"]["outcome"]) == {
        "advice_given",
        "social_services",
        "police",
        "protected_housing",
        "other",
    }
    assert set(config["labels"]["end_reason"]) == set(Conversation.EndReason.values)
    # No inline script or style: every <script> is either external or a JSON data block.
    for tag in re.findall(r"<script[^>]*>", html):
        assert 'src="' in tag or 'type="application/json"' in tag, tag
    assert " style=" not in html and not re.search(r"\son[a-z]+=", html)
    assert "<style" not in html
    csp = response["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    # The session's key is nowhere in the page.
    assert session_key_of(client) not in html
