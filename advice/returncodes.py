"""Return codes: "you don't have to tell your story again".

At the end of a conversation the visitor can ask for a code of three plain Swedish words drawn
at random (secrets.choice) from the 2,048 words in return_code_words.txt: 2,048^3 ~ 8.6 x 10^9
codes, 33 bits. A new chat started with the code within RETURN_CODE_DAYS is linked to the
earlier conversation, and its advisor reads that conversation and its notes.

Why three words are enough here, and what has to hold for that:
- A code is only ever checked online, through the visitor socket: the table holds a keyed hash
  (HMAC-SHA256 under a key derived from SECRET_KEY, never stored in the database), so a stolen
  database alone cannot be searched for codes offline. A slow hash would not add to that: it
  needs a salt per row, and then a code cannot be looked up without saying which row it is.
- Guessing is capped for the whole service: after RETURN_CODE_FAILURES_PER_HOUR wrong codes
  (default 60) in an hour, no code is checked until the hour is over (the chat still starts;
  the visitor can tell the advisor). The count lives in Redis with a TTL, or in memory without
  Redis, and is never keyed by anything about the visitor (SAFETY.md D-2). Each socket may also
  try only MAX_TRIES_PER_SOCKET codes.
- So a month of guessing at full speed is 60 x 24 x 30 ~ 43,000 tries. Against one particular
  code that is a chance of 5 in a million; against any of, say, 1,000 codes alive at once,
  0.5 %, and what a lucky guess gains is a link the advisor sees, not the earlier conversation
  itself: the visitor side never shows anything from before. Advisors are told in the console
  to check, as with any returning caller, before they refer to what was said.
- A code works once (its row is deleted when it links), expires, and asking for a new one
  replaces the old, so a code found on a note later is worthless.
A fourth word would buy 11 bits, but a code the visitor can keep in their head, rather than on
paper someone may find, is the safer code.

Words use only the letters a-z (no å, ä, ö), so they can be typed on any keyboard, and the
list leaves out every word about violence, family conflict, the body or feelings: a code seen
over a shoulder reads as nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import unicodedata
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from advice.models import Conversation, ConversationEvent, DomainError, ReturnCode

WORDS_PER_CODE = 3
MAX_TRIES_PER_SOCKET = 5
MAX_CODES_PER_CONVERSATION = 5
WORDS_FILE = Path(__file__).with_name("return_code_words.txt")


@cache
def words() -> tuple[str, ...]:
    lines = WORDS_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def generate() -> str:
    """A new code: WORDS_PER_CODE words, separated by spaces."""
    return " ".join(secrets.choice(words()) for _ in range(WORDS_PER_CODE))


def normalise(code: str) -> str:
    """What the visitor typed, as the code it means: case, accents on a-z, spaces, dashes and
    dots do not matter."""
    text = unicodedata.normalize("NFKD", code).encode("ascii", "ignore").decode().lower()
    parts = "".join(ch if ch.isalpha() else " " for ch in text).split()
    return " ".join(parts)


def _keys() -> list[str]:
    # The current secret key first; the fallbacks keep codes issued before a key rotation
    # working until they expire.
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def code_hash(code: str, secret_key: str | None = None) -> str:
    key = hashlib.sha256(f"return-code:{secret_key or settings.SECRET_KEY}".encode()).digest()
    return hmac.new(key, normalise(code).encode(), hashlib.sha256).hexdigest()


# --- issuing ----------------------------------------------------------------------------------


def issue(conversation: Conversation) -> tuple[str, ReturnCode]:
    """A code for the visitor of `conversation`, which must have reached an advisor (active or
    closed, not left by quick exit). An earlier code of the same conversation stops working."""
    now = timezone.now()
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if (
            locked.taken_at is None
            or locked.status not in (Conversation.Status.ACTIVE, Conversation.Status.CLOSED)
            or locked.end_reason == Conversation.EndReason.QUICK_EXIT
        ):
            raise DomainError(
                "return_code_unavailable",
                "A return code can be given once you have talked with an advisor.",
            )
        issued = locked.events.filter(kind=ConversationEvent.Kind.RETURN_CODE_ISSUED).count()
        if issued >= MAX_CODES_PER_CONVERSATION:
            raise DomainError("return_code_limit", "No more return codes for this conversation.")
        # Housekeeping: codes past their time are deleted, not just ignored.
        ReturnCode.objects.filter(expires_at__lte=now).delete()
        locked.return_codes.all().delete()
        while True:
            code = generate()
            digest = code_hash(code)
            if not ReturnCode.objects.filter(code_hash=digest).exists():
                break
        record = ReturnCode.objects.create(
            conversation=locked,
            code_hash=digest,
            expires_at=now + timedelta(days=settings.RETURN_CODE_DAYS),
        )
        locked._record(
            ConversationEvent.Kind.RETURN_CODE_ISSUED,
            data={"expires_at": record.expires_at.isoformat()},
        )
    return code, record


# --- redeeming --------------------------------------------------------------------------------


def redeem(code: str) -> Conversation:
    """The earlier conversation a code links to; the code is spent. Call inside the
    transaction that creates the new conversation, so a refused start spends nothing.

    Raises `return_codes_paused` while the service-wide budget of wrong codes is used up, and
    `invalid_return_code` for a code that is wrong, used or expired (one answer for all three,
    so a guess learns nothing)."""
    if not failures.allowed():
        raise DomainError(
            "return_codes_paused",
            "Return codes cannot be checked just now. Start without it and tell the advisor.",
        )
    normalised = normalise(code)
    found = None
    if len(normalised.split()) == WORDS_PER_CODE:
        found = (
            ReturnCode.objects.select_for_update()
            .filter(
                code_hash__in=[code_hash(normalised, key) for key in _keys()],
                expires_at__gt=timezone.now(),
            )
            .select_related("conversation")
            .first()
        )
    if found is None:
        failures.record()
        raise DomainError(
            "invalid_return_code",
            "This return code does not work. It may be mistyped, used already or too old.",
        )
    earlier = found.conversation
    found.delete()
    return earlier


def start_web_conversation(
    return_code: str = "", **options: Any
) -> tuple[Conversation, str, list[dict]]:
    """Conversation.start_web, linked to an earlier conversation when the visitor brings a
    return code. One transaction: a wrong code starts nothing and spends nothing."""
    with transaction.atomic():
        earlier = redeem(return_code) if return_code.strip() else None
        conversation, token, events = Conversation.start_web(previous=earlier, **options)
        if earlier is not None:
            link(conversation, earlier)
    return conversation, token, events


def link(new: Conversation, earlier: Conversation) -> None:
    """Record the link on both conversations (no code, no content)."""
    new._record(ConversationEvent.Kind.LINKED, data={"earlier": str(earlier.public_id)})
    earlier._record(ConversationEvent.Kind.LINKED, data={"later": str(new.public_id)})


# --- the guessing budget ----------------------------------------------------------------------


class FailureBudget:
    """Wrong codes per clock hour, for the whole service: in Redis (shared by every process,
    with a TTL) when REDIS_URL is set, otherwise in this process's memory (then this process
    is the whole service). Nothing about who guessed is kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._memory: dict[int, int] = {}
        self._redis: Any = None

    @staticmethod
    def _window() -> int:
        return int(time.time() // 3600)

    def _key(self, window: int) -> str:
        return f"{_prefix()}:return-code-failures:{window}"

    def _client(self) -> Any:
        if not getattr(settings, "REDIS_URL", ""):
            return None
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        return self._redis

    def count(self) -> int:
        window = self._window()
        client = self._client()
        if client is not None:
            return int(client.get(self._key(window)) or 0)
        with self._lock:
            return self._memory.get(window, 0)

    def allowed(self) -> bool:
        return self.count() < settings.RETURN_CODE_FAILURES_PER_HOUR

    def record(self) -> None:
        window = self._window()
        client = self._client()
        if client is not None:
            key = self._key(window)
            pipe = client.pipeline()
            pipe.incr(key)
            pipe.expire(key, 3600 + 60)
            pipe.execute()
            return
        with self._lock:
            self._memory = {w: n for w, n in self._memory.items() if w >= window}
            self._memory[window] = self._memory.get(window, 0) + 1

    def reset(self) -> None:
        """For tests and for an operator who has dealt with an attack."""
        client = self._client()
        if client is not None:
            for key in client.scan_iter(f"{_prefix()}:return-code-failures:*"):
                client.delete(key)
        with self._lock:
            self._memory.clear()


def _prefix() -> str:
    layer = settings.CHANNEL_LAYERS.get("default", {})
    return layer.get("CONFIG", {}).get("prefix", "advice")


failures = FailureBudget()


# --- what the next advisor reads --------------------------------------------------------------


MAX_EARLIER = 5


def earlier_conversations(conversation: Conversation) -> list[dict[str, Any]]:
    """The conversations this one is linked to, newest first, each with its notes and its
    stream, read-only, for the advisor who holds this one."""
    earlier = []
    seen = {conversation.pk}
    current = conversation.previous
    while current is not None and current.pk not in seen and len(earlier) < MAX_EARLIER:
        seen.add(current.pk)
        entries = list(current.messages.order_by("seq")[:2000])
        for entry in entries:
            entry.conversation = current
        earlier.append(
            {
                "summary": current.summary(),
                "ended_at": current.ended_at.isoformat() if current.ended_at else None,
                "note": note_of(current),
                "messages": [entry.as_event() for entry in entries],
            }
        )
        current = current.previous
    return earlier


# --- the advisor's notes ----------------------------------------------------------------------


def note_of(conversation: Conversation) -> str:
    from advice import crypto

    return crypto.decrypt(conversation.note_body) if conversation.note_body else ""


def save_note(conversation: Conversation, advisor: Any, text: str) -> Conversation:
    """Replace the advisor's notes on a conversation they hold (or held). Stored encrypted;
    the event row records that the notes changed, never what they say."""
    from advice import crypto

    if not isinstance(text, str):
        raise DomainError("invalid_field", "text must be a string.")
    if len(text) > settings.MAX_NOTE_LENGTH:
        raise DomainError(
            "note_too_long", f"Notes are longer than {settings.MAX_NOTE_LENGTH} characters."
        )
    with transaction.atomic():
        updated = Conversation.objects.filter(pk=conversation.pk, advisor=advisor).update(
            note_body=crypto.encrypt(text) if text.strip() else "",
            note_updated_at=timezone.now(),
        )
        if updated != 1:
            raise DomainError("not_your_conversation", "This conversation is not open for you.")
        conversation.refresh_from_db()
        conversation._record(
            ConversationEvent.Kind.NOTE, advisor=advisor, data={"length": len(text)}
        )
    return conversation
