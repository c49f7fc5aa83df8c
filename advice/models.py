"""The domain: conversations, their messages and events, and the advisors who answer them.

A conversation's state changes only through the methods on `Conversation`. Each method is
race-safe (a conditional UPDATE or a row lock), writes a `ConversationEvent` row for the audit
trail and statistics, and appends a system entry to the conversation's message stream, so a
client that resumes from its last sequence number also learns what happened meanwhile.

These methods are synchronous and run inside a transaction; they return the realtime events to
publish, and the caller publishes them once the transaction has committed (advice.realtime).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from advice import crypto
from advice.choices import (
    COUNTIES,
    INTERPRETER_LANGUAGES,
    Channel,
    InterpreterGender,
    Outcome,
    SafeNow,
    Writer,
)

# Sent inside the transaction that stores a text: (conversation, message, text). Texts of web
# chats on PostgreSQL are stored by advice.fastpath in one statement and send no signal; every
# other channel's texts (SMS) go through `Conversation.post` and send it.
message_posted = Signal()


class DomainError(Exception):
    """A request the domain refuses. `code` is the stable error code of the protocol."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a plain digest is enough: the table never holds a token
    # that could be replayed.
    return hashlib.sha256(token.encode()).hexdigest()


def new_visitor_token() -> str:
    return secrets.token_urlsafe(32)


class AdvisorProfile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, models.CASCADE, related_name="advisor_profile"
    )
    display_name = models.CharField(
        _("name shown to visitors"),
        max_length=60,
        blank=True,
        help_text=_("A first name or a pseudonym. Empty shows 'Advisor'."),
    )
    capacity = models.PositiveSmallIntegerField(
        _("conversations at once"), default=settings.DEFAULT_ADVISOR_CAPACITY
    )
    languages = models.JSONField(
        _("languages spoken"),
        default=list,
        blank=True,
        help_text=_("Language codes, for example ['sv', 'en', 'ar']."),
    )
    can_see_phone_numbers = models.BooleanField(_("may see full phone numbers"), default=False)

    def __str__(self) -> str:
        return self.display_name or self.user.get_username()

    def spoken(self) -> set[str]:
        """The language codes the advisor speaks. `languages` is meant to be a list of codes;
        anything else stored there (a typo in the admin's JSON) counts as speaking none, and
        take_next's statement on PostgreSQL (advice.fastpath) reads it the same way."""
        if not isinstance(self.languages, list):
            return set()
        return {code for code in self.languages if isinstance(code, str)}

    @classmethod
    def for_user(cls, user: Any) -> AdvisorProfile:
        profile, _created = cls.objects.get_or_create(user=user)
        return profile


class ConversationQuerySet(models.QuerySet["Conversation"]):
    def waiting(self) -> ConversationQuerySet:
        return self.filter(status=Conversation.Status.WAITING)

    def in_queue_order(self) -> ConversationQuerySet:
        """Urgent first, then longest waiting."""
        return self.waiting().order_by("-urgent", "created_at", "id")

    def open(self) -> ConversationQuerySet:
        return self.filter(status__in=Conversation.OPEN_STATUSES)

    def for_visitor_token(self, token: str) -> ConversationQuerySet:
        return self.filter(token_hash=hash_token(token))


class Conversation(models.Model):
    class Status(models.TextChoices):
        WAITING = "waiting", _("Waiting")
        ACTIVE = "active", _("Active")
        CLOSED = "closed", _("Closed")
        ABANDONED = "abandoned", _("Abandoned")

    class EndReason(models.TextChoices):
        ADVISOR_CLOSED = "advisor_closed", _("Closed by the advisor")
        VISITOR_ENDED = "visitor_ended", _("Ended by the visitor")
        VISITOR_LEFT = "visitor_left", _("Left the queue")
        QUICK_EXIT = "quick_exit", _("Left by quick exit")
        OPTED_OUT = "opted_out", _("The sender texted STOP")

    OPEN_STATUSES = (Status.WAITING, Status.ACTIVE)

    # The advisor side's identifier. The visitor side never sees it: visitors hold a token.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.WEB)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.WAITING)
    language = models.CharField(max_length=8, default="sv")
    interpreter_needed = models.BooleanField(default=False)
    interpreter_language = models.CharField(max_length=8, blank=True, choices=INTERPRETER_LANGUAGES)
    # The visitor's wishes for the interpreter; in honour contexts an interpreter from the
    # visitor's own community can be the reason not to speak.
    interpreter_outside_community = models.BooleanField(default=False)
    interpreter_gender = models.CharField(
        max_length=8, blank=True, choices=InterpreterGender.choices
    )
    county = models.CharField(max_length=4, blank=True, choices=COUNTIES)
    writer = models.CharField(max_length=12, choices=Writer.choices, default=Writer.YOUNG_PERSON)
    safe_now = models.CharField(max_length=8, blank=True, choices=SafeNow.choices)
    urgent = models.BooleanField(default=False)
    advisor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.PROTECT,
        null=True,
        blank=True,
        related_name="conversations",
    )
    created_at = models.DateTimeField(default=timezone.now)
    taken_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, blank=True, choices=EndReason.choices)
    outcome = models.CharField(max_length=24, blank=True, choices=Outcome.choices)
    # The highest sequence number handed out in this conversation's stream.
    last_seq = models.PositiveIntegerField(default=0)
    # The earlier conversation a return code linked this one to (advice.returncodes).
    previous = models.ForeignKey(
        "self",
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # The advisor's private notes (never shown to the visitor), Fernet ciphertext. The next
    # advisor reads them through a return-code link.
    note_body = models.TextField(blank=True)
    note_updated_at = models.DateTimeField(null=True, blank=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        indexes = [
            # The queue: waiting conversations, urgent first, then oldest (in_queue_order).
            models.Index(
                fields=["-urgent", "created_at"],
                name="conversation_queue",
                condition=Q(status="waiting"),
            ),
            models.Index(fields=["advisor", "status"], name="conversation_advisor_status"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} {str(self.public_id)[:8]}"

    # --- creation -------------------------------------------------------------------------

    @classmethod
    def start_web(cls, **options: Any) -> tuple[Conversation, str, list[dict]]:
        """Open an anonymous web conversation in the queue (`options` as `new_web` takes them);
        returns it, the visitor's token (shown once, stored only as a hash) and the events to
        publish."""
        conversation, token = cls.new_web(**options)
        with transaction.atomic():
            conversation.save(force_insert=True)
            conversation.created_event().save(force_insert=True)
        return conversation, token, [queue_changed()]

    @classmethod
    def new_web(
        cls,
        *,
        language: str,
        writer: str,
        interpreter_needed: bool = False,
        interpreter_language: str = "",
        interpreter_outside_community: bool = False,
        interpreter_gender: str = "",
        county: str = "",
        safe_now: str = "",
        previous: Conversation | None = None,
    ) -> tuple[Conversation, str]:
        """The web conversation `start_web` stores, not yet stored, and the visitor's token.
        advice.fastpath stores the same row (and its `created_event`) in one statement."""
        token = new_visitor_token()
        conversation = cls(
            token_hash=hash_token(token),
            channel=Channel.WEB,
            language=language,
            writer=writer,
            interpreter_needed=interpreter_needed,
            interpreter_language=interpreter_language if interpreter_needed else "",
            interpreter_outside_community=interpreter_needed and interpreter_outside_community,
            interpreter_gender=interpreter_gender if interpreter_needed else "",
            county=county,
            previous=previous,
            safe_now=safe_now,
            # "Not safe right now" puts the conversation first in the queue.
            urgent=safe_now == SafeNow.NO,
        )
        return conversation, token

    def created_event(self) -> ConversationEvent:
        """The audit entry of this conversation's creation, not yet stored."""
        return ConversationEvent(
            conversation=self, kind=ConversationEvent.Kind.CREATED, data={"channel": self.channel}
        )

    @classmethod
    def start_sms(
        cls, *, county: str = "", writer: str = Writer.PROFESSIONAL, language: str = "sv"
    ) -> tuple[Conversation, list[dict]]:
        """Open a conversation in the queue for a text from a phone (sms/ keeps the number and
        threads later texts to it); returns it and the events to publish. Those who text the
        line are professionals unless we learn otherwise. There is no visitor token: the
        sender is known by their number, never by anything on the visitor side."""
        with transaction.atomic():
            conversation = cls.objects.create(
                channel=Channel.SMS, language=language, writer=writer, county=county
            )
            conversation.created_event().save(force_insert=True)
        return conversation, [queue_changed()]

    # --- state transitions ----------------------------------------------------------------

    def take(self, advisor: Any) -> list[dict]:
        """Assign a waiting conversation to `advisor`.

        Exactly one of several advisors taking the same conversation at once wins: the
        advisor's profile row is locked (so capacity is checked against a stable count), then
        the conversation moves with a conditional UPDATE that only a waiting row satisfies.
        """
        with transaction.atomic():
            _check_capacity(advisor)
            if not self._claim(advisor):
                raise DomainError("already_taken", "Another advisor has taken this conversation.")
            return self._taken_by(advisor)

    def _claim(self, advisor: Any, read_back: bool = True) -> bool:
        """The conditional UPDATE that makes the conversation the advisor's (only a waiting
        row moves); then the whole row is read back, as this object may be out of date
        (take_next, which has just read the row under its lock, sets the three fields
        instead)."""
        taken_at = timezone.now()
        updated = Conversation.objects.filter(pk=self.pk, status=self.Status.WAITING).update(
            status=self.Status.ACTIVE, advisor=advisor, taken_at=taken_at
        )
        if updated != 1:
            return False
        if read_back:
            self.refresh_from_db(fields=[f.attname for f in self._meta.concrete_fields])
        else:
            self.status, self.advisor, self.taken_at = self.Status.ACTIVE, advisor, taken_at
        return True

    def _taken_by(self, advisor: Any) -> list[dict]:
        event, entry = self.take_records(advisor)
        event.save(force_insert=True)
        self._append_entry(entry)
        return self.taken_events(entry)

    def take_records(self, advisor: Any) -> tuple[ConversationEvent, Message]:
        """What a take writes beside the conversation's own row, unsaved: the audit event and
        the stream's "advisor joined" entry (its seq is the next one, given when stored)."""
        return (
            self._event(ConversationEvent.Kind.TAKEN, advisor=advisor),
            self._system_entry(Message.Event.ADVISOR_JOINED, advisor=advisor),
        )

    def taken_events(self, entry: Message) -> list[dict]:
        # The state first: it makes the advisor's sockets follow the conversation.
        return [self.state_event(), entry.as_event(), queue_changed()]

    def language_needed(self) -> str:
        """The language the conversation has to be held in: the interpreter's language when
        the visitor asked for one, otherwise the language the visitor chose for the chat."""
        return self.interpreter_language if self.interpreter_needed else self.language

    def fit_for(self, spoken: set[str]) -> int:
        """How well an advisor who speaks `spoken` fits: 0 speaks the language needed (no
        interpreter to arrange), 1 the chat is in a language the advisor does not speak but no
        interpreter was asked for, 2 an interpreter has to be brought in first."""
        if self.language_needed() in spoken:
            return 0
        return 2 if self.interpreter_needed else 1

    @classmethod
    def take_next(cls, advisor: Any) -> tuple[Conversation, list[dict]]:
        """Take the best conversation for this advisor that nobody else takes first.

        Urgent conversations always come first. Within urgent and within the rest, a
        conversation the advisor can take without an interpreter comes before one that needs
        an interpreter in a language the advisor does not speak, and otherwise queue order
        holds. The preference lapses once a conversation has waited
        TAKE_NEXT_PREFERENCE_MINUTES: past that it is taken in plain queue order, so a visitor
        who needs an interpreter is never passed over for ever by advisors who would rather
        not arrange one.

        This method is the rule; on PostgreSQL advice.fastpath.take_next makes the same choice
        in two statements on the event loop's own connections (tests/test_take_next_fastpath.py
        holds the two to the same answers).
        """
        now = timezone.now()
        overdue = now - timedelta(minutes=settings.TAKE_NEXT_PREFERENCE_MINUTES)
        # Plain rows, not model instances: the choice needs six fields of fifty rows.
        candidates = [
            _Candidate(*row)
            for row in cls.objects.in_queue_order().values_list(*_Candidate._fields)[
                :TAKE_NEXT_CANDIDATES
            ]
        ]

        if not candidates:
            raise DomainError("queue_empty", "Nobody is waiting.")
        with transaction.atomic():
            spoken = _check_capacity(advisor).spoken()

            def preference(c: _Candidate) -> tuple[int, int]:
                fit = 0 if c.created_at <= overdue else c.fit_for(spoken)
                return (0 if c.urgent else 1, fit)

            ordered = sorted(enumerate(candidates), key=lambda ic: (preference(ic[1]), ic[0]))
            for _index, candidate in ordered:
                # Many advisors pressing "next" at once all start from the same head of the
                # queue: a conversation another advisor is taking this moment (its row is
                # locked) is passed over at once, not waited for and then lost, so each take
                # costs one transaction however many advisors take at the same time. (SQLite
                # has no row locks; its transactions take turns.)
                # The whole row, read under its lock: what the advisor is shown.
                free = (
                    cls.objects.select_for_update(skip_locked=True)
                    .filter(pk=candidate.pk, status=cls.Status.WAITING)
                    .first()
                )
                if free is not None and free._claim(advisor, read_back=False):
                    return free, free._taken_by(advisor)
        raise DomainError("queue_empty", "Nobody is waiting.")

    def close(self, advisor: Any, outcome: str) -> list[dict]:
        """The advisor ends an active conversation of theirs, with an outcome.

        This method is the rule; on PostgreSQL advice.fastpath.close makes the same change in
        one statement (tests/test_close_fastpath.py holds the two to the same rows)."""
        check_outcome(outcome)
        with transaction.atomic():
            updated = Conversation.objects.filter(
                pk=self.pk, status=self.Status.ACTIVE, advisor=advisor
            ).update(**self.closing_fields(outcome))
            if updated != 1:
                raise DomainError("not_your_conversation", "This conversation is not open for you.")
            self.refresh_from_db()
            event, entry = self.close_records(advisor, outcome)
            event.save(force_insert=True)
            self._append_entry(entry)
        return self.closed_events(entry)

    def closing_fields(self, outcome: str) -> dict[str, Any]:
        return {
            "status": self.Status.CLOSED,
            "ended_at": timezone.now(),
            "outcome": outcome,
            "end_reason": self.EndReason.ADVISOR_CLOSED,
        }

    def close_records(self, advisor: Any, outcome: str) -> tuple[ConversationEvent, Message]:
        """What a close writes beside the conversation's own row, unsaved: the audit event and
        the stream's "closed" entry (its seq is the next one, given when stored)."""
        return (
            self._event(ConversationEvent.Kind.CLOSED, advisor=advisor, data={"outcome": outcome}),
            self._system_entry(Message.Event.CLOSED, advisor=advisor),
        )

    def closed_events(self, entry: Message) -> list[dict]:
        return [entry.as_event(), self.state_event()]

    def end_by_visitor(self, reason: str = EndReason.VISITOR_ENDED) -> list[dict]:
        """The visitor leaves: a waiting conversation is abandoned, an active one ends."""
        with transaction.atomic():
            locked = Conversation.objects.select_for_update().get(pk=self.pk)
            if locked.status not in self.OPEN_STATUSES:
                raise DomainError("conversation_ended", "This conversation has already ended.")
            was_waiting = locked.status == self.Status.WAITING
            new_status = self.Status.ABANDONED if was_waiting else self.Status.CLOSED
            if reason == self.EndReason.VISITOR_ENDED and was_waiting:
                reason = self.EndReason.VISITOR_LEFT
            Conversation.objects.filter(pk=self.pk).update(
                status=new_status, ended_at=timezone.now(), end_reason=reason
            )
            self.refresh_from_db()
            kind = ConversationEvent.Kind.ABANDONED if was_waiting else ConversationEvent.Kind.ENDED
            self._record(kind, data={"reason": reason})
            entry = self._append_system(Message.Event.VISITOR_LEFT, data={"reason": reason})
        events = [entry.as_event(), self.state_event()]
        if was_waiting:
            events.append(queue_changed())
        return events

    def set_urgent(self, advisor: Any, urgent: bool) -> list[dict]:
        with transaction.atomic():
            updated = (
                Conversation.objects.filter(pk=self.pk, status__in=self.OPEN_STATUSES)
                .exclude(urgent=urgent)
                .update(urgent=urgent)
            )
            if updated:
                self.refresh_from_db()
                self._record(
                    ConversationEvent.Kind.URGENCY, advisor=advisor, data={"urgent": urgent}
                )
            elif not Conversation.objects.open().filter(pk=self.pk).exists():
                raise DomainError("conversation_ended", "This conversation has already ended.")
        return [self.state_event(), queue_changed()] if updated else []

    def set_interpreter(self, advisor: Any, needed: bool, language: str) -> list[dict]:
        if needed and language not in dict(INTERPRETER_LANGUAGES):
            raise DomainError(
                "invalid_language", "Choose the interpreter's language from the list."
            )
        with transaction.atomic():
            updated = Conversation.objects.filter(pk=self.pk, status__in=self.OPEN_STATUSES).update(
                interpreter_needed=needed, interpreter_language=language if needed else ""
            )
            if updated != 1:
                raise DomainError("conversation_ended", "This conversation has already ended.")
            self.refresh_from_db()
            self._record(
                ConversationEvent.Kind.INTERPRETER,
                advisor=advisor,
                data={"needed": needed, "language": self.interpreter_language},
            )
        return [self.state_event(), queue_changed()]

    # --- the message stream -----------------------------------------------------------------

    def post(
        self, *, sender: str, text: str, client_id: str = "", advisor: Any = None
    ) -> tuple[Message, bool, list[dict]]:
        """Append a text to the stream. Returns (message, created, events).

        A text the client sends again with the same client_id (a retry after a dropped
        connection) returns the stored message with created=False and is not stored twice.
        The conversation row is locked while the next sequence number is taken, so numbers are
        gap-free and commit in order.
        """
        validate_text(text)
        with transaction.atomic():
            locked = Conversation.objects.select_for_update().get(pk=self.pk)
            if client_id:
                existing = Message.objects.filter(
                    conversation=locked, sender=sender, client_id=client_id
                ).first()
                if existing is not None:
                    return existing, False, []
            if locked.status not in self.OPEN_STATUSES:
                raise DomainError("conversation_ended", "This conversation has already ended.")
            not_theirs = locked.advisor_id != getattr(advisor, "pk", None)
            if sender == Message.Sender.ADVISOR and not_theirs:
                raise DomainError("not_your_conversation", "This conversation is not open for you.")
            message = locked._append(
                sender=sender, body=crypto.encrypt(text), client_id=client_id, advisor=advisor
            )
            # Inside the transaction: a channel that must act on the text (the SMS outbox) does
            # so atomically with storing it.
            message_posted.send(
                sender=Conversation, conversation=locked, message=message, text=text
            )
        self.last_seq = message.seq
        return message, True, [message.as_event()]

    def messages_after(self, seq: int, limit: int = 500) -> list[Message]:
        entries = list(self.messages.filter(seq__gt=seq).order_by("seq")[:limit])
        for entry in entries:
            entry.conversation = self  # as_event needs it; spare a query per entry
        return entries

    def _append(self, **fields: Any) -> Message:
        """Take the next sequence number and store an entry. Caller holds the row lock."""
        return self._append_entry(Message(conversation=self, **fields))

    def _append_entry(self, entry: Message) -> Message:
        self.last_seq = _next_seq(self.pk)
        entry.seq = self.last_seq
        entry.save(force_insert=True)
        return entry

    def _append_system(self, event: str, advisor: Any = None, data: dict | None = None) -> Message:
        return self._append_entry(self._system_entry(event, advisor=advisor, data=data))

    def _system_entry(self, event: str, advisor: Any = None, data: dict | None = None) -> Message:
        return Message(
            conversation=self,
            sender=Message.Sender.SYSTEM,
            event=event,
            advisor=advisor,
            data=data or {},
        )

    def _record(self, kind: str, advisor: Any = None, data: dict | None = None) -> None:
        self._event(kind, advisor=advisor, data=data).save(force_insert=True)

    def _event(self, kind: str, advisor: Any = None, data: dict | None = None) -> ConversationEvent:
        return ConversationEvent(conversation=self, kind=kind, advisor=advisor, data=data or {})

    # --- what clients see -------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    def waited_seconds(self, now: Any = None) -> int:
        end = self.taken_at or self.ended_at or now or timezone.now()
        return max(0, int((end - self.created_at).total_seconds()))

    def summary(self) -> dict[str, Any]:
        """The conversation as the advisor console shows it (no message content)."""
        return {
            "id": str(self.public_id),
            "channel": self.channel,
            "status": self.status,
            "writer": self.writer,
            "language": self.language,
            "interpreter_needed": self.interpreter_needed,
            "interpreter_language": self.interpreter_language,
            "interpreter_outside_community": self.interpreter_outside_community,
            "interpreter_gender": self.interpreter_gender,
            # Linked by a return code to an earlier conversation the advisor can read.
            "returning": self.previous_id is not None,
            "county": self.county,
            "safe_now": self.safe_now,
            "urgent": self.urgent,
            "created_at": self.created_at.isoformat(),
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
            "advisor": self.advisor_id,
            "end_reason": self.end_reason,
            "outcome": self.outcome,
            "last_seq": self.last_seq,
        }

    def state_event(self) -> dict[str, Any]:
        return {"kind": "conversation", "conversation": self.pk, "summary": self.summary()}


def _check_capacity(advisor: Any) -> AdvisorProfile:
    """Lock the advisor's profile (made if missing; so concurrent takes count against a stable
    number) and refuse a take beyond their capacity; the profile. Inside the caller's
    transaction."""
    profile, _created = AdvisorProfile.objects.select_for_update().get_or_create(user=advisor)
    active = Conversation.objects.filter(advisor=advisor, status=Conversation.Status.ACTIVE)
    if active.count() >= profile.capacity:
        raise DomainError(
            "capacity_reached",
            "You already have as many conversations as your capacity allows.",
        )
    return profile


def check_outcome(outcome: Any) -> None:
    if outcome not in Outcome.values:
        raise DomainError("invalid_outcome", "Choose an outcome from the list.")


def validate_text(text: Any) -> str:
    if not isinstance(text, str):
        raise DomainError("invalid_field", "text must be a string.")
    if not text.strip():
        raise DomainError("empty_message", "The message is empty.")
    if len(text) > settings.MAX_MESSAGE_LENGTH:
        raise DomainError(
            "message_too_long",
            f"The message is longer than {settings.MAX_MESSAGE_LENGTH} characters.",
        )
    return text


class _Candidate(NamedTuple):
    """A waiting conversation as take_next chooses among them: the fields of the choice, and
    the choosing rules of Conversation itself."""

    pk: int
    language: str
    urgent: bool
    interpreter_needed: bool
    interpreter_language: str
    created_at: datetime

    language_needed = Conversation.language_needed
    fit_for = Conversation.fit_for


def _next_seq(conversation_id: int) -> int:
    """Hand out the conversation's next sequence number (the caller holds its row lock): one
    UPDATE … RETURNING (PostgreSQL, and SQLite since 3.35), not an UPDATE and a SELECT."""
    table = Conversation._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq',  # noqa: S608
            [conversation_id],
        )
        return cursor.fetchone()[0]


# take_next chooses among this many at the head of the queue.
TAKE_NEXT_CANDIDATES = 50


def queue_changed() -> dict[str, Any]:
    return {"kind": "queue"}


class Message(models.Model):
    """One entry in a conversation's stream: a text, or a system entry (joined, ended, ...)."""

    class Sender(models.TextChoices):
        VISITOR = "visitor", _("Visitor")
        ADVISOR = "advisor", _("Advisor")
        INTERPRETER = "interpreter", _("Interpreter")
        SYSTEM = "system", _("System")

    class Event(models.TextChoices):
        ADVISOR_JOINED = "advisor_joined", _("An advisor joined")
        VISITOR_LEFT = "visitor_left", _("The visitor left")
        CLOSED = "closed", _("The advisor ended the conversation")
        # An interpreter's way in (advice.interpreters).
        INTERPRETER_INVITED = "interpreter_invited", _("The advisor invited an interpreter")
        INTERPRETER_WAITING = "interpreter_waiting", _("The interpreter asks to join")
        INTERPRETER_REFUSED = "interpreter_refused", _("The visitor said no to the interpreter")
        INTERPRETER_JOINED = "interpreter_joined", _("The interpreter joined")
        INTERPRETER_SHARED = "interpreter_shared", _("The interpreter was shown earlier messages")
        INTERPRETER_LEFT = "interpreter_left", _("The interpreter left")
        INTERPRETER_REVOKED = "interpreter_revoked", _("The advisor withdrew the invitation")

    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField()
    sender = models.CharField(max_length=12, choices=Sender.choices)
    advisor = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Fernet ciphertext of the text; empty for system entries.
    body = models.TextField(blank=True)
    event = models.CharField(max_length=24, blank=True, choices=Event.choices)
    data = models.JSONField(default=dict, blank=True)
    # The sender's own id for the text, so a retried send is stored once.
    client_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_unique_seq"),
            models.UniqueConstraint(
                fields=["conversation", "sender", "client_id"],
                name="message_unique_client_id",
                condition=~Q(client_id=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}#{self.seq}"

    @property
    def text(self) -> str:
        # Known already where the text has just been encrypted (advice.fastpath.post).
        plaintext = self.__dict__.get("plaintext")
        if plaintext is not None:
            return plaintext
        return crypto.decrypt(self.body) if self.body else ""

    def as_event(self) -> dict[str, Any]:
        return {
            "kind": "message",
            "conversation": self.conversation_id,
            "public_id": str(self.conversation.public_id),
            "seq": self.seq,
            "sender": self.sender,
            "advisor": self.advisor_id,
            "text": self.text,
            "event": self.event,
            "data": self.data,
            "client_id": self.client_id,
            "sent_at": self.created_at.isoformat(),
        }


class ConversationEvent(models.Model):
    """The audit trail of a conversation's state changes; statistics are counted from it."""

    class Kind(models.TextChoices):
        CREATED = "created", _("Created")
        TAKEN = "taken", _("Taken")
        CLOSED = "closed", _("Closed")
        ENDED = "ended", _("Ended by the visitor")
        ABANDONED = "abandoned", _("Abandoned")
        URGENCY = "urgency", _("Urgency changed")
        INTERPRETER = "interpreter", _("Interpreter changed")
        INTERPRETER_INVITED = "interpreter_invited", _("Interpreter invited")
        INTERPRETER_WAITING = "interpreter_waiting", _("Interpreter opened the link")
        INTERPRETER_REFUSED = "interpreter_refused", _("Visitor refused the interpreter")
        INTERPRETER_JOINED = "interpreter_joined", _("Interpreter joined")
        INTERPRETER_SHARED = "interpreter_shared", _("Earlier messages shared")
        INTERPRETER_LEFT = "interpreter_left", _("Interpreter left")
        INTERPRETER_REVOKED = "interpreter_revoked", _("Interpreter invitation revoked")
        RETURN_CODE_ISSUED = "return_code_issued", _("Return code issued")
        LINKED = "linked", _("Linked to an earlier conversation")
        NOTE = "note", _("Advisor notes changed")

    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="events")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    advisor = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["conversation", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.created_at:%Y-%m-%d %H:%M}"


# The head of the queue that advisors are sent. A summary is about 400 bytes of JSON and Daphne
# refuses frames over 64 KiB (manage.py serve): 500 summaries made a 206 KB frame that never
# left the server, so in a surge the consoles stopped updating (docs/performance.md).
QUEUE_SENT_TO_ADVISORS = 100


@dataclass
class QueueSnapshot:
    """The waiting conversations in queue order, and an estimate of the wait."""

    waiting: list[Conversation] = field(default_factory=list)
    average_wait_seconds: int = 0
    # Every waiting conversation's id in queue order (`waiting` holds only the head), so
    # every waiting visitor learns their place, however long the queue.
    order: list[int] | None = None
    # What the sockets of a process build from this snapshot once and share (advice.sockets).
    shared: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls) -> QueueSnapshot:
        waiting = list(
            Conversation.objects.in_queue_order().select_related(None)[:QUEUE_SENT_TO_ADVISORS]
        )
        order = (
            [c.pk for c in waiting]
            if len(waiting) < QUEUE_SENT_TO_ADVISORS
            else list(Conversation.objects.in_queue_order().values_list("pk", flat=True))
        )
        recent = list(
            Conversation.objects.filter(
                taken_at__isnull=False, taken_at__gte=timezone.now() - timedelta(hours=3)
            )
            .order_by("-taken_at")
            .values_list("created_at", "taken_at")[:20]
        )
        average = (
            int(sum((t - c).total_seconds() for c, t in recent) / len(recent)) if recent else 0
        )
        return cls(waiting=waiting, average_wait_seconds=average, order=order)

    def position_of(self, conversation_id: int) -> int | None:
        if not hasattr(self, "_positions"):
            order = self.order if self.order is not None else [c.pk for c in self.waiting]
            self._positions = {pk: i + 1 for i, pk in enumerate(order)}
        return self._positions.get(conversation_id)

    def summaries(self) -> list[dict[str, Any]]:
        """The waiting conversations' summaries, built once for all the advisors."""
        if "summaries" not in self.shared:
            self.shared["summaries"] = [c.summary() for c in self.waiting]
        return self.shared["summaries"]

    def estimated_wait(self, position: int) -> int:
        """Seconds: the recent average wait, scaled by the place in the queue. With no recent
        history, two minutes a place, so the visitor sees a number and not a blank."""
        per_place = max(60, self.average_wait_seconds) if self.average_wait_seconds else 120
        return per_place * position


# --- opening hours (advice.hours) -----------------------------------------------------------


class OpeningSchedule(models.Model):
    """When the line answers, for one county or (county empty) for the whole country. A county
    without a schedule of its own follows the national one; with no schedule at all the line
    is always open."""

    county = models.CharField(
        _("county"),
        max_length=4,
        blank=True,
        unique=True,
        choices=COUNTIES,
        help_text=_("Empty: the national default, for every county without its own schedule."),
    )

    class Meta:
        verbose_name = _("opening schedule")
        verbose_name_plural = _("opening schedules")
        ordering = ["county"]

    def __str__(self) -> str:
        return str(self.get_county_display()) if self.county else str(_("National default"))


def _validate_interval(opens: Any, closes: Any) -> None:
    from django.core.exceptions import ValidationError

    # 00:00 as the closing time means midnight at the end of the day.
    if opens is not None and closes is not None and closes != time(0) and closes <= opens:
        raise ValidationError(_("The line must close after it opens (00:00 means midnight)."))


class WeeklyHours(models.Model):
    """One opening interval on a weekday; a day can have several (a lunch break)."""

    class Weekday(models.IntegerChoices):
        MONDAY = 0, _("Monday")
        TUESDAY = 1, _("Tuesday")
        WEDNESDAY = 2, _("Wednesday")
        THURSDAY = 3, _("Thursday")
        FRIDAY = 4, _("Friday")
        SATURDAY = 5, _("Saturday")
        SUNDAY = 6, _("Sunday")

    schedule = models.ForeignKey(OpeningSchedule, models.CASCADE, related_name="weekly_hours")
    weekday = models.PositiveSmallIntegerField(_("weekday"), choices=Weekday.choices)
    opens = models.TimeField(_("opens"))
    closes = models.TimeField(_("closes"), help_text=_("00:00 means midnight."))

    class Meta:
        verbose_name = _("weekly opening hours")
        verbose_name_plural = _("weekly opening hours")
        ordering = ["weekday", "opens"]

    def __str__(self) -> str:
        return f"{self.get_weekday_display()} {self.opens:%H:%M}-{self.closes:%H:%M}"

    def clean(self) -> None:
        _validate_interval(self.opens, self.closes)


class Holiday(models.Model):
    """A day the whole line is closed (public holidays), unless a schedule's exception for
    that date gives other hours."""

    date = models.DateField(_("date"), unique=True)
    name = models.CharField(_("name"), max_length=60, blank=True)

    class Meta:
        verbose_name = _("holiday")
        verbose_name_plural = _("holidays")
        ordering = ["date"]

    def __str__(self) -> str:
        return f"{self.date:%Y-%m-%d} {self.name}".strip()


class OpeningException(models.Model):
    """A date on which one schedule keeps other hours than its weekly ones. A row without
    hours closes the day; rows with hours replace the weekly hours for that date."""

    schedule = models.ForeignKey(OpeningSchedule, models.CASCADE, related_name="exceptions")
    date = models.DateField(_("date"))
    opens = models.TimeField(_("opens"), null=True, blank=True)
    closes = models.TimeField(_("closes"), null=True, blank=True)
    note = models.CharField(_("note"), max_length=60, blank=True)

    class Meta:
        verbose_name = _("opening exception")
        verbose_name_plural = _("opening exceptions")
        ordering = ["date", "opens"]
        indexes = [models.Index(fields=["schedule", "date"])]

    def __str__(self) -> str:
        if self.opens is None:
            return f"{self.date:%Y-%m-%d} {_('closed')}"
        return f"{self.date:%Y-%m-%d} {self.opens:%H:%M}-{self.closes:%H:%M}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if (self.opens is None) != (self.closes is None):
            raise ValidationError(_("Give both times, or neither for a closed day."))
        _validate_interval(self.opens, self.closes)


class EmergencyNumber(models.Model):
    """The numbers shown while the line is closed. The label is English source text and is
    shown through the translations (the defaults are in locale/*; a new label shows as typed
    until it is translated)."""

    label = models.CharField(_("label (English)"), max_length=120)
    number = models.CharField(_("number"), max_length=30)
    order = models.PositiveSmallIntegerField(_("order"), default=0)
    active = models.BooleanField(_("shown"), default=True)

    class Meta:
        verbose_name = _("emergency number")
        verbose_name_plural = _("emergency numbers")
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return f"{self.number} {self.label}"


# --- interpreters (advice.interpreters) -----------------------------------------------------


class InterpreterInvitation(models.Model):
    """One interpreter's way into one conversation: a single-use link (its secret stored only
    as a hash), exchanged once for a token (also a hash), then the visitor's consent.

    pending --link opened--> waiting --visitor yes--> joined --leave/revoke--> left/revoked
                                     --visitor no---> refused
    pending/waiting --advisor revokes--> revoked; pending past expires_at --> expired.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Link not opened yet")
        WAITING = "waiting", _("Waiting for the visitor's consent")
        JOINED = "joined", _("In the conversation")
        REFUSED = "refused", _("The visitor said no")
        LEFT = "left", _("Left")
        REVOKED = "revoked", _("Revoked")
        EXPIRED = "expired", _("Expired unopened")

    ACTIVE_STATUSES = (Status.PENDING, Status.WAITING, Status.JOINED)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    conversation = models.ForeignKey(
        Conversation, models.CASCADE, related_name="interpreter_invitations"
    )
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    secret_hash = models.CharField(max_length=64, unique=True)
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    opened_at = models.DateTimeField(null=True, blank=True)
    joined_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # The stream entry that marks the join: the interpreter reads from here on...
    joined_seq = models.PositiveIntegerField(null=True, blank=True)
    # ...and, once the advisor shares it, from this earlier point.
    shared_from_seq = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            # One interpreter at a time per conversation.
            models.UniqueConstraint(
                fields=["conversation"],
                name="one_active_interpreter_invitation",
                condition=Q(status__in=["pending", "waiting", "joined"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.conversation} {self.status}"

    def is_expired(self, now: Any = None) -> bool:
        return self.status == self.Status.PENDING and (now or timezone.now()) >= self.expires_at

    def as_dict(self) -> dict[str, Any]:
        status = "expired" if self.is_expired() else self.status
        return {
            "id": str(self.public_id),
            "status": status,
            "expires_at": self.expires_at.isoformat(),
            "joined_seq": self.joined_seq,
            "shared_from_seq": self.shared_from_seq,
        }


# --- return codes (advice.returncodes) ------------------------------------------------------


class ReturnCode(models.Model):
    """A code a visitor takes away at the end of a conversation; a new chat started with it
    within RETURN_CODE_DAYS is linked to that conversation. Only a keyed hash is stored; a code
    works once (its row is deleted when used) and expires."""

    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="return_codes")
    code_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["expires_at"])]

    def __str__(self) -> str:
        return f"{self.conversation} {self.created_at:%Y-%m-%d}"
