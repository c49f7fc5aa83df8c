"""Twilio: the SDK client, request signatures, and what Twilio's answers mean for us.

Nothing here logs a phone number or a text, and nothing here passes an SDK exception's text to
a logger: Twilio's error messages quote the number ("The 'To' number +46... is not valid").
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

# --- signatures (X-Twilio-Signature) ----------------------------------------------------------


def webhook_url(full_path: str) -> str:
    """The URL Twilio signed: the configured public base URL and the path with its query
    string, never the request's Host or forwarded headers (T-3)."""
    return settings.TWILIO_WEBHOOK_BASE_URL + full_path


def signature_is_valid(url: str, params: Any, signature: str) -> bool:
    """Check a webhook's signature with the twilio SDK's validator, against the primary auth
    token and, during a rotation, the secondary one (T-10).

    `params` is the form (a QueryDict, every field, empty ones included), or for a JSON body
    the raw body as a str: the validator checks the bodySHA256 hash only when given a str."""
    if not signature:
        return False
    for token in (settings.TWILIO_AUTH_TOKEN, settings.TWILIO_AUTH_TOKEN_SECONDARY):
        if token and RequestValidator(token).validate(url, params, signature):
            return True
    return False


# --- the REST client ----------------------------------------------------------------------------


class LocalTwilioHttpClient(TwilioHttpClient):
    """For tests and the benchmark only (settings.TWILIO_API_BASE_URL): sends every request
    meant for *.twilio.com to a local stand-in on 127.0.0.1 (Prism or tests/twilio_peer.py).

    Asks Prism for generated responses (Prefer: dynamic=true) so each message gets its own
    sid, as at Twilio; the static example would give every message the same one."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname and parts.hostname.endswith(".twilio.com"):
            url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        headers = dict(kwargs.get("headers") or {})
        headers.setdefault("Prefer", "dynamic=true")
        kwargs["headers"] = headers
        return super().request(method, url, *args, **kwargs)


_clients: dict[tuple, Client] = {}


def client() -> Client:
    """The twilio SDK client for the configured account (one per configuration)."""
    key = (
        settings.TWILIO_ACCOUNT_SID,
        settings.TWILIO_AUTH_TOKEN,
        settings.TWILIO_API_BASE_URL,
        settings.TWILIO_HTTP_TIMEOUT_SECONDS,
    )
    found = _clients.get(key)
    if found is None:
        timeout = settings.TWILIO_HTTP_TIMEOUT_SECONDS
        http = (
            LocalTwilioHttpClient(settings.TWILIO_API_BASE_URL, timeout=timeout)
            if settings.TWILIO_API_BASE_URL
            else TwilioHttpClient(timeout=timeout)
        )
        found = _clients[key] = Client(
            settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=http
        )
    return found


def status_callback_url(outbound_public_id: str) -> str:
    # The outbox row's id rides along, so a callback that arrives before the worker has stored
    # the sid (or after a worker died mid-send) still finds its row.
    return f"{settings.TWILIO_WEBHOOK_BASE_URL}/sms/status?o={outbound_public_id}"


def acknowledgement_callback_url() -> str:
    # Status callbacks of the automatic replies: once final, they are deleted at Twilio too.
    return f"{settings.TWILIO_WEBHOOK_BASE_URL}/sms/status?ack=1"


# --- what Twilio's errors mean ------------------------------------------------------------------

# HTTP statuses that say this request will never succeed as it is (a bad number, a schema
# violation). Everything else (5xx, 429, timeouts, and 401/403/404, which a fixed
# configuration cures) is tried again with backoff.
PERMANENT_HTTP_STATUSES = {400, 410, 422}

# What the advisor is told when a text is not delivered, by Twilio error code (API errors and
# delivery errors from status callbacks) or by our own codes.
ERROR_TEXTS = {
    "21211": _("The number is not a valid phone number."),
    "21408": _("Texts to this country are not enabled for the line."),
    "21610": _("The recipient has blocked texts from the line (they texted STOP to the operator)."),
    "21612": _("Texts cannot be sent to this number from the line's number."),
    "21614": _("The number is not a mobile number."),
    "30003": _("The phone is unreachable (switched off or out of coverage)."),
    "30004": _("The recipient's operator blocked the text."),
    "30005": _("The number does not exist or is no longer in use."),
    "30006": _("The number is a landline or cannot receive texts."),
    "30007": _("The operator filtered the text."),
    "30008": _("The text could not be delivered (unknown error at the operator)."),
    "opted_out": _("The sender texted STOP. Nothing can be sent until they text START."),
    "gave_up": _("Twilio could not be reached for a long time; the text was not sent."),
}


def error_text(code: str) -> str:
    text = ERROR_TEXTS.get(code)
    if text is not None:
        return str(text)
    return str(_("The text could not be delivered (Twilio error %(code)s).") % {"code": code})


def is_permanent(error: TwilioRestException) -> bool:
    return error.status in PERMANENT_HTTP_STATUSES


def error_code(error: TwilioRestException) -> str:
    """The code to store and show: Twilio's error code, or the HTTP status without one."""
    return str(error.code or f"http_{error.status}")
