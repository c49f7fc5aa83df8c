"""The Twilio settings, read from the environment and checked before the service starts.

Imported by config/settings.py, so it must not import models or anything that needs the apps
loaded. Either none of the Twilio variables is set (the SMS channel is off and everything else
runs), or all that are needed are set and well formed: a half-configured channel stops the start
with a message naming the variable, instead of failing on the first text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_str

ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
# E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str = ""
    auth_token: str = ""
    # Accepted as well while the primary token is being rotated at Twilio (T-10).
    auth_token_secondary: str = ""
    webhook_base_url: str = ""
    from_number: str = ""
    messaging_service_sid: str = ""
    delete_messages: bool = True
    api_base_url: str = ""
    http_timeout: int = 10

    @property
    def enabled(self) -> bool:
        return bool(self.account_sid)


def _base_url(name: str, value: str, *, loopback_only: bool) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(f"{name}={value!r} must be an http(s) URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"{name}={value!r} must be a base URL without a path, e.g. https://chat.example.se"
        )
    loopback = parts.hostname in LOOPBACK_HOSTS
    if loopback_only and not loopback:
        raise ImproperlyConfigured(f"{name} is for tests only and must point at 127.0.0.1")
    if parts.scheme == "http" and not loopback:
        # Twilio signs the URL it calls; anything but https would send texts in the clear.
        raise ImproperlyConfigured(f"{name}={value!r} must use https")
    return value.rstrip("/")


def twilio_from_environment() -> TwilioSettings:
    names = [
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_WEBHOOK_BASE_URL",
        "TWILIO_FROM_NUMBER",
        "TWILIO_MESSAGING_SERVICE_SID",
    ]
    values = {name: env_str(name).strip() for name in names}
    if not any(values.values()):
        return TwilioSettings()
    for name in names[:3]:
        if not values[name]:
            raise ImproperlyConfigured(
                f"{name} must be set when any TWILIO_ variable is (or unset them all to switch "
                "the SMS channel off)"
            )
    account_sid = values["TWILIO_ACCOUNT_SID"]
    if not ACCOUNT_SID.match(account_sid):
        raise ImproperlyConfigured("TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits")
    from_number = values["TWILIO_FROM_NUMBER"]
    service_sid = values["TWILIO_MESSAGING_SERVICE_SID"]
    if not from_number and not service_sid:
        raise ImproperlyConfigured(
            "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID must be set to send replies"
        )
    if from_number and not E164.match(from_number):
        raise ImproperlyConfigured(
            f"TWILIO_FROM_NUMBER={from_number!r} must be in E.164 form, e.g. +46701234567"
        )
    if service_sid and not MESSAGING_SERVICE_SID.match(service_sid):
        raise ImproperlyConfigured(
            "TWILIO_MESSAGING_SERVICE_SID must be MG followed by 32 hex digits"
        )
    api_base_url = env_str("TWILIO_API_BASE_URL").strip()
    return TwilioSettings(
        account_sid=account_sid,
        auth_token=values["TWILIO_AUTH_TOKEN"],
        auth_token_secondary=env_str("TWILIO_AUTH_TOKEN_SECONDARY").strip(),
        webhook_base_url=_base_url(
            "TWILIO_WEBHOOK_BASE_URL", values["TWILIO_WEBHOOK_BASE_URL"], loopback_only=False
        ),
        from_number=from_number,
        messaging_service_sid=service_sid,
        delete_messages=env_bool("TWILIO_DELETE_MESSAGES", True),
        api_base_url=(
            _base_url("TWILIO_API_BASE_URL", api_base_url, loopback_only=True)
            if api_base_url
            else ""
        ),
        http_timeout=env_int("TWILIO_HTTP_TIMEOUT_SECONDS", 10, minimum=1),
    )
