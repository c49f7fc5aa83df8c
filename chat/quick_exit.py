"""Quick exit on the server: the visitor pressed the exit button (or Shift three times).

The page tells the server twice, because it is about to be gone: over its socket when it has one
open (a `quick_exit` frame), and with a keep-alive POST to /exit/ that the browser sends even
after the page has navigated away. Whichever arrives first ends the conversation
(`Conversation.quick_exit`); the other finds nothing left to do.
"""

from __future__ import annotations

from advice.models import Conversation


def quick_exit_by_token(token: str) -> list[dict] | None:
    """Quick exit for the holder of `token`; None if no conversation has this token (never had,
    or already revoked by an earlier quick exit). Synchronous."""
    if not token or len(token) > 128:
        return None
    conversation = Conversation.objects.for_visitor_token(token).first()
    if conversation is None:
        return None
    return conversation.quick_exit()
