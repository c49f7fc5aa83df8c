"""Live delivery: one hub per process, the channel layer as the doorbell between processes.

The database is the source of truth. Every change is committed first; only then is its event
published. The hub hands the event straight to the sockets of this process that want it (no
round trip through Redis when both sides are local) and rings the other processes through the
channel layer, on one group that every hub joins. A socket that misses an event (a process
died, Redis blinked) notices the gap in sequence numbers, or reconnects, and reads what it
missed from the database.

Events are plain dicts with a "kind":
- "message": an entry in a conversation's stream (text or system entry), with its seq;
- "conversation": a conversation's summary changed (state, interpreter, urgency);
- "queue": the queue changed; each hub reloads it once, however many changes came at once;
- "typing": someone is typing (not stored).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections import defaultdict
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

from advice.models import QueueSnapshot

logger = logging.getLogger(__name__)

GROUP = "advice.events"
# Queue changes arriving within this window are folded into one reload of the queue.
QUEUE_REFRESH_DELAY = 0.05


class Listener(Protocol):
    """A socket that wants events (the consumers in chat/ and advice/)."""

    advisor_id: int | None

    async def on_event(self, event: dict[str, Any]) -> None: ...

    async def on_queue(self, snapshot: QueueSnapshot) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.origin = uuid.uuid4().hex
        self.by_conversation: dict[int, set[Listener]] = defaultdict(set)
        self.queue_watchers: set[Listener] = set()
        self.advisors: set[Listener] = set()
        self._channel: str | None = None
        self._reader: asyncio.Task | None = None
        self._start_lock = asyncio.Lock()
        self._queue_task: asyncio.Task | None = None
        self._queue_dirty = False
        self.last_snapshot: QueueSnapshot | None = None

    # --- registration ----------------------------------------------------------------------

    async def start(self) -> None:
        """Join the doorbell group (once per process), unless the layer is in-memory: then this
        process is the whole service and local delivery is all there is."""
        layer = get_channel_layer()
        if self._reader is not None or layer is None or isinstance(layer, InMemoryChannelLayer):
            return
        async with self._start_lock:
            if self._reader is not None:
                return
            self._channel = await layer.new_channel("hub.")
            await layer.group_add(GROUP, self._channel)
            self._reader = asyncio.create_task(self._read(layer), name="advice-hub-reader")

    def subscribe(self, conversation_id: int, listener: Listener) -> None:
        self.by_conversation[conversation_id].add(listener)

    def unsubscribe(self, conversation_id: int, listener: Listener) -> None:
        listeners = self.by_conversation.get(conversation_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self.by_conversation[conversation_id]

    def watch_queue(self, listener: Listener) -> None:
        self.queue_watchers.add(listener)

    def unwatch_queue(self, listener: Listener) -> None:
        self.queue_watchers.discard(listener)

    def add_advisor(self, listener: Listener) -> None:
        self.advisors.add(listener)
        self.queue_watchers.add(listener)

    def remove(self, listener: Listener) -> None:
        self.advisors.discard(listener)
        self.queue_watchers.discard(listener)
        for conversation_id in [c for c, ls in self.by_conversation.items() if listener in ls]:
            self.unsubscribe(conversation_id, listener)

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, events: list[dict[str, Any]]) -> None:
        """Deliver committed events here, then ring the other processes."""
        for event in events:
            await self._deliver(event)
        layer = get_channel_layer()
        if events and layer is not None and not isinstance(layer, InMemoryChannelLayer):
            try:
                await layer.group_send(
                    GROUP, {"type": "advice.event", "origin": self.origin, "events": events}
                )
            except Exception:
                # The events are committed; other processes' clients catch up on resume.
                logger.exception("could not ring the other processes")

    async def _read(self, layer: Any) -> None:
        while True:
            try:
                message = await layer.receive(self._channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("doorbell receive failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if message.get("origin") == self.origin:
                continue
            for event in message.get("events", []):
                try:
                    await self._deliver(event)
                except Exception:
                    logger.exception("delivering an event failed")

    async def _deliver(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "queue":
            self.request_queue_refresh()
            return
        if kind == "logout":
            for listener in list(self.advisors):
                await listener.on_event(event)
            return
        conversation_id = event.get("conversation")
        if kind == "conversation":
            # The conversation's advisor follows it from now on, on every socket they have here.
            advisor_id = event["summary"].get("advisor")
            if advisor_id is not None:
                for listener in list(self.advisors):
                    if listener.advisor_id == advisor_id:
                        self.subscribe(conversation_id, listener)
        for listener in list(self.by_conversation.get(conversation_id, ())):
            try:
                await listener.on_event(event)
            except Exception:
                logger.exception("a socket failed to take an event")

    # --- the queue -------------------------------------------------------------------------

    def request_queue_refresh(self) -> None:
        """Reload the queue soon, once, for everyone in this process who watches it."""
        if not self.queue_watchers:
            return
        if self._queue_task is not None and not self._queue_task.done():
            self._queue_dirty = True
            return
        self._queue_task = asyncio.create_task(self._refresh_queue(), name="advice-queue")

    async def _refresh_queue(self) -> None:
        while True:
            self._queue_dirty = False
            await asyncio.sleep(QUEUE_REFRESH_DELAY)
            try:
                snapshot = await database_sync_to_async(QueueSnapshot.load)()
            except Exception:
                logger.exception("could not load the queue")
                return
            self.last_snapshot = snapshot
            for listener in list(self.queue_watchers):
                try:
                    await listener.on_queue(snapshot)
                except Exception:
                    logger.exception("a socket failed to take the queue")
            if not self._queue_dirty:
                return


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per process in production; tests start a loop
    per test, and each gets its own)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub


async def publish(events: list[dict[str, Any]]) -> None:
    if events:
        await get_hub().publish(events)


def publish_on_commit(events: list[dict[str, Any]]) -> None:
    """For synchronous code (views, workers): publish once the current transaction commits."""
    if events:
        transaction.on_commit(lambda: async_to_sync(publish)(events))
