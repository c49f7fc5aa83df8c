"""The message path under load: the statements compiled from Conversation.post's Change
(Conversation.apost) keep exactly its rules, on both paths; the queue tells every waiting
visitor their place at a bounded cost; idle sockets are closed.

On PostgreSQL these tests run twice, once on each path (MESSAGE_FAST_PATH); on SQLite both
runs take the ORM path, which is the only one there."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from advice import crypto, streams
from advice.choices import Channel
from advice.models import (
    QUEUE_SENT_TO_ADVISORS,
    AdvisorProfile,
    Conversation,
    DomainError,
    Message,
    QueueSnapshot,
    message_posted,
)
from tests.factories import START, advisor_socket, receive_until, visitor_socket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=[True, False], ids=["fast-path", "orm-path"])
def path(request, settings):
    settings.MESSAGE_FAST_PATH = request.param
    return request.param


def new_conversation(advisor=None, channel: str = Channel.WEB) -> Conversation:
    conversation, _token, _events = Conversation.start_web(language="sv", writer="young")
    if channel != Channel.WEB:
        Conversation.objects.filter(pk=conversation.pk).update(channel=channel)
        conversation.refresh_from_db()
    if advisor is not None:
        conversation.take(advisor)
        conversation.refresh_from_db()
    return conversation


async def post(conversation, **kwargs):
    return await conversation.apost(**kwargs)


async def test_texts_get_gap_free_numbers_and_are_stored_encrypted_on_both_paths(path, advisor):
    conversation = await sync_to_async(new_conversation)(advisor)  # seq 1: advisor joined
    first, created, events = await post(conversation, sender="visitor", text="hej", client_id="a")
    second, _, _ = await post(
        conversation, sender="advisor", text="hej hej", client_id="b", advisor=advisor
    )
    assert created and (first.seq, second.seq) == (2, 3)
    stored = await sync_to_async(Message.objects.get)(pk=first.pk)
    assert stored.body != "hej" and crypto.decrypt(stored.body) == "hej"
    # The event is the stored row's own, as the ORM builds it.
    assert events == [await sync_to_async(lambda: stored.as_event())()]


async def test_a_retried_client_id_returns_the_stored_text_and_stores_nothing_on_both_paths(
    path, advisor
):
    conversation = await sync_to_async(new_conversation)(advisor)
    message, created, _ = await post(conversation, sender="visitor", text="hej", client_id="c1")
    again, created_again, events = await post(
        conversation, sender="visitor", text="hej", client_id="c1"
    )
    assert created and not created_again and events == []
    assert again.seq == message.seq
    assert await sync_to_async(Message.objects.filter(client_id="c1").count)() == 1


@pytest.mark.parametrize("case", ["ended", "not_mine", "empty", "too_long"])
async def test_refusals_are_the_orm_rules_own_errors_and_change_nothing_on_both_paths(
    path, case, advisor, other_advisor
):
    conversation = await sync_to_async(new_conversation)(advisor)
    sender, text, who, code = "visitor", "hej", None, None
    if case == "ended":
        await sync_to_async(conversation.close)(advisor, "advice_given")
        code = "conversation_ended"
    elif case == "not_mine":
        sender, who, code = "advisor", other_advisor, "not_your_conversation"
    elif case == "empty":
        text, code = "  ", "empty_message"
    else:
        text, code = "x" * 4001, "message_too_long"
    before = await sync_to_async(lambda: Conversation.objects.get(pk=conversation.pk).last_seq)()
    with pytest.raises(DomainError) as refused:
        await post(conversation, sender=sender, text=text, client_id="r", advisor=who)
    assert refused.value.code == code
    after = await sync_to_async(lambda: Conversation.objects.get(pk=conversation.pk).last_seq)()
    assert after == before
    assert not await sync_to_async(Message.objects.filter(client_id="r").exists)()


async def test_texts_sent_at_once_in_one_conversation_number_without_gaps_on_both_paths(
    path, advisor
):
    conversation = await sync_to_async(new_conversation)(advisor)
    results = await asyncio.gather(
        *(post(conversation, sender="visitor", text=f"t{i}", client_id=f"k{i}") for i in range(20))
    )
    seqs = sorted(message.seq for message, _, _ in results)
    assert seqs == list(range(2, 22))
    stored = await sync_to_async(list)(
        Message.objects.filter(conversation=conversation)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert stored == list(range(1, 22))


async def test_texts_to_many_conversations_at_once_are_each_stored_once_in_order_on_both_paths(
    path, advisor, other_advisor
):
    """On the fast path, texts that arrive together are stored together (one statement for
    many conversations, advice.store.apply_async); each conversation still numbers its
    texts without gaps, a retried client id is stored once, and a text the rules refuse is
    refused alone."""

    @sync_to_async
    def arrange() -> list[Conversation]:
        AdvisorProfile.objects.filter(user=advisor).update(capacity=5)
        return [new_conversation(advisor) for _ in range(5)]

    conversations = await arrange()
    sends = []
    for conversation in conversations:
        for i in range(6):
            # Client ids 0, 1, 2, 3, 0, 1: two of each conversation's six are retries.
            sends.append(post(conversation, sender="visitor", text=f"v{i}", client_id=f"v{i % 4}"))
        sends.append(post(conversation, sender="advisor", text="a", client_id="a", advisor=advisor))
        # Not this advisor's conversation: refused, alone.
        sends.append(
            post(conversation, sender="advisor", text="x", client_id="x", advisor=other_advisor)
        )
    results = await asyncio.gather(*sends, return_exceptions=True)

    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == len(conversations)
    assert {r.code for r in refused} == {"not_your_conversation"}
    for conversation in conversations:

        def stored(conversation=conversation) -> dict[str, int]:
            rows = Message.objects.filter(conversation=conversation, seq__gt=1)
            return dict(rows.values_list("client_id", "seq"))

        by_client_id = await sync_to_async(stored)()
        # Four texts and the advisor's, numbered 2 to 6 without gaps.
        assert sorted(by_client_id) == ["a", "v0", "v1", "v2", "v3"]
        assert sorted(by_client_id.values()) == list(range(2, 7))
    answered = [r for r in results if not isinstance(r, Exception)]
    assert sum(created for _message, created, _events in answered) == 5 * len(conversations)
    for message, _created, _events in answered:
        assert (
            message.seq
            == await sync_to_async(
                lambda m=message: (
                    Message.objects.get(
                        conversation_id=m.conversation_id, client_id=m.client_id
                    ).seq
                )
            )()
        )


@pytest.mark.parametrize("channel", [Channel.WEB, Channel.SMS])
async def test_message_posted_is_sent_once_the_text_is_committed_on_both_paths(
    path, advisor, channel
):
    conversation = await sync_to_async(new_conversation)(advisor, channel)
    heard = []

    def listener(sender, conversation, message, text, **kwargs):
        stored = Message.objects.filter(pk=message.pk, seq=message.seq).exists()
        heard.append((conversation.pk, text, stored))

    message_posted.connect(listener, sender=channel, dispatch_uid="test-message-path")
    try:
        await post(conversation, sender="visitor", text="via sms", client_id="s1")
    finally:
        message_posted.disconnect(sender=channel, dispatch_uid="test-message-path")
    assert heard == [(conversation.pk, "via sms", True)]


async def test_reading_after_a_seq_gives_what_the_orm_gives_on_both_paths(path, advisor):
    conversation = await sync_to_async(new_conversation)(advisor)
    for i in range(5):
        await post(conversation, sender="visitor", text=f"t{i}", client_id=f"e{i}")

    def orm_events():
        return [m.as_event() for m in conversation.messages_after(2)]

    read = await streams.entries_after(conversation.pk, 2, conversation)
    assert read == await sync_to_async(orm_events)()


async def test_reading_after_seqs_of_many_conversations_at_once_gives_each_its_own_on_both_paths(
    path, advisor
):
    conversations = [await sync_to_async(new_conversation)(advisor) for _ in range(3)]
    for n, conversation in enumerate(conversations):
        for i in range(n + 2):
            await post(conversation, sender="visitor", text=f"c{n}t{i}", client_id=f"c{n}e{i}")
    wanted = [(c, after) for c in conversations for after in (0, 2)]

    def orm_events():
        return [[m.as_event() for m in c.messages_after(after)] for c, after in wanted]

    read = await asyncio.gather(*(streams.entries_after(c.pk, after, c) for c, after in wanted))
    assert read == await sync_to_async(orm_events)()
    assert [len(entries) for entries in read] == [3, 1, 4, 2, 5, 3]


async def test_visitors_starting_at_once_each_get_what_the_orm_would_store_on_both_paths(path):
    """Starts that arrive together are stored together on PostgreSQL: each visitor still gets a
    conversation of their own, as Conversation.new_web defines it, with its `created` entry."""
    from advice.models import ConversationEvent, hash_token

    frames = [
        {**START, "language": "en", "safe_now": "no"},
        {**START, "interpreter_needed": True, "interpreter_language": "ti", "county": "AB"},
        {**START, "interpreter_language": "ar", "interpreter_gender": "woman"},
    ] * 8
    visitors = [await visitor_socket() for _ in frames]
    for visitor, frame in zip(visitors, frames, strict=True):
        await visitor.send_json_to(frame)
    tokens = [(await receive_until(v, "started"))["token"] for v in visitors]
    for visitor in visitors:
        await visitor.disconnect()
    assert len(set(tokens)) == len(frames)

    def stored():
        rows = []
        for token in tokens:
            c = Conversation.objects.get(token_hash=hash_token(token))
            events = list(ConversationEvent.objects.filter(conversation=c).values("kind", "data"))
            rows.append((c, events))
        return rows

    rows = await sync_to_async(stored)()
    for (conversation, events), frame in zip(rows, frames, strict=True):
        needed = frame.get("interpreter_needed", False)
        assert conversation.channel == Channel.WEB
        assert conversation.status == Conversation.Status.WAITING
        assert conversation.language == frame["language"]
        assert conversation.urgent is (frame["safe_now"] == "no")
        assert conversation.county == frame.get("county", "")
        assert conversation.interpreter_needed is needed
        # Wishes for an interpreter nobody asked for are not kept.
        wished = frame["interpreter_language"] if needed else ""
        assert conversation.interpreter_language == wished
        assert conversation.interpreter_gender == ""
        assert conversation.last_seq == 0 and conversation.advisor_id is None
        assert events == [{"kind": "created", "data": {"channel": "web"}}]


# --- the queue: every waiting visitor's place, at a bounded cost ---------------------------------


async def test_every_waiting_visitor_learns_their_place_even_beyond_what_advisors_are_sent():
    def fill() -> list[int]:
        return [new_conversation().pk for _ in range(QUEUE_SENT_TO_ADVISORS + 3)]

    ids = await sync_to_async(fill)()
    snapshot = await database_sync_to_async(QueueSnapshot.load)()
    assert len(snapshot.waiting) == QUEUE_SENT_TO_ADVISORS  # what the advisors are sent
    assert snapshot.position_of(ids[0]) == 1
    assert snapshot.position_of(ids[-1]) == QUEUE_SENT_TO_ADVISORS + 3


async def test_the_console_is_told_how_many_wait_beyond_the_head_it_is_sent(advisor):
    await sync_to_async(lambda: [new_conversation() for _ in range(QUEUE_SENT_TO_ADVISORS + 3)])()
    console, connected = await advisor_socket(advisor)
    assert connected
    queue = await receive_until(console, "queue")
    assert len(queue["waiting"]) == QUEUE_SENT_TO_ADVISORS
    assert queue["waiting_total"] == QUEUE_SENT_TO_ADVISORS + 3
    await console.disconnect()


async def test_waiting_visitors_see_their_place_move_as_conversations_are_taken_with_few_frames(
    advisor, other_advisor
):
    visitors = []
    for _ in range(12):
        visitor = await visitor_socket()
        await visitor.send_json_to(START)
        await receive_until(visitor, "started")
        visitors.append(visitor)
    last = visitors[-1]
    await receive_until(last, "queue", position=12, timeout=5)

    consoles = [(await advisor_socket(a))[0] for a in (advisor, other_advisor)]
    # Six takes in quick succession, from two advisors.
    for i in range(6):
        await consoles[i % 2].send_json_to({"type": "take_next"})
    # Every visitor still waiting ends on their right place...
    frames = 0
    for place, visitor in enumerate(visitors[6:], start=1):
        while True:
            frame = await receive_until(visitor, "queue", timeout=5)
            frames += 1
            if frame["position"] == place:
                break
    # ...and is not sent a frame for every change: the hub reloads the queue at most every
    # QUEUE_REFRESH_INTERVAL and a visitor gets a frame only when their place changed.
    assert frames <= 6 * 6
    for socket in (*visitors, *consoles):
        await socket.disconnect()


# --- heartbeats and idle sockets -----------------------------------------------------------------


async def test_a_socket_that_sends_nothing_is_closed_after_the_idle_time_and_a_pinging_one_is_not(
    settings,
):
    settings.SOCKET_IDLE_SECONDS = 1
    silent = await visitor_socket()
    pinging = await visitor_socket()

    async def ping_for(seconds: float) -> None:
        for _ in range(int(seconds / 0.3)):
            await pinging.send_json_to({"type": "ping"})
            await receive_until(pinging, "pong")
            await asyncio.sleep(0.3)

    await ping_for(3)
    closed = await silent.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4408}
    await pinging.send_json_to({"type": "ping"})
    assert (await receive_until(pinging, "pong"))["type"] == "pong"
    await pinging.disconnect()
