"""Opening hours: the domain function line_status(), holidays, exceptions, the summer-time
edges, and the visitor's `start` refused while the line is closed."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connections
from django.test.utils import CaptureQueriesContext

from advice.hours import emergency_numbers, line_status, swedish_holidays
from advice.models import (
    Conversation,
    EmergencyNumber,
    Holiday,
    OpeningException,
    OpeningSchedule,
    WeeklyHours,
)
from tests.factories import START, receive_until, visitor_socket

STOCKHOLM = ZoneInfo("Europe/Stockholm")


@pytest.fixture(autouse=True)
def _no_pooled_connection_left_behind():
    """Django's async ORM calls in these tests (acount, aget, ...) run on asgiref's shared
    thread and leave its connection checked out of the pool; give it back after each test
    (tests/test_take_race.py needs every pooled connection at once)."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=STOCKHOLM)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def weekdays(schedule: OpeningSchedule, opens: str, closes: str, days=range(5)) -> None:
    for day in days:
        WeeklyHours.objects.create(
            schedule=schedule,
            weekday=day,
            opens=time.fromisoformat(opens),
            closes=time.fromisoformat(closes),
        )


@pytest.fixture
def national(db):
    schedule = OpeningSchedule.objects.create(county="")
    weekdays(schedule, "08:00", "18:00")
    return schedule


# --- the domain -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_with_no_schedule_at_all_the_line_is_always_open():
    Holiday.objects.create(date=date(2026, 12, 25), name="Juldagen")
    status = line_status("AB", local(2026, 12, 25, 3, 0))
    assert status.open
    assert status.opens_at is None and status.closes_at is None


def test_within_weekly_hours_the_line_is_open_and_says_when_it_closes(national):
    status = line_status("", local(2026, 11, 24, 10, 0))  # a Tuesday
    assert status.open
    assert status.closes_at == local(2026, 11, 24, 18, 0)


def test_after_hours_the_line_is_closed_and_says_when_it_opens(national):
    status = line_status("", local(2026, 11, 24, 18, 0))
    assert not status.open
    assert status.opens_at == local(2026, 11, 25, 8, 0)


def test_on_friday_evening_it_opens_on_monday(national):
    status = line_status("", local(2026, 11, 27, 19, 30))
    assert status.opens_at == local(2026, 11, 30, 8, 0)


def test_a_county_without_its_own_schedule_follows_the_national_one(national):
    assert not line_status("M", local(2026, 11, 24, 7, 0)).open
    assert line_status("M", local(2026, 11, 24, 9, 0)).open


def test_a_county_schedule_replaces_the_national_one(national):
    skane = OpeningSchedule.objects.create(county="M")
    weekdays(skane, "06:00", "22:00", days=range(7))
    assert line_status("M", local(2026, 11, 29, 21, 0)).open  # a Sunday
    assert not line_status("AB", local(2026, 11, 29, 21, 0)).open


def test_a_holiday_closes_every_schedule(national):
    Holiday.objects.create(date=date(2026, 12, 24), name="Julafton")
    status = line_status("", local(2026, 12, 24, 10, 0))  # a Thursday
    assert not status.open
    assert status.opens_at == local(2026, 12, 25, 8, 0)


def test_an_exception_on_a_holiday_opens_it_with_other_hours(national):
    Holiday.objects.create(date=date(2026, 12, 24), name="Julafton")
    OpeningException.objects.create(
        schedule=national, date=date(2026, 12, 24), opens=time(10), closes=time(14)
    )
    assert not line_status("", local(2026, 12, 24, 9, 0)).open
    status = line_status("", local(2026, 12, 24, 11, 0))
    assert status.open and status.closes_at == local(2026, 12, 24, 14, 0)


def test_an_exception_without_hours_closes_a_weekday(national):
    OpeningException.objects.create(schedule=national, date=date(2026, 11, 25), note="Training")
    status = line_status("", local(2026, 11, 24, 20, 0))
    assert status.opens_at == local(2026, 11, 26, 8, 0)


def test_an_exception_of_another_schedule_does_not_apply(national):
    skane = OpeningSchedule.objects.create(county="M")
    weekdays(skane, "08:00", "18:00")
    OpeningException.objects.create(schedule=skane, date=date(2026, 11, 25))
    assert line_status("AB", local(2026, 11, 25, 9, 0)).open
    assert not line_status("M", local(2026, 11, 25, 9, 0)).open


def test_a_day_open_until_midnight_runs_on_into_the_next(db):
    schedule = OpeningSchedule.objects.create(county="")
    WeeklyHours.objects.create(schedule=schedule, weekday=0, opens=time(20), closes=time(0))
    WeeklyHours.objects.create(schedule=schedule, weekday=1, opens=time(0), closes=time(2))
    status = line_status("", local(2026, 11, 23, 23, 0))  # Monday night
    assert status.open and status.closes_at == local(2026, 11, 24, 2, 0)
    assert line_status("", local(2026, 11, 24, 1, 0)).open


def test_a_line_open_round_the_clock_has_no_closing_time(db):
    schedule = OpeningSchedule.objects.create(county="")
    weekdays(schedule, "00:00", "00:00", days=range(7))
    status = line_status("", local(2026, 11, 24, 3, 0))
    assert status.open and status.closes_at is None


def test_a_line_with_a_schedule_but_no_hours_is_closed_without_a_date(db):
    OpeningSchedule.objects.create(county="")
    status = line_status("", local(2026, 11, 24, 10, 0))
    assert not status.open and status.opens_at is None


def test_an_interval_that_closes_before_it_opens_is_refused_by_validation(national):
    with pytest.raises(ValidationError):
        WeeklyHours(schedule=national, weekday=0, opens=time(18), closes=time(8)).full_clean()
    with pytest.raises(ValidationError):
        OpeningException(schedule=national, date=date(2026, 1, 1), opens=time(8)).full_clean()
    WeeklyHours(schedule=national, weekday=0, opens=time(18), closes=time(0)).full_clean()


# --- summer time -------------------------------------------------------------------------------
# 2026: summer time starts Sunday 29 March (02:00 CET -> 03:00 CEST) and ends Sunday
# 25 October (03:00 CEST -> 02:00 CET).


def test_across_the_spring_change_the_opening_time_is_local_wall_time(db):
    schedule = OpeningSchedule.objects.create(county="")
    weekdays(schedule, "08:00", "18:00")
    status = line_status("", utc(2026, 3, 27, 19, 0))  # Friday 20:00 CET
    assert status.opens_at == utc(2026, 3, 30, 6, 0)  # Monday 08:00 CEST


def test_an_opening_time_that_does_not_exist_in_spring_opens_after_the_gap(db):
    schedule = OpeningSchedule.objects.create(county="")
    WeeklyHours.objects.create(schedule=schedule, weekday=6, opens=time(2, 30), closes=time(5))
    status = line_status("", utc(2026, 3, 29, 0, 0))  # 01:00 CET
    assert status.opens_at == utc(2026, 3, 29, 1, 30)  # 03:30 CEST
    assert line_status("", utc(2026, 3, 29, 1, 30)).open
    assert line_status("", utc(2026, 3, 29, 2, 59)).open
    assert not line_status("", utc(2026, 3, 29, 3, 0)).open  # 05:00 CEST


def test_the_autumn_night_lasts_an_hour_longer(db):
    schedule = OpeningSchedule.objects.create(county="")
    WeeklyHours.objects.create(schedule=schedule, weekday=6, opens=time(0), closes=time(4))
    status = line_status("", utc(2026, 10, 24, 22, 30))  # 00:30 CEST
    # 04:00 CET; a wall-clock comparison would end an hour early.
    assert status.open and status.closes_at == utc(2026, 10, 25, 3, 0)
    assert line_status("", utc(2026, 10, 25, 2, 30)).open  # 03:30 CET


def test_a_time_that_happens_twice_in_autumn_is_its_first_occurrence(db):
    schedule = OpeningSchedule.objects.create(county="")
    WeeklyHours.objects.create(schedule=schedule, weekday=6, opens=time(0), closes=time(2, 30))
    assert line_status("", utc(2026, 10, 25, 0, 15)).open  # 02:15 CEST
    assert not line_status("", utc(2026, 10, 25, 0, 45)).open  # 02:45 CEST
    assert not line_status("", utc(2026, 10, 25, 1, 15)).open  # 02:15 CET, the second time


@pytest.mark.django_db
def test_with_a_travelled_clock_the_default_now_is_used():
    schedule = OpeningSchedule.objects.create(county="")
    weekdays(schedule, "08:00", "18:00")
    with time_machine.travel(local(2026, 3, 29, 12, 0), tick=False):  # a Sunday
        assert line_status().opens_at == local(2026, 3, 30, 8, 0)
    with time_machine.travel(local(2026, 3, 30, 12, 0), tick=False):
        assert line_status().open


# --- holidays and numbers ----------------------------------------------------------------------


def test_easter_and_the_moving_holidays_fall_on_the_right_days():
    days = dict((name, day) for day, name in swedish_holidays(2026))
    assert days["Påskdagen"] == date(2026, 4, 5)
    assert dict((name, day) for day, name in swedish_holidays(2027))["Påskdagen"] == date(
        2027, 3, 28
    )
    assert days["Långfredagen"] == date(2026, 4, 3)
    assert days["Kristi himmelsfärdsdag"] == date(2026, 5, 14)
    assert days["Midsommarafton"] == date(2026, 6, 19)
    assert days["Alla helgons dag"] == date(2026, 10, 31)
    # The eves kept as holidays: the package's de facto category.
    assert days["Julafton"] == date(2026, 12, 24)
    assert days["Nyårsafton"] == date(2026, 12, 31)
    assert len(days) == 16


@pytest.mark.django_db
def test_the_holidays_command_adds_a_year_once():
    call_command("add_holidays", "2027")
    call_command("add_holidays", "2027")
    assert Holiday.objects.filter(date__year=2027).count() == 16


@pytest.mark.django_db
def test_the_emergency_numbers_are_the_admins_or_else_the_defaults():
    assert emergency_numbers()[0]["number"] == "112"
    EmergencyNumber.objects.all().delete()
    assert [n["number"] for n in emergency_numbers()] == [
        "112",
        "020-50 50 50",
        "116 111",
        "114 14",
    ]
    EmergencyNumber.objects.create(label="Local shelter", number="010-123", order=1)
    EmergencyNumber.objects.create(label="Emergency", number="112", order=0)
    assert [n["number"] for n in emergency_numbers()] == ["112", "010-123"]


# --- the visitor's start ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_start_is_refused_while_the_line_is_closed_and_says_when_it_opens():
    schedule = await OpeningSchedule.objects.acreate(county="")
    await WeeklyHours.objects.acreate(schedule=schedule, weekday=2, opens=time(8), closes=time(18))
    with time_machine.travel(local(2026, 11, 24, 20, 0), tick=True):  # Tuesday evening
        visitor = await visitor_socket()
        await visitor.send_json_to(START)
        error = await receive_until(visitor, "error")
        assert error["code"] == "line_closed"
        assert error["ref"] == "start"
        assert error["opens_at"] == local(2026, 11, 25, 8, 0).isoformat()
        assert error["numbers"][0]["number"] == "112"
        assert await Conversation.objects.acount() == 0
        await visitor.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_start_goes_through_for_a_county_that_is_open():
    national = await OpeningSchedule.objects.acreate(county="")
    await WeeklyHours.objects.acreate(schedule=national, weekday=1, opens=time(8), closes=time(9))
    skane = await OpeningSchedule.objects.acreate(county="M")
    await WeeklyHours.objects.acreate(schedule=skane, weekday=1, opens=time(8), closes=time(22))
    with time_machine.travel(local(2026, 11, 24, 20, 0), tick=True):
        closed = await visitor_socket()
        await closed.send_json_to({**START, "county": "AB"})
        assert (await receive_until(closed, "error"))["code"] == "line_closed"
        open_ = await visitor_socket()
        await open_.send_json_to({**START, "county": "M"})
        await receive_until(open_, "started")
        assert await Conversation.objects.acount() == 1
        await closed.disconnect()
        await open_.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_visitor_can_ask_whether_the_line_is_open_before_starting():
    schedule = await OpeningSchedule.objects.acreate(county="")
    await WeeklyHours.objects.acreate(schedule=schedule, weekday=1, opens=time(8), closes=time(18))
    with time_machine.travel(local(2026, 11, 24, 10, 0), tick=True):
        visitor = await visitor_socket()
        await visitor.send_json_to({"type": "line_status", "county": "AB"})
        status = await receive_until(visitor, "line_status")
        assert status["open"] is True
        assert status["closes_at"] == local(2026, 11, 24, 18, 0).isoformat()
        await visitor.send_json_to({"type": "line_status", "county": "XX"})
        assert (await receive_until(visitor, "error"))["code"] == "invalid_field"
        await visitor.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_change_to_the_hours_holds_at_once_here_and_within_the_cache_time_elsewhere(
    settings,
):
    """An open line's status is cached per process (advice.hours.cached_line_status). A save
    or delete through the models clears it at once; a closing the signals do not see (a bulk
    write, or one made by another process) holds within OPENING_HOURS_CACHE_SECONDS. A closed
    line is never cached: an opening holds at once, however it was written."""
    settings.OPENING_HOURS_CACHE_SECONDS = 10

    async def start() -> dict:
        visitor = await visitor_socket()
        await visitor.send_json_to(START)
        frame = None
        while frame is None or frame["type"] not in ("started", "error"):
            frame = await visitor.receive_json_from(timeout=3)
        await visitor.disconnect()
        return frame

    with time_machine.travel(local(2026, 11, 24, 12, 0), tick=True) as clock:
        assert (await start())["type"] == "started"  # no schedule: open, and cached so
        national = await OpeningSchedule.objects.acreate(county="")  # no hours: closed
        assert (await start())["code"] == "line_closed"
        # Open every day around the clock, written in bulk (no model signals): at once, since
        # a closed line is not cached.
        await WeeklyHours.objects.abulk_create(
            WeeklyHours(schedule=national, weekday=day, opens=time(0), closes=time(0))
            for day in range(7)
        )
        assert (await start())["type"] == "started"
        # A holiday today, saved through the model: at once.
        holiday = await Holiday.objects.acreate(date=date(2026, 11, 24), name="Test")
        assert (await start())["code"] == "line_closed"
        # Moved away in bulk: at once too.
        await Holiday.objects.filter(pk=holiday.pk).aupdate(date=date(2000, 1, 1))
        assert (await start())["type"] == "started"
        # Back on today in bulk: the cached "open" holds until the cache time is over.
        await Holiday.objects.filter(pk=holiday.pk).aupdate(date=date(2026, 11, 24))
        assert (await start())["type"] == "started"
        clock.shift(11)
        assert (await start())["code"] == "line_closed"
        # Deleted through the model: at once.
        await holiday.adelete()
        await OpeningException.objects.acreate(schedule=national, date=date(2026, 11, 24))
        assert (await start())["code"] == "line_closed"
    assert await Conversation.objects.acount() == 4


def test_the_cached_status_lasts_the_cache_time_and_never_past_a_change_of_its_own(
    db, settings, django_assert_num_queries
):
    from advice.hours import cached_line_status

    settings.OPENING_HOURS_CACHE_SECONDS = 10
    schedule = OpeningSchedule.objects.create(county="")
    weekdays(schedule, "08:00", "18:00")
    with time_machine.travel(local(2026, 11, 24, 17, 59, 55), tick=False) as clock:
        assert cached_line_status().open
        with django_assert_num_queries(0):
            assert cached_line_status().open
        clock.shift(5)  # 18:00: closed, though the cache time is not over
        status = cached_line_status()
        assert not status.open and status.opens_at == local(2026, 11, 25, 8, 0)
        with CaptureQueriesContext(connections["default"]) as queries:
            assert not cached_line_status().open
        assert queries.captured_queries  # a closed line is asked again every time
        # Another county is cached apart.
        assert not cached_line_status("AB").open
        clock.shift(-60)  # a clock set back: computed again
        assert cached_line_status().open
    settings.OPENING_HOURS_CACHE_SECONDS = 0
    with time_machine.travel(local(2026, 11, 24, 12, 0), tick=False):
        cached_line_status()
        with CaptureQueriesContext(connections["default"]) as queries:
            cached_line_status()
        assert queries.captured_queries  # no cache: asked every time


# --- the admin ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_admin_edits_hours_holidays_and_numbers(client, settings):
    from django.contrib.auth import get_user_model

    from tests.factories import make_advisor, session_cookie

    admin_user = make_advisor("root")
    get_user_model().objects.filter(pk=admin_user.pk).update(is_superuser=True)
    admin_user.refresh_from_db()
    client.cookies[settings.SESSION_COOKIE_NAME] = session_cookie(admin_user).split("=", 1)[1]

    response = client.post(
        "/admin/advice/openingschedule/add/",
        {
            "county": "M",
            "weekly_hours-TOTAL_FORMS": "1",
            "weekly_hours-INITIAL_FORMS": "0",
            "weekly_hours-0-weekday": "0",
            "weekly_hours-0-opens": "08:00",
            "weekly_hours-0-closes": "18:00",
            "exceptions-TOTAL_FORMS": "1",
            "exceptions-INITIAL_FORMS": "0",
            "exceptions-0-date": "2026-12-24",
            "exceptions-0-note": "Julafton",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    schedule = OpeningSchedule.objects.get(county="M")
    assert schedule.weekly_hours.count() == 1 and schedule.exceptions.count() == 1
    assert client.get("/admin/advice/openingschedule/").status_code == 200

    bad = client.post(
        "/admin/advice/openingschedule/add/",
        {
            "county": "AB",
            "weekly_hours-TOTAL_FORMS": "1",
            "weekly_hours-INITIAL_FORMS": "0",
            "weekly_hours-0-weekday": "0",
            "weekly_hours-0-opens": "18:00",
            "weekly_hours-0-closes": "08:00",
            "exceptions-TOTAL_FORMS": "0",
            "exceptions-INITIAL_FORMS": "0",
        },
    )
    assert bad.status_code == 200 and not OpeningSchedule.objects.filter(county="AB").exists()

    assert (
        client.post(
            "/admin/advice/holiday/add/",
            {
                "date": "2026-12-25",
                "name": "Juldagen",
            },
        ).status_code
        == 302
    )
    number = EmergencyNumber.objects.create(
        label="Emergency: police, ambulance, fire", number="112", order=0
    )
    assert (
        client.post(
            f"/admin/advice/emergencynumber/{number.pk}/change/",
            {
                "label": number.label,
                "number": "112",
                "order": "0",
                "active": "on",
            },
        ).status_code
        == 302
    )
    assert client.get("/admin/advice/emergencynumber/").status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_while_closed_the_answer_carries_the_numbers_in_the_visitors_language():
    schedule = await OpeningSchedule.objects.acreate(county="")
    await WeeklyHours.objects.acreate(schedule=schedule, weekday=1, opens=time(8), closes=time(18))
    await EmergencyNumber.objects.acreate(
        label="Police, when it is not an emergency", number="114 14", order=1
    )
    await EmergencyNumber.objects.acreate(
        label="Emergency: police, ambulance, fire", number="112", order=0
    )
    with time_machine.travel(local(2026, 11, 24, 20, 0), tick=True):
        visitor = await visitor_socket()
        await visitor.send_json_to({"type": "line_status", "language": "en"})
        status = await receive_until(visitor, "line_status")
        assert status["open"] is False
        assert status["opens_at"] == local(2026, 12, 1, 8, 0).isoformat()  # next Tuesday
        assert status["numbers"] == [
            {"label": "Emergency: police, ambulance, fire", "number": "112"},
            {"label": "Police, when it is not an emergency", "number": "114 14"},
        ]
        await visitor.send_json_to({"type": "line_status", "language": "xx"})
        assert (await receive_until(visitor, "error"))["code"] == "invalid_field"
        await visitor.disconnect()


# --- migrations ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_database_with_the_old_version_triggers_migrates_and_keeps_its_hours():
    """Migration 0005 drops what 0004 made (PostgreSQL; nothing on SQLite), and back."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    def version_table_exists() -> bool:
        return "advice_opening_hours_version" in connection.introspection.table_names()

    schedule = OpeningSchedule.objects.create(county="M")
    weekdays(schedule, "08:00", "18:00")
    executor = MigrationExecutor(connection)
    executor.migrate([("advice", "0004_opening_hours_version")])
    assert version_table_exists() == (connection.vendor == "postgresql")
    if connection.vendor == "postgresql":
        WeeklyHours.objects.create(schedule=schedule, weekday=5, opens=time(10), closes=time(14))
        with connection.cursor() as cursor:  # the trigger still runs
            cursor.execute("SELECT version FROM advice_opening_hours_version")
            assert cursor.fetchone()[0] > 0
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes("advice"))
    assert not version_table_exists()
    assert OpeningSchedule.objects.get(county="M").weekly_hours.count() >= 5
    WeeklyHours.objects.create(schedule=schedule, weekday=6, opens=time(10), closes=time(14))
