"""Who counts as a verified advisor: a logged-in, active user whose session carries a confirmed
OTP device of their own. django-otp's middleware does this for HTTP; WebSocket scopes don't pass
through it, so the advisor socket asks here (mirrors OTPMiddleware._verify_user)."""

from __future__ import annotations

from typing import Any

from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device


def verified_advisor_from_scope(scope: dict[str, Any]) -> Any | None:
    """Synchronous: call through database_sync_to_async."""
    user = scope.get("user")
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    session = scope.get("session")
    persistent_id = session.get(DEVICE_ID_SESSION_KEY) if session is not None else None
    if not persistent_id:
        return None
    device = Device.from_persistent_id(persistent_id)
    if device is None or device.user_id != user.pk or not device.confirmed:
        return None
    return user
