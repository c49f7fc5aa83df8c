"""An advisor's "next": on PostgreSQL the statement compiled from `ConversationQuerySet.next_for`
(Conversation.atake_next) takes what the ORM's `Conversation.take_next` takes, writes what it
writes, and hands out each waiting conversation once, however many advisors press "next" at
once. The ORM path is tested on both databases everywhere else."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advice.models import (
    TAKE_NEXT_CANDIDATES,
    AdvisorProfile,
    Conversation,
    ConversationEvent,
    DomainError,
    Message,
)
from tests.factories import announced, make_advisor

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the statements are PostgreSQL's only"
    ),
]

PREFERENCE_MINUTES = 10
LANGUAGES = ["sv", "en", "ar", "so"]
INTERPRETER_LANGUAGES = ["", "ar", "ti", "fa"]


@pytest.fixture(autouse=True)
def _preference(settings):
    settings.TAKE_NEXT_PREFERENCE_MINUTES = PREFERENCE_MINUTES
    settings.MESSAGE_FAST_PATH = True


def waiting(now: Any, **fields: Any) -> Conversation:
    """A waiting conversation, its creation time given in whole minutes before `now`."""
    minutes_ago = fields.pop("minutes_ago", 1)
    conversation, _token = Conversation.new_web(
        language=fields.pop("language", "sv"), writer="young"
    )
    conversation.created_at = now - timedelta(minutes=minutes_ago)
    for name, value in fields.items():
        setattr(conversation, name, value)
    conversation.save(force_insert=True)
    conversation.created_event().save(force_insert=True)
    return conversation


class _Undo(Exception):
    pass


def orm_choice(advisor: Any) -> int | str:
    """What Conversation.take_next takes (its pk) or refuses (the error's code), undone."""
    chosen: list[int] = []
    try:
        with transaction.atomic():
            conversation, _events = Conversation.take_next(advisor)
            chosen.append(conversation.pk)
            raise _Undo
    except _Undo:
        return chosen[0]
    except DomainError as e:
        return e.code


# --- the same choice ---------------------------------------------------------------------------

a_conversation = st.fixed_dictionaries(
    {
        "language": st.sampled_from(LANGUAGES),
        "interpreter_needed": st.booleans(),
        "interpreter_language": st.sampled_from(INTERPRETER_LANGUAGES),
        "urgent": st.booleans(),
        # Whole minutes, well away from the preference's lapse: both paths read the clock.
        "minutes_ago": st.sampled_from([1, 2, 2, 3, 20, 30, 30]),
    }
)
spoken = st.one_of(
    st.lists(st.sampled_from([*LANGUAGES, "ti", "fa"]), max_size=4, unique=True),
    # What a typo in the admin's JSON can leave; AdvisorProfile.spoken reads it as nothing.
    st.sampled_from(["sv", {"sv": True, "ar": True}, [["sv"], 1, "en"], 7]),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    queue=st.lists(a_conversation, max_size=8),
    languages=spoken,
    capacity=st.integers(min_value=0, max_value=3),
    active=st.integers(min_value=0, max_value=3),
)
async def test_the_statement_takes_what_take_next_would_take(
    transactional_db, queue, languages, capacity, active
):
    @sync_to_async
    def arrange() -> Any:
        Conversation.objects.all().delete()
        AdvisorProfile.objects.all().delete()
        user = make_advisor_once()
        AdvisorProfile.objects.create(user=user, capacity=capacity, languages=languages)
        now = timezone.now()
        for fields in queue:
            waiting(now, **fields)
        for _ in range(active):
            Conversation.objects.filter(pk=waiting(now, minutes_ago=40).pk).update(
                status=Conversation.Status.ACTIVE, advisor=user, taken_at=now
            )
        return user

    user = await arrange()
    expected = await sync_to_async(orm_choice)(user)
    try:
        taken, _events = await Conversation.atake_next(user)
    except DomainError as e:
        assert e.code == expected  # refused alike: nobody waiting, or at capacity
    else:
        assert taken.pk == expected


def make_advisor_once() -> Any:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username="next").first()
    if user is None:
        user = make_advisor("next")
        AdvisorProfile.objects.filter(user=user).delete()
    return user


async def test_an_advisor_without_a_profile_gets_one_and_takes(
    transactional_db,
):
    @sync_to_async
    def arrange() -> tuple[Any, Conversation]:
        user = make_advisor("new")
        AdvisorProfile.objects.filter(user=user).delete()
        return user, waiting(timezone.now())

    user, conversation = await arrange()
    taken, _events = await Conversation.atake_next(user)
    assert taken.pk == conversation.pk
    assert await sync_to_async(AdvisorProfile.objects.filter(user=user).exists)()


async def test_only_the_head_of_the_queue_is_chosen_from_on_both_paths(transactional_db):
    """Past the first TAKE_NEXT_CANDIDATES, a better fit is not looked for."""

    @sync_to_async
    def arrange() -> tuple[Any, Conversation, Conversation]:
        user = make_advisor("arabic", languages=["ar"])
        now = timezone.now()
        head = [waiting(now, language="sv", minutes_ago=1) for _ in range(TAKE_NEXT_CANDIDATES)]
        fits = waiting(now, language="ar", minutes_ago=1)  # behind the head: not considered
        return user, head[0], fits

    user, first, _fits = await arrange()
    assert await sync_to_async(orm_choice)(user) == first.pk
    taken, _events = await Conversation.atake_next(user)
    assert taken.pk == first.pk


# --- the same rows and events ---------------------------------------------------------------


def written_by_the_take(conversation: Conversation, advisor: Any) -> dict[str, Any]:
    """What a take stored, the advisor named only as "the one who took it"."""
    conversation.refresh_from_db()
    event = conversation.events.get(kind=ConversationEvent.Kind.TAKEN)
    entry = conversation.messages.get(event=Message.Event.ADVISOR_JOINED)
    return {
        "conversation": (
            conversation.status,
            conversation.advisor_id == advisor.pk,
            conversation.taken_at is not None,
            conversation.last_seq,
        ),
        "event": (event.kind, event.advisor_id == advisor.pk, event.data),
        "entry": (
            entry.seq,
            entry.sender,
            entry.advisor_id == advisor.pk,
            entry.body,
            entry.event,
            entry.data,
            entry.client_id,
        ),
    }


async def test_the_statement_writes_and_announces_what_take_next_does(transactional_db):
    @sync_to_async
    def arrange() -> tuple[Any, Any]:
        return make_advisor("fast", capacity=1), make_advisor("slow", capacity=1)

    fast, slow = await arrange()
    by_orm = await sync_to_async(waiting)(timezone.now(), language="ar", urgent=True)
    taken_by_orm, orm_events = await sync_to_async(Conversation.take_next)(slow)
    by_fast = await sync_to_async(waiting)(timezone.now(), language="ar", urgent=True)
    taken_by_fast, fast_events = await Conversation.atake_next(fast)
    assert (taken_by_orm.pk, taken_by_fast.pk) == (by_orm.pk, by_fast.pk)

    written = sync_to_async(written_by_the_take)
    assert await written(by_fast, fast) == await written(by_orm, slow)
    times = ("created_at", "taken_at")
    assert announced(fast_events, fast, times) == announced(orm_events, slow, times)
    # What the statement hands back is the stored row, whole.
    stored = await sync_to_async(Conversation.objects.get)(pk=by_fast.pk)
    assert [getattr(taken_by_fast, f.attname) for f in Conversation._meta.concrete_fields] == [
        getattr(stored, f.attname) for f in Conversation._meta.concrete_fields
    ]
    assert taken_by_fast.advisor == fast


# --- many at once ------------------------------------------------------------------------------


async def test_many_advisors_at_once_each_waiting_conversation_goes_to_exactly_one(
    transactional_db,
):
    @sync_to_async
    def arrange() -> tuple[list[Any], list[Conversation]]:
        advisors = [make_advisor(f"racer{i}", capacity=1) for i in range(12)]
        now = timezone.now()
        return advisors, [waiting(now, minutes_ago=i + 1) for i in range(7)]

    advisors, queue = await arrange()

    async def press_next(user: Any) -> int | str:
        try:
            conversation, _events = await Conversation.atake_next(user)
        except DomainError as e:
            return e.code
        return conversation.pk

    results = await asyncio.gather(*(press_next(user) for user in advisors))
    taken = [r for r in results if isinstance(r, int)]
    assert sorted(taken) == sorted(c.pk for c in queue)
    assert results.count("queue_empty") == len(advisors) - len(queue)

    @sync_to_async
    def stored() -> tuple[int, int, set[int]]:
        return (
            ConversationEvent.objects.filter(kind="taken").count(),
            Message.objects.filter(event="advisor_joined").count(),
            set(Message.objects.filter(event="advisor_joined").values_list("seq", flat=True)),
        )

    assert await stored() == (len(queue), len(queue), {1})


async def test_one_advisor_pressing_next_on_many_sockets_at_once_stays_within_capacity(
    transactional_db,
):
    @sync_to_async
    def arrange() -> Any:
        user = make_advisor("eager", capacity=2)
        now = timezone.now()
        for i in range(8):
            waiting(now, minutes_ago=i + 1)
        return user

    user = await arrange()

    async def press_next() -> str:
        try:
            await Conversation.atake_next(user)
        except DomainError as e:
            return e.code
        return "taken"

    results = await asyncio.gather(*(press_next() for _ in range(8)))
    assert results.count("taken") == 2
    assert results.count("capacity_reached") == 6
    count = Conversation.objects.filter(advisor=user, status="active").count
    assert await sync_to_async(count)() == 2


async def test_a_take_the_database_refuses_leaves_nothing_half_done(
    transactional_db,
):
    """When the database refuses one take (here a trigger refuses the victim's audit row), its
    advisor hears of it, the others' takes stand, and each conversation is either still
    waiting or wholly taken."""

    @sync_to_async
    def arrange() -> tuple[list[Any], Any]:
        advisors = [make_advisor(f"batch{i}", capacity=1) for i in range(10)]
        now = timezone.now()
        for i in range(10):
            waiting(now, minutes_ago=i + 1)
        table = ConversationEvent._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE FUNCTION refuse_victim() RETURNS trigger AS $$ BEGIN"
                f" IF NEW.advisor_id = {advisors[4].pk} THEN RAISE EXCEPTION 'refused'; END IF;"
                " RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f'CREATE TRIGGER refuse_victim BEFORE INSERT ON "{table}"'
                " FOR EACH ROW EXECUTE FUNCTION refuse_victim()"
            )
        return advisors, advisors[4]

    @sync_to_async
    def drop_trigger() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f'DROP TRIGGER IF EXISTS refuse_victim ON "{ConversationEvent._meta.db_table}"'
            )
            cursor.execute("DROP FUNCTION IF EXISTS refuse_victim()")

    advisors, victim = await arrange()
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(Conversation.atake_next(user) for user in advisors),
                return_exceptions=True,
            ),
            10,
        )
    finally:
        await drop_trigger()
    by_advisor = dict(zip((u.pk for u in advisors), results, strict=True))
    assert isinstance(by_advisor.pop(victim.pk), Exception)
    # Everyone else took one.
    assert sorted(r[0].advisor_id for r in by_advisor.values()) == sorted(by_advisor)

    @sync_to_async
    def consistent(refused: Any = None) -> None:
        for conversation in Conversation.objects.all():
            taken = conversation.events.filter(kind=ConversationEvent.Kind.TAKEN).count()
            joined = conversation.messages.filter(event=Message.Event.ADVISOR_JOINED).count()
            if conversation.status == Conversation.Status.WAITING:
                assert (taken, joined, conversation.advisor_id) == (0, 0, None)
            else:
                assert (conversation.status, taken, joined) == ("active", 1, 1)
                assert refused is None or conversation.advisor_id != refused.pk

    await consistent(refused=victim)
    # The one refused takes now.
    conversation, _events = await Conversation.atake_next(victim)
    assert conversation.advisor_id == victim.pk
    await consistent()
