"""Who texted, as the advisor console shows it: the number masked to its last two digits, or
in full for advisors allowed to see numbers (AdvisorProfile.can_see_phone_numbers).

A conversation's summary (advice.models.Conversation.summary) is built without knowing who
looks at it and is shared by every socket of a process; the advisor's socket passes the SMS
summaries it sends through advice.contacts.with_contacts, where sms.apps registers this module's
`with_contacts`, which returns copies with a "contact" field.
"""

from __future__ import annotations

from typing import Any

from advice import crypto
from advice.choices import Channel
from sms.models import SmsThread

MASK = "•••• •• "


def masked(number: str) -> str:
    return MASK + number[-2:]


def with_contacts(
    summaries: list[dict[str, Any]], *, full: bool, cache: Any = None
) -> list[dict[str, Any]]:
    """Copies of `summaries` with "contact" on the SMS ones. `cache` (the queue snapshot all
    the advisors of a process are sent) keeps the lookup to one query per snapshot."""
    wanted = [s["id"] for s in summaries if s.get("channel") == Channel.SMS]
    if not wanted:
        return summaries
    senders: dict[str, str] = getattr(cache, "_sms_senders", None) or {}
    missing = [public_id for public_id in wanted if public_id not in senders]
    if missing:
        rows = SmsThread.objects.filter(conversation__public_id__in=missing).values_list(
            "conversation__public_id", "sender"
        )
        senders.update({str(public_id): sender for public_id, sender in rows})
        if cache is not None:
            cache._sms_senders = senders
    result = []
    for summary in summaries:
        ciphertext = senders.get(summary["id"]) if summary.get("channel") == Channel.SMS else None
        if ciphertext:
            number = crypto.decrypt(ciphertext)
            summary = {**summary, "contact": number if full else masked(number)}
        result.append(summary)
    return result
