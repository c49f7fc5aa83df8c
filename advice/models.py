"""The domain: conversations, their messages and events, and the advisors who answer them.

A conversation's state changes only through the methods on `Conversation`. Each is a
`store.Change`: the row filtered by the rules that must hold (`Rule`), the values it sets, a
`ConversationEvent` for the audit trail and statistics, and a system entry appended to the
conversation's stream, so a client that resumes from its last sequence number also learns what
happened meanwhile. The same Change is made through the ORM (`post`, `take_next`, `close`) or,
on PostgreSQL, by one statement compiled from it (`apost`, `atake_next`, `aclose`).

Each method publishes its events once its transaction has committed (advice.events) and
returns them as well, for the caller's own use.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import (
    BooleanField,
    Case,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.db.models.lookups import In, LessThan
from django.dispatch import Signal
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from advice import contacts, crypto, events, store
from advice.choices import (
    COUNTIES,
    INTERPRETER_LANGUAGES,
    Channel,
    InterpreterGender,
    Outcome,
    SafeNow,
    Writer,
)

# Sent once a text has been stored and committed, on every path and database alike, with the
# conversation's channel (a `Channel` member) as the sender: (conversation, message, text).
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
        anything else stored there (a typo in the admin's JSON) counts as speaking none."""
        if not isinstance(self.languages, list):
            return set()
        return {code for code in self.languages if isinstance(code, str)}

    @classmethod
    def for_user(cls, user: Any) -> AdvisorProfile:
        profile, _created = cls.objects.get_or_create(user=user)
        # The caller's user, so that naming the advisor (`str`) needs no query: the console
        # names them on its event loop, where a query may not run.
        profile.user = user
        _spoken[user.pk] = profile.spoken()  # what the next take prefers (take_next)
        return profile


class ConversationQuerySet(models.QuerySet["Conversation"]):
    def waiting(self) -> ConversationQuerySet:
        return self.filter(status=Conversation.Status.WAITING)

    def in_queue_order(self) -> ConversationQuerySet:
        """Urgent first, then longest waiting."""
        return self.waiting().order_by("-urgent", "created_at", "id")

    def next_for(
        self, spoken: set[str], lapsed: datetime, preference: Callable | None = None
    ) -> ConversationQuerySet:
        """The head of the queue in the order an advisor who speaks `spoken` takes it
        (`take_preference`; the preference lapsed for those created before `lapsed`)."""
        head = self.in_queue_order().values("pk")[:TAKE_NEXT_CANDIDATES]
        order = (preference or take_preference)(spoken, lapsed)
        return self.waiting().filter(pk__in=head).order_by(*order)

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
        """Open an anonymous web conversation in the queue while the line is open for the
        visitor's county (`options` as `new_web` takes them); returns it, the visitor's token
        (shown once, stored only as a hash) and its events. Raises `LineClosed` otherwise."""
        check_line_open(options.get("county", ""))
        conversation, token = cls.new_web(**options)
        with transaction.atomic():
            conversation.save(force_insert=True)
            conversation.created_event().save(force_insert=True)
            events.on_commit([queue_changed()])
        return conversation, token, [queue_changed()]

    @classmethod
    async def astart_web(cls, **options: Any) -> tuple[Conversation, str, list[dict]]:
        """`start_web`, awaitable; on PostgreSQL without a thread, the starts of a surge
        stored together."""
        if not store.enabled():
            return await database_sync_to_async(cls.start_web)(**options)
        from advice import hours

        county = options.get("county", "")
        # Known without a query while this process's cache is fresh.
        status = hours.fresh_line_status(county) or await store.orm(hours.cached_line_status)(
            county
        )
        check_line_open(county, status)
        conversation, token = cls.new_web(**options)
        await store.insert_async(conversation, conversation.created_event())
        events.committed([queue_changed()])
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
        """The web conversation `start_web` stores, not yet stored, and the visitor's token."""
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
        threads later texts to it); returns it and its events. Those who text the line are
        professionals unless we learn otherwise. There is no visitor token: the sender is
        known by their number, never by anything on the visitor side."""
        with transaction.atomic():
            conversation = cls.objects.create(
                channel=Channel.SMS, language=language, writer=writer, county=county
            )
            conversation.created_event().save(force_insert=True)
            events.on_commit([queue_changed()])
        return conversation, [queue_changed()]

    # --- taking -----------------------------------------------------------------------------

    def take(self, advisor: Any) -> list[dict]:
        """Assign this waiting conversation to `advisor`. Of several advisors taking it at
        once exactly one wins: only a waiting row moves."""
        with transaction.atomic():
            lock_profile(advisor)
            change = self._take_change(advisor, Conversation.objects.filter(pk=self.pk))
            stored = store.apply(change)
            if stored is None:
                raise explain(self.pk, [within_capacity(advisor), TAKEN])
            self._copy(stored)
            return events.on_commit(self.taken_events(change.entry))

    def _take_change(self, advisor: Any, rows: models.QuerySet | store.Guard) -> store.Change:
        """The take of the conversation `rows` selects, where the take's rules hold
        (`takeable`; a Guard applies them itself)."""
        event = self._event(ConversationEvent.Kind.TAKEN, advisor=advisor)
        entry = self._system_entry(Message.Event.ADVISOR_JOINED, advisor=advisor)
        return store.Change(
            self.pk,
            rows if isinstance(rows, store.Guard) else takeable(rows, advisor),
            values={"status": self.Status.ACTIVE, "advisor": advisor, "taken_at": timezone.now()},
            records=[event],
            entry=entry,
        )

    def taken_events(self, entry: Message) -> list[dict]:
        # The state first: it makes the advisor's sockets follow the conversation.
        return [self.state_event(), entry.as_event(), queue_changed()]

    def language_needed(self) -> str:
        """The language the conversation has to be held in: the interpreter's language when
        the visitor asked for one, otherwise the language the visitor chose for the chat."""
        return self.interpreter_language if self.interpreter_needed else self.language

    @classmethod
    def take_next(cls, advisor: Any) -> tuple[Conversation, list[dict]]:
        """Take the best conversation for this advisor (`ConversationQuerySet.next_for`) that
        nobody else is taking this moment."""
        if not cls.objects.waiting().exists():
            raise queue_empty()  # said first, whatever the advisor's capacity
        with transaction.atomic():
            profile = lock_profile(advisor)
            _spoken[advisor.pk] = profile.spoken()
            chosen = (
                cls.objects.next_for(profile.spoken(), preference_lapsed_before(timezone.now()))
                .select_for_update(skip_locked=True, of=("self",))
                .values_list("pk", flat=True)
                .first()
            )
            if chosen is None:
                raise queue_empty()
            conversation = cls(pk=chosen)
            change = conversation._take_change(advisor, cls.objects.filter(pk=chosen))
            stored = store.apply(change)
            if stored is None:
                raise explain(chosen, [within_capacity(advisor), TAKEN])
            stored.advisor = advisor
            change.entry.conversation = stored
            return stored, events.on_commit(stored.taken_events(change.entry))

    @classmethod
    async def atake_next(cls, advisor: Any) -> tuple[Conversation, list[dict]]:
        """`take_next`, awaitable; on PostgreSQL without a thread: the same choice, compiled
        from the same QuerySet, in one transaction (an advisor's take never waits for a thread
        that a surge of arriving visitors keeps busy)."""
        spoken = _spoken.get(advisor.pk)
        if store.enabled() and spoken is not None:
            # One round trip: lock the advisor's profile, take (the rules, capacity among
            # them, read under that lock), commit. The languages the choice prefers are the
            # profile's as this process last read them (each take reads them again).
            rows = store.Guard(
                _next_rows,
                shape=(take_preference, tuple(sorted(spoken))),
                values=(advisor.pk, preference_lapsed_before(timezone.now())),
            )
            change = cls()._take_change(advisor, rows)
            lock = AdvisorProfile.objects.filter(user=advisor.pk).values_list("languages")
            locked, stored = await store.apply_after(store.locking(lock), change)
            if locked:
                languages_field = AdvisorProfile._meta.get_field("languages")
                _spoken[advisor.pk] = AdvisorProfile(
                    languages=languages_field.from_db_value(locked[0][0], None, connection)
                ).spoken()
            if stored is not None:
                stored.advisor = advisor
                return stored, events.committed_and(stored.taken_events(change.entry))
        # Nothing taken (nobody waiting, at capacity), or the first take here: the ORM's way,
        # which says why.
        return await store.advisor_orm(cls.take_next)(advisor)

    # --- closing and leaving ------------------------------------------------------------------

    def close(self, advisor: Any, outcome: str) -> list[dict]:
        """The advisor ends an active conversation of theirs, with an outcome."""
        change = self._close_change(advisor, outcome)
        with transaction.atomic():
            stored = store.apply(change)
            if stored is None:
                raise active_and_theirs(advisor).refusal()
            self._copy(stored)
            return events.on_commit(self.closed_events(change.entry))

    async def aclose(self, advisor: Any, outcome: str) -> list[dict]:
        """`close`, awaitable; on PostgreSQL without a thread."""
        if not store.enabled():
            return await store.advisor_orm(self.close)(advisor, outcome)
        change = self._close_change(advisor, outcome)
        stored = await store.apply_async(change)
        if stored is None:
            raise active_and_theirs(advisor).refusal()
        self._copy(stored)
        return events.committed_and(self.closed_events(change.entry))

    def _close_change(self, advisor: Any, outcome: str) -> store.Change:
        check_outcome(outcome)
        return store.Change(
            self.pk,
            Conversation.objects.filter(active_and_theirs(advisor).holds, pk=self.pk),
            values={
                "status": self.Status.CLOSED,
                "ended_at": timezone.now(),
                "outcome": outcome,
                "end_reason": self.EndReason.ADVISOR_CLOSED,
            },
            records=[
                self._event(
                    ConversationEvent.Kind.CLOSED, advisor=advisor, data={"outcome": outcome}
                )
            ],
            entry=self._system_entry(Message.Event.CLOSED, advisor=advisor),
        )

    def closed_events(self, entry: Message) -> list[dict]:
        return [entry.as_event(), self.state_event()]

    def end_by_visitor(self, reason: str = EndReason.VISITOR_ENDED) -> list[dict]:
        """The visitor leaves: a waiting conversation is abandoned, an active one ends."""
        with transaction.atomic():
            locked = Conversation.objects.select_for_update().get(pk=self.pk)
            if locked.status not in self.OPEN_STATUSES:
                raise ENDED.refusal()
            was_waiting = locked.status == self.Status.WAITING
            if reason == self.EndReason.VISITOR_ENDED and was_waiting:
                reason = self.EndReason.VISITOR_LEFT
            kind = ConversationEvent.Kind.ABANDONED if was_waiting else ConversationEvent.Kind.ENDED
            change = store.Change(
                self.pk,
                Conversation.objects.filter(pk=self.pk, status=locked.status),
                values={
                    "status": self.Status.ABANDONED if was_waiting else self.Status.CLOSED,
                    "ended_at": timezone.now(),
                    "end_reason": reason,
                },
                records=[self._event(kind, data={"reason": reason})],
                entry=self._system_entry(Message.Event.VISITOR_LEFT, data={"reason": reason}),
            )
            stored = store.apply(change)
            self._copy(stored)
            published = [change.entry.as_event(), self.state_event()]
            if was_waiting:
                published.append(queue_changed())
            return events.on_commit(published)

    def quick_exit(self) -> list[dict]:
        """The visitor pressed quick exit: end the conversation as left by quick exit (if it
        has not ended already) and revoke the visitor's token, so that nobody who later picks
        up the device can open it again. Its events (none if it had ended)."""
        with transaction.atomic():
            try:
                published = self.end_by_visitor(reason=self.EndReason.QUICK_EXIT)
            except DomainError as e:
                if e.code != ENDED.code:
                    raise
                published = []  # ended a moment ago: nothing to tell, the token still goes
            Conversation.objects.filter(pk=self.pk).update(token_hash=None)
            self.token_hash = None
        return published

    @classmethod
    def for_visitor(cls, token: str) -> Conversation | None:
        """The conversation a visitor's token opens: open ones, and ended ones for
        VISITOR_TOKEN_GRACE_MINUTES, so the visitor can still read the last messages after a
        reload. Never after a quick exit."""
        if not token or len(token) > 128:
            return None
        conversation = cls.objects.for_visitor_token(token).first()
        if conversation is None or conversation.is_open:
            return conversation
        if conversation.end_reason == cls.EndReason.QUICK_EXIT:
            return None
        grace = timedelta(minutes=settings.VISITOR_TOKEN_GRACE_MINUTES)
        if conversation.ended_at and timezone.now() - conversation.ended_at > grace:
            return None
        return conversation

    def set_urgent(self, advisor: Any, urgent: bool) -> list[dict]:
        with transaction.atomic():
            updated = (
                Conversation.objects.filter(ENDED.holds, pk=self.pk)
                .exclude(urgent=urgent)
                .update(urgent=urgent)
            )
            if updated:
                self.refresh_from_db()
                self._record(
                    ConversationEvent.Kind.URGENCY, advisor=advisor, data={"urgent": urgent}
                )
            elif not Conversation.objects.filter(ENDED.holds, pk=self.pk).exists():
                raise ENDED.refusal()
            return events.on_commit([self.state_event(), queue_changed()] if updated else [])

    def set_interpreter(self, advisor: Any, needed: bool, language: str) -> list[dict]:
        if needed and language not in dict(INTERPRETER_LANGUAGES):
            raise DomainError(
                "invalid_language", "Choose the interpreter's language from the list."
            )
        with transaction.atomic():
            updated = Conversation.objects.filter(ENDED.holds, pk=self.pk).update(
                interpreter_needed=needed, interpreter_language=language if needed else ""
            )
            if updated != 1:
                raise ENDED.refusal()
            self.refresh_from_db()
            self._record(
                ConversationEvent.Kind.INTERPRETER,
                advisor=advisor,
                data={"needed": needed, "language": self.interpreter_language},
            )
            return events.on_commit([self.state_event(), queue_changed()])

    # --- the message stream -----------------------------------------------------------------

    def post_rules(self, sender: str, advisor: Any) -> list[Rule]:
        """What must hold for a text from `sender` to be stored: the one definition, for the
        ORM and for the statement on PostgreSQL alike."""
        rules = [ENDED]
        if sender == Message.Sender.ADVISOR:
            rules.append(theirs(advisor))
            if self.channel == Channel.SMS:
                if not settings.SMS_ENABLED:
                    raise DomainError(
                        "sms_off", "Texts cannot be sent: the SMS channel is switched off."
                    )
                rules.append(
                    Rule(
                        "sms_no_number",
                        "This conversation has no number to answer.",
                        contacts.reachable(Channel.SMS),
                    )
                )
        return rules

    def _post_change(
        self, sender: str, text: str, client_id: str, advisor: Any, data: dict | None
    ) -> tuple[store.Change, list[Rule]]:
        validate_text(text)
        rules = self.post_rules(sender, advisor)
        data = dict(data or {})
        if self.channel == Channel.SMS and sender == Message.Sender.ADVISOR:
            # An answer by text is queued until the SMS channel reports its delivery.
            data.update(delivery="queued", delivery_error=None)
        message = Message(
            conversation=self,
            sender=sender,
            body=crypto.encrypt(text),
            client_id=client_id,
            advisor=advisor,
            data=data,
            created_at=timezone.now(),
        )
        message.plaintext = text  # for the event: no need to decrypt what was just encrypted
        rows = store.Guard(
            _post_rows,
            shape=(Conversation.post_rules, self.channel, sender, settings.SMS_ENABLED),
            values=(self.pk, getattr(advisor, "pk", advisor), client_id or None),
        )
        return store.Change(self.pk, rows, entry=message), rules

    def post(
        self,
        *,
        sender: str,
        text: str,
        client_id: str = "",
        advisor: Any = None,
        data: dict | None = None,
    ) -> tuple[Message, bool, list[dict]]:
        """Append a text to the stream. Returns (message, created, events).

        A text the client sends again with the same client_id returns the stored message with
        created=False and is not stored twice. Numbers are gap-free and commit in order."""
        change, rules = self._post_change(sender, text, client_id, advisor, data)
        with transaction.atomic():
            stored = store.apply(change)
            if stored is None:
                existing = self._sent_before(sender, client_id)
                if existing is not None:
                    return existing, False, []
                raise explain(self.pk, rules)
            message = change.entry
            message.conversation = self
            self.last_seq = stored.last_seq
            published = events.on_commit([message.as_event()])
            transaction.on_commit(
                lambda: message_posted.send(
                    sender=Channel(stored.channel), conversation=stored, message=message, text=text
                )
            )
        return message, True, published

    async def apost(
        self,
        *,
        sender: str,
        text: str,
        client_id: str = "",
        advisor: Any = None,
    ) -> tuple[Message, bool, list[dict]]:
        """`post`, awaitable; on PostgreSQL without a thread, the texts of the moment stored
        together. A text the statement did not store (a rule broken, sent before) goes the
        ORM's way, which says why."""
        kwargs = {"sender": sender, "text": text, "client_id": client_id, "advisor": advisor}
        if not store.enabled():
            return await database_sync_to_async(self.post)(**kwargs)
        change, _rules = self._post_change(sender, text, client_id, advisor, None)
        stored = await store.apply_async(change)
        if stored is None:
            return await store.orm(self.post)(**kwargs)
        message = change.entry
        message.conversation = self
        self.last_seq = stored.last_seq
        published = events.committed_and([message.as_event()])
        await message_posted.asend(
            sender=Channel(stored.channel), conversation=stored, message=message, text=text
        )
        return message, True, published

    def _sent_before(self, sender: str, client_id: str) -> Message | None:
        if not client_id:
            return None
        existing = Message.objects.filter(
            conversation_id=self.pk, sender=sender, client_id=client_id
        ).first()
        if existing is not None:
            existing.conversation = self
        return existing

    def messages_after(self, seq: int, limit: int = 500) -> list[Message]:
        entries = list(self._after(seq)[:limit])
        for entry in entries:
            entry.conversation = self  # as_event needs it; spare a query per entry
        return entries

    async def amessages_after(self, seq: int, limit: int = 500) -> list[Message]:
        if not store.enabled():
            return await database_sync_to_async(self.messages_after)(seq, limit)
        if seq >= SEQ_MAX:
            return []  # nothing is numbered beyond the column's range
        entries = await store.select_async(
            store.Guard(_entries_after, shape=(limit,), values=(self.pk, seq), model=Message)
        )
        for entry in entries:
            entry.conversation = self
        return entries

    def _after(self, seq: int) -> models.QuerySet:
        return Message.objects.filter(conversation_id=self.pk, seq__gt=seq).order_by("seq")

    def _copy(self, stored: Conversation) -> None:
        """Take the stored state (the caller's instance is the one a socket keeps)."""
        for f in self._meta.concrete_fields:
            setattr(self, f.attname, getattr(stored, f.attname))

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


class Rule(NamedTuple):
    """What must hold on a conversation's row for a change, and the refusal when it does not.
    A change filters its row by its rules (advice.store), so each rule is written once, for
    the ORM and the statements on PostgreSQL alike."""

    code: str
    message: str
    holds: Q

    def refusal(self) -> DomainError:
        return DomainError(self.code, self.message)


ENDED = Rule(
    "conversation_ended",
    "This conversation has already ended.",
    Q(status__in=Conversation.OPEN_STATUSES),
)
TAKEN = Rule(
    "already_taken",
    "Another advisor has taken this conversation.",
    Q(status=Conversation.Status.WAITING),
)


def theirs(advisor: Any) -> Rule:
    return Rule(
        "not_your_conversation", "This conversation is not open for you.", Q(advisor=advisor)
    )


def active_and_theirs(advisor: Any) -> Rule:
    rule = theirs(advisor)
    return rule._replace(holds=rule.holds & Q(status=Conversation.Status.ACTIVE))


def _post_rows(
    post_rules: Callable,
    channel: str,
    sender: str,
    _sms_enabled: bool,
    pk: int,
    advisor: int | None,
    client_id: str | None,
) -> models.QuerySet:
    """The conversation where a text from `sender` may be stored: `post_rules`, and a client id
    not used before (a text sent again after a dropped connection is stored once)."""
    rules = post_rules(Conversation(pk=pk, channel=channel), sender, advisor)
    rows = Conversation.objects.filter(*(rule.holds for rule in rules), pk=pk)
    if client_id is not None:
        sent_before = Message.objects.filter(
            conversation=OuterRef("pk"), sender=sender, client_id=client_id
        )
        rows = rows.exclude(Exists(sent_before))
    return rows


# The largest seq a stream can hold (Message.seq is a PostgreSQL integer).
SEQ_MAX = 2**31 - 1


def _entries_after(limit: int, pk: int, seq: int) -> models.QuerySet:
    return Message.objects.filter(conversation_id=pk, seq__gt=seq).order_by("seq")[:limit]


def queue_empty() -> DomainError:
    return DomainError("queue_empty", "Nobody is waiting.")


def explain(pk: int, rules: list[Rule]) -> DomainError:
    """The first of `rules` that does not hold for the conversation now, as its refusal (one
    query). Should they all hold again, the first rule's."""
    flags = (
        Conversation.objects.filter(pk=pk)
        .annotate(
            **{
                f"rule_{n}": ExpressionWrapper(rule.holds, output_field=BooleanField())
                for n, rule in enumerate(rules)
            }
        )
        .values(*(f"rule_{n}" for n in range(len(rules))))
        .first()
    ) or {}
    for n, rule in enumerate(rules):
        if not flags.get(f"rule_{n}"):
            return rule.refusal()
    return rules[0].refusal()


class LineClosed(DomainError):
    """The line is closed for the visitor's county; `status` says when it opens."""

    def __init__(self, status: Any) -> None:
        super().__init__("line_closed", "The line is closed.")
        self.status = status


def check_line_open(county: str, status: Any = None) -> None:
    """Refuse a start while the line is closed for `county` (`status`: the line's status when
    the caller has it already)."""
    from advice import hours

    status = status or hours.cached_line_status(county)
    if not status.open:
        raise LineClosed(status)


def lock_profile(advisor: Any) -> AdvisorProfile:
    """Lock the advisor's profile (made if missing), so that one advisor's concurrent takes
    count their conversations one after the other. Inside the caller's transaction."""
    profile, _created = AdvisorProfile.objects.select_for_update().get_or_create(user=advisor)
    return profile


def within_capacity(advisor: Any) -> Rule:
    """The advisor has fewer active conversations than their capacity (read under the
    profile's lock, `lock_profile`)."""
    active = (
        Conversation.objects.filter(advisor=advisor, status=Conversation.Status.ACTIVE)
        .values("advisor")
        .annotate(n=models.Count("pk"))
        .values("n")
    )
    capacity = AdvisorProfile.objects.filter(user=advisor).values("capacity")[:1]
    return Rule(
        "capacity_reached",
        "You already have as many conversations as your capacity allows.",
        Q(LessThan(Coalesce(models.Subquery(active), Value(0)), models.Subquery(capacity))),
    )


# The languages each advisor speaks, as this process last read them under their profile's lock
# (the statement path of take_next prefers by them; each take reads them again).
_spoken: dict[int, set[str]] = {}


def takeable(rows: models.QuerySet, advisor: Any) -> models.QuerySet:
    """`rows` where a take by `advisor` may happen: still waiting, the advisor within capacity."""
    return rows.filter(TAKEN.holds, within_capacity(advisor).holds)


def _next_rows(
    preference: Callable, spoken: tuple[str, ...], advisor: int, lapsed: datetime
) -> models.QuerySet:
    """The conversation an advisor who speaks `spoken` takes next (`next_for`), locked as it is
    read, others' locked ones passed over, where the take's rules hold."""
    pick = Conversation.objects.next_for(set(spoken), lapsed, preference).values("pk")[:1]
    return takeable(Conversation.objects.filter(pk=store.Locked(pick)), advisor)


def preference_lapsed_before(now: datetime) -> datetime:
    """Conversations created before this are taken in plain queue order (`take_preference`)."""
    return now - timedelta(minutes=settings.TAKE_NEXT_PREFERENCE_MINUTES)


def take_preference(spoken: set[str], lapsed: datetime) -> list[Any]:
    """The order in which an advisor who speaks `spoken` takes the next conversation.

    Urgent conversations always come first. Within urgent and within the rest, a conversation
    the advisor can hold without an interpreter comes before one in a language the advisor
    does not speak, and that before one that needs an interpreter; otherwise queue order
    holds. The preference lapses once a conversation has waited TAKE_NEXT_PREFERENCE_MINUTES:
    past that it is taken in plain queue order, so a visitor who needs an interpreter is never
    passed over for ever by advisors who would rather not arrange one."""
    needed = Case(
        When(interpreter_needed=True, then=F("interpreter_language")), default=F("language")
    )
    fit = Case(
        When(created_at__lte=lapsed, then=Value(0)),
        When(In(needed, sorted(spoken)), then=Value(0)),
        When(interpreter_needed=True, then=Value(2)),
        default=Value(1),
    )
    return [F("urgent").desc(), fit, "created_at", "pk"]


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


def _next_seq(conversation_id: int) -> int:
    """Hand out the conversation's next sequence number (the caller holds its row lock)."""
    Conversation.objects.filter(pk=conversation_id).update(last_seq=F("last_seq") + 1)
    return Conversation.objects.filter(pk=conversation_id).values_list("last_seq", flat=True)[0]


# take_next chooses among this many at the head of the queue.
TAKE_NEXT_CANDIDATES = 50
queue_changed = events.queue_changed


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
        # Known already where the text has just been encrypted (Conversation.post).
        plaintext = self.__dict__.get("plaintext")
        if plaintext is not None:
            return plaintext
        return crypto.decrypt(self.body) if self.body else ""

    @classmethod
    def record_delivery(
        cls, pk: int, measure: Callable[[], tuple[str, str | None, str]]
    ) -> list[dict[str, Any]]:
        """How far a text sent through another service (an SMS answer) got: `measure()`, read
        under the entry's lock, gives (delivery, error, error code). Kept in the entry's data
        and published when it changed."""
        with transaction.atomic():
            message = (
                cls.objects.select_for_update(of=("self",))
                .select_related("conversation")
                .get(pk=pk)
            )
            delivery, error, code = measure()
            data = dict(message.data)
            if data.get("delivery") == delivery and data.get("delivery_error") == error:
                return []
            data.update(delivery=delivery, delivery_error=error)
            if code:
                data["delivery_error_code"] = code
            cls.objects.filter(pk=pk).update(data=data)
            return events.on_commit(
                [
                    {
                        "kind": "delivery",
                        "conversation": message.conversation_id,
                        "public_id": str(message.conversation.public_id),
                        "seq": message.seq,
                        "delivery": delivery,
                        "delivery_error": error,
                    }
                ]
            )

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
# refuses frames over 64 KiB (manage.py serve): the frame must stay well below that.
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

    def total(self) -> int:
        """How many are waiting, the head that advisors are sent and the rest."""
        return len(self.order) if self.order is not None else len(self.waiting)

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
