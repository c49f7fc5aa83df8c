"""Several processes, nothing lost (issue 5): real Daphne processes on one PostgreSQL and one
Redis, clients that talk across them, a process killed under them, a client too slow to read.

The clients are the benchmark's (bench/clients.py): they speak the protocol the way the pages
do, and when their server goes away they reconnect to the next address they know, resume from
their last seq and send again, with the same client id, whatever was never acknowledged."""

from __future__ import annotations

import asyncio
import secrets
import socket

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from advice.models import Conversation, Message
from bench.clients import Advisor, Ledger, Visitor
from tests.factories import session_cookie
from tests.live import Daphne

pytestmark = [
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
        or "Redis" not in settings.CHANNEL_LAYERS["default"]["BACKEND"],
        reason="several processes share PostgreSQL and Redis (DATABASE_URL, REDIS_URL)",
    ),
]


# Long texts for the client that does not read: far more than the kernel's socket buffers and
# the server's allowance (SOCKET_SEND_BUFFER_BYTES, 16 KiB in the test) together hold.
LONG_TEXTS = 80
DRAIN_SECONDS = 2


def origin_of(url: str) -> str:
    return "http://" + url.split("://", 1)[1]


@pytest.fixture
def two_processes():
    """Two servers of one service: same database, same Redis layer, same channel prefix."""
    prefix = f"scale-{secrets.token_hex(4)}"
    servers = [Daphne(CHANNEL_PREFIX=prefix).start(), Daphne(CHANNEL_PREFIX=prefix).start()]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


async def cookie_for(user) -> str:
    return (await sync_to_async(session_cookie)(user)).split(";")[0]


async def visitor_on(urls: list[str], ledger: Ledger) -> Visitor:
    visitor = Visitor(urls, origin_of, ledger)
    await visitor.open()
    await visitor.start()
    return visitor


async def advisor_on(urls: list[str], ledger: Ledger, user) -> Advisor:
    advisor = Advisor(urls, origin_of, ledger, await cookie_for(user))
    hello = None
    await advisor.open()
    hello = advisor.wait_for(lambda f: f["type"] == "hello")
    await hello
    return advisor


async def take_next(advisor: Advisor) -> str:
    taken = advisor.wait_for(
        lambda f: f["type"] == "conversation" and f["conversation"]["status"] == "active"
    )
    await advisor.send({"type": "take_next"})
    return (await taken)["conversation"]["id"]


class Recording:
    """Keeps every message frame a client gets, to count what arrived how often."""

    def __init__(self, client) -> None:
        self.frames: list[dict] = []
        on_frame = client.on_frame

        def record(frame: dict) -> None:
            if frame["type"] == "message":
                self.frames.append(frame)
            on_frame(frame)

        client.on_frame = record


async def test_a_visitor_on_one_process_and_an_advisor_on_another_talk_as_if_on_one(
    two_processes, advisor, other_advisor
):
    a, b = two_processes
    ledger = Ledger()
    visitor = await visitor_on([a.ws_url], ledger)
    console = await advisor_on([b.ws_url], ledger, advisor)
    # Every advisor sees the same queue, on either process.
    other = await advisor_on([a.ws_url], ledger, other_advisor)
    for watcher in (console, other):
        await watcher.wait_for(lambda f: f["type"] == "queue" and len(f["waiting"]) == 1)

    activated = visitor.wait_for(lambda f: f["type"] == "state" and f["status"] == "active")
    emptied = other.wait_for(lambda f: f["type"] == "queue" and f["waiting"] == [])
    conversation = await take_next(console)
    await activated
    await emptied

    heard = console.wait_for(lambda f: f["type"] == "message" and f.get("from") == "visitor")
    await visitor.say(ledger.new(), 0)
    assert (await heard)["conversation"] == conversation
    answered = visitor.wait_for(lambda f: f["type"] == "message" and f.get("from") == "advisor")
    await console.say(conversation, ledger.new(), 0)
    await answered
    assert ledger.lost == 0 and ledger.duplicated == 0
    for client in (visitor, console, other):
        await client.close()


async def test_when_a_process_dies_its_clients_resume_on_the_other_with_nothing_lost_or_doubled(
    two_processes, advisor, other_advisor
):
    a, b = two_processes
    both = [a.ws_url, b.ws_url]
    ledger = Ledger()
    # Two conversations, each across the two processes, in opposite directions.
    first_visitor = await visitor_on(both, ledger)
    first_advisor = await advisor_on(both[::-1], ledger, advisor)
    first = await take_next(first_advisor)
    second_visitor = await visitor_on(both[::-1], ledger)
    second_advisor = await advisor_on(both, ledger, other_advisor)
    second = await take_next(second_advisor)
    recordings = {
        c: Recording(c) for c in (first_visitor, first_advisor, second_visitor, second_advisor)
    }
    pairs = [(first_visitor, first_advisor, first), (second_visitor, second_advisor, second)]

    killed = asyncio.Event()

    async def talk(visitor: Visitor, console: Advisor, conversation: str) -> None:
        for turn in range(40):
            if turn == 15:
                killed.set()
            try:
                if turn % 2:
                    await console.say(conversation, ledger.new(), 0)
                else:
                    await visitor.say(ledger.new(), 0)
            except ConnectionClosed:
                pass  # not acknowledged: sent again after the resume
            await asyncio.sleep(0.02)

    async def resume_when_cut_off(client) -> None:
        await client.closed_event.wait()
        client.url_index += 1  # "the same address": behind nginx, the next process answers
        await client.open_somewhere(deadline=asyncio.get_running_loop().time() + 20)
        await client.resume()

    talking = [asyncio.create_task(talk(*pair)) for pair in pairs]
    await killed.wait()
    a.kill()
    on_a = [first_visitor, second_advisor]
    await asyncio.wait_for(asyncio.gather(*(resume_when_cut_off(c) for c in on_a)), 30)
    await asyncio.gather(*talking)
    # Whatever was never acknowledged is sent again until it is.
    for _ in range(200):
        if ledger.all_arrived() and not any(c.unacked for c in recordings):
            break
        for client in on_a:
            await client.resend()
        await asyncio.sleep(0.05)

    assert ledger.lost == 0
    assert ledger.duplicated == 0
    for client, recording in recordings.items():
        seqs = [f["seq"] for f in recording.frames]
        # Every entry of the stream since the recording began reached every client once.
        assert sorted(seqs) == list(range(min(seqs), max(seqs) + 1)), type(client).__name__
    for public_id in (first, second):
        stored = await sync_to_async(list)(
            Message.objects.filter(conversation__public_id=public_id)
            .order_by("seq")
            .values_list("seq", "client_id")
        )
        assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
        client_ids = [client_id for _, client_id in stored if client_id]
        assert len(client_ids) == len(set(client_ids)) == 40
        conversation = await sync_to_async(Conversation.objects.get)(public_id=public_id)
        assert conversation.status == Conversation.Status.ACTIVE
    for client in recordings:
        await client.close()


async def test_a_client_that_does_not_read_is_cut_off_without_stalling_the_others_and_loses_nothing(
    advisor, other_advisor
):
    prefix = f"scale-{secrets.token_hex(4)}"
    server = Daphne(
        CHANNEL_PREFIX=prefix,
        SOCKET_SEND_BUFFER_BYTES=str(16 * 1024),
        SOCKET_SEND_DRAIN_SECONDS=str(DRAIN_SECONDS),
    ).start()
    try:
        ledger = Ledger()
        url = [server.ws_url]
        # The slow one: a client that stops reading, on a socket with a small receive buffer.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", server.port))
        slow = Visitor(url, origin_of, ledger)
        slow.ws = await connect(
            url[0] + "/ws/chat/",
            sock=raw,
            origin=origin_of(url[0]),
            compression=None,
            ping_interval=None,
            max_queue=1,
        )
        started = asyncio.get_running_loop().create_future()
        await slow.ws.send('{"type":"start","language":"sv","writer":"young","safe_now":"yes"}')
        while not started.done():
            frame = await slow.ws.recv()
            if '"started"' in frame:
                slow.token = __import__("json").loads(frame)["token"]
                started.set_result(None)
        console = await advisor_on(url, ledger, advisor)
        slow_conversation = await take_next(console)
        # A conversation beside it that must go on as if nothing happened.
        visitor = await visitor_on(url, ledger)
        other = await advisor_on(url, ledger, other_advisor)
        other_conversation = await take_next(other)

        # The advisor writes long texts to the client that does not read (from three consoles,
        # for more than one socket's rate limit lets through at once)...
        long_text = "y" * 3900
        consoles = [
            console,
            await advisor_on(url, ledger, advisor),
            await advisor_on(url, ledger, advisor),
        ]
        for i in range(LONG_TEXTS):
            await consoles[i % 3].send(
                {
                    "type": "send",
                    "conversation": slow_conversation,
                    "client_id": f"long{i}",
                    "text": long_text,
                }
            )
        # ...while the conversation beside it goes on.
        for _ in range(10):
            await other.say(other_conversation, ledger.new(), 0)
            await visitor.say(ledger.new(), 0)
        for _ in range(200):
            if ledger.all_arrived():
                break
            await asyncio.sleep(0.05)
        assert ledger.lost == 0

        # The server lets the slow client go once it has held more than
        # SOCKET_SEND_BUFFER_BYTES for it for SOCKET_SEND_DRAIN_SECONDS.
        await asyncio.sleep(3 * DRAIN_SECONDS)
        code = None
        try:
            async with asyncio.timeout(60):
                while True:
                    await slow.ws.recv()
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
        assert code in (4429, 1006)
        # Resumed from the start, it gets every text once.
        resumed = Visitor(url, origin_of, ledger)
        resumed.token = slow.token
        recording = Recording(resumed)
        await resumed.open()
        await resumed.resume()
        for _ in range(100):
            if sum(1 for f in recording.frames if f.get("text") == long_text) >= LONG_TEXTS:
                break
            await asyncio.sleep(0.05)
        texts = [f for f in recording.frames if f.get("text") == long_text]
        assert len(texts) == LONG_TEXTS
        assert len({f["seq"] for f in recording.frames}) == len(recording.frames)
        for client in (resumed, *consoles, visitor, other):
            await client.close()
    finally:
        server.stop()
