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

The hub never waits for one socket: each listener has a mailbox, drained in order by a task of
its own, so a socket that is slow (a catch-up from the database, a client that does not read)
holds up only itself. A mailbox is bounded; a listener that falls MAILBOX_LIMIT events behind is
told (`on_overflow`: a socket closes, and its client resumes from its last seq). The queue goes
to a mailbox as the latest snapshot only, however many came meanwhile.

Costs stay bounded under load: rings to the other processes are batched (while one is on its
way to Redis, the next events wait and go together), and the queue is reloaded at most every
QUEUE_REFRESH_INTERVAL however often it changes, one query per process for every waiting
visitor and advisor of that process.

A new hub lets its sockets in only once it hears a ring of its own: Redis then has its
subscription, so every event committed after its sockets read the database reaches them. Every
hub rings, even the only one: its ring comes back to it and is dropped, a fraction of a
millisecond of CPU per event, which at a line's rates is not worth knowing which other
processes exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

# The group every hub joins, and the type of its messages ("advice.event", below): names on the
# wire between processes, kept as they were.
GROUP = "advice.events"
# Queue changes arriving within this window are folded into one reload of the queue...
QUEUE_REFRESH_DELAY = 0.05
# ...and reloads come at most this often while the queue keeps changing (a surge), so a
# waiting visitor's place is right within this plus the time of one reload, at a cost per
# second that does not grow with the rate of changes. (The frames to thousands of waiting
# visitors are the largest share of a surge; half a second keeps places right within a
# second without slowing advisors' takes.)
QUEUE_REFRESH_INTERVAL = 0.5
# ...or, when the queue is long, at least this many times as long as handing out the last
# reload took (mostly a frame to each waiting visitor whose place moved): the queue's share of
# the process stays under about a third however many wait, and places still follow within a
# second with thousands waiting.
QUEUE_FANOUT_PAUSE_FACTOR = 2
# Watchers handed the queue in one turn of the event loop (_hand_out).
QUEUE_FANOUT_SLICE = 50
# Events one listener may have waiting for it before it counts as unable to keep up.
MAILBOX_LIMIT = 500
# How long a new hub waits to hear its own ring before it lets its sockets in anyway (Redis
# unreachable: their clients catch up when they resume), and how often it rings meanwhile.
SUBSCRIBE_TIMEOUT = 1.0
SUBSCRIBE_RETRY = 0.1


# The queue's snapshot is the domain's (a QueueSnapshot of advice.models); the hub only passes it
# on.
Snapshot = Any

# Loads the queue's snapshot: set at startup by the wiring (`configure`), so that the kernel
# imports no domain code.
_load_queue: Callable[[], Awaitable[Snapshot]] | None = None


def configure(*, load_queue: Callable[[], Awaitable[Snapshot]]) -> None:
    """Called once at startup (config.apps.ConfigConfig.ready): `load_queue` is a coroutine
    function that returns the queue's current snapshot, which the hub hands to every socket
    that watches the queue (`Listener.on_queue`). It must not run on the shared database
    thread, which every handshake of the process uses."""
    global _load_queue
    _load_queue = load_queue


class Listener(Protocol):
    """A socket that wants events (the consumers in chat/, console/ and interpreter/)."""

    advisor_id: int | None

    async def on_event(self, event: dict[str, Any]) -> None: ...

    async def on_queue(self, snapshot: Snapshot) -> None: ...


class Mailbox:
    """One listener's undelivered events, handed to it in order by a task that exists only
    while there is something to hand over."""

    __slots__ = ("events", "listener", "running", "snapshot", "task")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.events: deque[dict[str, Any]] = deque()
        self.snapshot: Snapshot | None = None
        self.task: asyncio.Task | None = None
        self.running = False

    def put(self, event: dict[str, Any]) -> None:
        if len(self.events) >= MAILBOX_LIMIT:
            self.events.clear()
            overflow = getattr(self.listener, "on_overflow", None)
            if overflow is not None:
                overflow()
            return
        self.events.append(event)
        self._wake()

    def put_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._wake()

    def _wake(self) -> None:
        if self.running:
            return
        self.running = True
        # Started eagerly: an event that needs no waiting (the usual case: one frame out) is
        # handed over right here, without a trip round the event loop.
        task = asyncio.Task(self._hand_over(), loop=asyncio.get_running_loop(), eager_start=True)
        if not task.done():
            self.task = task

    async def _hand_over(self) -> None:
        try:
            while True:
                if self.events:
                    event = self.events.popleft()
                    try:
                        await self.listener.on_event(event)
                    except Exception:
                        logger.exception("a socket failed to take an event")
                elif self.snapshot is not None:
                    snapshot, self.snapshot = self.snapshot, None
                    try:
                        await self.listener.on_queue(snapshot)
                    except Exception:
                        logger.exception("a socket failed to take the queue")
                else:
                    return
        finally:
            self.task = None
            self.running = False


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
        self._queue_loaded_at = 0.0
        self._queue_pause = QUEUE_REFRESH_INTERVAL
        self.last_snapshot: Snapshot | None = None
        self.mailboxes: dict[Listener, Mailbox] = {}
        # Events waiting for the next ring to the other processes, and the ring under way.
        self._outgoing: list[dict[str, Any]] = []
        self._outgoing_sent: asyncio.Future | None = None
        self._ringer: asyncio.Task | None = None
        # Set once this hub has heard a ring of its own: its subscription is in.
        self._heard_itself = asyncio.Event()
        self._started = False

    # --- registration ----------------------------------------------------------------------

    async def start(self) -> None:
        """Join the doorbell group (once per process), unless the layer is in-memory: then this
        process is the whole service and local delivery is all there is. Returns once this hub
        hears the rings published from then on."""
        layer = get_channel_layer()
        if self._started or layer is None or isinstance(layer, InMemoryChannelLayer):
            return
        async with self._start_lock:
            if self._started:
                return
            self._channel = await layer.new_channel("hub.")
            await layer.group_add(GROUP, self._channel)
            self._reader = asyncio.create_task(self._read(layer), name="advice-hub-reader")
            await self._hear_itself(layer)
            self._started = True

    async def _hear_itself(self, layer: Any) -> None:
        """Ring until this hub hears itself. The layer sends SUBSCRIBE without waiting for
        Redis to take it, and a ring that Redis takes first would pass this hub by; one heard
        proves that every later one is heard."""
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                await layer.group_send(GROUP, self._doorbell_message())
            except Exception:
                logger.exception("could not ring this process's own hub")
                return
            try:
                await asyncio.wait_for(self._heard_itself.wait(), SUBSCRIBE_RETRY)
                return
            except TimeoutError:
                pass
        logger.warning("this process did not hear its own ring within %s s", SUBSCRIBE_TIMEOUT)

    def _doorbell_message(self, events: list[dict[str, Any]] | None = None) -> dict:
        return {"type": "advice.event", "origin": self.origin, "events": events or []}

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
        mailbox = self.mailboxes.pop(listener, None)
        if mailbox is not None:
            mailbox.events.clear()
            mailbox.snapshot = None

    def _mailbox(self, listener: Listener) -> Mailbox:
        mailbox = self.mailboxes.get(listener)
        if mailbox is None:
            mailbox = self.mailboxes[listener] = Mailbox(listener)
        return mailbox

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, events: list[dict[str, Any]]) -> None:
        """Deliver committed events here, then ring the other processes (returns once the
        ring that carries them has gone out, so synchronous callers may end their loop)."""
        await self.publish_nowait(events)

    def publish_nowait(self, events: list[dict[str, Any]]) -> asyncio.Future:
        """Deliver committed events here now; returns what to await for the ring to the other
        processes (the caller may do its own work first)."""
        for event in events:
            self._deliver(event)
        layer = get_channel_layer()
        if events and layer is not None and not isinstance(layer, InMemoryChannelLayer):
            return asyncio.shield(self._ring(layer, events))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _ring(self, layer: Any, events: list[dict[str, Any]]) -> asyncio.Future:
        """Queue events for the next ring. While one ring is on its way, events gather for the
        next: under load one message to Redis carries many events."""
        if self._outgoing_sent is None:
            self._outgoing_sent = asyncio.get_running_loop().create_future()
        self._outgoing.extend(events)
        sent = self._outgoing_sent
        if self._ringer is None:
            self._ringer = asyncio.create_task(self._ring_all(layer), name="advice-hub-ring")
        return sent

    async def _ring_all(self, layer: Any) -> None:
        try:
            while self._outgoing:
                events, self._outgoing = self._outgoing, []
                sent, self._outgoing_sent = self._outgoing_sent, None
                try:
                    await layer.group_send(GROUP, self._doorbell_message(events))
                except Exception:
                    # The events are committed; other processes' clients catch up on resume.
                    logger.exception("could not ring the other processes")
                if sent is not None and not sent.done():
                    sent.set_result(None)
        finally:
            self._ringer = None

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
                self._heard_itself.set()
                continue
            for event in message.get("events", []):
                try:
                    self._deliver(event)
                except Exception:
                    logger.exception("delivering an event failed")

    def _deliver(self, event: dict[str, Any]) -> None:
        """Hand an event to the mailboxes of the listeners that want it (never waits)."""
        kind = event.get("kind")
        if kind == "queue":
            self.request_queue_refresh()
            return
        if kind == "logout":
            for listener in list(self.advisors):
                self._mailbox(listener).put(event)
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
            self._mailbox(listener).put(event)

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
            since_last = time.monotonic() - self._queue_loaded_at
            await asyncio.sleep(max(QUEUE_REFRESH_DELAY, self._queue_pause - since_last))
            self._queue_loaded_at = time.monotonic()
            try:
                if _load_queue is None:
                    raise RuntimeError("realtime.hub.configure(load_queue=...) was not called")
                snapshot = await _load_queue()
            except Exception:
                logger.exception("could not load the queue")
                return
            self.last_snapshot = snapshot
            took = await self._hand_out(snapshot)
            self._queue_pause = max(QUEUE_REFRESH_INTERVAL, took * QUEUE_FANOUT_PAUSE_FACTOR)
            if not self._queue_dirty:
                return

    async def _hand_out(self, snapshot: Snapshot) -> float:
        """Give the snapshot to every watcher, advisors first, QUEUE_FANOUT_SLICE at a time
        with a turn of the event loop between slices; returns the time spent handing out.

        Most watchers take it at once (a frame out), so handed out in one go to thousands of
        waiting visitors it was one turn of the loop as long as all their frames together, and
        an advisor's take or a visitor's text that arrived meanwhile waited for all of them."""
        watchers = sorted(self.queue_watchers, key=lambda w: w.advisor_id is None)
        spent = 0.0
        for start in range(0, len(watchers), QUEUE_FANOUT_SLICE):
            began = time.monotonic()
            for listener in watchers[start : start + QUEUE_FANOUT_SLICE]:
                # One that left while an earlier slice went out gets nothing (and no mailbox).
                if listener in self.queue_watchers:
                    self._mailbox(listener).put_snapshot(snapshot)
            spent += time.monotonic() - began
            await asyncio.sleep(0)
        return spent


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
