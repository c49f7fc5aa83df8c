"""The advisor's socket, /ws/advisor/, end to end on the real middleware stack: the live queue,
taking (chosen or next), capacity, urgency, the interpreter flag, closing, resuming."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from advice.models import Conversation, ConversationEvent
from tests.factories import START, advisor_socket, make_advisor, receive_until, visitor_socket

pytestmark = pytest.mark.django_db(transaction=True)


async def start_visitor(**options: Any) -> WebsocketCommunicator:
    visitor = await visitor_socket()
    await visitor.send_json_to({**START, **options})
    await receive_until(visitor, "started")
    return visitor


async def drain(communicator: WebsocketCommunicator, quiet: float = 0.3) -> list[dict[str, Any]]:
    frames = []
    while not await communicator.receive_nothing(timeout=quiet):
        frames.append(json.loads(await communicator.receive_from()))
    return frames


async def console_for(user: Any) -> WebsocketCommunicator:
    console, connected = await advisor_socket(user)
    assert connected
    await receive_until(console, "hello")
    return console


async def settled_queue(console: WebsocketCommunicator) -> list[dict[str, Any]]:
    """The queue as the advisor sees it once the refreshes have settled."""
    queues = [f for f in await drain(console) if f["type"] == "queue"]
    assert queues, "no queue frame arrived"
    return queues[-1]["waiting"]


@database_sync_to_async
def public_ids_in_start_order() -> list[str]:
    return [str(p) for p in Conversation.objects.order_by("id").values_list("public_id", flat=True)]


@database_sync_to_async
def state_of(public_id: str) -> dict[str, Any]:
    c = Conversation.objects.get(public_id=public_id)
    return {
        "status": c.status,
        "advisor": c.advisor_id,
        "urgent": c.urgent,
        "interpreter_needed": c.interpreter_needed,
        "interpreter_language": c.interpreter_language,
        "outcome": c.outcome,
    }


@database_sync_to_async
def events_of(public_id: str) -> list[str]:
    return list(
        ConversationEvent.objects.filter(conversation__public_id=public_id)
        .order_by("id")
        .values_list("kind", flat=True)
    )


async def test_the_console_says_hello_and_shows_the_queue_in_queue_order(advisor):
    quiet = await start_visitor(language="en", county="M", writer="other")
    urgent = await start_visitor(safe_now="no", interpreter_needed=True, interpreter_language="ti")
    first, second = await public_ids_in_start_order()

    console, connected = await advisor_socket(advisor)
    assert connected
    hello = json.loads(await console.receive_from())
    assert hello == {
        "type": "hello",
        "advisor": {
            "id": advisor.pk,
            "name": "Alice",
            "capacity": 3,
            "languages": ["sv", "en"],
        },
    }
    queue = await receive_until(console, "queue")
    assert [c["id"] for c in queue["waiting"]] == [second, first]
    assert queue["average_wait_seconds"] == 0
    top = queue["waiting"][0]
    assert top["urgent"] is True
    assert (top["interpreter_needed"], top["interpreter_language"]) == (True, "ti")
    assert top["safe_now"] == "no"
    assert (queue["waiting"][1]["county"], queue["waiting"][1]["writer"]) == ("M", "other")
    # What the console needs for "time waited": when the conversation started.
    assert all(c["created_at"] and c["taken_at"] is None for c in queue["waiting"])
    for socket in (quiet, urgent, console):
        await socket.disconnect()


def superuser_as_createsuperuser_makes_one() -> Any:
    """No profile and no display name: what `manage.py createsuperuser` leaves (README's way to
    make the first advisor), with a TOTP device added the way an admin does."""
    from django.contrib.auth import get_user_model
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = get_user_model().objects.create_superuser("root", password="a long pass phrase")
    TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    return user


@pytest.mark.parametrize("profile", ["none yet", "no display name"])
async def test_the_console_works_for_an_advisor_without_a_display_name(profile):
    user = await database_sync_to_async(superuser_as_createsuperuser_makes_one)()
    if profile == "no display name":
        from advice.models import AdvisorProfile

        await AdvisorProfile.objects.acreate(user=user)
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    console, connected = await advisor_socket(user)
    assert connected
    hello = await receive_until(console, "hello")
    assert hello["advisor"]["name"] == "root"
    assert (await receive_until(console, "queue"))["waiting"]
    await console.send_json_to({"type": "take_next"})
    assert (await receive_until(console, "conversation"))["conversation"]["status"] == "active"
    await console.disconnect()
    await visitor.disconnect()


async def test_taking_a_chosen_conversation_follows_it_and_takes_it_off_every_queue(
    advisor,
    other_advisor,
):
    visitor = await start_visitor()
    await visitor.send_json_to({"type": "send", "client_id": "v", "text": "hej"})
    await receive_until(visitor, "ack")
    alice = await console_for(advisor)
    bob = await console_for(other_advisor)
    [waiting] = await settled_queue(alice)
    await settled_queue(bob)

    await alice.send_json_to({"type": "take", "conversation": waiting["id"]})
    followed = await receive_until(alice, "conversation")
    assert followed["conversation"]["id"] == waiting["id"]
    assert followed["conversation"]["status"] == "active"
    assert followed["conversation"]["advisor"] == advisor.pk
    # The stream from the start: the visitor's text, then the join.
    assert (await receive_until(alice, "message", seq=1))["text"] == "hej"
    assert (await receive_until(alice, "message", seq=2))["event"] == "advisor_joined"
    assert await settled_queue(alice) == []
    assert await settled_queue(bob) == []
    # Bob sees none of it.
    await visitor.send_json_to({"type": "send", "client_id": "v2", "text": "för Alice"})
    assert (await receive_until(alice, "message", seq=3))["text"] == "för Alice"
    assert not [f for f in await drain(bob) if f["type"] != "queue"]

    # Taking it again (Bob, or Alice herself) is refused and changes nothing.
    await bob.send_json_to({"type": "take", "conversation": waiting["id"]})
    assert (await receive_until(bob, "error")) == {
        "type": "error",
        "code": "already_taken",
        "message": "Another advisor has taken this conversation.",
        "ref": "take",
    }
    assert (await state_of(waiting["id"]))["advisor"] == advisor.pk
    assert await events_of(waiting["id"]) == ["created", "taken"]
    for socket in (visitor, alice, bob):
        await socket.disconnect()


async def test_a_second_console_of_the_same_advisor_follows_what_the_first_takes(advisor):
    visitor = await start_visitor()
    laptop = await console_for(advisor)
    tablet = await console_for(advisor)
    [waiting] = await settled_queue(laptop)
    await laptop.send_json_to({"type": "take", "conversation": waiting["id"]})
    assert (await receive_until(tablet, "conversation"))["conversation"]["id"] == waiting["id"]
    await visitor.send_json_to({"type": "send", "client_id": "v", "text": "till båda"})
    assert (await receive_until(laptop, "message", text="till båda"))["seq"] == 2
    assert (await receive_until(tablet, "message", text="till båda"))["seq"] == 2
    for socket in (visitor, laptop, tablet):
        await socket.disconnect()


async def test_the_console_that_takes_shows_the_conversation_once_and_each_entry_once(advisor):
    # The taking socket follows at once with the conversation in hand; the take's own event,
    # which reaches it too, must not show the conversation a second time.
    visitor = await start_visitor()
    await visitor.send_json_to({"type": "send", "client_id": "v", "text": "hej"})
    await receive_until(visitor, "ack")
    console = await console_for(advisor)
    await settled_queue(console)
    await console.send_json_to({"type": "take_next"})
    frames = [f for f in await drain(console) if f["type"] != "queue"]
    assert [f["type"] for f in frames] == ["conversation", "message", "message"]
    assert frames[0]["conversation"]["status"] == "active"
    assert [f["seq"] for f in frames[1:]] == [1, 2]
    # Later changes still arrive: the close shows as a conversation frame.
    await console.send_json_to(
        {
            "type": "close",
            "conversation": frames[0]["conversation"]["id"],
            "outcome": "advice_given",
        }
    )
    closed = await receive_until(console, "conversation")
    assert closed["conversation"]["status"] == "closed"
    for socket in (visitor, console):
        await socket.disconnect()


async def test_an_advisor_cannot_take_more_conversations_than_the_capacity(db):
    carl = await database_sync_to_async(make_advisor)("carl", capacity=1)
    for _ in range(2):
        await start_visitor()
    console = await console_for(carl)
    first, second = await public_ids_in_start_order()
    await console.send_json_to({"type": "take", "conversation": first})
    await receive_until(console, "conversation")
    await console.send_json_to({"type": "take", "conversation": second})
    error = await receive_until(console, "error")
    assert error["code"] == "capacity_reached"
    await console.send_json_to({"type": "take_next"})
    assert (await receive_until(console, "error"))["code"] == "capacity_reached"
    assert (await state_of(second))["status"] == "waiting"
    assert await events_of(second) == ["created"]

    # Closing one frees the place.
    await console.send_json_to({"type": "close", "conversation": first, "outcome": "other"})
    await receive_until(console, "conversation", timeout=3)
    await console.send_json_to({"type": "take_next"})
    taken = await receive_until(console, "conversation")
    while taken["conversation"]["id"] != second:
        taken = await receive_until(console, "conversation")
    assert (await state_of(second))["advisor"] == carl.pk
    await console.disconnect()


async def test_take_next_takes_urgent_first_then_the_longest_waiting(advisor):
    await start_visitor()  # 1: waiting longest
    await start_visitor()  # 2
    await start_visitor(safe_now="no")  # 3: urgent
    one, two, three = await public_ids_in_start_order()
    console = await console_for(advisor)
    taken = []
    for _ in range(3):
        await console.send_json_to({"type": "take_next"})
        taken.append((await receive_until(console, "conversation"))["conversation"]["id"])
    assert taken == [three, one, two]
    await console.send_json_to({"type": "take_next"})
    assert (await receive_until(console, "error"))["code"] == "queue_empty"
    await console.disconnect()


async def test_take_next_prefers_a_language_the_advisor_speaks_without_jumping_an_urgent_one(db):
    dana = await database_sync_to_async(make_advisor)("dana", languages=["sv"])
    await start_visitor(language="en")  # 1: waited longest, English
    await start_visitor(language="sv")  # 2: Swedish
    await start_visitor(language="en", safe_now="no")  # 3: urgent, English
    one, two, three = await public_ids_in_start_order()
    console = await console_for(dana)
    taken = []
    for _ in range(3):
        await console.send_json_to({"type": "take_next"})
        taken.append((await receive_until(console, "conversation"))["conversation"]["id"])
    # Urgent first even in a language Dana lacks; then her own language before the older one.
    assert taken == [three, two, one]
    await console.disconnect()


async def test_take_next_on_an_empty_queue_says_so(advisor):
    console = await console_for(advisor)
    await console.send_json_to({"type": "take_next"})
    assert (await receive_until(console, "error"))["code"] == "queue_empty"
    await console.disconnect()


async def test_marking_a_conversation_urgent_moves_it_first_for_advisors_and_visitors(advisor):
    older = await start_visitor()
    newer = await start_visitor()
    first, second = await public_ids_in_start_order()
    console = await console_for(advisor)
    assert [c["id"] for c in await settled_queue(console)] == [first, second]
    assert (await receive_until(newer, "queue"))["position"] == 2

    await console.send_json_to({"type": "mark_urgent", "conversation": second})
    reordered = await settled_queue(console)
    assert [c["id"] for c in reordered] == [second, first]
    assert reordered[0]["urgent"] is True
    assert (await receive_until(newer, "queue", position=1))["position"] == 1
    assert (await receive_until(older, "queue", position=2))["position"] == 2

    # Marking it again changes nothing and writes nothing; clearing it restores the order.
    await console.send_json_to({"type": "mark_urgent", "conversation": second, "urgent": True})
    await console.send_json_to({"type": "mark_urgent", "conversation": second, "urgent": False})
    assert [c["id"] for c in await settled_queue(console)] == [first, second]
    assert await events_of(second) == ["created", "urgency", "urgency"]
    for socket in (older, newer, console):
        await socket.disconnect()


async def test_marking_an_ended_conversation_urgent_is_refused(advisor):
    visitor = await start_visitor()
    console = await console_for(advisor)
    [waiting] = await settled_queue(console)
    await visitor.send_json_to({"type": "leave"})
    await receive_until(visitor, "state", status="abandoned")
    await console.send_json_to({"type": "mark_urgent", "conversation": waiting["id"]})
    assert (await receive_until(console, "error"))["code"] == "conversation_ended"
    assert await events_of(waiting["id"]) == ["created", "abandoned"]
    for socket in (visitor, console):
        await socket.disconnect()


async def test_the_advisor_sets_and_clears_the_interpreter(advisor):
    visitor = await start_visitor()
    console = await console_for(advisor)
    [waiting] = await settled_queue(console)
    await console.send_json_to({"type": "take", "conversation": waiting["id"]})
    await receive_until(console, "conversation")

    await console.send_json_to(
        {
            "type": "set_interpreter",
            "conversation": waiting["id"],
            "needed": True,
            "language": "fa",
        }
    )
    summary = (await receive_until(console, "conversation"))["conversation"]
    assert (summary["interpreter_needed"], summary["interpreter_language"]) == (True, "fa")
    # Needed, but in no language: refused, nothing changes.
    await console.send_json_to(
        {"type": "set_interpreter", "conversation": waiting["id"], "needed": True}
    )
    assert (await receive_until(console, "error"))["code"] == "invalid_language"
    assert (await state_of(waiting["id"]))["interpreter_language"] == "fa"

    await console.send_json_to(
        {
            "type": "set_interpreter",
            "conversation": waiting["id"],
            "needed": False,
            "language": "fa",
        }
    )
    summary = (await receive_until(console, "conversation"))["conversation"]
    assert (summary["interpreter_needed"], summary["interpreter_language"]) == (False, "")
    assert await events_of(waiting["id"]) == ["created", "taken", "interpreter", "interpreter"]
    await visitor.disconnect()
    await console.disconnect()


async def test_the_advisor_closes_with_an_outcome_and_only_their_own_conversation(
    advisor,
    other_advisor,
):
    visitor = await start_visitor()
    alice = await console_for(advisor)
    bob = await console_for(other_advisor)
    [waiting] = await settled_queue(alice)
    await alice.send_json_to({"type": "take", "conversation": waiting["id"]})
    await receive_until(alice, "conversation")

    await bob.send_json_to({"type": "close", "conversation": waiting["id"], "outcome": "other"})
    assert (await receive_until(bob, "error"))["code"] == "not_your_conversation"
    await alice.send_json_to(
        {"type": "close", "conversation": waiting["id"], "outcome": "not on the list"}
    )
    assert (await receive_until(alice, "error"))["code"] == "invalid_field"
    assert (await state_of(waiting["id"]))["status"] == "active"

    await alice.send_json_to(
        {"type": "close", "conversation": waiting["id"], "outcome": "protected_housing"}
    )
    assert (await receive_until(alice, "message", event="closed"))["from"] == "system"
    summary = (await receive_until(alice, "conversation"))["conversation"]
    assert (summary["status"], summary["outcome"], summary["end_reason"]) == (
        "closed",
        "protected_housing",
        "advisor_closed",
    )
    await receive_until(visitor, "state", status="closed")
    # Closed is final: no second close, no more texts.
    await alice.send_json_to({"type": "close", "conversation": waiting["id"], "outcome": "other"})
    assert (await receive_until(alice, "error"))["code"] == "not_your_conversation"
    await alice.send_json_to(
        {"type": "send", "conversation": waiting["id"], "client_id": "x", "text": "hallå"}
    )
    assert (await receive_until(alice, "error"))["code"] == "conversation_ended"
    assert await events_of(waiting["id"]) == ["created", "taken", "closed"]
    for socket in (visitor, alice, bob):
        await socket.disconnect()


async def test_a_reconnecting_console_resumes_each_conversation_from_its_last_seq(advisor):
    visitors = [await start_visitor() for _ in range(2)]
    console = await console_for(advisor)
    seen = {}
    for _ in range(2):
        await console.send_json_to({"type": "take_next"})
        for frame in await drain(console):
            if frame["type"] == "message":
                seen[frame["conversation"]] = frame["seq"]
    first, second = await public_ids_in_start_order()
    assert seen == {first: 1, second: 1}
    await console.disconnect()

    # While the console is away, each visitor writes.
    for n, visitor in enumerate(visitors):
        await visitor.send_json_to({"type": "send", "client_id": "v", "text": f"text {n}"})
        await receive_until(visitor, "ack")

    again = await console_for(advisor)
    await again.send_json_to({"type": "resume", "conversations": seen})
    frames = await drain(again)
    followed = [f["conversation"]["id"] for f in frames if f["type"] == "conversation"]
    assert followed == [first, second]
    missed = [(f["conversation"], f["seq"], f["text"]) for f in frames if f["type"] == "message"]
    assert missed == [(first, 2, "text 0"), (second, 2, "text 1")]
    for socket in (*visitors, again):
        await socket.disconnect()


async def test_naming_another_advisors_conversation_in_resume_follows_nothing(
    advisor,
    other_advisor,
):
    visitor = await start_visitor()
    alice = await console_for(advisor)
    [waiting] = await settled_queue(alice)
    await alice.send_json_to({"type": "take", "conversation": waiting["id"]})
    await receive_until(alice, "message", event="advisor_joined")
    await visitor.send_json_to({"type": "send", "client_id": "v", "text": "bara för Alice"})
    await receive_until(visitor, "ack")

    bob = await console_for(other_advisor)
    await bob.send_json_to({"type": "resume", "conversations": {waiting["id"]: 0}})
    frames = await drain(bob)
    assert [f for f in frames if f["type"] not in ("queue",)] == []
    await visitor.send_json_to({"type": "send", "client_id": "v2", "text": "också bara för Alice"})
    await receive_until(alice, "message", text="också bara för Alice")
    assert not [f for f in await drain(bob) if f["type"] != "queue"]
    for socket in (visitor, alice, bob):
        await socket.disconnect()
