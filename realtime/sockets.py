"""What the visitor, advisor and interpreter sockets share: frame parsing with typed errors,
per-socket rate limiting, heartbeats and idle closing, and in-order delivery from the stream.

The kernel imports no domain code. A socket of an adapter says how a stream is read
(`entries_after`, `catch_up_page`) and which of its own exceptions are refusals to answer
with an error frame (`refused`, which the adapters extend with advice.models.DomainError)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from realtime.hub import get_hub
from realtime.publish import holding

logger = logging.getLogger(__name__)

# Frames a client may send in a burst, and the rate they refill at (per second). A person
# typing never comes near it; a runaway script does.
RATE_BURST = 30
RATE_PER_SECOND = 10
# Frames larger than this are refused before parsing (the longest text is 4,000 characters).
MAX_FRAME_BYTES = 64 * 1024
# Close code for a socket whose client cannot keep up (it does not read, or reads too slowly):
# its client reconnects and resumes from its last seq, so nothing is lost.
TOO_SLOW = 4429


class Refused(Exception):
    """A frame the socket refuses: answered with `{"type": "error", "code", "message", "ref"}`,
    and the socket stays open. `code` is the stable error code of the protocol."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProtocolError(Refused):
    """A frame that breaks the protocol itself (not JSON, a missing or malformed field...)."""


def _parse_int(digits: str) -> int | float:
    # A valid JSON number too long for any field (and for Python's int(), past 4,300 digits)
    # becomes a float, which the field's type check then refuses as `invalid_field`.
    return int(digits) if len(digits) <= 40 else float(digits)


def parse_frame(text: str | None) -> dict[str, Any]:
    if text is None:
        raise ProtocolError("invalid_frame", "Frames are JSON text, not binary.")
    if len(text) > MAX_FRAME_BYTES:
        raise ProtocolError("frame_too_large", "The frame is too large.")
    try:
        frame = json.loads(text, parse_int=_parse_int)
    except (ValueError, RecursionError):
        raise ProtocolError("invalid_json", "The frame is not valid JSON.") from None
    if not isinstance(frame, dict):
        raise ProtocolError("invalid_frame", "A frame is a JSON object.")
    if not isinstance(frame.get("type"), str):
        raise ProtocolError("invalid_frame", "A frame needs a string 'type'.")
    try:
        # A JSON escape can smuggle half a surrogate pair ("\ud800") into a string; it cannot
        # be encrypted or stored, so it is refused here, not deep inside a handler.
        json.dumps(frame, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):
        raise ProtocolError(
            "invalid_frame", "The frame holds text that is not valid Unicode."
        ) from None
    return frame


_MISSING = object()


def field(
    frame: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    *,
    default: Any = _MISSING,
    choices: Any = None,
    max_length: int | None = None,
) -> Any:
    """One field of a frame, checked; a missing or wrong field raises a typed error."""
    value = frame.get(name, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise ProtocolError("missing_field", f"The field '{name}' is required.")
        return default
    # bool is a subclass of int: a true/false where a number belongs is a type error.
    if isinstance(value, bool) and kind is not bool:
        raise ProtocolError("invalid_field", f"The field '{name}' has the wrong type.")
    if not isinstance(value, kind):
        raise ProtocolError("invalid_field", f"The field '{name}' has the wrong type.")
    if max_length is not None and isinstance(value, str) and len(value) > max_length:
        raise ProtocolError("invalid_field", f"The field '{name}' is too long.")
    if choices is not None and value not in choices:
        raise ProtocolError("invalid_field", f"The field '{name}' has a value not on the list.")
    return value


def client_id_field(frame: dict[str, Any]) -> str:
    client_id = field(frame, "client_id", str, default="", max_length=64)
    # Stored as it is: no control characters (PostgreSQL refuses NUL in text).
    if not client_id.isprintable():
        raise ProtocolError("invalid_field", "The field 'client_id' holds characters it cannot.")
    return client_id


def seq_field(frame: dict[str, Any], name: str = "last_seq") -> int:
    value = field(frame, name, int, default=0)
    if value < 0:
        raise ProtocolError("invalid_field", f"The field '{name}' cannot be negative.")
    return value


def participant_message_frame(event: dict[str, Any], own_sender: str) -> dict[str, Any]:
    """A stream entry as a visitor or an interpreter sees it: the text or the system event, and
    the client id only on the participant's own texts (it is how they match their acks)."""
    frame = {
        "type": "message",
        "seq": event["seq"],
        "from": event["sender"],
        "sent_at": event["sent_at"],
    }
    if event["event"]:
        frame["event"] = event["event"]
    else:
        frame["text"] = event["text"]
    if event["sender"] == own_sender and event["client_id"]:
        frame["client_id"] = event["client_id"]
    return frame


def encode_frame(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


class JsonSocket(AsyncWebsocketConsumer):
    """A socket that speaks the JSON protocol of docs/protocol.md."""

    # Frame types this socket accepts, each handled by `handle_<type>`.
    frame_types: frozenset[str] = frozenset()
    advisor_id: int | None = None
    # Exceptions a handler may raise to refuse a frame: each has a `code` and a `message`, and
    # is answered with an error frame. Adapters add their domain's (advice.models.DomainError).
    refused: tuple[type[Exception], ...] = (Refused,)
    # The most entries `entries_after` returns at once: a full page means there may be more.
    catch_up_page: int = 0
    # No channel of its own on the channel layer: the hub hands events to the socket directly,
    # and only the hub (one per process) listens on the layer. (A layer alias that is not
    # configured gives None; on the pub/sub layer a channel per socket would cost a Redis
    # SUBSCRIBE per connection and a Redis round trip per message.)
    channel_layer_alias = "realtime.sockets:none"

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' own dispatch, without the hop it makes before every message to close
        stale database connections on the shared database thread: every database call here
        goes through `database_sync_to_async` (which does the same before and after each call)
        or the domain's own connections, so the hop would cost a thread round trip for every
        frame a client sends and buy nothing."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.hub = get_hub()
        self.tokens = float(RATE_BURST)
        self.tokens_at = time.monotonic()
        self.last_heard = time.monotonic()
        # Per conversation: the highest seq this socket has sent on, so nothing goes out twice
        # and a gap is noticed.
        self.delivered: dict[int, int] = {}
        # The conversations followed (what `follow` was given), for reading their streams.
        self.following: dict[int, Any] = {}
        self.stream_lock = asyncio.Lock()
        self.closed = False
        await self.hub.start()
        self.idle_task = asyncio.create_task(self._close_when_idle())
        self._bound_send_buffers()

    async def disconnect(self, code: int) -> None:
        self.closed = True
        if hasattr(self, "hub"):
            self.hub.remove(self)
        if hasattr(self, "idle_task"):
            self.idle_task.cancel()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_heard = time.monotonic()
        frame_type = None
        try:
            if not self._take_token():
                raise ProtocolError("rate_limited", "Too many frames; slow down.")
            frame = parse_frame(text_data)
            frame_type = frame["type"]
            if frame_type not in self.frame_types:
                raise ProtocolError("unknown_type", f"Unknown frame type '{frame_type[:40]}'.")
            with holding() as committed_meanwhile:
                try:
                    await getattr(self, f"handle_{frame_type}")(frame)
                finally:
                    self.publish(committed_meanwhile)
        except self.refused as e:
            await self.send_frame(
                {
                    "type": "error",
                    "code": e.code,
                    "message": e.message,
                    "ref": frame_type if isinstance(frame_type, str) else None,
                }
            )

    async def handle_ping(self, frame: dict[str, Any]) -> None:
        await self.send_frame({"type": "pong"})

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send_text(encode_frame(frame))

    def publish(self, events: list[dict[str, Any]]) -> None:
        """Committed events: delivered to the sockets of this process now, rung to the other
        processes in the background. The socket's next frame does not wait for the ring to
        Redis (the ring keeps the events' order; a client that misses one resumes from the
        database), so an advisor who closes a conversation and presses "next" waits for no
        round trip to Redis."""
        if events:
            self.hub.publish_nowait(events)

    async def send_text(self, text: str) -> None:
        """Send a frame already encoded (one encoding shared by many sockets)."""
        if not self.closed:
            await self.send(text_data=text)
            send_buffer = getattr(self, "_send_buffer", None)
            if send_buffer is not None and not send_buffer.drained.is_set():
                await self._wait_for_client(send_buffer)

    async def _wait_for_client(self, send_buffer: _SendBuffer) -> None:
        """More is waiting for the client than the bound allows: a burst (a long catch-up) or
        a client that does not read. Wait for it to drain; a client that takes longer than
        SOCKET_SEND_DRAIN_SECONDS is cut off. Only this socket waits: the hub hands events to each
        socket's own mailbox (realtime.hub)."""
        try:
            await asyncio.wait_for(
                send_buffer.drained.wait(), timeout=settings.SOCKET_SEND_DRAIN_SECONDS
            )
        except TimeoutError:
            await self._close_too_slow()

    def on_overflow(self) -> None:
        """The hub has more events waiting for this socket than it keeps (realtime.hub)."""
        if not self.closed:
            self._closing = asyncio.ensure_future(self._close_too_slow())

    async def _close_too_slow(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub.remove(self)
            await self.close(code=TOO_SLOW)

    def _bound_send_buffers(self) -> None:
        """Bound what the server holds for this client that it has not taken yet. Daphne hands
        frames to a Twisted transport, which would buffer without limit what the network does
        not take, and Linux grows a socket's send buffer to megabytes for a client that does
        not read. The kernel's buffer gets SOCKET_SEND_BUFFER_BYTES (SO_SNDBUF); Twisted's
        tells a streaming producer (its public IConsumer/IPushProducer interfaces) when it
        holds more than its `bufferSize` and when it has sent everything. Nothing where there
        is no Twisted transport (another server, the test communicator)."""
        transport = _daphne_transport(self.base_send)
        if transport is None:
            return
        handle = getattr(transport, "getHandle", None)
        if handle is not None:
            with contextlib.suppress(OSError):
                handle().setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDBUF, settings.SOCKET_SEND_BUFFER_BYTES
                )
        if not hasattr(transport, "registerProducer"):
            return
        transport.bufferSize = settings.SOCKET_SEND_BUFFER_BYTES
        # The HTTP channel that took the upgrade request registered itself as the producer;
        # it serves nothing on this connection any more.
        transport.unregisterProducer()
        self._send_buffer = _SendBuffer()
        transport.registerProducer(self._send_buffer, True)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(RATE_BURST, self.tokens + (now - self.tokens_at) * RATE_PER_SECOND)
        self.tokens_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def _close_when_idle(self) -> None:
        """Close a socket that has sent nothing, not even the client's ping, for
        SOCKET_IDLE_SECONDS: it is dead or stuck, and holds memory for nothing."""
        limit = settings.SOCKET_IDLE_SECONDS
        try:
            while not self.closed:
                await asyncio.sleep(min(limit, 15))
                if time.monotonic() - self.last_heard > limit:
                    await self.close(code=4408)
                    return
        except asyncio.CancelledError:
            pass

    # --- the stream ---------------------------------------------------------------------

    async def follow(self, conversation: Any, after_seq: int) -> None:
        """Start following a conversation (anything with its id as `pk`; kept in `following`
        for `entries_after`): subscribe first (so nothing published from now on is missed),
        then send what came after `after_seq` from the database."""
        self.hub.subscribe(conversation.pk, self)
        self.following[conversation.pk] = conversation
        async with self.stream_lock:
            self.delivered[conversation.pk] = max(after_seq, self.delivered.get(conversation.pk, 0))
            await self._catch_up(conversation.pk)

    def unfollow(self, conversation_id: int) -> None:
        self.hub.unsubscribe(conversation_id, self)
        self.delivered.pop(conversation_id, None)
        self.following.pop(conversation_id, None)

    async def on_message_event(self, event: dict[str, Any]) -> None:
        conversation_id = event["conversation"]
        async with self.stream_lock:
            delivered = self.delivered.get(conversation_id)
            if delivered is None or event["seq"] <= delivered:
                return
            if event["seq"] == delivered + 1:
                await self.send_frame(self.message_frame(event))
                self.delivered[conversation_id] = event["seq"]
            else:
                # An event went missing on the way (another process, a dropped doorbell): the
                # database has it.
                await self._catch_up(conversation_id)

    async def _catch_up(self, conversation_id: int) -> None:
        while True:
            after = self.delivered[conversation_id]
            entries = await self.entries_after(conversation_id, after)
            for entry in entries:
                await self.send_frame(self.message_frame(entry))
                self.delivered[conversation_id] = entry["seq"]
            if len(entries) < self.catch_up_page:
                return

    async def entries_after(self, conversation_id: int, after: int) -> list[dict[str, Any]]:
        """The stream's entries after seq `after`, oldest first, at most `catch_up_page` of
        them, as events of kind "message". The adapters read the database (the followed
        conversation is `self.following.get(conversation_id)`)."""
        raise NotImplementedError

    def message_frame(self, event: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def on_queue(self, snapshot: Any) -> None:
        pass


@implementer(IPushProducer)
class _SendBuffer:
    """A streaming producer for a Twisted transport, only to be told when its buffer is over
    its bound (paused) and when it has sent everything (resumed); the frames themselves are
    written by Daphne."""

    def __init__(self) -> None:
        self.drained = asyncio.Event()
        self.drained.set()

    def pauseProducing(self) -> None:  # the names are Twisted's interface
        self.drained.clear()

    def resumeProducing(self) -> None:
        self.drained.set()

    def stopProducing(self) -> None:
        # The connection is gone: nobody waits for it any more.
        self.drained.set()


def _daphne_transport(send: Any) -> Any:
    """The Twisted transport behind an ASGI `send` of Daphne's: Daphne's send is
    `partial(server.handle_reply, protocol)`, which middleware may wrap (Channels' session
    middleware keeps it as `real_send`). None for anything else."""
    for _ in range(8):
        if isinstance(send, functools.partial):
            return getattr(send.args[0], "transport", None) if send.args else None
        send = getattr(getattr(send, "__self__", None), "real_send", None)
        if send is None:
            return None
    return None
