"""Small explicit factories: named advisors, sessions that are (or are not) OTP-verified,
and sockets on the real ASGI application."""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from advice.models import AdvisorProfile

PASSWORD = "correct horse battery staple"
ORIGIN = b"http://127.0.0.1"
# The Host the browser connected to, which the origin must match (config/origins.py).
HOST = b"127.0.0.1"
SAME_ORIGIN = [(b"host", HOST), (b"origin", ORIGIN)]


def make_advisor(
    username: str, *, capacity: int = 3, languages: list[str] | None = None, confirmed: bool = True
) -> Any:
    user = get_user_model().objects.create_user(username, password=PASSWORD, is_staff=True)
    AdvisorProfile.objects.create(
        user=user,
        display_name=username.title(),
        capacity=capacity,
        languages=languages if languages is not None else ["sv", "en"],
    )
    TOTPDevice.objects.create(user=user, name="phone", confirmed=confirmed)
    return user


def totp_now(user: Any) -> str:
    device = TOTPDevice.objects.get(user=user)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def session_cookie(user: Any, *, verified: bool = True, device: Any = None) -> str:
    """A session as the login pages leave it: password-only, or OTP-verified."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    if verified:
        device = device or TOTPDevice.objects.get(user=user)
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def application():
    from asgi import application as app

    return app


async def visitor_socket(origin: bytes = ORIGIN) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application(), "/ws/chat/", headers=[(b"host", HOST), (b"origin", origin)]
    )
    connected, _code = await communicator.connect()
    assert connected
    return communicator


async def advisor_socket(
    user: Any, *, verified: bool = True, origin: bytes = ORIGIN
) -> tuple[WebsocketCommunicator, bool]:
    cookie = await database_sync_to_async(session_cookie)(user, verified=verified)
    communicator = WebsocketCommunicator(
        application(),
        "/ws/advisor/",
        headers=[(b"host", HOST), (b"origin", origin), (b"cookie", cookie.encode())],
    )
    connected, _code = await communicator.connect()
    return communicator, connected


async def receive_until(
    communicator: WebsocketCommunicator, frame_type: str, timeout: float = 3, **match: Any
) -> dict[str, Any]:
    """Read frames until one of `frame_type` (matching `match`) arrives; others are skipped."""
    while True:
        frame = json.loads(await communicator.receive_from(timeout=timeout))
        if frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items()):
            return frame


START = {"type": "start", "language": "sv", "writer": "young", "safe_now": "yes"}


def announced(
    events: list[dict[str, Any]], advisor: Any, times: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Events as two runs of one action on two conversations can compare them: without the
    ids and the summary's `times` (which differ between the two), and the advisor named only
    as "the one who acted" (tests/test_take_next.py, tests/test_close.py)."""
    out = []
    for event in events:
        event = {
            k: v for k, v in event.items() if k not in ("conversation", "public_id", "sent_at")
        }
        if "advisor" in event:
            event["advisor"] = event["advisor"] == advisor.pk
        if "summary" in event:
            summary = {k: v for k, v in event["summary"].items() if k not in ("id", *times)}
            summary["advisor"] = summary["advisor"] == advisor.pk
            event["summary"] = summary
        out.append(event)
    return out
