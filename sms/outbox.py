"""The advisor's answers on their way to a phone: the outbox and delivery.

An advisor's text in an SMS conversation is saved by `Conversation.post` (which refuses it when
it cannot be sent) and `message_posted` is sent once it is committed; the receiver here writes
its outbox rows, and should the process stop first the worker queues the answer it finds
without them (`queue_forgotten`), so no committed answer is left unsent. The worker sends
them (sms.worker); Twilio's status callbacks (sms.views.status) and the worker move each row's
status forward, never back, and the advisor's message carries the delivery of the whole answer
in its data ("delivery", "delivery_error"), which reaches the console live as a "delivery"
event and on resume with the message itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.dispatch import receiver
from django.utils import timezone, translation

from advice import crypto
from advice.choices import Channel
from advice.models import Conversation, Message, message_posted
from sms import provider
from sms.models import OutboundSms, SmsThread, TwilioDeletion

Status = OutboundSms.Status

# Twilio accepts a body of at most 1,600 characters; longer answers go as several texts.
MAX_PART_LENGTH = 1600
# An answer without outbox rows this long after its commit was forgotten (the process stopped
# before `queue_answer` ran): the worker queues it.
FORGOTTEN_AFTER = timedelta(seconds=30)

# How far each status has come. A status only ever moves to a higher rank, so a late "sent"
# never overwrites "delivered" and a repeated callback changes nothing.
RANK = {
    Status.PENDING: 0,
    Status.ACCEPTED: 1,
    Status.SCHEDULED: 1,
    Status.QUEUED: 2,
    Status.SENDING: 3,
    Status.SENT: 4,
    Status.DELIVERED: 5,
    Status.UNDELIVERED: 5,
    Status.FAILED: 5,
    Status.CANCELED: 5,
    Status.READ: 6,
}
FINAL = {Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.CANCELED, Status.READ}
FAILED = {Status.UNDELIVERED, Status.FAILED, Status.CANCELED}

# What the advisor sees, per status.
DELIVERY = {
    Status.PENDING: "queued",
    Status.ACCEPTED: "queued",
    Status.SCHEDULED: "queued",
    Status.QUEUED: "queued",
    Status.SENDING: "queued",
    Status.SENT: "sent",
    Status.DELIVERED: "delivered",
    Status.READ: "delivered",
    Status.UNDELIVERED: "failed",
    Status.FAILED: "failed",
    Status.CANCELED: "failed",
}
DELIVERY_ORDER = ["queued", "sent", "delivered"]


def utf16_length(text: str) -> int:
    # Twilio counts characters as UTF-16 code units: an emoji counts twice.
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_PART_LENGTH) -> list[str]:
    """Split an answer into parts Twilio accepts, at a space or line break where there is
    one in the second half of a part, otherwise hard."""
    parts: list[str] = []
    rest = text
    while utf16_length(rest) > limit:
        cut = 0
        units = 0
        for index, char in enumerate(rest):
            units += 2 if ord(char) > 0xFFFF else 1
            if units > limit:
                break
            cut = index + 1
        space = max(rest.rfind(" ", 0, cut), rest.rfind("\n", 0, cut))
        if space > cut // 2:
            cut = space + 1
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


# --- the outbox ------------------------------------------------------------------------------

_wake_worker = threading.Event()


def wake_worker() -> None:
    """Tell a worker in this process that there is work (a worker elsewhere polls)."""
    _wake_worker.set()


@receiver(message_posted, sender=Channel.SMS, dispatch_uid="sms.outbox.queue_answer")
def queue_answer(
    sender: Any, conversation: Conversation, message: Message, text: str, **kwargs: Any
) -> None:
    """Write an advisor's answer in an SMS conversation to the outbox once it is committed
    (the domain has checked that it can be sent: Conversation.post_rules). Should the process
    stop before this, the worker finds the answer without outbox rows (`queue_forgotten`)."""
    if message.sender != Message.Sender.ADVISOR:
        return
    queue(message, text)
    wake_worker()


def queue(message: Message, text: str) -> bool:
    """The outbox rows of an answer, once (False: it had them already)."""
    thread = SmsThread.objects.filter(conversation_id=message.conversation_id).first()
    if thread is None:
        return False
    parts = split_text(text)
    with transaction.atomic():
        if OutboundSms.objects.filter(message=message).exists():
            return False
        OutboundSms.objects.bulk_create(
            [
                OutboundSms(
                    thread=thread,
                    message=message,
                    part=number,
                    parts=len(parts),
                    body=crypto.encrypt(part),
                )
                for number, part in enumerate(parts, start=1)
            ]
        )
    return True


def queue_forgotten(since: Any) -> int:
    """Answers committed since `since` that have no outbox rows (the process stopped between
    the commit and `queue_answer`): queued now. How many."""
    forgotten = Message.objects.filter(
        conversation__channel=Channel.SMS,
        sender=Message.Sender.ADVISOR,
        created_at__gte=since,
        created_at__lte=timezone.now() - FORGOTTEN_AFTER,
    ).exclude(Exists(OutboundSms.objects.filter(message=OuterRef("pk"))))
    queued = 0
    for message in forgotten.select_related("conversation")[:100]:
        queued += queue(message, message.text)
    return queued


# --- delivery ---------------------------------------------------------------------------------


def may_move(current: str, new: str) -> bool:
    if new not in RANK or current in FAILED:
        return False
    return RANK[new] > RANK.get(current, 0)


def advance(row_id: int, new_status: str, **fields: Any) -> bool:
    """Move one row to `new_status` if that is forward; a conditional UPDATE, so two callbacks
    racing cannot move it back. Returns whether it moved."""
    allowed = [status for status in RANK if may_move(status, new_status)]
    if not allowed:
        return False
    moved = OutboundSms.objects.filter(pk=row_id, status__in=allowed).update(
        status=new_status, updated_at=timezone.now(), **fields
    )
    return moved == 1


def delivery_of(rows: Iterable[OutboundSms]) -> tuple[str, str | None, str]:
    """The delivery of a whole answer from its parts: failed if any part failed, otherwise
    the least advanced part's. Returns (delivery, the advisor's error text, error code)."""
    rows = list(rows)
    for row in rows:
        if row.status in FAILED:
            code = row.error_code or "30008"
            with translation.override(settings.LANGUAGE_CODE):
                return "failed", provider.error_text(code), code
    if not rows:
        return "queued", None, ""
    least = min((DELIVERY[row.status] for row in rows), key=DELIVERY_ORDER.index)
    return least, None, ""


def refresh_delivery(message_id: int) -> list[dict[str, Any]]:
    """Bring the answer's delivery up to date with its parts (Message.record_delivery, which
    publishes the change). Caller holds a transaction."""

    def measure() -> tuple[str, str | None, str]:
        rows = OutboundSms.objects.filter(message_id=message_id).only("status", "error_code")
        return delivery_of(rows)

    return Message.record_delivery(message_id, measure)


def schedule_deletion(message_sid: str) -> None:
    """Delete this text at Twilio soon (issue 3, point 10), unless switched off."""
    if not settings.TWILIO_DELETE_MESSAGES or not message_sid:
        return
    try:
        with transaction.atomic():
            TwilioDeletion.objects.create(message_sid=message_sid)
    except IntegrityError:
        pass  # already scheduled
    transaction.on_commit(wake_worker)


def record_status(
    row: OutboundSms, new_status: str, error_code: str = "", twilio_sid: str = ""
) -> list[dict[str, Any]]:
    """Twilio says `row` has reached `new_status` (a callback, or the answer to the create
    request). Moves it forward if that is news, schedules its deletion at Twilio once it is
    final, and returns the events to publish. Caller holds a transaction."""
    fields: dict[str, Any] = {}
    if error_code and new_status in FAILED:
        fields["error_code"] = error_code[:20]
    moved = advance(row.pk, new_status, **fields)
    if not moved:
        return []
    sid = twilio_sid or row.twilio_sid or ""
    if new_status in FINAL:
        schedule_deletion(sid)
    return refresh_delivery(row.message_id)
