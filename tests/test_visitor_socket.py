"""The visitor's socket, /ws/chat/, end to end on the real middleware stack: the queue while
waiting, the conversation with an advisor, ending it, resuming, and deduplicated sends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from advice.models import Conversation, ConversationEvent, Message
from tests.factories import START, advisor_socket, receive_until, visitor_socket

pytestmark = pytest.mark.django_db(transaction=True)


# --- helpers -------------------------------------------------------------------------------


async def start_visitor(**options: Any) -> tuple[WebsocketCommunicator, str]:
    visitor = await visitor_socket()
    await visitor.send_json_to({**START, **options})
    started = await receive_until(visitor, "started")
    return visitor, started["token"]


async def drain(communicator: WebsocketCommunicator, quiet: float = 0.3) -> list[dict[str, Any]]:
    """Every frame that arrives until the socket has been quiet for `quiet` seconds."""
    frames = []
    while not await communicator.receive_nothing(timeout=quiet):
        frames.append(json.loads(await communicator.receive_from()))
    return frames


def of_type(frames: list[dict[str, Any]], frame_type: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == frame_type]


async def queue_ids(console: WebsocketCommunicator) -> list[str]:
    """The ids in the next queue frame the advisor gets."""
    frame = await receive_until(console, "queue")
    return [c["id"] for c in frame["waiting"]]


async def take(console: WebsocketCommunicator, conversation_id: str) -> None:
    await console.send_json_to({"type": "take", "conversation": conversation_id})
    await receive_until(console, "conversation", timeout=3)


@database_sync_to_async
def event_kinds(public_id: str | None = None) -> list[str]:
    events = ConversationEvent.objects.order_by("id")
    if public_id:
        events = events.filter(conversation__public_id=public_id)
    return list(events.values_list("kind", flat=True))


@database_sync_to_async
def only_conversation() -> Conversation:
    return Conversation.objects.get()


@database_sync_to_async
def texts_of(public_id: str) -> list[str]:
    return [
        m.text
        for m in Message.objects.filter(conversation__public_id=public_id, event="").order_by("seq")
    ]


# --- waiting in the queue ----------------------------------------------------------------


async def test_a_waiting_visitor_sees_the_place_and_wait_change_as_others_join_leave_and_are_taken(
    advisor,
):
    first, _ = await start_visitor()
    state = await receive_until(first, "state")
    assert state == {"type": "state", "status": "waiting"}
    place = await receive_until(first, "queue")
    # No recent history: two minutes a place.
    assert place == {"type": "queue", "position": 1, "estimated_wait_seconds": 120}

    second, _ = await start_visitor()
    assert (await receive_until(second, "queue"))["position"] == 2
    # The first keeps its place, and hears nothing new.
    assert not of_type(await drain(first, quiet=0.2), "queue")

    # "Not safe right now" goes first: everyone else moves one place back.
    urgent, _ = await start_visitor(safe_now="no")
    assert (await receive_until(urgent, "queue"))["position"] == 1
    moved = await receive_until(first, "queue")
    assert moved["position"] == 2
    assert moved["estimated_wait_seconds"] == 240
    assert (await receive_until(second, "queue"))["position"] == 3

    # An advisor takes the next one (the urgent visitor): the others move up.
    console, connected = await advisor_socket(advisor)
    assert connected
    await receive_until(console, "queue")
    await console.send_json_to({"type": "take_next"})
    await receive_until(urgent, "state", status="active")
    assert (await receive_until(first, "queue"))["position"] == 1
    assert (await receive_until(second, "queue"))["position"] == 2

    # The first visitor leaves: the second is now first.
    await first.send_json_to({"type": "leave"})
    await receive_until(first, "state", status="abandoned")
    latest = await receive_until(second, "queue")
    assert latest["position"] == 1
    assert latest["estimated_wait_seconds"] > 0
    for socket in (first, second, urgent, console):
        await socket.disconnect()


async def test_leaving_the_queue_abandons_the_conversation_and_advisors_see_it_gone_at_once(
    advisor,
):
    console, _ = await advisor_socket(advisor)
    assert await queue_ids(console) == []
    visitor, _ = await start_visitor()
    waiting = await queue_ids(console)
    assert len(waiting) == 1

    await visitor.send_json_to({"type": "leave"})
    left = await receive_until(visitor, "message")
    assert left["from"] == "system"
    assert left["event"] == "visitor_left"
    assert (await receive_until(visitor, "state", status="abandoned")) == {
        "type": "state",
        "status": "abandoned",
    }
    # The next queue frame (within one refresh) no longer has it.
    assert await queue_ids(console) == []

    conversation = await only_conversation()
    assert conversation.status == Conversation.Status.ABANDONED
    assert conversation.end_reason == Conversation.EndReason.VISITOR_LEFT
    assert conversation.ended_at is not None
    assert await event_kinds() == ["created", "abandoned"]
    await visitor.disconnect()
    await console.disconnect()


async def test_the_start_frame_stores_only_what_the_form_asks(advisor):
    visitor, token = await start_visitor(
        language="en",
        writer="professional",
        interpreter_needed=True,
        interpreter_language="ar",
        county="AB",
        safe_now="unknown",
    )
    console, _ = await advisor_socket(advisor)
    summary = (await receive_until(console, "queue"))["waiting"][0]
    assert {
        k: summary[k]
        for k in (
            "channel",
            "status",
            "writer",
            "language",
            "interpreter_needed",
            "interpreter_language",
            "county",
            "safe_now",
            "urgent",
        )
    } == {
        "channel": "web",
        "status": "waiting",
        "writer": "professional",
        "language": "en",
        "interpreter_needed": True,
        "interpreter_language": "ar",
        "county": "AB",
        "safe_now": "unknown",
        "urgent": False,
    }
    # The token is long and random, and only its hash is kept.
    assert len(token) >= 43
    conversation = await only_conversation()
    assert token not in conversation.token_hash
    await visitor.disconnect()
    await console.disconnect()


# --- the conversation ----------------------------------------------------------------------


async def test_the_visitor_and_the_advisor_talk_and_see_each_other_typing_until_the_visitor_ends(
    advisor,
):
    visitor, _ = await start_visitor()
    console, _ = await advisor_socket(advisor)
    [conversation_id] = await queue_ids(console)
    await take(console, conversation_id)

    assert (await receive_until(visitor, "state", status="active")) == {
        "type": "state",
        "status": "active",
    }
    joined = await receive_until(visitor, "message")
    assert joined["event"] == "advisor_joined"
    assert joined["from"] == "system"
    assert "text" not in joined

    # Visitor → advisor.
    await visitor.send_json_to({"type": "typing"})
    assert (await receive_until(console, "typing")) == {
        "type": "typing",
        "conversation": conversation_id,
        "from": "visitor",
    }
    await visitor.send_json_to({"type": "send", "client_id": "v-1", "text": "Jag behöver hjälp"})
    ack = await receive_until(visitor, "ack")
    assert ack == {"type": "ack", "client_id": "v-1", "seq": joined["seq"] + 1}
    echoed = await receive_until(visitor, "message")
    assert echoed["seq"] == ack["seq"]
    assert echoed["client_id"] == "v-1"
    got = await receive_until(console, "message", seq=ack["seq"])
    assert got["text"] == "Jag behöver hjälp"
    assert got["from"] == "visitor"
    assert got["conversation"] == conversation_id

    # Advisor → visitor.
    await console.send_json_to({"type": "typing", "conversation": conversation_id})
    assert (await receive_until(visitor, "typing")) == {"type": "typing", "from": "advisor"}
    await console.send_json_to(
        {
            "type": "send",
            "conversation": conversation_id,
            "client_id": "a-1",
            "text": "Jag finns här. Berätta.",
        }
    )
    advisor_ack = await receive_until(console, "ack")
    assert advisor_ack == {
        "type": "ack",
        "conversation": conversation_id,
        "client_id": "a-1",
        "seq": ack["seq"] + 1,
    }
    reply = await receive_until(visitor, "message")
    assert reply["seq"] == advisor_ack["seq"]
    assert reply["from"] == "advisor"
    assert reply["text"] == "Jag finns här. Berätta."
    # Neither side gets its own typing back.
    assert not [f for f in await drain(visitor) if f["type"] == "typing"]

    # The visitor ends it.
    await visitor.send_json_to({"type": "leave"})
    await receive_until(visitor, "state", status="closed")
    left = await receive_until(console, "message", event="visitor_left")
    assert left["data"] == {"reason": "visitor_ended"}
    closed = await receive_until(console, "conversation")
    assert closed["conversation"]["status"] == "closed"
    assert closed["conversation"]["end_reason"] == "visitor_ended"
    assert await event_kinds() == ["created", "taken", "ended"]
    assert await texts_of(conversation_id) == ["Jag behöver hjälp", "Jag finns här. Berätta."]
    await visitor.disconnect()
    await console.disconnect()


async def test_the_advisor_ends_the_conversation_and_the_visitor_is_told(advisor):
    visitor, _ = await start_visitor()
    console, _ = await advisor_socket(advisor)
    [conversation_id] = await queue_ids(console)
    await take(console, conversation_id)
    await receive_until(visitor, "message", event="advisor_joined")

    await console.send_json_to(
        {"type": "close", "conversation": conversation_id, "outcome": "social_services"}
    )
    closed = await receive_until(visitor, "message", event="closed")
    assert closed["from"] == "system"
    assert (await receive_until(visitor, "state", status="closed")) == {
        "type": "state",
        "status": "closed",
    }
    summary = (await receive_until(console, "conversation"))["conversation"]
    assert summary["status"] == "closed"
    assert summary["outcome"] == "social_services"

    # An ended conversation takes no more texts and cannot be left twice.
    await visitor.send_json_to({"type": "send", "client_id": "late", "text": "hallå?"})
    assert (await receive_until(visitor, "error"))["code"] == "conversation_ended"
    await visitor.send_json_to({"type": "leave"})
    assert (await receive_until(visitor, "error"))["code"] == "conversation_ended"
    assert await event_kinds() == ["created", "taken", "closed"]
    await visitor.disconnect()
    await console.disconnect()


async def test_what_the_visitor_writes_while_waiting_reaches_the_advisor_who_takes_it(advisor):
    visitor, _ = await start_visitor()
    await visitor.send_json_to({"type": "send", "client_id": "w-1", "text": "Är någon där?"})
    await receive_until(visitor, "ack")
    # Typing while waiting goes nowhere: nobody is there to see it.
    await visitor.send_json_to({"type": "typing"})
    console, _ = await advisor_socket(advisor)
    [conversation_id] = await queue_ids(console)
    await take(console, conversation_id)
    early = await receive_until(console, "message", seq=1)
    assert early["text"] == "Är någon där?"
    joined = await receive_until(console, "message", seq=2)
    assert joined["event"] == "advisor_joined"
    assert not of_type(await drain(console), "typing")
    await visitor.disconnect()
    await console.disconnect()


async def test_two_visitors_never_see_each_others_messages(advisor):
    anna, _ = await start_visitor()
    bea, _ = await start_visitor()
    await drain(anna)
    await drain(bea)

    await anna.send_json_to({"type": "send", "client_id": "a", "text": "hemligt från Anna"})
    await receive_until(anna, "ack")
    await anna.send_json_to({"type": "typing"})
    assert of_type(await drain(anna), "message")[0]["text"] == "hemligt från Anna"
    assert await bea.receive_nothing(timeout=0.3)

    # Also once both talk to the same advisor.
    console, _ = await advisor_socket(advisor)
    await receive_until(console, "queue")
    for _ in range(2):
        await console.send_json_to({"type": "take_next"})
        await receive_until(console, "conversation")
    await drain(anna)
    await drain(bea)
    await bea.send_json_to({"type": "send", "client_id": "b", "text": "hemligt från Bea"})
    await bea.send_json_to({"type": "typing"})
    await receive_until(bea, "ack")
    assert "hemligt från Bea" in [f.get("text") for f in await drain(bea)]
    assert await anna.receive_nothing(timeout=0.3)
    for socket in (anna, bea, console):
        await socket.disconnect()


async def test_a_visitors_token_opens_its_own_conversation_and_no_other(advisor):
    anna, anna_token = await start_visitor()
    bea, bea_token = await start_visitor()
    await anna.send_json_to({"type": "send", "client_id": "a", "text": "Annas text"})
    await receive_until(anna, "ack")
    await drain(bea)

    # A socket that holds Anna's conversation cannot switch to Bea's.
    await anna.send_json_to({"type": "resume", "token": bea_token, "last_seq": 0})
    assert (await receive_until(anna, "error"))["code"] == "already_started"
    # A made-up token (or one a character off) opens nothing.
    stranger = await visitor_socket()
    for token in ("x" * 43, anna_token[:-1] + ("A" if anna_token[-1] != "A" else "B")):
        await stranger.send_json_to({"type": "resume", "token": token, "last_seq": 0})
        assert (await receive_until(stranger, "error"))["code"] == "invalid_token"
    await stranger.send_json_to({"type": "send", "client_id": "s", "text": "in?"})
    assert (await receive_until(stranger, "error"))["code"] == "no_conversation"

    # Bea's token opens Bea's conversation only: none of Anna's text, and Bea's texts go there.
    await stranger.send_json_to({"type": "resume", "token": bea_token, "last_seq": 0})
    frames = await drain(stranger)
    assert not [f for f in frames if f.get("text") == "Annas text"]
    await stranger.send_json_to({"type": "send", "client_id": "b", "text": "Beas text"})
    await receive_until(stranger, "ack")
    assert "Beas text" in [f.get("text") for f in await drain(bea)]
    assert await anna.receive_nothing(timeout=0.2)

    @database_sync_to_async
    def texts_by_token() -> dict[str, list[str]]:
        return {
            who: [
                m.text
                for m in Conversation.objects.for_visitor_token(token)
                .get()
                .messages.filter(event="")
                .order_by("seq")
            ]
            for who, token in (("anna", anna_token), ("bea", bea_token))
        }

    assert await texts_by_token() == {"anna": ["Annas text"], "bea": ["Beas text"]}
    for socket in (anna, bea, stranger):
        await socket.disconnect()


# --- resuming and deduplication ------------------------------------------------------------


async def test_a_reconnect_with_the_token_and_last_seq_gets_exactly_the_missed_messages(advisor):
    visitor, token = await start_visitor()
    console, _ = await advisor_socket(advisor)
    [conversation_id] = await queue_ids(console)
    await take(console, conversation_id)
    await visitor.send_json_to({"type": "send", "client_id": "v-1", "text": "ett"})
    await receive_until(visitor, "ack")
    seen = [f["seq"] for f in of_type(await drain(visitor), "message")]
    last_seq = max(seen)

    # The connection drops; the advisor goes on writing.
    await visitor.disconnect()
    for n in range(3):
        await console.send_json_to(
            {
                "type": "send",
                "conversation": conversation_id,
                "client_id": f"a-{n}",
                "text": f"missat {n}",
            }
        )
        await receive_until(console, "ack")

    again = await visitor_socket()
    await again.send_json_to({"type": "resume", "token": token, "last_seq": last_seq})
    frames = await drain(again)
    assert frames[0] == {"type": "state", "status": "active"}
    missed = of_type(frames, "message")
    assert [m["text"] for m in missed] == ["missat 0", "missat 1", "missat 2"]
    assert [m["seq"] for m in missed] == [last_seq + 1, last_seq + 2, last_seq + 3]

    # And the conversation goes on live, without repeats.
    await console.send_json_to(
        {
            "type": "send",
            "conversation": conversation_id,
            "client_id": "a-3",
            "text": "live",
        }
    )
    live = of_type(await drain(again), "message")
    assert [m["text"] for m in live] == ["live"]

    # A reload that remembers nothing (last_seq 0) gets the whole stream once, in order.
    reload = await visitor_socket()
    await reload.send_json_to({"type": "resume", "token": token})
    everything = of_type(await drain(reload), "message")
    assert [m["seq"] for m in everything] == list(range(1, last_seq + 5))
    for socket in (again, reload, console):
        await socket.disconnect()


async def test_a_text_resent_with_the_same_client_id_is_stored_once_and_acked_with_the_same_seq(
    advisor,
):
    visitor, token = await start_visitor()
    await visitor.send_json_to({"type": "send", "client_id": "c-42", "text": "bara en gång"})
    first_ack = await receive_until(visitor, "ack")
    await drain(visitor)

    # The same send again, on the same socket and after a reconnect.
    await visitor.send_json_to({"type": "send", "client_id": "c-42", "text": "bara en gång"})
    assert await receive_until(visitor, "ack") == first_ack
    assert not of_type(await drain(visitor), "message")
    await visitor.disconnect()
    again = await visitor_socket()
    await again.send_json_to({"type": "resume", "token": token, "last_seq": first_ack["seq"]})
    await again.send_json_to({"type": "send", "client_id": "c-42", "text": "bara en gång"})
    assert await receive_until(again, "ack") == first_ack
    assert not of_type(await drain(again), "message")

    # The advisor's client ids are their own: the same id from the advisor is a new text.
    console, _ = await advisor_socket(advisor)
    [conversation_id] = await queue_ids(console)
    await take(console, conversation_id)
    await console.send_json_to(
        {
            "type": "send",
            "conversation": conversation_id,
            "client_id": "c-42",
            "text": "svar",
        }
    )
    advisor_ack = await receive_until(console, "ack")
    await console.send_json_to(
        {
            "type": "send",
            "conversation": conversation_id,
            "client_id": "c-42",
            "text": "svar",
        }
    )
    assert await receive_until(console, "ack") == advisor_ack
    assert await texts_of(conversation_id) == ["bara en gång", "svar"]
    await again.disconnect()
    await console.disconnect()


async def test_a_resend_of_a_stored_text_is_acked_even_after_the_conversation_ended(advisor):
    """The ack was lost and the advisor closed meanwhile: the retry must not look like a
    failure, since the text did arrive."""
    visitor, _token = await start_visitor()
    await visitor.send_json_to({"type": "send", "client_id": "last", "text": "tack"})
    ack = await receive_until(visitor, "ack")
    await visitor.send_json_to({"type": "leave"})
    await receive_until(visitor, "state", status="abandoned")
    await visitor.send_json_to({"type": "send", "client_id": "last", "text": "tack"})
    assert await receive_until(visitor, "ack") == ack
    await visitor.disconnect()


async def test_an_ended_conversation_can_be_read_again_within_the_grace_period_only(
    advisor,
    settings,
):
    visitor, token = await start_visitor()
    await visitor.send_json_to({"type": "leave"})
    await receive_until(visitor, "state", status="abandoned")
    await visitor.disconnect()

    again = await visitor_socket()
    await again.send_json_to({"type": "resume", "token": token, "last_seq": 0})
    assert (await receive_until(again, "state"))["status"] == "abandoned"
    await again.disconnect()

    settings.VISITOR_TOKEN_GRACE_MINUTES = 0
    late = await visitor_socket()
    await late.send_json_to({"type": "resume", "token": token, "last_seq": 0})
    assert (await receive_until(late, "error"))["code"] == "invalid_token"
    await late.disconnect()


# --- heartbeats ----------------------------------------------------------------------------


async def test_a_ping_gets_a_pong():
    visitor = await visitor_socket()
    await visitor.send_json_to({"type": "ping"})
    assert await receive_until(visitor, "pong") == {"type": "pong"}
    await visitor.disconnect()


async def test_a_socket_that_stays_silent_is_closed_with_4408_and_one_that_pings_is_not(settings):
    settings.SOCKET_IDLE_SECONDS = 1
    silent = await visitor_socket()
    talking = await visitor_socket()
    for _ in range(12):
        await asyncio.sleep(0.25)
        await talking.send_json_to({"type": "ping"})
    closed = await silent.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": 4408}
    frames = await drain(talking, quiet=0.2)
    assert all(f == {"type": "pong"} for f in frames)
    assert len(frames) == 12
    await talking.disconnect()


# --- the record ----------------------------------------------------------------------------


async def test_every_state_change_is_written_as_an_event_row(advisor):
    visitor, _ = await start_visitor()
    console, _ = await advisor_socket(advisor)
    [conversation_id] = await queue_ids(console)
    await console.send_json_to({"type": "mark_urgent", "conversation": conversation_id})
    await receive_until(console, "queue")
    await take(console, conversation_id)
    await console.send_json_to(
        {
            "type": "set_interpreter",
            "conversation": conversation_id,
            "needed": True,
            "language": "so",
        }
    )
    await receive_until(console, "conversation")
    await console.send_json_to(
        {"type": "close", "conversation": conversation_id, "outcome": "advice_given"}
    )
    await receive_until(visitor, "state", status="closed")

    @database_sync_to_async
    def rows() -> list[tuple[str, int | None, dict]]:
        return list(
            ConversationEvent.objects.order_by("id").values_list("kind", "advisor_id", "data")
        )

    assert await rows() == [
        ("created", None, {"channel": "web"}),
        ("urgency", advisor.pk, {"urgent": True}),
        ("taken", advisor.pk, {}),
        ("interpreter", advisor.pk, {"needed": True, "language": "so"}),
        ("closed", advisor.pk, {"outcome": "advice_given"}),
    ]
    await visitor.disconnect()
    await console.disconnect()


class CommitProbe:
    """A listener on the hub that checks, for every event it gets, whether the row behind the
    event is already visible to another database connection (that is: committed)."""

    advisor_id = None

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool]] = []

    async def on_event(self, event: dict[str, Any]) -> None:
        if event["kind"] == "message":
            self.seen.append((event["seq"], await asyncio.to_thread(_committed, event)))

    async def on_queue(self, snapshot: Any) -> None:
        pass


def _committed(event: dict[str, Any]) -> bool:
    from django.db import connection

    try:
        return Message.objects.filter(
            conversation_id=event["conversation"], seq=event["seq"]
        ).exists()
    finally:
        connection.close()


async def test_events_reach_the_sockets_only_after_their_rows_are_committed(advisor):
    from realtime.hub import get_hub

    visitor, _ = await start_visitor()
    conversation = await only_conversation()
    probe = CommitProbe()
    get_hub().subscribe(conversation.pk, probe)
    console, _ = await advisor_socket(advisor)
    await take(console, str(conversation.public_id))
    await visitor.send_json_to({"type": "send", "client_id": "v", "text": "hej"})
    await receive_until(visitor, "ack")
    await console.send_json_to(
        {
            "type": "send",
            "conversation": str(conversation.public_id),
            "client_id": "a",
            "text": "hej hej",
        }
    )
    await receive_until(visitor, "message", **{"from": "advisor"})
    for _ in range(100):
        if len(probe.seen) == 3:
            break
        await asyncio.sleep(0.02)
    # Events of different frames may reach the hub in either order (a frame's events wait for
    # its handler to finish); a socket that sees a gap reads the stream from the database.
    assert sorted(probe.seen) == [(1, True), (2, True), (3, True)]
    await visitor.disconnect()
    await console.disconnect()


async def test_events_from_synchronous_code_wait_for_the_commit_and_vanish_with_a_rollback():
    from asgiref.sync import sync_to_async
    from django.db import transaction

    from realtime.hub import get_hub

    visitor, _ = await start_visitor()
    conversation = await only_conversation()
    probe = CommitProbe()
    get_hub().subscribe(conversation.pk, probe)

    class Undo(Exception):
        pass

    def post(client_id: str, *, rollback: bool) -> list[tuple[int, bool]]:
        try:
            with transaction.atomic():
                # The domain publishes once the outer transaction commits.
                conversation.post(
                    sender=Message.Sender.VISITOR, text="via sms", client_id=client_id
                )
                seen_inside = list(probe.seen)
                if rollback:
                    raise Undo
        except Undo:
            pass
        return seen_inside

    assert await sync_to_async(post)("rolled-back", rollback=True) == []
    assert probe.seen == []
    assert await sync_to_async(post)("kept", rollback=False) == []
    # Committed as seq 1 (the rolled-back attempt left no gap), and only then published. (Each
    # listener takes its events from a mailbox of its own, so the probe may take a moment.)
    for _ in range(100):
        if probe.seen:
            break
        await asyncio.sleep(0.02)
    assert probe.seen == [(1, True)]
    delivered = await receive_until(visitor, "message")
    assert (delivered["seq"], delivered["text"]) == (1, "via sms")
    await visitor.disconnect()


async def test_the_estimated_wait_follows_the_recent_waits_even_when_the_place_stays_the_same(
    advisor,
):
    from datetime import timedelta

    from django.utils import timezone

    visitor, _ = await start_visitor()
    assert (await receive_until(visitor, "queue")) == {
        "type": "queue",
        "position": 1,
        "estimated_wait_seconds": 120,
    }

    # Someone who started earlier, from another page, is taken after a ten-minute wait.
    @database_sync_to_async
    def someone_waited_ten_minutes() -> str:
        other, _token, _events = Conversation.start_web(language="sv", writer="young")
        Conversation.objects.filter(pk=other.pk).update(
            created_at=timezone.now() - timedelta(minutes=10)
        )
        return str(other.public_id)

    other_id = await someone_waited_ten_minutes()
    console, _ = await advisor_socket(advisor)
    await take(console, other_id)
    # Still first in the queue, but the estimate is now ten minutes a place.
    updated = await receive_until(visitor, "queue", timeout=3)
    assert updated["position"] == 1
    assert 590 <= updated["estimated_wait_seconds"] <= 610
    await visitor.disconnect()
    await console.disconnect()


async def test_a_text_whose_doorbell_was_lost_reaches_the_visitor_with_the_next_one(advisor):
    """A process died between commit and publish: the event never came. The next event shows
    a gap in the seqs, and the socket reads what it missed from the database."""
    from advice import events
    from realtime.hub import publish
    from realtime.publish import committed

    visitor, _ = await start_visitor()
    await drain(visitor)
    conversation = await only_conversation()

    @database_sync_to_async
    def post_quietly(text: str) -> list[dict]:
        # As if the process died after the commit: the domain's events reach no kernel.
        events.disconnect(committed)
        try:
            _message, _created, posted = conversation.post(
                sender=Message.Sender.VISITOR, text=text, client_id=text
            )
        finally:
            events.connect(committed)
        return posted

    await post_quietly("lost 1")
    await post_quietly("lost 2")
    assert await visitor.receive_nothing(timeout=0.3)
    await publish(await post_quietly("arrives"))
    frames = of_type(await drain(visitor), "message")
    assert [(f["seq"], f["text"]) for f in frames] == [(1, "lost 1"), (2, "lost 2"), (3, "arrives")]
    await visitor.disconnect()


async def test_a_visitor_who_reconnects_while_waiting_gets_the_place_in_the_queue_again():
    first, _ = await start_visitor()
    second, token = await start_visitor()
    assert (await receive_until(second, "queue"))["position"] == 2
    await second.disconnect()

    again = await visitor_socket()
    await again.send_json_to({"type": "resume", "token": token, "last_seq": 0})
    assert (await receive_until(again, "state")) == {"type": "state", "status": "waiting"}
    assert (await receive_until(again, "queue"))["position"] == 2
    # And it stays live: the first one leaves, the place follows.
    await first.send_json_to({"type": "leave"})
    assert (await receive_until(again, "queue"))["position"] == 1
    await first.disconnect()
    await again.disconnect()
