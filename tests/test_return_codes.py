"""Return codes and advisor notes: "you don't have to tell your story again"."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connections
from django.utils import timezone

from advice import returncodes
from advice.models import Conversation, ConversationEvent, ReturnCode
from tests.factories import START, advisor_socket, receive_until, visitor_socket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_pooled_connection_left_behind():
    """Django's async ORM calls in these tests (acount, aget, ...) run on asgiref's shared
    thread and leave its connection checked out of the pool; give it back after each test
    (tests/test_take_race.py needs every pooled connection at once)."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(autouse=True)
def _fresh_budget():
    returncodes.failures.reset()
    yield
    returncodes.failures.reset()


async def talk_and_close(advisor, note: str = "", text: str = "Min historia."):
    """A conversation that reached an advisor and was closed; returns the visitor's socket
    (still attached: the token works for a while after the end) and the conversation id."""
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    await receive_until(visitor, "started")
    console, _ = await advisor_socket(advisor)
    conversation = (await receive_until(console, "queue"))["waiting"][0]["id"]
    await console.send_json_to({"type": "take", "conversation": conversation})
    await receive_until(visitor, "state", status="active")
    await visitor.send_json_to({"type": "send", "client_id": "v1", "text": text})
    await receive_until(visitor, "ack")
    if note:
        await console.send_json_to({"type": "note", "conversation": conversation, "text": note})
        await receive_until(console, "note", conversation=conversation)
    await console.send_json_to(
        {"type": "close", "conversation": conversation, "outcome": "advice_given"}
    )
    await receive_until(visitor, "state", status="closed")
    await console.disconnect()
    return visitor, conversation


async def ask_code(visitor) -> dict:
    await visitor.send_json_to({"type": "return_code"})
    return await receive_until(visitor, "return_code")


async def start_with(code: str):
    visitor = await visitor_socket()
    await visitor.send_json_to({**START, "return_code": code})
    frame = json.loads(await visitor.receive_from(timeout=3))
    return visitor, frame


# --- issuing -----------------------------------------------------------------------------------


async def test_after_talking_with_an_advisor_the_visitor_gets_three_plain_words(advisor):
    visitor, _conversation = await talk_and_close(advisor)
    frame = await ask_code(visitor)
    words = frame["code"].split(" ")
    assert len(words) == 3 and frame["words"] == words
    assert all(word in returncodes.words() for word in words)
    assert frame["valid_days"] == 30
    expires = timezone.datetime.fromisoformat(frame["expires_at"])
    assert timedelta(days=29, hours=23) < expires - timezone.now() <= timedelta(days=30)
    await visitor.disconnect()


async def test_only_a_keyed_hash_of_the_code_is_stored(advisor):
    visitor, _conversation = await talk_and_close(advisor)
    code = (await ask_code(visitor))["code"]
    stored = await database_sync_to_async(lambda: list(ReturnCode.objects.values()))()
    assert len(stored) == 1
    assert stored[0]["code_hash"] == returncodes.code_hash(code)
    # No word of the code in any stored value, as a word: a word may well be part of a
    # column's name ("pir" in "expires_at") or of the hash's hex digits ("bad", "cafe").
    values = [str(value) for row in stored for value in row.values()]
    for word in code.split():
        assert not any(re.search(rf"\b{re.escape(word)}\b", value) for value in values)
    # Not a plain digest that anyone could compute from the word list.
    import hashlib

    assert stored[0]["code_hash"] != hashlib.sha256(code.encode()).hexdigest()
    events = await database_sync_to_async(
        lambda: list(
            ConversationEvent.objects.filter(kind="return_code_issued").values_list(
                "data", flat=True
            )
        )
    )()
    assert len(events) == 1 and code not in json.dumps(events)
    await visitor.disconnect()


async def test_no_code_before_an_advisor_has_answered():
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    await receive_until(visitor, "started")
    await visitor.send_json_to({"type": "return_code"})
    assert (await receive_until(visitor, "error"))["code"] == "return_code_unavailable"
    assert not await ReturnCode.objects.aexists()
    await visitor.disconnect()


async def test_asking_again_replaces_the_earlier_code(advisor):
    visitor, _conversation = await talk_and_close(advisor)
    first = (await ask_code(visitor))["code"]
    second = (await ask_code(visitor))["code"]
    assert await ReturnCode.objects.acount() == 1
    if first != second:
        again, frame = await start_with(first)
        assert frame["code"] == "invalid_return_code"
        await again.disconnect()
    await visitor.disconnect()


def test_the_word_list_is_2048_plain_words_typeable_on_any_keyboard():
    words = returncodes.words()
    assert len(words) == len(set(words)) == 2048
    assert all(re.fullmatch(r"[a-z]{3,9}", w) for w in words)
    assert returncodes.normalise("  Sol-BOK.hus ") == "sol bok hus"
    assert returncodes.normalise("sól bök hüs") == "sol bok hus"


# --- linking ------------------------------------------------------------------------------------


async def test_a_new_chat_with_the_code_is_linked_and_the_next_advisor_reads_the_earlier_one(
    advisor,
    other_advisor,
):
    visitor, earlier = await talk_and_close(
        advisor, note="Talade om skolan. Vill ha hjälp med boende.", text="Min historia."
    )
    code = (await ask_code(visitor))["code"]
    await visitor.disconnect()

    returning, frame = await start_with(code.upper().replace(" ", "-"))
    assert frame["type"] == "started"
    console, _ = await advisor_socket(other_advisor)
    waiting = (await receive_until(console, "queue"))["waiting"]
    assert waiting[0]["returning"] is True
    later = waiting[0]["id"]
    await console.send_json_to({"type": "take", "conversation": later})
    await receive_until(console, "message", conversation=later, event="advisor_joined")
    await console.send_json_to({"type": "linked_history", "conversation": later})
    history = await receive_until(console, "linked_history", conversation=later)
    (item,) = history["earlier"]
    assert item["summary"]["id"] == earlier
    assert item["note"] == "Talade om skolan. Vill ha hjälp med boende."
    assert [m["text"] for m in item["messages"] if "text" in m] == ["Min historia."]

    linked = await database_sync_to_async(
        lambda: sorted(
            ConversationEvent.objects.filter(kind="linked").values_list(
                "conversation__public_id", flat=True
            )
        )
    )()
    assert sorted(map(str, linked)) == sorted([earlier, later])
    # Spent: the code works once, and its row is gone.
    assert not await ReturnCode.objects.aexists()
    again, frame = await start_with(code)
    assert frame["code"] == "invalid_return_code"
    await returning.disconnect()
    await again.disconnect()
    await console.disconnect()


async def test_the_visitor_side_never_shows_the_earlier_conversation(advisor):
    visitor, _earlier = await talk_and_close(advisor, text="Hemligt från förra gången.")
    code = (await ask_code(visitor))["code"]
    await visitor.disconnect()
    returning, frame = await start_with(code)
    assert frame["type"] == "started"
    frames = []
    while not await returning.receive_nothing(timeout=0.4):
        frames.append(await returning.receive_from())
    assert "Hemligt" not in "".join(frames)
    await returning.disconnect()


async def test_another_advisor_cannot_read_the_linked_history_of_a_conversation_not_theirs(
    advisor,
    other_advisor,
):
    visitor, _earlier = await talk_and_close(advisor)
    code = (await ask_code(visitor))["code"]
    returning, _ = await start_with(code)
    console, _ = await advisor_socket(other_advisor)
    later = (await receive_until(console, "queue"))["waiting"][0]["id"]
    await console.send_json_to({"type": "linked_history", "conversation": later})
    assert (await receive_until(console, "error"))["code"] == "not_your_conversation"
    await visitor.disconnect()
    await returning.disconnect()
    await console.disconnect()


async def test_an_expired_code_links_nothing_and_starts_nothing(advisor):
    visitor, _earlier = await talk_and_close(advisor)
    code = (await ask_code(visitor))["code"]
    await visitor.disconnect()
    with time_machine.travel(timezone.now() + timedelta(days=30, minutes=1), tick=True):
        returning, frame = await start_with(code)
        assert frame["code"] == "invalid_return_code" and frame["ref"] == "start"
    assert await Conversation.objects.acount() == 1
    await returning.disconnect()


async def test_a_code_within_the_days_still_links(advisor, settings):
    settings.RETURN_CODE_DAYS = 2
    visitor, _earlier = await talk_and_close(advisor)
    code = (await ask_code(visitor))["code"]
    await visitor.disconnect()
    with time_machine.travel(timezone.now() + timedelta(days=1, hours=23), tick=True):
        returning, frame = await start_with(code)
        assert frame["type"] == "started"
    await returning.disconnect()


async def test_a_code_survives_a_secret_key_rotation(advisor, settings):
    visitor, _earlier = await talk_and_close(advisor)
    code = (await ask_code(visitor))["code"]
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-" + "y" * 40
    returning, frame = await start_with(code)
    assert frame["type"] == "started"
    await visitor.disconnect()
    await returning.disconnect()


# --- guessing -----------------------------------------------------------------------------------


async def test_a_wrong_code_starts_nothing_and_says_the_same_for_every_kind_of_wrong():
    for guess in ("sol bok hus", "one two", "x" * 100):
        visitor, frame = await start_with(guess)
        assert frame["type"] == "error" and frame["code"] == "invalid_return_code"
        await visitor.disconnect()
    assert await Conversation.objects.acount() == 0
    visitor, frame = await start_with("x" * 101)
    assert frame["code"] == "invalid_field"
    await visitor.disconnect()


async def test_guessing_is_capped_for_the_whole_service_whoever_guesses(advisor, settings):
    settings.RETURN_CODE_FAILURES_PER_HOUR = 3
    visitor, _earlier = await talk_and_close(advisor)
    code = (await ask_code(visitor))["code"]
    for _ in range(3):  # three different sockets, as from three different people
        guesser, frame = await start_with("fel fel fel")
        assert frame["code"] == "invalid_return_code"
        await guesser.disconnect()
    # Now even the right code waits for the next hour; nothing is spent meanwhile.
    blocked, frame = await start_with(code)
    assert frame["code"] == "return_codes_paused"
    assert await ReturnCode.objects.acount() == 1
    # The chat itself can still start, without the code.
    await blocked.send_json_to(START)
    await receive_until(blocked, "started")
    with time_machine.travel(timezone.now() + timedelta(hours=1), tick=True):
        returning, frame = await start_with(code)
        assert frame["type"] == "started"
    for communicator in (visitor, blocked, returning):
        await communicator.disconnect()


async def test_the_guess_count_keeps_nothing_about_the_guesser(settings):
    if not settings.REDIS_URL:
        pytest.skip("the in-memory count holds only a number per hour")
    import redis

    guesser, frame = await start_with("fel fel fel")
    assert frame["code"] == "invalid_return_code"
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    keys = [k.decode() for k in client.scan_iter(f"{prefix}:return-code-failures:*")]
    assert len(keys) == 1
    assert re.fullmatch(rf"{re.escape(prefix)}:return-code-failures:\d+", keys[0])
    assert 0 < client.ttl(keys[0]) <= 3660
    assert client.get(keys[0]) == b"1"
    await guesser.disconnect()


async def test_one_socket_may_try_only_a_few_codes():
    visitor = await visitor_socket()
    for _ in range(returncodes.MAX_TRIES_PER_SOCKET):
        await visitor.send_json_to({**START, "return_code": "fel fel fel"})
        assert (await receive_until(visitor, "error"))["code"] == "invalid_return_code"
    await visitor.send_json_to({**START, "return_code": "fel fel fel"})
    assert (await receive_until(visitor, "error"))["code"] == "too_many_tries"
    await visitor.disconnect()


# --- notes ------------------------------------------------------------------------------------


async def test_notes_are_the_advisors_own_and_stored_encrypted(advisor, other_advisor):
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    await receive_until(visitor, "started")
    console, _ = await advisor_socket(advisor)
    conversation = (await receive_until(console, "queue"))["waiting"][0]["id"]
    await console.send_json_to({"type": "take", "conversation": conversation})
    await receive_until(visitor, "state", status="active")

    await console.send_json_to(
        {"type": "note", "conversation": conversation, "text": "Orolig för resan i sommar."}
    )
    saved = await receive_until(console, "note", conversation=conversation)
    assert saved["text"] == "Orolig för resan i sommar." and saved["updated_at"]
    row = await Conversation.objects.aget(public_id=conversation)
    assert row.note_body and "resan" not in row.note_body
    events = await database_sync_to_async(
        lambda: list(ConversationEvent.objects.filter(kind="note").values_list("data", flat=True))
    )()
    assert "resan" not in json.dumps(events)

    # A reconnecting console gets the notes back; another advisor cannot write them.
    again, _ = await advisor_socket(advisor)
    await again.send_json_to({"type": "resume", "conversations": {conversation: 0}})
    assert (await receive_until(again, "note", conversation=conversation))["text"] == (
        "Orolig för resan i sommar."
    )
    stranger, _ = await advisor_socket(other_advisor)
    await stranger.send_json_to({"type": "note", "conversation": conversation, "text": "x"})
    assert (await receive_until(stranger, "error"))["code"] == "not_your_conversation"
    await console.send_json_to(
        {"type": "note", "conversation": conversation, "text": "x" * (settings.MAX_NOTE_LENGTH + 1)}
    )
    assert (await receive_until(console, "error"))["code"] == "note_too_long"
    await console.send_json_to({"type": "note", "conversation": conversation, "text": 5})
    assert (await receive_until(console, "error"))["code"] == "invalid_field"
    # The visitor never sees a note.
    frames = []
    while not await visitor.receive_nothing(timeout=0.3):
        frames.append(await visitor.receive_from())
    assert "resan" not in "".join(frames)
    for communicator in (visitor, console, again, stranger):
        await communicator.disconnect()
