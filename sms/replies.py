"""The automatic acknowledgement of a new SMS conversation: received, and about when an
advisor answers; outside opening hours, when the line opens and 112.

The texts are edited in the admin (sms.models.AutoReply, Swedish and English); senders with a
Swedish number get the Swedish text, others the English one. The webhook renders the reply, so
what it needs (opening hours, the queue's wait) is cached in the process for a short while: the
webhook must answer fast, whatever the queue looks like.
"""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

from sms.models import AutoReply

# Built-in texts, used until the admin has its own (a data migration puts these in the admin).
DEFAULTS = {
    AutoReply.Kind.RECEIVED: (
        "Tack för ditt sms, det har kommit fram. En rådgivare svarar så snart som möjligt, "
        "troligen inom {wait}. Är det akut, ring 112.",
        "Thank you for your text, it has arrived. An advisor will answer as soon as possible, "
        "probably within {wait}. In an emergency, call 112.",
    ),
    AutoReply.Kind.CLOSED: (
        "Tack för ditt sms, det har kommit fram. Linjen är stängd just nu och öppnar {opens}; "
        "då svarar en rådgivare. Är det akut, ring 112.",
        "Thank you for your text, it has arrived. The line is closed right now and opens "
        "{opens}; an advisor will answer then. In an emergency, call 112.",
    ),
}

CACHE_SECONDS = 30
_cache: dict[object, tuple[float, object]] = {}


def _cached(key: object, compute):  # type: ignore[no-untyped-def]
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = compute()
    _cache[key] = (now, value)
    return value


def clear_cache() -> None:
    _cache.clear()


def cached_for(county: str) -> bool:
    """Whether everything an acknowledgement for `county` needs just now is in this
    process's cache, with a second to spare, so that making it reads no database
    (sms.webhooks answers without a thread then)."""
    now = time.monotonic()

    def fresh(key: object) -> bool:
        hit = _cache.get(key)
        return hit is not None and now - hit[0] < CACHE_SECONDS - 1

    if not fresh(("hours", county)):
        return False
    is_open, _opens_at = _cache[("hours", county)][1]  # type: ignore[misc]
    if is_open:
        return fresh(("texts", AutoReply.Kind.RECEIVED)) and fresh("wait")
    return fresh(("texts", AutoReply.Kind.CLOSED))


# --- opening hours ------------------------------------------------------------------------------


def line_status(county: str) -> tuple[bool, datetime | None]:
    """(open now, when it opens next) for `county`, from the opening hours kept in the admin
    (advice.hours: per county, with holidays and exceptions; with no schedule at all the line
    is always open)."""
    from advice.hours import line_status as advice_line_status

    def compute() -> tuple[bool, datetime | None]:
        status = advice_line_status(county)
        return status.open, status.opens_at

    return _cached(("hours", county), compute)


# --- the expected wait ------------------------------------------------------------------------


def expected_wait_seconds() -> int:
    """About how long the next conversation in the queue waits (the queue's own estimate)."""
    from advice.models import QueueSnapshot

    def compute() -> int:
        snapshot = QueueSnapshot.load()
        return snapshot.estimated_wait(len(snapshot.waiting) + 1)

    return _cached("wait", compute)


def _wait_text(seconds: int, language: str) -> str:
    minutes = max(5, round(seconds / 300) * 5)  # in steps of five minutes, at least 5
    if minutes >= 90:
        hours = max(2, round(minutes / 60))
        return f"{hours} timmar" if language == "sv" else f"{hours} hours"
    return f"{minutes} minuter" if language == "sv" else f"{minutes} minutes"


WEEKDAYS = {
    "sv": ["måndag", "tisdag", "onsdag", "torsdag", "fredag", "lördag", "söndag"],
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
}
MONTHS = {
    "sv": [
        "januari",
        "februari",
        "mars",
        "april",
        "maj",
        "juni",
        "juli",
        "augusti",
        "september",
        "oktober",
        "november",
        "december",
    ],
    "en": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
}


def _opens_text(opens_at: datetime | None, now: datetime, language: str) -> str:
    if opens_at is None:
        return "senare" if language == "sv" else "later"
    zone = ZoneInfo(settings.TIME_ZONE)
    local = opens_at.astimezone(zone)
    days = (local.date() - now.astimezone(zone).date()).days
    clock = local.strftime("%H:%M")
    if language == "sv":
        if days == 0:
            return f"i dag kl. {clock}"
        if days == 1:
            return f"i morgon kl. {clock}"
        if days < 7:
            return f"på {WEEKDAYS['sv'][local.weekday()]} kl. {clock}"
        return f"den {local.day} {MONTHS['sv'][local.month - 1]} kl. {clock}"
    if days == 0:
        return f"today at {clock}"
    if days == 1:
        return f"tomorrow at {clock}"
    if days < 7:
        return f"on {WEEKDAYS['en'][local.weekday()]} at {clock}"
    return f"on {local.day} {MONTHS['en'][local.month - 1]} at {clock}"


# --- the reply ------------------------------------------------------------------------------------


def language_for(sender_number: str) -> str:
    return "sv" if sender_number.startswith("+46") else "en"


def acknowledgement_kind(county: str) -> str:
    is_open, _opens_at = line_status(county)
    return AutoReply.Kind.RECEIVED if is_open else AutoReply.Kind.CLOSED


def texts(kind: str) -> tuple[str, str]:
    def compute() -> tuple[str, str]:
        row = AutoReply.objects.filter(kind=kind).first()
        if row is None:
            return DEFAULTS[kind]
        return row.text_sv or DEFAULTS[kind][0], row.text_en or DEFAULTS[kind][1]

    return _cached(("texts", kind), compute)


def acknowledgement_text(
    kind: str, county: str, sender_number: str, now: datetime | None = None
) -> str:
    now = now or timezone.now()
    language = language_for(sender_number)
    text_sv, text_en = texts(kind)
    template = text_sv if language == "sv" else text_en
    if kind == AutoReply.Kind.CLOSED:
        _is_open, opens_at = line_status(county)
        return template.replace("{opens}", _opens_text(opens_at, now, language))
    return template.replace("{wait}", _wait_text(expected_wait_seconds(), language))
