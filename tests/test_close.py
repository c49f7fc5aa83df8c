"""An advisor's close on PostgreSQL's statement (Conversation.aclose, compiled from the same
Change as Conversation.close) writes what the ORM's close writes, announces what it announces
and refuses what it refuses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from advice.choices import Outcome
from advice.models import Conversation, ConversationEvent, DomainError, Message
from tests.factories import announced, make_advisor

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the statements are PostgreSQL's only"
    ),
]


@pytest.fixture(autouse=True)
def _fast_path(settings):
    settings.MESSAGE_FAST_PATH = True


@sync_to_async
def active_with(advisor: Any) -> Conversation:
    """A conversation the advisor has taken, with a text in it already."""
    conversation, _token = Conversation.new_web(language="sv", writer="young")
    conversation.save(force_insert=True)
    conversation.created_event().save(force_insert=True)
    conversation.post(sender=Message.Sender.VISITOR, text="hej", client_id="v1")
    taken, _events = Conversation.take_next(advisor)
    assert taken.pk == conversation.pk
    return taken


def written_by_the_close(conversation: Conversation, advisor: Any) -> dict[str, Any]:
    """What a close stored, the advisor named only as "the one who closed it"."""
    conversation.refresh_from_db()
    event = conversation.events.get(kind=ConversationEvent.Kind.CLOSED)
    entry = conversation.messages.get(event=Message.Event.CLOSED)
    return {
        "conversation": (
            conversation.status,
            conversation.outcome,
            conversation.end_reason,
            conversation.ended_at is not None,
            conversation.last_seq,
        ),
        "event": (event.kind, event.advisor_id == advisor.pk, event.data),
        "entry": (entry.seq, entry.sender, entry.advisor_id == advisor.pk, entry.event, entry.data),
    }


async def test_the_statement_writes_and_announces_what_close_does(transactional_db):
    fast, slow = await sync_to_async(lambda: (make_advisor("fast"), make_advisor("slow")))()
    by_orm, by_fast = await active_with(slow), await active_with(fast)

    orm_events = await sync_to_async(by_orm.close)(slow, Outcome.values[0])
    fast_events = await by_fast.aclose(fast, Outcome.values[0])

    written = sync_to_async(written_by_the_close)
    assert await written(by_fast, fast) == await written(by_orm, slow)
    times = ("created_at", "taken_at", "ended_at", "waited_seconds")
    assert announced(fast_events, fast, times) == announced(orm_events, slow, times)
    # The instance handed in is the stored row now, whole.
    stored = await sync_to_async(Conversation.objects.get)(pk=by_fast.pk)
    fields = Conversation._meta.concrete_fields
    assert [getattr(by_fast, f.attname) for f in fields] == [
        getattr(stored, f.attname) for f in fields
    ]


@pytest.mark.parametrize(
    ("whose", "outcome", "code"),
    [
        ("someone else's", Outcome.values[0], "not_your_conversation"),
        ("mine, closed", Outcome.values[0], "not_your_conversation"),
        ("mine", "no such outcome", "invalid_outcome"),
        ("mine", ["a list"], "invalid_outcome"),
    ],
)
async def test_what_close_refuses_the_statement_refuses_and_changes_nothing(
    transactional_db, whose, outcome, code
):
    me, other = await sync_to_async(lambda: (make_advisor("me"), make_advisor("other")))()
    conversation = await active_with(other if whose == "someone else's" else me)
    if whose == "mine, closed":
        await conversation.aclose(me, Outcome.values[0])

    @sync_to_async
    def stored() -> tuple[Any, ...]:
        row = Conversation.objects.get(pk=conversation.pk)
        return (row.status, row.last_seq, row.outcome, ConversationEvent.objects.count())

    before = await stored()
    with pytest.raises(DomainError) as refused:
        await conversation.aclose(me, outcome)
    assert refused.value.code == code
    assert await stored() == before


async def test_closing_twice_at_once_closes_once(transactional_db):
    me = await sync_to_async(make_advisor)("twice")
    conversation = await active_with(me)
    results = await asyncio.gather(
        *(conversation.aclose(me, Outcome.values[0]) for _ in range(5)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, DomainError)]
    assert len(refused) == 4
    assert {r.code for r in refused} == {"not_your_conversation"}
    count = Message.objects.filter(conversation=conversation, event=Message.Event.CLOSED).count
    assert await sync_to_async(count)() == 1
