"""Quick exit on the server: the visitor pressed the exit button (or Shift three times).

The page tells the server twice, because it is about to be gone: over its socket when it has one
open (a `quick_exit` frame), and with a keep-alive POST to /exit/ that the browser sends even
after the page has navigated away. Whichever arrives first ends the conversation; the other finds
nothing left to do. Either way the conversation ends as "left by quick exit" (the advisor sees
it at once) and the visitor's token is revoked, so that nobody who later picks up the device can
open the conversation again with it.
"""

from __future__ import annotations

from django.db import transaction

from advice.models import Conversation, DomainError


def quick_exit(conversation: Conversation) -> list[dict]:
    """End `conversation` as left by quick exit and revoke its visitor token. Returns the events
    to publish once committed (none if it had already ended).

    Synchronous: call it through database_sync_to_async."""
    with transaction.atomic():
        try:
            events = conversation.end_by_visitor(reason=Conversation.EndReason.QUICK_EXIT)
        except DomainError as e:
            if e.code != "conversation_ended":
                raise
            # Ended a moment ago (the advisor closed it, or the other of our two messages came
            # first): nothing to tell anyone, but the token must still stop working.
            events = []
        # The token is not part of the conversation's state, only the visitor's key to it; with
        # the hash gone no token opens it, whatever the grace period for ended conversations.
        Conversation.objects.filter(pk=conversation.pk).update(token_hash=None)
    return events


def quick_exit_by_token(token: str) -> list[dict] | None:
    """Quick exit for the holder of `token`; None if no conversation has this token (never had,
    or already revoked by an earlier quick exit)."""
    if not token or len(token) > 128:
        return None
    conversation = Conversation.objects.for_visitor_token(token).first()
    if conversation is None:
        return None
    return quick_exit(conversation)
