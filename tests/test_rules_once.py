"""Every rule once: a rule added to the domain's one definition takes effect on every path, the
ORM on both databases and PostgreSQL's compiled statements alike, through the sockets.

Each test adds a rule of its own to that definition, in the one place a future rule would go
(`Conversation.post_rules`, `take_preference`), and fails if any path ignores it: a rule that
held on one database only, or on the ORM path only, would fail here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db.models import Case, Count, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.db.models.lookups import LessThan

from advice import models
from advice.choices import Writer
from advice.models import Conversation, Message, Rule
from tests.factories import START, advisor_socket, receive_until, visitor_socket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=[True, False], ids=["statements", "orm"])
def path(request: Any, settings: Any) -> bool:
    """Both paths on PostgreSQL; on SQLite both runs take the ORM, the only path there."""
    settings.MESSAGE_FAST_PATH = request.param
    return request.param


@pytest.fixture
def at_most_three_texts_while_waiting(monkeypatch: Any) -> None:
    """A rule written once, as a Q on the conversation's row."""
    post_rules = Conversation.post_rules

    def with_the_cap(self: Conversation, sender: str, advisor: Any) -> list[Rule]:
        rules = post_rules(self, sender, advisor)
        if sender == Message.Sender.VISITOR:
            texts = (
                Message.objects.filter(conversation=OuterRef("pk"), sender=sender)
                .values("conversation")
                .annotate(n=Count("pk"))
                .values("n")
            )
            rules.append(
                Rule(
                    "wait_for_an_advisor",
                    "Wait for an advisor before you write more.",
                    Q(status=Conversation.Status.ACTIVE)
                    | Q(LessThan(Coalesce(Subquery(texts), Value(0)), 3)),
                )
            )
        return rules

    monkeypatch.setattr(Conversation, "post_rules", with_the_cap)


@pytest.fixture
def young_writers_first(monkeypatch: Any) -> None:
    """A preference written once, as an ORDER BY expression after urgency."""
    take_preference = models.take_preference

    def young_first(spoken: set[str], now: Any) -> list[Any]:
        urgent_first, *rest = take_preference(spoken, now)
        young = Case(When(writer=Writer.YOUNG_PERSON, then=Value(0)), default=Value(1))
        return [urgent_first, young, *rest]

    monkeypatch.setattr(models, "take_preference", young_first)


async def ack_or_error(communicator: Any) -> str:
    while True:
        frame = json.loads(await communicator.receive_from(timeout=3))
        if frame["type"] == "ack":
            return "ack"
        if frame["type"] == "error":
            return frame["code"]


async def test_a_new_post_rule_holds_on_every_path(path, at_most_three_texts_while_waiting):
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    await receive_until(visitor, "started")
    answers = []
    for n in range(5):
        await visitor.send_json_to({"type": "send", "text": f"text {n}", "client_id": f"c{n}"})
        answers.append(await ack_or_error(visitor))
    assert answers == ["ack"] * 3 + ["wait_for_an_advisor"] * 2
    stored = Message.objects.filter(sender=Message.Sender.VISITOR).count
    assert await database_sync_to_async(stored)() == 3
    await visitor.disconnect()


async def test_a_new_take_preference_holds_on_every_path(path, advisor, young_writers_first):
    started = []
    for writer in (Writer.PROFESSIONAL, Writer.YOUNG_PERSON):
        visitor = await visitor_socket()
        await visitor.send_json_to({**START, "writer": writer})
        await receive_until(visitor, "started")
        started.append(visitor)
    console, connected = await advisor_socket(advisor)
    assert connected
    await receive_until(console, "hello")
    await console.send_json_to({"type": "take_next"})
    taken = await receive_until(console, "conversation")
    # The professional waited longer; the new preference puts the young writer first.
    assert taken["conversation"]["writer"] == Writer.YOUNG_PERSON
    await console.disconnect()
    for visitor in started:
        await visitor.disconnect()
