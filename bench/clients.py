"""WebSocket clients that speak the project's protocol (docs/protocol.md) the way the browser
clients do: a visitor starts or resumes with its token and last seq, an advisor takes and
resumes, texts carry client ids, and a client that loses its server reconnects (to the next
address it knows) and resends what was never acknowledged, with the same client id."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

now = time.perf_counter

# Texts are about 120 bytes on the wire, like the reference measurements; the id and the send
# time travel in the text, so latency is measured on the far side without a clock of its own.
PADDING = "x" * 80
MESSAGE_IDS = itertools.count(1)
HEARTBEAT_SECONDS = 25
SKIPPED = ('{"type":"pong"',)
# Error frames the server sent, by code, for the report.
ERRORS: dict[str, int] = {}


def text_for(message_id: int) -> str:
    return f"m{message_id} {PADDING}"


def id_of(text: str) -> int | None:
    if not text.startswith("m"):
        return None
    head = text.split(" ", 1)[0]
    return int(head[1:]) if head[1:].isdigit() else None


class Ledger:
    """What was sent when, what arrived, and how often: lost, duplicated and latency."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self.received: dict[int, int] = {}
        self.latencies: list[float] = []
        self.duplicated = 0
        self.collect = True

    def new(self) -> int:
        # Ids (and so client ids) are unique across ledgers: a reused client id is, rightly,
        # taken by the server as a retry of the earlier text.
        return next(MESSAGE_IDS)

    def on_send(self, message_id: int, at: float) -> None:
        self.sent.setdefault(message_id, at)

    def on_receive(self, message_id: int) -> None:
        count = self.received.get(message_id, 0)
        self.received[message_id] = count + 1
        if count:
            self.duplicated += 1
        elif self.collect and message_id in self.sent:
            self.latencies.append((now() - self.sent[message_id]) * 1000)

    @property
    def lost(self) -> int:
        return sum(1 for message_id in self.sent if message_id not in self.received)

    def all_arrived(self) -> bool:
        return all(message_id in self.received for message_id in self.sent)


class Socket:
    """One client connection; frames are handed to `on_frame` as they arrive."""

    def __init__(
        self,
        urls: list[str],
        path: str,
        origin_of: Callable[[str], str],
        *,
        cookie: str | None = None,
    ) -> None:
        self.urls = urls
        self.path = path
        self.origin_of = origin_of
        self.cookie = cookie
        self.ws: Any = None
        self.url_index = 0
        self.reader: asyncio.Task | None = None
        self.waiters: list[tuple[Callable[[dict], bool], asyncio.Future]] = []
        self.closed_event = asyncio.Event()
        self.connect_failures = 0
        self.skip_prefixes: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return self.urls[self.url_index % len(self.urls)]

    async def open(self, timeout: float = 10) -> None:
        headers = {"Cookie": self.cookie} if self.cookie else None
        self.ws = await connect(
            self.url + self.path,
            origin=self.origin_of(self.url),
            additional_headers=headers,
            compression=None,
            ping_interval=None,
            open_timeout=timeout,
            max_size=2**22,
            max_queue=None,
            user_agent_header=None,
        )
        self.closed_event = asyncio.Event()
        self.reader = asyncio.create_task(self._read())
        self.heartbeat = asyncio.create_task(self._beat(self.ws))

    async def _beat(self, ws: Any) -> None:
        """The clients' heartbeat (docs/protocol.md): a ping frame now and then keeps an idle
        socket from being closed as dead."""
        try:
            while True:
                await asyncio.sleep(HEARTBEAT_SECONDS)
                await ws.send('{"type":"ping"}')
        except (ConnectionClosed, asyncio.CancelledError):
            pass

    async def open_somewhere(self, deadline: float) -> None:
        """Connect to the current address, or the next, until one answers; like the pages,
        wait a little longer (with jitter) after each failure, so that hundreds of clients
        cut off at once do not hammer the process that is left."""
        delay = 0.1
        while True:
            try:
                await self.open(timeout=10)
                return
            except (OSError, InvalidHandshake, InvalidStatus, TimeoutError):
                self.connect_failures += 1
                self.url_index += 1
                if now() > deadline:
                    raise
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(2.0, delay * 2)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                if raw.startswith(SKIPPED) or (
                    self.skip_prefixes and raw.startswith(self.skip_prefixes)
                ):
                    continue
                frame = json.loads(raw)
                if frame["type"] == "error":
                    ERRORS[frame.get("code")] = ERRORS.get(frame.get("code"), 0) + 1
                self.on_frame(frame)
                if self.waiters:
                    for entry in list(self.waiters):
                        match, future = entry
                        if not future.done() and match(frame):
                            future.set_result(frame)
                            self.waiters.remove(entry)
        except ConnectionClosed:
            pass
        finally:
            self.closed_event.set()
            for _match, future in self.waiters:
                if not future.done():
                    future.set_exception(ConnectionError("closed"))
            self.waiters.clear()

    def on_frame(self, frame: dict[str, Any]) -> None:
        pass

    def wait_for(self, match: Callable[[dict], bool], timeout: float = 30) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((match, future))
        return asyncio.wait_for(future, timeout)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame, separators=(",", ":")))

    async def close(self) -> None:
        if getattr(self, "heartbeat", None) is not None:
            self.heartbeat.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await self.reader


class Visitor(Socket):
    def __init__(self, urls: list[str], origin_of: Callable[[str], str], ledger: Ledger) -> None:
        super().__init__(urls, "/ws/chat/", origin_of)
        self.ledger = ledger
        self.token: str | None = None
        self.last_seq = 0
        self.status: str | None = None
        self.positions: list[tuple[float, int]] = []
        self.unacked: dict[str, str] = {}

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "message":
            self.last_seq = max(self.last_seq, frame["seq"])
            if frame["from"] != "visitor" and "text" in frame:
                message_id = id_of(frame["text"])
                if message_id is not None:
                    self.ledger.on_receive(message_id)
        elif kind == "ack":
            self.unacked.pop(frame["client_id"], None)
        elif kind == "queue":
            self.positions.append((now(), frame["position"]))
        elif kind == "state":
            self.status = frame["status"]
        elif kind == "started":
            self.token = frame["token"]

    async def start(self) -> None:
        started = self.wait_for(lambda f: f["type"] == "started")
        await self.send({"type": "start", "language": "sv", "writer": "young", "safe_now": "yes"})
        await started

    async def resume(self) -> None:
        resumed = self.wait_for(lambda f: f["type"] == "state")
        await self.send({"type": "resume", "token": self.token, "last_seq": self.last_seq})
        await resumed
        await self.resend()

    async def resend(self) -> None:
        """Send again, with the same client ids, what was never acknowledged."""
        for client_id, text in list(self.unacked.items()):
            await self.send({"type": "send", "client_id": client_id, "text": text})

    async def say(self, message_id: int, at: float) -> None:
        client_id = str(message_id)
        text = text_for(message_id)
        self.unacked[client_id] = text
        self.ledger.on_send(message_id, at)
        await self.send({"type": "send", "client_id": client_id, "text": text})


class Advisor(Socket):
    def __init__(
        self, urls: list[str], origin_of: Callable[[str], str], ledger: Ledger, cookie: str
    ) -> None:
        super().__init__(urls, "/ws/advisor/", origin_of, cookie=cookie)
        self.ledger = ledger
        self.last_seq: dict[str, int] = {}
        self.unacked: dict[str, tuple[str, str]] = {}
        self.first_texts: dict[str, str] = {}

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "message":
            conversation = frame["conversation"]
            self.last_seq[conversation] = max(self.last_seq.get(conversation, 0), frame["seq"])
            if frame["from"] == "visitor" and "text" in frame:
                self.first_texts.setdefault(conversation, frame["text"])
                message_id = id_of(frame["text"])
                if message_id is not None:
                    self.ledger.on_receive(message_id)
        elif kind == "ack":
            self.unacked.pop(frame["client_id"], None)
        elif kind == "conversation":
            summary = frame["conversation"]
            if summary["status"] == "active":
                self.last_seq.setdefault(summary["id"], 0)

    async def hello(self) -> None:
        await self.wait_for(lambda f: f["type"] == "hello")

    async def resume(self) -> None:
        await self.send({"type": "resume", "conversations": dict(self.last_seq)})
        await self.resend()

    async def resend(self) -> None:
        for client_id, (conversation, text) in list(self.unacked.items()):
            await self.send(
                {"type": "send", "conversation": conversation, "client_id": client_id, "text": text}
            )

    async def say(self, conversation: str, message_id: int, at: float) -> None:
        client_id = str(message_id)
        text = text_for(message_id)
        self.unacked[client_id] = (conversation, text)
        self.ledger.on_send(message_id, at)
        await self.send(
            {"type": "send", "conversation": conversation, "client_id": client_id, "text": text}
        )


class RelayPeer(Socket):
    """A socket of the bare relay: sends the same frames as a visitor, gets the other's."""

    def __init__(
        self, url: str, room: int, origin_of: Callable[[str], str], ledger: Ledger
    ) -> None:
        super().__init__([url], f"/relay/{room}/", origin_of)
        self.ledger = ledger

    def on_frame(self, frame: dict[str, Any]) -> None:
        message_id = id_of(frame.get("text", ""))
        if message_id is not None:
            self.ledger.on_receive(message_id)

    async def say(self, message_id: int, at: float) -> None:
        self.ledger.on_send(message_id, at)
        await self.send(
            {"type": "send", "client_id": str(message_id), "text": text_for(message_id)}
        )


async def gather_limited(coroutines: list, limit: int = 50) -> list:
    """Run coroutines with at most `limit` at once (handshakes in bulk overrun any server)."""
    semaphore = asyncio.Semaphore(limit)

    async def run(coroutine):
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(run(c) for c in coroutines), return_exceptions=True)
