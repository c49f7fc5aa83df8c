"""An interpreter in a live web chat, end to end over the three sockets: the advisor invites,
the link is opened once, the visitor says yes or no, the interpreter sees only what they may,
and every step is on the record."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.utils import timezone

from advice.models import Conversation, ConversationEvent, InterpreterInvitation, Message
from tests.factories import (
    SAME_ORIGIN,
    START,
    advisor_socket,
    application,
    receive_until,
    visitor_socket,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_pooled_connection_left_behind():
    """Django's async ORM calls in these tests (acount, aget, ...) run on asgiref's shared
    thread and leave its connection checked out of the pool; give it back after each test
    (tests/test_take_race.py needs every pooled connection at once)."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


# --- helpers -----------------------------------------------------------------------------------


async def interpreter_socket() -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application(), "/ws/interpreter/", headers=[*SAME_ORIGIN])
    connected, _code = await communicator.connect()
    assert connected
    return communicator


async def drain(communicator: WebsocketCommunicator, seconds: float = 0.4) -> list[dict]:
    """Every frame that arrives within `seconds`."""
    frames = []
    while not await communicator.receive_nothing(timeout=seconds):
        output = await communicator.receive_output(timeout=seconds)
        if output["type"] == "websocket.send":
            frames.append(json.loads(output["text"]))
        else:
            frames.append({"type": output["type"], "code": output.get("code")})
    return frames


async def live_chat(advisor):
    """A visitor and an advisor in an active conversation."""
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    visitor.token = (await receive_until(visitor, "started"))["token"]
    console, connected = await advisor_socket(advisor)
    assert connected
    waiting = await receive_until(console, "queue")
    conversation = waiting["waiting"][0]["id"]
    await console.send_json_to({"type": "take", "conversation": conversation})
    await receive_until(visitor, "state", status="active")
    await receive_until(console, "message", conversation=conversation, event="advisor_joined")
    return visitor, console, conversation


async def invite(console, conversation) -> str:
    await console.send_json_to({"type": "invite_interpreter", "conversation": conversation})
    frame = await receive_until(console, "interpreter_link", conversation=conversation)
    return frame["link"].split("#", 1)[1]


async def open_link(key: str):
    interpreter = await interpreter_socket()
    await interpreter.send_json_to({"type": "join", "key": key})
    welcome = await receive_until(interpreter, "welcome")
    state = await receive_until(interpreter, "state")
    assert state["status"] == "waiting"
    return interpreter, welcome["token"]


async def joined(advisor):
    """Visitor, advisor and an interpreter the visitor has let in."""
    visitor, console, conversation = await live_chat(advisor)
    key = await invite(console, conversation)
    interpreter, token = await open_link(key)
    await receive_until(visitor, "interpreter_request")
    await visitor.send_json_to({"type": "interpreter_answer", "accept": True})
    await receive_until(interpreter, "state", status="joined")
    return visitor, console, interpreter, conversation, token


async def say(sender, text, conversation=None, client_id="x"):
    frame = {"type": "send", "client_id": client_id, "text": text}
    if conversation:
        frame["conversation"] = conversation
    await sender.send_json_to(frame)
    return await receive_until(sender, "ack", client_id=client_id)


def kinds(conversation_id) -> list[str]:
    return list(
        ConversationEvent.objects.filter(conversation__public_id=conversation_id)
        .order_by("id")
        .values_list("kind", flat=True)
    )


def stream_events(conversation_id) -> list[str]:
    return list(
        Message.objects.filter(conversation__public_id=conversation_id)
        .exclude(event="")
        .order_by("seq")
        .values_list("event", flat=True)
    )


async def close_all(*communicators):
    for communicator in communicators:
        await communicator.disconnect()


# --- the invitation ----------------------------------------------------------------------------


async def test_the_advisor_gets_a_link_whose_secret_is_stored_only_as_a_hash(advisor):
    visitor, console, conversation = await live_chat(advisor)
    await console.send_json_to({"type": "invite_interpreter", "conversation": conversation})
    frame = await receive_until(console, "interpreter_link")
    link = frame["link"]
    assert link.startswith("http://127.0.0.1/interpreter/#")
    secret = link.split("#", 1)[1]
    assert len(secret) >= 43  # 32 random bytes, url-safe base64: 256 bits
    assert frame["invitation"]["status"] == "pending"

    invitation = await InterpreterInvitation.objects.aget()
    assert invitation.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    row = await database_sync_to_async(
        lambda: list(InterpreterInvitation.objects.values().get().values())
    )()
    assert not any(secret in str(value) for value in row)
    expires_in = invitation.expires_at - invitation.created_at
    assert timedelta(hours=3, minutes=59) < expires_in <= timedelta(hours=4)

    # The visitor sees that an interpreter was invited; the console gets the state.
    invited = await receive_until(visitor, "message", event="interpreter_invited")
    assert "text" not in invited
    state = await receive_until(console, "interpreter", conversation=conversation)
    assert state["invitation"]["status"] == "pending"
    await close_all(visitor, console)


async def test_the_visitor_is_asked_and_a_yes_lets_the_interpreter_in(advisor):
    visitor, console, conversation = await live_chat(advisor)
    key = await invite(console, conversation)
    interpreter, token = await open_link(key)
    assert len(token) >= 43

    # Asked, and the advisor is told the interpreter is waiting.
    await receive_until(visitor, "interpreter_request")
    waiting = await receive_until(console, "interpreter", conversation=conversation)
    assert waiting["invitation"]["status"] == "pending"
    waiting = await receive_until(console, "interpreter", conversation=conversation)
    assert waiting["invitation"]["status"] == "waiting"

    await visitor.send_json_to({"type": "interpreter_answer", "accept": True})
    state = await receive_until(interpreter, "state", status="joined")
    assert state["language"] == "sv"
    joined_entry = await receive_until(interpreter, "message", event="interpreter_joined")
    told = await receive_until(console, "interpreter", conversation=conversation)
    assert told["invitation"]["status"] == "joined"
    assert told["invitation"]["joined_seq"] == joined_entry["seq"]
    await receive_until(visitor, "interpreter", status="joined")

    # Everyone's texts reach everyone from now on; the interpreter's as from "interpreter".
    await say(visitor, "Jag vill prata.", client_id="v1")
    assert (await receive_until(interpreter, "message", **{"from": "visitor"}))["text"] == (
        "Jag vill prata."
    )
    await say(console, "Välkommen.", conversation, client_id="a1")
    assert (await receive_until(interpreter, "message", **{"from": "advisor"}))["text"] == (
        "Välkommen."
    )
    ack = await say(interpreter, "Tolkens ord.", client_id="i1")
    from_interpreter = await receive_until(visitor, "message", **{"from": "interpreter"})
    assert from_interpreter["text"] == "Tolkens ord." and from_interpreter["seq"] == ack["seq"]
    on_console = await receive_until(
        console, "message", conversation=conversation, **{"from": "interpreter"}
    )
    assert on_console["text"] == "Tolkens ord." and "advisor" not in on_console
    await close_all(visitor, console, interpreter)


async def test_the_interpreter_sees_nothing_from_before_the_visitors_yes(advisor):
    visitor, console, conversation = await live_chat(advisor)
    await say(visitor, "Det här skrev jag innan.", client_id="v0")
    key = await invite(console, conversation)
    interpreter, _token = await open_link(key)
    await receive_until(visitor, "interpreter_request")
    # Written while the interpreter waits: still before the yes.
    await say(visitor, "Medan tolken väntar.", client_id="v1")
    await say(console, "Advisor meanwhile.", conversation, client_id="a1")
    await visitor.send_json_to({"type": "typing"})
    before = await drain(interpreter)
    assert not [f for f in before if f["type"] in ("message", "typing", "history")]

    await visitor.send_json_to({"type": "interpreter_answer", "accept": True})
    await say(visitor, "Efter ja.", client_id="v2")
    frames = await drain(interpreter)
    texts = [f.get("text") for f in frames if f["type"] == "message"]
    assert texts == [None, "Efter ja."]  # the joined entry, then the new text
    assert not [f for f in frames if f["type"] in ("queue", "conversation", "history")]
    await close_all(visitor, console, interpreter)


async def test_a_no_keeps_the_interpreter_out_and_the_advisor_is_told(advisor):
    visitor, console, conversation = await live_chat(advisor)
    key = await invite(console, conversation)
    interpreter, token = await open_link(key)
    await receive_until(visitor, "interpreter_request")
    await visitor.send_json_to({"type": "interpreter_answer", "accept": False})

    state = await receive_until(interpreter, "state")
    assert state["status"] == "refused"
    assert (await interpreter.receive_output(timeout=2))["type"] == "websocket.close"
    told = await receive_until(
        console, "message", conversation=conversation, event="interpreter_refused"
    )
    assert "text" not in told
    status = await receive_until(console, "interpreter", conversation=conversation)
    while status["invitation"]["status"] != "refused":
        status = await receive_until(console, "interpreter", conversation=conversation)
    await receive_until(visitor, "interpreter", status="refused")

    # The token is dead, and the visitor's texts never reach it.
    again = await interpreter_socket()
    await again.send_json_to({"type": "resume", "token": token, "last_seq": 0})
    assert (await receive_until(again, "error"))["code"] == "invalid_token"
    await say(visitor, "Bara till rådgivaren.", client_id="v1")
    assert not [f for f in await drain(again) if f["type"] == "message"]
    await close_all(visitor, console, again)


async def test_a_link_works_once(advisor):
    visitor, console, conversation = await live_chat(advisor)
    key = await invite(console, conversation)
    first, _token = await open_link(key)
    second = await interpreter_socket()
    await second.send_json_to({"type": "join", "key": key})
    error = await receive_until(second, "error")
    assert error["code"] == "link_used" and error["ref"] == "join"
    assert await InterpreterInvitation.objects.acount() == 1
    await close_all(visitor, console, first, second)


async def test_an_unopened_link_expires_after_the_configured_hours(advisor):
    visitor, console, conversation = await live_chat(advisor)
    key = await invite(console, conversation)
    with time_machine.travel(timezone.now() + timedelta(hours=4, minutes=1), tick=True):
        interpreter = await interpreter_socket()
        await interpreter.send_json_to({"type": "join", "key": key})
        assert (await receive_until(interpreter, "error"))["code"] == "link_expired"
    # Back in the present (the advisor's session would have run out in the future), the link
    # is made as old, and the advisor can invite again: the expired one no longer counts.
    await InterpreterInvitation.objects.aupdate(expires_at=timezone.now() - timedelta(seconds=1))
    await invite(console, conversation)
    invitations = await database_sync_to_async(
        lambda: list(InterpreterInvitation.objects.order_by("id").values_list("status", flat=True))
    )()
    assert invitations == ["expired", "pending"]
    await close_all(visitor, console, interpreter)


async def test_a_revoked_link_is_refused(advisor):
    visitor, console, conversation = await live_chat(advisor)
    key = await invite(console, conversation)
    await console.send_json_to({"type": "revoke_interpreter", "conversation": conversation})
    await receive_until(console, "message", conversation=conversation, event="interpreter_revoked")
    interpreter = await interpreter_socket()
    await interpreter.send_json_to({"type": "join", "key": key})
    assert (await receive_until(interpreter, "error"))["code"] == "link_revoked"
    await close_all(visitor, console, interpreter)


async def test_revoking_removes_a_joined_interpreter(advisor):
    visitor, console, interpreter, conversation, token = await joined(advisor)
    await console.send_json_to({"type": "revoke_interpreter", "conversation": conversation})
    assert (await receive_until(interpreter, "state", status="revoked"))["status"] == "revoked"
    left = await receive_until(visitor, "message", event="interpreter_left")
    assert left["from"] == "system"
    again = await interpreter_socket()
    await again.send_json_to({"type": "resume", "token": token, "last_seq": 0})
    assert (await receive_until(again, "error"))["code"] == "invalid_token"
    await close_all(visitor, console, again)


async def test_the_interpreter_can_leave(advisor):
    visitor, console, interpreter, conversation, _token = await joined(advisor)
    await interpreter.send_json_to({"type": "leave"})
    await receive_until(interpreter, "state", status="left")
    await receive_until(visitor, "message", event="interpreter_left")
    status = await receive_until(console, "interpreter", conversation=conversation)
    while status["invitation"]["status"] != "left":
        status = await receive_until(console, "interpreter", conversation=conversation)
    await close_all(visitor, console)


async def test_the_conversation_ending_ends_the_interpreters_part(advisor):
    visitor, console, interpreter, conversation, token = await joined(advisor)
    await console.send_json_to(
        {"type": "close", "conversation": conversation, "outcome": "advice_given"}
    )
    await receive_until(interpreter, "state", status="ended")
    again = await interpreter_socket()
    await again.send_json_to({"type": "resume", "token": token, "last_seq": 0})
    assert (await receive_until(again, "error"))["code"] == "invalid_token"
    await close_all(visitor, console, again)


async def test_a_dropped_interpreter_resumes_with_the_token_and_gets_exactly_what_it_missed(
    advisor,
):
    visitor, console, interpreter, conversation, token = await joined(advisor)
    await say(visitor, "ett", client_id="v1")
    seen = await receive_until(interpreter, "message", text="ett")
    await interpreter.disconnect()
    await say(visitor, "två", client_id="v2")
    await say(console, "tre", conversation, client_id="a3")

    back = await interpreter_socket()
    await back.send_json_to({"type": "resume", "token": token, "last_seq": seen["seq"]})
    await receive_until(back, "state", status="joined")
    frames = [f for f in await drain(back) if f["type"] == "message"]
    assert [f["text"] for f in frames] == ["två", "tre"]
    await close_all(visitor, console, back)


# --- sharing ----------------------------------------------------------------------------------


async def test_the_advisor_shares_the_earlier_conversation_with_one_action(advisor):
    visitor, console, conversation = await live_chat(advisor)
    first = await say(visitor, "Första.", client_id="v1")
    await say(visitor, "Andra.", client_id="v2")
    key = await invite(console, conversation)
    interpreter, _token = await open_link(key)
    await receive_until(visitor, "interpreter_request")
    await visitor.send_json_to({"type": "interpreter_answer", "accept": True})
    await receive_until(interpreter, "state", status="joined")

    # From a point: the second text on.
    await console.send_json_to(
        {
            "type": "share_with_interpreter",
            "conversation": conversation,
            "from_seq": first["seq"] + 1,
        }
    )
    history = await receive_until(interpreter, "history")
    assert [m.get("text") for m in history["messages"] if "text" in m] == ["Andra."]
    await receive_until(visitor, "message", event="interpreter_shared")

    # All of it.
    await console.send_json_to({"type": "share_with_interpreter", "conversation": conversation})
    history = await receive_until(interpreter, "history")
    assert [m["text"] for m in history["messages"] if "text" in m] == ["Första.", "Andra."]
    assert history["messages"][0]["seq"] == 1

    # A reconnecting interpreter gets the shared part again.
    await interpreter.disconnect()
    back = await interpreter_socket()
    await back.send_json_to({"type": "resume", "token": _token, "last_seq": 0})
    again = await receive_until(back, "history")
    assert [m["text"] for m in again["messages"] if "text" in m] == ["Första.", "Andra."]
    shares = await database_sync_to_async(
        lambda: list(
            ConversationEvent.objects.filter(kind="interpreter_shared").values_list(
                "data", flat=True
            )
        )
    )()
    assert [d["from_seq"] for d in shares] == [first["seq"] + 1, 1]
    await close_all(visitor, console, back)


# --- the record -------------------------------------------------------------------------------


async def test_every_invitation_join_and_leave_is_on_the_record(advisor):
    visitor, console, interpreter, conversation, _token = await joined(advisor)
    await interpreter.send_json_to({"type": "leave"})
    await receive_until(interpreter, "state", status="left")
    key = await invite(console, conversation)
    second, _ = await open_link(key)
    await receive_until(visitor, "interpreter_request")
    await visitor.send_json_to({"type": "interpreter_answer", "accept": False})
    await receive_until(second, "state", status="refused")

    recorded = await database_sync_to_async(kinds)(conversation)
    assert [k for k in recorded if k.startswith("interpreter")] == [
        "interpreter_invited",
        "interpreter_waiting",
        "interpreter_joined",
        "interpreter_left",
        "interpreter_invited",
        "interpreter_waiting",
        "interpreter_refused",
    ]
    assert [
        e
        for e in await database_sync_to_async(stream_events)(conversation)
        if e.startswith("interpreter")
    ] == [
        "interpreter_invited",
        "interpreter_waiting",
        "interpreter_joined",
        "interpreter_left",
        "interpreter_invited",
        "interpreter_waiting",
        "interpreter_refused",
    ]
    await close_all(visitor, console)


async def test_the_interpreter_never_gets_the_queue_or_another_conversation(advisor):
    visitor, console, interpreter, _conversation, _token = await joined(advisor)
    other = await visitor_socket()
    await other.send_json_to(START)
    await receive_until(other, "started")
    await say(other, "En annan besökare.", client_id="o1")
    frames = await drain(interpreter)
    assert not [f for f in frames if f["type"] in ("queue", "conversation")]
    assert "En annan besökare." not in json.dumps(frames, ensure_ascii=False)
    await close_all(visitor, console, interpreter, other)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "join"}, "missing_field"),
        ({"type": "join", "key": 42}, "invalid_field"),
        ({"type": "join", "key": "x" * 200}, "invalid_field"),
        ({"type": "join", "key": "not-a-link-secret"}, "invalid_link"),
        ({"type": "resume", "token": "nope"}, "invalid_token"),
        ({"type": "send", "text": "hej"}, "not_in_conversation"),
        ({"type": "leave"}, "no_invitation"),
        ({"type": "take_next"}, "unknown_type"),
    ],
)
async def test_bad_interpreter_frames_get_a_typed_error(frame, code):
    interpreter = await interpreter_socket()
    await interpreter.send_json_to(frame)
    assert (await receive_until(interpreter, "error"))["code"] == code
    await interpreter.disconnect()


async def test_a_waiting_interpreter_cannot_write(advisor):
    visitor, console, conversation = await live_chat(advisor)
    interpreter, _token = await open_link(await invite(console, conversation))
    await interpreter.send_json_to({"type": "send", "client_id": "i1", "text": "hej"})
    assert (await receive_until(interpreter, "error"))["code"] == "not_in_conversation"
    assert not await Message.objects.filter(sender="interpreter").aexists()
    await close_all(visitor, console, interpreter)


async def test_bad_advisor_requests_are_refused_and_change_nothing(advisor, other_advisor):
    visitor, console, conversation = await live_chat(advisor)
    await invite(console, conversation)
    await console.send_json_to({"type": "invite_interpreter", "conversation": conversation})
    assert (await receive_until(console, "error"))["code"] == "interpreter_already_invited"
    await console.send_json_to({"type": "share_with_interpreter", "conversation": conversation})
    assert (await receive_until(console, "error"))["code"] == "no_interpreter"
    await console.send_json_to(
        {"type": "share_with_interpreter", "conversation": conversation, "from_seq": "1"}
    )
    assert (await receive_until(console, "error"))["code"] == "invalid_field"

    stranger, _ = await advisor_socket(other_advisor)
    for kind in ("invite_interpreter", "revoke_interpreter", "share_with_interpreter"):
        await stranger.send_json_to({"type": kind, "conversation": conversation})
        assert (await receive_until(stranger, "error"))["code"] == "not_your_conversation"
    assert await InterpreterInvitation.objects.acount() == 1

    # The visitor answers nothing that was not asked.
    await visitor.send_json_to({"type": "interpreter_answer", "accept": True})
    assert (await receive_until(visitor, "error"))["code"] == "no_interpreter_request"
    await visitor.send_json_to({"type": "interpreter_answer", "accept": "yes"})
    assert (await receive_until(visitor, "error"))["code"] == "invalid_field"
    await close_all(visitor, console, stranger)


async def test_an_interpreter_can_join_web_chats_only(advisor):
    conversation = await Conversation.objects.acreate(
        channel="sms", status="active", advisor=advisor, taken_at=timezone.now()
    )
    console, _ = await advisor_socket(advisor)
    await console.send_json_to(
        {"type": "invite_interpreter", "conversation": str(conversation.public_id)}
    )
    assert (await receive_until(console, "error"))["code"] == "interpreter_web_only"
    await console.disconnect()


async def test_a_reconnecting_visitor_is_asked_again(advisor):
    visitor, console, conversation = await live_chat(advisor)
    interpreter, _token = await open_link(await invite(console, conversation))
    await receive_until(visitor, "interpreter_request")
    await visitor.disconnect()
    back = await visitor_socket()
    await back.send_json_to({"type": "resume", "token": visitor.token, "last_seq": 0})
    await receive_until(back, "interpreter_request")
    await back.send_json_to({"type": "interpreter_answer", "accept": True})
    await receive_until(interpreter, "state", status="joined")
    await close_all(console, interpreter, back)


async def test_the_interpreter_page_loads_without_the_secret_reaching_the_server(client):
    response = client.get("/interpreter/", HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="interpreter-config"' in body
    assert "<script>" not in body and "style=" not in body
    assert (
        response["Cache-Control"].startswith("max-age=0") or "no-store" in response["Cache-Control"]
    )


# --- the visitor's wishes, the queue, and "the next one" ---------------------------------------


async def test_the_visitors_interpreter_wishes_show_as_flags_in_the_queue(advisor):
    visitor = await visitor_socket()
    await visitor.send_json_to(
        {
            **START,
            "interpreter_needed": True,
            "interpreter_language": "ar",
            "interpreter_outside_community": True,
            "interpreter_gender": "woman",
        }
    )
    await receive_until(visitor, "started")
    console, _ = await advisor_socket(advisor)
    (summary,) = (await receive_until(console, "queue"))["waiting"]
    assert summary["interpreter_needed"] is True
    assert summary["interpreter_language"] == "ar"
    assert summary["interpreter_outside_community"] is True
    assert summary["interpreter_gender"] == "woman"
    assert summary["returning"] is False
    await console.send_json_to({"type": "take", "conversation": summary["id"]})
    taken = await receive_until(console, "conversation")
    assert taken["conversation"]["interpreter_gender"] == "woman"
    await close_all(visitor, console)


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (
            {
                "interpreter_needed": True,
                "interpreter_language": "ar",
                "interpreter_gender": "other",
            },
            "invalid_field",
        ),
        (
            {
                "interpreter_needed": True,
                "interpreter_language": "ar",
                "interpreter_outside_community": "yes",
            },
            "invalid_field",
        ),
        ({"interpreter_needed": True, "interpreter_gender": "woman"}, "missing_field"),
    ],
)
async def test_bad_interpreter_wishes_start_nothing(extra, code):
    visitor = await visitor_socket()
    await visitor.send_json_to({**START, **extra})
    assert (await receive_until(visitor, "error"))["code"] == code
    assert await Conversation.objects.acount() == 0
    await visitor.disconnect()


async def test_wishes_without_an_interpreter_are_not_kept():
    visitor = await visitor_socket()
    await visitor.send_json_to(
        {**START, "interpreter_gender": "man", "interpreter_outside_community": True}
    )
    await receive_until(visitor, "started")
    conversation = await Conversation.objects.aget()
    assert conversation.interpreter_gender == ""
    assert conversation.interpreter_outside_community is False
    await visitor.disconnect()


def waiting(minutes_ago: int, **fields) -> Conversation:
    return Conversation.objects.create(
        created_at=timezone.now() - timedelta(minutes=minutes_ago), **fields
    )


@pytest.mark.django_db
def test_the_next_one_prefers_a_conversation_the_advisor_can_take_without_an_interpreter():
    from tests.factories import make_advisor

    swedish = make_advisor("sara", languages=["sv", "en"])
    needs_arabic = waiting(5, interpreter_needed=True, interpreter_language="ar")
    plain = waiting(3)
    taken, _events = Conversation.take_next(swedish)
    assert taken.pk == plain.pk
    # An Arabic-speaking advisor gets the Arabic one first, although it needs no interpreter
    # for them (they speak the language).
    arabic = make_advisor("amal", languages=["sv", "ar"])
    taken, _events = Conversation.take_next(arabic)
    assert taken.pk == needs_arabic.pk


@pytest.mark.django_db
def test_the_next_one_never_jumps_an_urgent_conversation():
    from tests.factories import make_advisor

    swedish = make_advisor("sara", languages=["sv"])
    urgent = waiting(1, urgent=True, interpreter_needed=True, interpreter_language="so")
    waiting(5)
    taken, _events = Conversation.take_next(swedish)
    assert taken.pk == urgent.pk


@pytest.mark.django_db
def test_the_preference_lapses_once_a_conversation_has_waited_long(settings):
    from tests.factories import make_advisor

    settings.TAKE_NEXT_PREFERENCE_MINUTES = 10
    swedish = make_advisor("sara", languages=["sv"])
    long_waiting = waiting(12, interpreter_needed=True, interpreter_language="ti")
    waiting(2)
    taken, _events = Conversation.take_next(swedish)
    assert taken.pk == long_waiting.pk


@pytest.mark.django_db
def test_a_chat_in_a_language_the_advisor_lacks_comes_before_one_that_needs_an_interpreter():
    from tests.factories import make_advisor

    swedish = make_advisor("sara", languages=["sv"])
    waiting(6, interpreter_needed=True, interpreter_language="fa")
    english_chat = waiting(4, language="en")
    taken, _events = Conversation.take_next(swedish)
    assert taken.pk == english_chat.pk
