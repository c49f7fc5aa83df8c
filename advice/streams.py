"""What the sockets read from the domain, for the realtime kernel (realtime/), which imports no
domain code: a conversation's stream after a seq (its catch-up), and the queue's snapshot (the
hub's reload, handed to it at startup by config.apps)."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from advice import store
from advice.models import Conversation, QueueSnapshot

# The most entries `entries_after` returns at once (realtime.sockets.JsonSocket.catch_up_page).
PAGE = 500


async def entries_after(
    conversation_id: int, after: int, conversation: Conversation | None = None
) -> list[dict[str, Any]]:
    """The stream's entries after seq `after`, at most PAGE of them, as events."""
    if conversation is None:
        conversation = await database_sync_to_async(Conversation.objects.get)(pk=conversation_id)
    return [m.as_event() for m in await conversation.amessages_after(after, PAGE)]


async def load_queue() -> QueueSnapshot:
    """The queue's snapshot, loaded on the worker threads: off the shared database thread,
    which every handshake of the process uses."""
    return await store.orm(QueueSnapshot.load)()
