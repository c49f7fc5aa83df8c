"""Bringing an interpreter into a live web chat.

The advisor holding a conversation creates an invitation: a link with a random secret (256
bits, stored only as a hash) that expires after INTERPRETER_LINK_HOURS. The secret rides in the
link's fragment (/interpreter/#…), which browsers never send to a server, so it is in no access
log, Referer or link preview: a chat app that fetches the link for a preview loads a page that
does nothing without its script, and the link is not spent. The interpreter's page sends the
secret over its socket once; the invitation moves pending → waiting, the link is spent, and the
page gets a token of its own (also stored only as a hash) for reconnecting.

The visitor is then asked. Yes: the interpreter joins, and the system entry that says so marks
where the interpreter's view of the stream begins (joined_seq). No: the invitation ends as
refused. The advisor can share the earlier part of the conversation (from a sequence number, or
all of it) and can revoke the invitation, or remove the interpreter, at any time. Every step is
a ConversationEvent and a system entry in the stream, so visitor and advisor see it, and the
functions publish their events after commit and return them, like the Conversation methods.

Lock order, as everywhere in the domain: the conversation row first, then the invitation.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from advice import events
from advice.choices import Channel
from advice.models import (
    Conversation,
    ConversationEvent,
    DomainError,
    InterpreterInvitation,
    Message,
    hash_token,
)

Status = InterpreterInvitation.Status
LINK_PATH = "/interpreter/"


def interpreter_event(invitation: InterpreterInvitation) -> dict[str, Any]:
    """The realtime event every socket following the conversation gets when the invitation
    changes: the advisor's console shows it, the visitor is asked, the interpreter admitted."""
    return {
        "kind": "interpreter",
        "conversation": invitation.conversation_id,
        "public_id": str(invitation.conversation.public_id),
        "invitation": invitation.as_dict(),
    }


def link_for(secret: str, origin: str = "") -> str:
    return f"{origin}{LINK_PATH}#{secret}"


def _lock(conversation: Conversation) -> Conversation:
    return Conversation.objects.select_for_update().get(pk=conversation.pk)


def _active(conversation: Conversation) -> InterpreterInvitation | None:
    return (
        InterpreterInvitation.objects.select_for_update()
        .filter(conversation=conversation, status__in=InterpreterInvitation.ACTIVE_STATUSES)
        .first()
    )


def _expire_unopened(conversation: Conversation, now: Any) -> None:
    for invitation in InterpreterInvitation.objects.filter(
        conversation=conversation, status=Status.PENDING, expires_at__lte=now
    ):
        _end(conversation, invitation, Status.EXPIRED, now)
        conversation._record(
            ConversationEvent.Kind.INTERPRETER_REVOKED,
            data={"invitation": str(invitation.public_id), "expired": True},
        )


def _end(
    conversation: Conversation, invitation: InterpreterInvitation, status: str, now: Any
) -> None:
    invitation.status = status
    invitation.ended_at = now
    invitation.save(update_fields=["status", "ended_at"])


def _require_holder(conversation: Conversation, advisor: Any) -> None:
    if conversation.advisor_id != getattr(advisor, "pk", None):
        raise DomainError("not_your_conversation", "This conversation is not open for you.")
    if conversation.status != Conversation.Status.ACTIVE:
        raise DomainError("conversation_ended", "This conversation has already ended.")


# --- the advisor --------------------------------------------------------------------------------


def invite(
    conversation: Conversation, advisor: Any
) -> tuple[InterpreterInvitation, str, list[dict]]:
    """A new invitation for the advisor's active web chat. Returns it, the link secret (shown
    once, to the advisor), and the events to publish."""
    if conversation.channel != Channel.WEB:
        # The visitor's consent is asked in the chat page; an SMS thread has no such step.
        raise DomainError("interpreter_web_only", "An interpreter can join web chats only.")
    secret = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        locked = _lock(conversation)
        _require_holder(locked, advisor)
        _expire_unopened(locked, now)
        if _active(locked) is not None:
            raise DomainError(
                "interpreter_already_invited",
                "An interpreter is already invited. Revoke that invitation first.",
            )
        invitation = InterpreterInvitation.objects.create(
            conversation=locked,
            invited_by=advisor,
            secret_hash=hash_token(secret),
            expires_at=now + timedelta(hours=settings.INTERPRETER_LINK_HOURS),
        )
        data = {"invitation": str(invitation.public_id)}
        locked._record(
            ConversationEvent.Kind.INTERPRETER_INVITED,
            advisor=advisor,
            data={**data, "expires_at": invitation.expires_at.isoformat()},
        )
        entry = locked._append_system(Message.Event.INTERPRETER_INVITED, advisor=advisor)
    return invitation, secret, events.on_commit([entry.as_event(), interpreter_event(invitation)])


def revoke(conversation: Conversation, advisor: Any) -> list[dict]:
    """Withdraw the current invitation: an unopened link dies, a waiting interpreter is sent
    away, a joined one is removed from the conversation."""
    now = timezone.now()
    with transaction.atomic():
        locked = _lock(conversation)
        if locked.advisor_id != getattr(advisor, "pk", None):
            raise DomainError("not_your_conversation", "This conversation is not open for you.")
        invitation = _active(locked)
        if invitation is None:
            raise DomainError("no_interpreter", "No interpreter is invited to this conversation.")
        was = invitation.status
        _end(locked, invitation, Status.REVOKED, now)
        locked._record(
            ConversationEvent.Kind.INTERPRETER_REVOKED,
            advisor=advisor,
            data={"invitation": str(invitation.public_id), "was": was},
        )
        event = (
            Message.Event.INTERPRETER_LEFT
            if was == Status.JOINED
            else Message.Event.INTERPRETER_REVOKED
        )
        entry = locked._append_system(event, advisor=advisor, data={"removed": True})
    return events.on_commit([entry.as_event(), interpreter_event(invitation)])


def share(conversation: Conversation, advisor: Any, from_seq: int = 1) -> list[dict]:
    """Let the joined interpreter read the conversation from `from_seq` (1: all of it) up to
    their joining. Sharing more later widens it; what was shown cannot be taken back."""
    with transaction.atomic():
        locked = _lock(conversation)
        _require_holder(locked, advisor)
        invitation = _active(locked)
        if invitation is None or invitation.status != Status.JOINED:
            raise DomainError("no_interpreter", "No interpreter has joined this conversation.")
        if from_seq < 1 or from_seq >= invitation.joined_seq:
            raise DomainError(
                "invalid_field", "from_seq must point at an entry before the interpreter joined."
            )
        if invitation.shared_from_seq is not None and invitation.shared_from_seq <= from_seq:
            return []  # already shared
        invitation.shared_from_seq = from_seq
        invitation.save(update_fields=["shared_from_seq"])
        locked._record(
            ConversationEvent.Kind.INTERPRETER_SHARED,
            advisor=advisor,
            data={"invitation": str(invitation.public_id), "from_seq": from_seq},
        )
        entry = locked._append_system(
            Message.Event.INTERPRETER_SHARED, advisor=advisor, data={"from_seq": from_seq}
        )
    return events.on_commit([entry.as_event(), interpreter_event(invitation)])


def current_invitation(conversation: Conversation) -> InterpreterInvitation | None:
    """The invitation the console shows for a conversation: the active one, if any."""
    return (
        InterpreterInvitation.objects.filter(
            conversation=conversation, status__in=InterpreterInvitation.ACTIVE_STATUSES
        )
        .select_related("conversation")
        .first()
    )


# --- the visitor ------------------------------------------------------------------------------


def waiting_request(conversation: Conversation) -> InterpreterInvitation | None:
    """An interpreter waiting for this visitor's answer (asked again after a reconnect)."""
    return InterpreterInvitation.objects.filter(
        conversation=conversation, status=Status.WAITING
    ).first()


def answer(conversation: Conversation, accept: bool) -> list[dict]:
    """The visitor's yes or no to the waiting interpreter."""
    now = timezone.now()
    with transaction.atomic():
        locked = _lock(conversation)
        invitation = _active(locked)
        if invitation is None or invitation.status != Status.WAITING:
            raise DomainError("no_interpreter_request", "No interpreter is asking to join.")
        if not locked.is_open:
            raise DomainError("conversation_ended", "This conversation has already ended.")
        data = {"invitation": str(invitation.public_id)}
        if accept:
            # The join entry comes first: the interpreter reads from it on.
            entry = locked._append_system(Message.Event.INTERPRETER_JOINED)
            invitation.status = Status.JOINED
            invitation.joined_at = now
            invitation.joined_seq = entry.seq
            invitation.save(update_fields=["status", "joined_at", "joined_seq"])
            locked._record(ConversationEvent.Kind.INTERPRETER_JOINED, data=data)
        else:
            _end(locked, invitation, Status.REFUSED, now)
            locked._record(ConversationEvent.Kind.INTERPRETER_REFUSED, data=data)
            entry = locked._append_system(Message.Event.INTERPRETER_REFUSED)
    return events.on_commit([entry.as_event(), interpreter_event(invitation)])


# --- the interpreter --------------------------------------------------------------------------


def open_link(secret: str) -> tuple[InterpreterInvitation, str, list[dict]]:
    """Spend the link: the invitation moves to waiting and the interpreter's page gets a token
    of its own. Exactly one of several pages opening the same link at once gets in."""
    invitation = (
        InterpreterInvitation.objects.filter(secret_hash=hash_token(secret))
        .select_related("conversation")
        .first()
    )
    if invitation is None:
        raise DomainError("invalid_link", "This link is not valid.")
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        locked = _lock(invitation.conversation)
        invitation.refresh_from_db()
        if invitation.status == Status.REVOKED:
            raise DomainError("link_revoked", "The advisor has withdrawn this invitation.")
        if invitation.status == Status.EXPIRED or invitation.is_expired(now):
            raise DomainError("link_expired", "This link has expired. Ask for a new one.")
        if invitation.status != Status.PENDING:
            raise DomainError("link_used", "This link has already been used.")
        if locked.status != Conversation.Status.ACTIVE:
            raise DomainError("conversation_ended", "This conversation has already ended.")
        updated = InterpreterInvitation.objects.filter(
            pk=invitation.pk, status=Status.PENDING
        ).update(status=Status.WAITING, token_hash=hash_token(token), opened_at=now)
        if updated != 1:
            raise DomainError("link_used", "This link has already been used.")
        invitation.refresh_from_db()
        locked._record(
            ConversationEvent.Kind.INTERPRETER_WAITING,
            data={"invitation": str(invitation.public_id)},
        )
        entry = locked._append_system(Message.Event.INTERPRETER_WAITING)
    return invitation, token, events.on_commit([entry.as_event(), interpreter_event(invitation)])


def for_token(token: str) -> InterpreterInvitation | None:
    """The invitation an interpreter's token opens: waiting or joined, in an open conversation."""
    invitation = (
        InterpreterInvitation.objects.filter(
            token_hash=hash_token(token), status__in=(Status.WAITING, Status.JOINED)
        )
        .select_related("conversation")
        .first()
    )
    if invitation is None or not invitation.conversation.is_open:
        return None
    return invitation


def leave(invitation: InterpreterInvitation) -> list[dict]:
    now = timezone.now()
    with transaction.atomic():
        locked = _lock(invitation.conversation)
        invitation.refresh_from_db()
        if invitation.status not in (Status.WAITING, Status.JOINED):
            raise DomainError("not_in_conversation", "You are not in this conversation.")
        _end(locked, invitation, Status.LEFT, now)
        locked._record(
            ConversationEvent.Kind.INTERPRETER_LEFT, data={"invitation": str(invitation.public_id)}
        )
        entry = locked._append_system(Message.Event.INTERPRETER_LEFT)
    return events.on_commit([entry.as_event(), interpreter_event(invitation)])


def post(
    invitation: InterpreterInvitation, text: str, client_id: str = ""
) -> tuple[Message, bool, list[dict]]:
    """A text from the joined interpreter, shown to everyone as from "Interpreter"."""
    with transaction.atomic():
        locked = _lock(invitation.conversation)
        status = InterpreterInvitation.objects.values_list("status", flat=True).get(
            pk=invitation.pk
        )
        if status != Status.JOINED:
            raise DomainError("not_in_conversation", "You are not in this conversation.")
        return locked.post(sender=Message.Sender.INTERPRETER, text=text, client_id=client_id)


def shared_history(invitation: InterpreterInvitation) -> list[dict[str, Any]]:
    """The entries before the join that the advisor shared, as realtime message events."""
    if invitation.shared_from_seq is None or invitation.joined_seq is None:
        return []
    conversation = invitation.conversation
    entries = list(
        conversation.messages.filter(
            seq__gte=invitation.shared_from_seq, seq__lt=invitation.joined_seq
        ).order_by("seq")[:2000]
    )
    for entry in entries:
        entry.conversation = conversation
    return [entry.as_event() for entry in entries]
