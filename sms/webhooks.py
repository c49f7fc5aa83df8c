"""Twilio's webhooks, independent of how the request arrived: POST /sms/inbound (a text
arrives) and POST /sms/status (how an answer is doing).

The Django views (sms.views) call these.

Answers: 404 while the SMS channel is off; 405 for anything but POST; 403 for a missing or
wrong signature (or another account); 415 for a body that is not form-encoded; 400 for fields
Twilio would not send; 404 for a text to a number that is not the line's. None of those writes
anything. The signature is checked against the configured public URL, never the request's Host.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import transaction
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from twilio.twiml.messaging_response import MessagingResponse

from advice import store
from sms import provider, replies
from sms.inbound import (
    MESSAGE_SID,
    NOT_CACHED,
    InboundText,
    InvalidWebhook,
    UnknownNumber,
    cached_line_county,
    insert_statement,
    line_county,
    parse_inbound,
    record_inbound,
    reply_if_new,
)
from sms.models import OutboundSms
from sms.outbox import FINAL, record_status, schedule_deletion, wake_worker

PATHS = ("/sms/inbound", "/sms/status")
# Twilio's message_enum_status: every status a callback can carry.
TWILIO_STATUSES = {
    "queued",
    "sending",
    "sent",
    "failed",
    "delivered",
    "undelivered",
    "receiving",
    "received",
    "accepted",
    "scheduled",
    "read",
    "partially_delivered",
    "canceled",
}
ERROR_CODE = re.compile(r"^[0-9]{1,6}$")
FORM = "application/x-www-form-urlencoded"


class Form(MultiValueDict):
    """A webhook's fields, as Django's QueryDict holds them. `getall` is what the twilio SDK's
    validator asks for first (it is Flask's name): without it, every field of every signature
    check cost a caught AttributeError before the validator tried `getlist`."""

    def getall(self, key: str) -> list[str]:
        return dict.__getitem__(self, key)


@dataclass
class Webhook:
    """A request to one of the webhooks."""

    method: str
    path: str
    query_string: str
    content_type: str  # the media type, without parameters
    body: bytes
    signature: str

    @property
    def full_path(self) -> str:
        return self.path + (f"?{self.query_string}" if self.query_string else "")

    @property
    def query(self) -> QueryDict:
        return QueryDict(self.query_string)

    @property
    def form(self) -> Form:
        """Every field, empty ones included (they are signed too), repeated ones as lists."""
        if self.content_type != FORM:
            return Form()
        # parse_qsl straight into lists: a QueryDict built field by field costs several times
        # as much, and the webhook is on a hot path (docs/sms.md, "Benchmark").
        fields: dict[str, list[str]] = {}
        for name, value in parse_qsl(
            self.body.decode("utf-8", "replace"),
            keep_blank_values=True,
            max_num_fields=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS,
        ):
            fields.setdefault(name, []).append(value)
        return Form(fields)


@dataclass
class Answer:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def _plain(status: int, text: str, **headers: str) -> Answer:
    return Answer(status, (text + "\n").encode(), headers=headers)


def _twiml(response: MessagingResponse) -> Answer:
    return Answer(200, str(response).encode(), "text/xml; charset=utf-8")


def handle(hook: Webhook) -> Answer:
    """Answer one webhook request. Runs synchronously (database work), inside no transaction."""
    checked = _checked(hook)
    if isinstance(checked, Answer):
        return checked
    handler = {"/sms/inbound": _inbound, "/sms/status": _status}[hook.path]
    return handler(hook, checked)


async def handle_inbound_without_thread(hook: Webhook) -> Answer | None:
    """`handle` for a text arriving (/sms/inbound), awaitable, with no thread: on PostgreSQL
    the text is stored by one statement on advice.store's connections. Returns None where
    only `handle` can answer: not PostgreSQL, or something the webhook reads from the admin
    (the line's numbers, the reply texts, the opening hours, the queue's wait) is not in this
    process's short-lived cache just now; `handle` reads it, and the next texts come here."""
    if hook.path != "/sms/inbound" or not store.enabled():
        return None
    checked = _checked(hook)
    if isinstance(checked, Answer):
        return checked
    try:
        text = parse_inbound(checked)
    except InvalidWebhook as error:
        return _plain(400, f"{error.code}: {error.field}")
    county = cached_line_county(text.to)
    if county is NOT_CACHED:
        return None
    if county is None:
        return _plain(404, "unknown_number: the To number is not one of the line's numbers.")
    if not replies.cached_for(county):
        return None
    statement, params = insert_statement(text, reply_if_new(text, county))
    row = await store.fetch_one(statement, params)
    wake_worker()
    return _acknowledged(text, county, "" if row is None else row[0])


def _checked(hook: Webhook) -> Answer | Form:
    """The form of a genuine request from Twilio for this line, or the answer refusing it."""
    if hook.method != "POST":
        return _plain(405, "method_not_allowed: POST only.", Allow="POST")
    if not settings.SMS_ENABLED:
        return _plain(404, "The SMS channel is switched off.")
    try:
        form = hook.form
    except ValueError:  # more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS
        return _plain(400, "invalid_form: too many fields.")
    # A JSON webhook is signed over the URL with a hash of the raw body in it (bodySHA256);
    # the validator checks that hash only when it is given the body as a str.
    params: Any = hook.body.decode("utf-8", "replace") if "bodySHA256" in hook.query else form
    url = provider.webhook_url(hook.full_path)
    if not provider.signature_is_valid(url, params, hook.signature):
        return _plain(403, "invalid_signature: the X-Twilio-Signature does not match.")
    if hook.content_type != FORM:
        return _plain(415, "unsupported_media_type: Twilio posts form-encoded fields.")
    if form.get("AccountSid") != settings.TWILIO_ACCOUNT_SID:
        return _plain(403, "wrong_account: the AccountSid is not this line's.")
    return form


def _inbound(hook: Webhook, form: MultiValueDict) -> Answer:
    try:
        text = parse_inbound(form)
        _stored, acknowledgement = record_inbound(text)
    except InvalidWebhook as error:
        return _plain(400, f"{error.code}: {error.field}")
    except UnknownNumber:
        return _plain(404, "unknown_number: the To number is not one of the line's numbers.")
    return _acknowledged(text, line_county(text.to) or "", acknowledgement)


# The answer to every text but the first of a conversation: an empty TwiML response, as the
# SDK writes it, made once.
NO_REPLY = str(MessagingResponse()).encode()


def _acknowledged(text: InboundText, county: str, acknowledgement: str) -> Answer:
    if not acknowledgement:
        return Answer(200, NO_REPLY, "text/xml; charset=utf-8")
    response = MessagingResponse()
    response.message(
        replies.acknowledgement_text(acknowledgement, county, text.sender),
        action=provider.acknowledgement_callback_url(),
    )
    return _twiml(response)


def _status(hook: Webhook, form: MultiValueDict) -> Answer:
    sid = form.get("MessageSid") or ""
    new_status = form.get("MessageStatus") or ""
    error_code = form.get("ErrorCode") or ""
    if not MESSAGE_SID.match(sid):
        return _plain(400, "invalid_field: MessageSid")
    if new_status not in TWILIO_STATUSES:
        return _plain(400, "invalid_field: MessageStatus")
    if error_code and not ERROR_CODE.match(error_code):
        return _plain(400, "invalid_field: ErrorCode")
    query = hook.query
    outbound_id = query.get("o", "")
    if outbound_id:
        try:
            uuid.UUID(outbound_id)
        except ValueError:
            return _plain(400, "invalid_field: o")
    with transaction.atomic():
        row = None
        if outbound_id:
            row = OutboundSms.objects.filter(public_id=outbound_id).first()
        if row is None:
            row = OutboundSms.objects.filter(twilio_sid=sid).first()
        if row is None:
            if query.get("ack") == "1" and new_status in FINAL:
                # An automatic reply (TwiML): nothing to track, only to delete at Twilio.
                schedule_deletion(sid)
            return Answer(204)
        if row.twilio_sid is None:
            # The callback came before the worker stored the sid, or after it died mid-send.
            OutboundSms.objects.filter(pk=row.pk, twilio_sid__isnull=True).update(
                twilio_sid=sid, attempt_started_at=None
            )
            row.twilio_sid = sid
        elif row.twilio_sid != sid:
            return Answer(204)
        record_status(row, new_status, error_code=error_code, twilio_sid=sid)
    return Answer(204)
