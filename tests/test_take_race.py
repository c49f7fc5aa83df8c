"""Races, with real concurrency: many threads, each with its own database connection (and, for
the socket tests, its own event loop and hub, like separate server processes), released at the
same instant by a barrier.

Channels runs every `database_sync_to_async` call of one event loop on one shared thread, so
twenty sockets on one loop would reach the database one after another. Here each socket lives on
its own loop, driven from its own thread, so twenty takes really do hit the database at once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connection

from advice.models import Conversation, DomainError, Message
from tests.factories import SAME_ORIGIN, application, make_advisor, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

RACERS = 20


def all_at_once(count: int, work: Callable[[int, threading.Barrier], Any]) -> list[Any]:
    """Run `work(i, barrier)` on `count` threads; returns each result (or the exception)."""
    barrier = threading.Barrier(count, timeout=30)
    results: list[Any] = [None] * count
    # Back to the pool (PostgreSQL): each racer needs a connection of its own at the same time.
    connection.close()

    def run(i: int) -> None:
        try:
            results[i] = work(i, barrier)
        except BaseException as e:  # the test reads it
            results[i] = e
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,), name=f"racer-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a racer hung"
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    return results


async def read_until(communicator: WebsocketCommunicator, *types: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await communicator.receive_from(timeout=10))
        if frame["type"] in types:
            return frame


async def settle() -> None:
    """Let the hub of this loop finish what the take set off (the queue's reload reads the
    database) before the loop, and with it this racer's database connection, goes away."""
    from realtime.hub import get_hub

    hub = get_hub()
    while hub._queue_task is not None and not hub._queue_task.done():
        await asyncio.sleep(0.05)


def waiting_conversation() -> Conversation:
    conversation, _token, _events = Conversation.start_web(language="sv", writer="young")
    return conversation


# --- taking ----------------------------------------------------------------------------------


def test_twenty_advisors_taking_one_conversation_at_once_in_the_domain_give_one_winner():
    advisors = [make_advisor(f"racer{i}") for i in range(RACERS)]
    conversation = waiting_conversation()

    def take(i: int, barrier: threading.Barrier) -> str:
        mine = Conversation.objects.get(pk=conversation.pk)
        barrier.wait()
        try:
            mine.take(advisors[i])
        except DomainError as e:
            return e.code
        return "won"

    results = all_at_once(RACERS, take)
    assert sorted(results) == ["already_taken"] * (RACERS - 1) + ["won"]
    conversation.refresh_from_db()
    winner = advisors[results.index("won")]
    assert (conversation.status, conversation.advisor_id) == ("active", winner.pk)
    # One "taken" event and one "joined" entry, whoever won.
    assert list(conversation.events.values_list("kind", flat=True)) == ["created", "taken"]
    assert list(conversation.messages.values_list("seq", "event")) == [(1, "advisor_joined")]


def test_twenty_advisor_sockets_taking_one_conversation_at_once_give_one_winner_and_19_errors():
    advisors = [make_advisor(f"racer{i}") for i in range(RACERS)]
    cookies = [session_cookie(a) for a in advisors]
    conversation = waiting_conversation()
    public_id = str(conversation.public_id)

    def take(i: int, barrier: threading.Barrier) -> dict[str, Any]:
        async def scenario() -> dict[str, Any]:
            console = WebsocketCommunicator(
                application(),
                "/ws/advisor/",
                headers=[*SAME_ORIGIN, (b"cookie", cookies[i].encode())],
            )
            connected, _ = await console.connect(timeout=10)
            assert connected
            await read_until(console, "hello")
            await asyncio.to_thread(barrier.wait)
            await console.send_json_to({"type": "take", "conversation": public_id})
            outcome = await read_until(console, "error", "conversation")
            await console.disconnect()
            await settle()
            return outcome

        return async_to_sync(scenario)()

    results = all_at_once(RACERS, take)
    winners = [r for r in results if r["type"] == "conversation"]
    losers = [r for r in results if r["type"] == "error"]
    assert len(winners) == 1
    assert winners[0]["conversation"]["id"] == public_id
    assert winners[0]["conversation"]["status"] == "active"
    assert len(losers) == RACERS - 1
    assert {(e["code"], e["ref"]) for e in losers} == {("already_taken", "take")}
    conversation.refresh_from_db()
    assert conversation.advisor_id == winners[0]["conversation"]["advisor"]
    assert conversation.events.filter(kind="taken").count() == 1


def test_take_next_by_many_advisors_at_once_hands_each_waiting_conversation_to_exactly_one():
    advisors = [make_advisor(f"racer{i}", capacity=1) for i in range(RACERS)]
    waiting = [waiting_conversation() for _ in range(RACERS // 2)]

    def take_next(i: int, barrier: threading.Barrier) -> str:
        barrier.wait()
        try:
            conversation, _events = Conversation.take_next(advisors[i])
        except DomainError as e:
            return e.code
        return str(conversation.pk)

    results = all_at_once(RACERS, take_next)
    taken = [r for r in results if r not in ("queue_empty",)]
    # Everyone waiting was taken once; the advisors who came too late were told the queue is
    # empty, never handed someone else's conversation.
    assert sorted(taken) == sorted(str(c.pk) for c in waiting)
    assert results.count("queue_empty") == RACERS - len(waiting)
    assert Conversation.objects.filter(status="active").count() == len(waiting)
    for conversation in waiting:
        assert conversation.events.filter(kind="taken").count() == 1


def test_an_advisor_taking_at_once_on_many_sockets_never_exceeds_the_capacity():
    eve = make_advisor("eve", capacity=2)
    for _ in range(8):
        waiting_conversation()
    ids = list(Conversation.objects.values_list("pk", flat=True))

    def take(i: int, barrier: threading.Barrier) -> str:
        conversation = Conversation.objects.get(pk=ids[i])
        barrier.wait()
        try:
            conversation.take(eve)
        except DomainError as e:
            return e.code
        return "won"

    results = all_at_once(len(ids), take)
    assert results.count("won") == 2
    assert results.count("capacity_reached") == len(ids) - 2
    assert Conversation.objects.filter(advisor=eve, status="active").count() == 2


# --- the message stream ----------------------------------------------------------------------


def test_concurrent_sends_into_one_conversation_get_gap_free_unique_seqs():
    advisor = make_advisor("alice", capacity=3)
    conversation = waiting_conversation()
    conversation.take(advisor)
    per_thread = 10

    def send(i: int, barrier: threading.Barrier) -> list[int]:
        mine = Conversation.objects.get(pk=conversation.pk)
        sender = Message.Sender.ADVISOR if i % 2 else Message.Sender.VISITOR
        barrier.wait()
        seqs = []
        for n in range(per_thread):
            message, created, _events = mine.post(
                sender=sender,
                text=f"{i}-{n}",
                client_id=f"{i}-{n}",
                advisor=advisor if sender == Message.Sender.ADVISOR else None,
            )
            assert created
            seqs.append(message.seq)
        return seqs

    threads = 10
    results = all_at_once(threads, send)
    for seqs in results:
        assert seqs == sorted(seqs), "one sender's texts are numbered in the order sent"
    stored = list(conversation.messages.order_by("seq").values_list("seq", flat=True))
    total = 1 + threads * per_thread  # the join, then the texts
    assert stored == list(range(1, total + 1))
    assert sorted(s for seqs in results for s in seqs) == list(range(2, total + 1))
    conversation.refresh_from_db()
    assert conversation.last_seq == total


def test_the_same_text_retried_at_once_on_several_connections_is_stored_once():
    conversation = waiting_conversation()

    def send(i: int, barrier: threading.Barrier) -> tuple[int, bool]:
        mine = Conversation.objects.get(pk=conversation.pk)
        barrier.wait()
        message, created, _events = mine.post(
            sender=Message.Sender.VISITOR, text="en gång", client_id="retry-1"
        )
        return message.seq, created

    results = all_at_once(8, send)
    assert {seq for seq, _created in results} == {1}
    assert sorted(created for _seq, created in results) == [False] * 7 + [True]
    assert conversation.messages.count() == 1


def test_concurrent_sends_on_sockets_are_acked_with_unique_seqs_and_every_socket_sees_them():
    """Two tabs of the visitor and two consoles of the advisor, each on its own loop (like four
    processes), write at once. On a real channel layer each socket then holds the whole stream,
    once and in order; on the in-memory layer, which joins no processes, the database alone is
    checked."""
    advisor = make_advisor("alice")
    conversation, token, _events = Conversation.start_web(language="sv", writer="young")
    conversation.take(advisor)
    public_id = str(conversation.public_id)
    cookie = session_cookie(advisor)
    per_socket = 10
    sockets = 4
    total = 1 + sockets * per_socket
    real_layer = not isinstance(get_channel_layer(), InMemoryChannelLayer)

    def run(i: int, barrier: threading.Barrier) -> tuple[list[int], list[int]]:
        async def scenario() -> tuple[list[int], list[int]]:
            is_visitor = i < 2
            headers = [*SAME_ORIGIN]
            if not is_visitor:
                headers.append((b"cookie", cookie.encode()))
            socket = WebsocketCommunicator(
                application(), "/ws/chat/" if is_visitor else "/ws/advisor/", headers=headers
            )
            connected, _ = await socket.connect(timeout=10)
            assert connected
            await socket.send_json_to(
                {"type": "resume", "token": token}
                if is_visitor
                else {"type": "resume", "conversations": {public_id: 0}}
            )
            seen: list[int] = []
            frame = await read_until(socket, "message")
            seen.append(frame["seq"])
            await asyncio.to_thread(barrier.wait)
            acks = []
            for n in range(per_socket):
                send = {"type": "send", "client_id": f"{i}-{n}", "text": f"{i}-{n}"}
                if not is_visitor:
                    send["conversation"] = public_id
                await socket.send_json_to(send)
                # Frames are handled one at a time: the ack comes before the next is read.
                while True:
                    frame = json.loads(await socket.receive_from(timeout=10))
                    if frame["type"] == "message":
                        seen.append(frame["seq"])
                    if frame["type"] == "ack":
                        acks.append(frame["seq"])
                        break
                    assert frame["type"] != "error", frame
            if real_layer:
                while len(seen) < total:
                    frame = json.loads(await socket.receive_from(timeout=10))
                    if frame["type"] == "message":
                        seen.append(frame["seq"])
            await asyncio.to_thread(barrier.wait)  # nobody leaves before all have read
            await socket.disconnect()
            await settle()
            return acks, seen

        return async_to_sync(scenario)()

    results = all_at_once(sockets, run)
    acks = sorted(seq for acked, _seen in results for seq in acked)
    assert acks == list(range(2, total + 1))
    assert list(conversation.messages.order_by("seq").values_list("seq", flat=True)) == list(
        range(1, total + 1)
    )
    if real_layer:
        for _acked, seen in results:
            assert seen == list(range(1, total + 1))
