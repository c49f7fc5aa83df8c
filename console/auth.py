"""Who counts as a verified advisor, and how long an advisor's session lasts.

A verified advisor is a logged-in, active user whose session carries a confirmed OTP device of
their own. django-otp's middleware checks this for HTTP; WebSocket scopes don't pass through
it, so the advisor socket asks here (mirrors OTPMiddleware._verify_user).

An advisor session ends (ASVS 7.3.1/7.3.2, SAFETY.md O-9):
- after ADVISOR_IDLE_MINUTES without activity (a page request, or something the advisor does on
  the console's socket; the socket's own heartbeat does not count), and
- ADVISOR_SESSION_HOURS after the password was entered, however active the advisor is.
Both are measured with two timestamps kept in the session itself, so the HTTP middleware and
the socket read the same clock.
"""

from __future__ import annotations

import hashlib
import time
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.contrib.sessions.models import Session
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device

# Seconds since the epoch: when the password was accepted, and the last sign of activity.
AUTHENTICATED_AT = "advisor_authenticated_at"
LAST_ACTIVE_AT = "advisor_last_active_at"


def verified_advisor_from_scope(scope: dict[str, Any]) -> Any | None:
    """Synchronous: call through database_sync_to_async."""
    return _verified_advisor(scope.get("user"), scope.get("session"))


def _verified_advisor(user: Any, session: SessionBase | None) -> Any | None:
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    persistent_id = session.get(DEVICE_ID_SESSION_KEY) if session is not None else None
    if not persistent_id:
        return None
    device = Device.from_persistent_id(persistent_id)
    if device is None or device.user_id != user.pk or not device.confirmed:
        return None
    return user


# --- the session's lifetime -------------------------------------------------------------------


def idle_limit_seconds() -> int:
    return int(settings.ADVISOR_IDLE_MINUTES * 60)


def lifetime_seconds() -> int:
    return int(settings.SESSION_COOKIE_AGE)


def start_session_clock(session: SessionBase, now: float | None = None) -> None:
    """At login: both clocks start now."""
    now = time.time() if now is None else now
    session[AUTHENTICATED_AT] = int(now)
    session[LAST_ACTIVE_AT] = int(now)


def start_missing_session_clock(session: SessionBase, now: float | None = None) -> bool:
    """A session made without the clocks (before they existed) starts them now, at the first
    request or socket that sees it. Returns whether it did."""
    if AUTHENTICATED_AT in session and LAST_ACTIVE_AT in session:
        return False
    now = time.time() if now is None else now
    session.setdefault(AUTHENTICATED_AT, int(now))
    session.setdefault(LAST_ACTIVE_AT, int(now))
    return True


def mark_active(session: SessionBase, now: float | None = None) -> None:
    session[LAST_ACTIVE_AT] = int(time.time() if now is None else now)


def session_ended_because(session: SessionBase, now: float | None = None) -> str | None:
    """ "idle" or "lifetime" when the session has run out, else None. A session without the
    clocks has not run out (see start_missing_session_clock)."""
    now = time.time() if now is None else now
    authenticated_at = session.get(AUTHENTICATED_AT)
    last_active_at = session.get(LAST_ACTIVE_AT)
    if authenticated_at is not None and now - authenticated_at >= lifetime_seconds():
        return "lifetime"
    if last_active_at is not None and now - last_active_at >= idle_limit_seconds():
        return "idle"
    return None


def session_deadline(session: SessionBase, now: float | None = None) -> float:
    """The moment (epoch seconds) the session runs out unless there is activity first."""
    now = time.time() if now is None else now
    authenticated_at = session.get(AUTHENTICATED_AT, now)
    last_active_at = session.get(LAST_ACTIVE_AT, now)
    return min(authenticated_at + lifetime_seconds(), last_active_at + idle_limit_seconds())


def load_session(session_key: str | None) -> SessionBase | None:
    """The session as stored now (another request may have changed it), or None if it is gone."""
    if not session_key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore
    session = store(session_key=session_key)
    # Loading a missing or expired session yields an empty one (and forgets the key).
    if session.get(SESSION_KEY) is None:
        return None
    return session


def valid_session_deadline(session_key: str | None, user_id: int) -> float | None:
    """If this socket's session is still a verified advisor session that has not run out, the
    moment it will run out (epoch seconds); else None. Synchronous; the socket asks after a
    logout anywhere and when its session's time is up."""
    session = load_session(session_key)
    if session is None or str(session.get(SESSION_KEY)) != str(user_id):
        return None
    # Django's own check: the backend still knows the user, the user is active, and the
    # password has not changed since the login.
    user = auth.get_user(SimpleNamespace(session=session))
    if _verified_advisor(user, session) is None or session_ended_because(session) is not None:
        return None
    return session_deadline(session)


def still_verified(session_key: str | None, user_id: int) -> bool:
    return valid_session_deadline(session_key, user_id) is not None


def record_socket_activity(session_key: str | None) -> float | None:
    """Something the advisor did on the socket keeps the session alive, like a page request.
    Works on a fresh copy of the session, so nothing a request wrote meanwhile is undone.
    Returns the session's new deadline, or None when the session is gone (logged out)."""
    session = load_session(session_key)
    if session is None or session_ended_because(session) is not None:
        return None
    mark_active(session)
    try:
        session.save(must_create=False)
    except UpdateError:
        return None
    return session_deadline(session)


def session_fingerprint(session_key: str | None) -> str | None:
    """Names a session in an event between processes without handing out the key itself."""
    return hashlib.sha256(session_key.encode()).hexdigest() if session_key else None


def end_sessions_of(user: Any) -> int:
    """Delete every stored session of `user` (account deactivated, ASVS 7.4.2). Sessions are in
    the database (the default engine); they are few, one or two per advisor."""
    ended = 0
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if str(session.get_decoded().get(SESSION_KEY)) == str(user.pk):
            session.delete()
            ended += 1
    return ended
