"""What the inbound webhook does inside the request: check the fields, store the text as one
row, decide the automatic reply. Everything slower (the conversation, the queue, the advisor's
console, the deletion at Twilio) is the worker's (sms.processing), so the webhook answers in
milliseconds whatever else is going on.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from advice import crypto
from sms import replies
from sms.config import E164
from sms.models import InboundSms, SmsNumber, SmsOptOut, SmsThread, phone_hash
from sms.outbox import wake_worker

MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
# Twilio delivers at most ten media items with one message.
MAX_MEDIA = 10
STOP_WORDS = {"STOP", "STOPP", "AVSLUTA"}
START_WORDS = {"START", "STARTA"}


class InvalidWebhook(Exception):
    """A request Twilio would not send: answered 400 with `code`, nothing written."""

    def __init__(self, code: str, field: str) -> None:
        super().__init__(f"{code}: {field}")
        self.code = code
        self.field = field


class UnknownNumber(Exception):
    """A text to a number that is not one of the line's: answered 404, nothing written."""


@dataclass(frozen=True)
class InboundText:
    message_sid: str
    sender: str
    to: str
    body: str
    num_media: int


def keyword(body: str) -> str:
    """STOP, START and their Swedish forms, however they are written ("Stopp.")."""
    return body.strip().strip(".!").strip().upper()


def _required(form: Any, name: str) -> str:
    value = form.get(name)
    if value is None:
        raise InvalidWebhook("missing_field", name)
    return value


def parse_inbound(form: Any) -> InboundText:
    sid = _required(form, "MessageSid")
    if not MESSAGE_SID.match(sid):
        raise InvalidWebhook("invalid_field", "MessageSid")
    sender = _required(form, "From")
    if not E164.match(sender):
        raise InvalidWebhook("invalid_field", "From")
    to = _required(form, "To")
    if not E164.match(to):
        raise InvalidWebhook("invalid_field", "To")
    body = _required(form, "Body")
    if len(body) > settings.MAX_MESSAGE_LENGTH:
        raise InvalidWebhook("body_too_long", "Body")
    num_media_text = form.get("NumMedia") or "0"
    if not num_media_text.isdigit() or int(num_media_text) > MAX_MEDIA:
        raise InvalidWebhook("invalid_field", "NumMedia")
    return InboundText(
        message_sid=sid, sender=sender, to=to, body=body, num_media=int(num_media_text)
    )


_lines: tuple[float, dict[str, str]] | None = None
LINES_CACHE_SECONDS = 10


def line_county(number: str) -> str | None:
    """The county of one of the line's numbers ("" for none), or None if the number is not
    the line's. The admin's numbers are read at most every few seconds per process."""
    global _lines
    now = time.monotonic()
    if _lines is None or now - _lines[0] > LINES_CACHE_SECONDS:
        _lines = (now, dict(SmsNumber.objects.filter(active=True).values_list("number", "county")))
    return _county_of(_lines[1], number)


# What cached_line_county says when only line_county (which reads the database) can answer.
NOT_CACHED = object()


def cached_line_county(number: str) -> Any:
    """line_county from this process's cache alone (no database): NOT_CACHED when the cache
    is too old, for code that may not wait for the database (sms.webhooks)."""
    if _lines is None or time.monotonic() - _lines[0] > LINES_CACHE_SECONDS:
        return NOT_CACHED
    return _county_of(_lines[1], number)


def _county_of(lines: dict[str, str], number: str) -> str | None:
    if number in lines:
        return lines[number]
    if number == settings.TWILIO_FROM_NUMBER:
        return ""
    return None


def forget_lines() -> None:
    global _lines
    _lines = None


@functools.cache
def _insert_sql(vendor: str, inserted: tuple[str, ...]) -> str:
    """The statement of insert_statement, built once per kind of database (it depends only on
    the models' table and column names, not on the text). Its reply is '' when the sender's
    texts continue a conversation (an open one, or an earlier text still waiting for the
    worker) or they have opted out."""
    from advice.models import Conversation

    quote = connection.ops.quote_name
    thread, conversation = SmsThread._meta.db_table, Conversation._meta.db_table
    inbound, opt_out = InboundSms._meta.db_table, SmsOptOut._meta.db_table
    columns = ", ".join(quote(name) for name in [*inserted, "acknowledgement"])
    placeholders = ", ".join(["%s"] * len(inserted))
    # Table and column names from the models, values as parameters: nothing from the request
    # is spliced in.
    quiet = (
        f"(EXISTS (SELECT 1 FROM {quote(thread)} t JOIN {quote(conversation)} c"  # noqa: S608
        f" ON c.id = t.conversation_id WHERE t.current_for = %s AND c.status IN (%s, %s))"
        f" OR EXISTS (SELECT 1 FROM {quote(inbound)} WHERE sender_hash = %s"
        f" AND processed_at IS NULL)"
        f" OR EXISTS (SELECT 1 FROM {quote(opt_out)} WHERE sender_hash = %s))"
    )
    return (
        f"INSERT INTO {quote(inbound)} ({columns})"
        f" SELECT {placeholders}, CASE WHEN {quiet} THEN '' ELSE %s END"
        # "WHERE true": SQLite needs it to read ON CONFLICT after INSERT ... SELECT.
        f" WHERE true ON CONFLICT ({quote('message_sid')}) DO NOTHING"
        f" RETURNING {quote('acknowledgement')}"
    )


def reply_if_new(text: InboundText, county: str) -> str:
    """The automatic reply a text gets if it opens a new conversation: none for STOP/START."""
    if keyword(text.body) in STOP_WORDS | START_WORDS:
        return ""
    return replies.acknowledgement_kind(county)


def insert_statement(text: InboundText, reply_if_new: str) -> tuple[str, list[Any]]:
    """The one statement that stores a text, and decides its automatic reply in the same
    statement: `reply_if_new` unless the sender's texts continue a conversation or they have
    opted out. It returns the reply ("" for none), or no row when the MessageSid was stored
    before (Twilio retrying): ON CONFLICT DO NOTHING on the unique MessageSid, so a duplicate
    is told apart by the database's constraint itself, with no second query and no error to
    recover from (inside a caller's transaction too). Raw SQL because the ORM cannot say "DO
    NOTHING and tell me"; PostgreSQL and SQLite (3.35+) both speak it."""
    from advice.models import Conversation

    now = connection.ops.adapt_datetimefield_value(timezone.now())
    sender_hash = phone_hash(text.sender)
    values = {
        "message_sid": text.message_sid,
        "sender_hash": sender_hash,
        "sender": crypto.encrypt(text.sender),
        "line_number": text.to,
        "body": crypto.encrypt(text.body),
        "num_media": text.num_media,
        "received_at": now,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": "",
    }
    params = [
        *values.values(),
        sender_hash,
        *Conversation.OPEN_STATUSES,
        sender_hash,
        sender_hash,
        reply_if_new,
    ]
    return _insert_sql(connection.vendor, tuple(values)), params


def record_inbound(text: InboundText) -> tuple[bool, str]:
    """Store the text for the worker, in one statement, one round trip, in the webhook's
    autocommit. Returns (stored now, the automatic reply's kind); a MessageSid stored before
    (Twilio retrying) stores nothing and gets no second reply. Only the first text of a new
    conversation gets a reply; none for STOP/START."""
    county = line_county(text.to)
    if county is None:
        raise UnknownNumber()
    sql, params = insert_statement(text, reply_if_new(text, county))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False, ""
    transaction.on_commit(wake_worker)
    return True, row[0]
