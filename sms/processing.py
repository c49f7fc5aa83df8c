"""The worker's side of an inbound text: into which conversation it goes.

A text from a number with an open SMS conversation continues it; otherwise it opens a new one
in the queue, for the county of the number it was sent to. STOP (STOPP, AVSLUTA) ends the
conversation and records an opt-out; START lifts it. Media is never fetched: the advisor sees
how many items were attached.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from advice import crypto
from advice.models import Conversation, Message
from sms.inbound import START_WORDS, STOP_WORDS, keyword, line_county
from sms.models import InboundSms, SmsOptOut, SmsThread
from sms.outbox import schedule_deletion


def shown_text(body: str, num_media: int) -> str:
    """The text the advisor reads. A text with only pictures has no words of its own."""
    if body.strip():
        return body
    return "(MMS)" if num_media else "(empty SMS)"


def _county_of(line_number: str) -> str:
    # The webhook accepted the number; it may have been deactivated since, so no county then.
    return line_county(line_number) or ""


def _current_thread(sender_hash: str) -> tuple[SmsThread | None, Conversation | None]:
    """The sender's current thread (locked), and its conversation if that is still open."""
    thread = (
        SmsThread.objects.select_for_update(of=("self",))
        .select_related("conversation")
        .filter(current_for=sender_hash)
        .first()
    )
    if thread is None:
        return None, None
    conversation = thread.conversation
    return thread, conversation if conversation.is_open else None


def _post(conversation: Conversation, row: InboundSms, text: str) -> tuple[Message, list[dict]]:
    message, _created, events = conversation.post(
        sender=Message.Sender.VISITOR,
        text=text,
        client_id=row.message_sid,
        data={"attachments": row.num_media} if row.num_media else None,
    )
    return message, events


def process(row: InboundSms) -> list[dict[str, Any]]:
    """Put one stored text into its conversation. Caller holds a transaction (and the row);
    the domain publishes the events (returned too) after commit."""
    sender = crypto.decrypt(row.sender)
    body = crypto.decrypt(row.body)
    word = keyword(body)
    thread, conversation = _current_thread(row.sender_hash)
    events: list[dict[str, Any]] = []
    message: Message | None = None

    if word in STOP_WORDS:
        SmsOptOut.objects.get_or_create(sender_hash=row.sender_hash)
        if conversation is not None:
            # The advisor reads the STOP itself, then sees the conversation end and why.
            message, events = _post(conversation, row, shown_text(body, row.num_media))
            events += conversation.end_by_visitor(reason=Conversation.EndReason.OPTED_OUT)
        if thread is not None:
            SmsThread.objects.filter(pk=thread.pk).update(current_for=None)
    elif word in START_WORDS:
        SmsOptOut.objects.filter(sender_hash=row.sender_hash).delete()
        if conversation is not None:
            message, events = _post(conversation, row, shown_text(body, row.num_media))
    else:
        if conversation is None:
            if thread is not None:
                # The last conversation has ended: the next text opens a new one.
                SmsThread.objects.filter(pk=thread.pk).update(current_for=None)
            conversation, events = Conversation.start_sms(county=_county_of(row.line_number))
            SmsThread.objects.create(
                conversation=conversation,
                sender_hash=row.sender_hash,
                sender=crypto.encrypt(sender),
                line_number=row.line_number,
                current_for=row.sender_hash,
            )
        message, posted = _post(conversation, row, shown_text(body, row.num_media))
        events += posted

    # The text now lives in the conversation (or was a keyword): the inbox keeps no copy.
    InboundSms.objects.filter(pk=row.pk).update(
        processed_at=timezone.now(), sender="", body="", message=message, last_error=""
    )
    schedule_deletion(row.message_sid)
    return events
