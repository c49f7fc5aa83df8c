"""Who wrote in, as the advisor console shows it: the contact details a channel keeps for its
conversations (an SMS sender's number), added to conversation summaries.

The domain does not know the channels' details. A channel that has some registers a lookup
here at startup (sms.apps.SmsConfig.ready registers sms.contacts.with_contacts), and the
console asks here, so it imports no channel. With no channel registered, summaries go out as
they are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (summaries, *, full, cache) -> summaries: copies with a "contact" field where the channel
# knows one, the number in full when `full`, else masked. Synchronous (it reads the database).
ContactLookup = Callable[..., list[dict[str, Any]]]

_lookups: list[ContactLookup] = []


def register(lookup: ContactLookup) -> None:
    if lookup not in _lookups:
        _lookups.append(lookup)


def with_contacts(
    summaries: list[dict[str, Any]], *, full: bool, cache: Any = None
) -> list[dict[str, Any]]:
    """`summaries` with each registered channel's contact details. Synchronous."""
    for lookup in _lookups:
        summaries = lookup(summaries, full=full, cache=cache)
    return summaries


# channel -> the condition on a conversation's row that it has someone to answer by that
# channel (an SMS conversation: a number). Registered by the channel at startup.
_reachable: dict[str, Any] = {}


def register_reachable(channel: str, condition: Any) -> None:
    _reachable[channel] = condition


def reachable(channel: str) -> Any:
    """A Q that holds for the conversations of `channel` that can be answered; with no channel
    registered, none can."""
    from django.db.models import Q

    return _reachable.get(channel, Q(pk__isnull=True))
