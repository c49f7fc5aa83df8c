"""Opening hours: is the line open now, for a county, and when does it open next?

The admin keeps an `OpeningSchedule` per county and one national default (county empty), each
with weekly hours and dated exceptions, and a list of `Holiday`s on which every schedule is
closed unless its own exception for that date says otherwise. Which hours hold on a date:

1. the schedule's exceptions for that date, if it has any (a row without times closes the day);
2. otherwise closed, if the date is a holiday;
3. otherwise the schedule's weekly hours for that weekday.

A county without a schedule of its own follows the national default. With no schedule at all
the line is always open, so a fresh installation (`make run`, the tests) just works.

Times are wall-clock times in settings.TIME_ZONE (Europe/Stockholm). Every instant is turned
into UTC before it is compared: Python compares two datetimes that share a tzinfo by their wall
clock, which is wrong across a change to or from summer time. A time that does not exist on
the spring-forward night (02:30) is read with the offset before the change (so 03:30 summer
time); a time that occurs twice in the autumn is its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext, gettext_noop

# How far ahead to look for the next opening. A line closed for longer than this says it is
# closed without a date (the page still shows the emergency numbers).
LOOKAHEAD_DAYS = 60

# Shown while the line is closed, when the admin has no numbers of its own. Labels are English
# source text, translated in locale/*.
DEFAULT_EMERGENCY_NUMBERS: list[tuple[str, str]] = [
    (gettext_noop("Emergency: police, ambulance, fire"), "112"),
    (gettext_noop("Kvinnofridslinjen, open day and night"), "020-50 50 50"),
    (gettext_noop("BRIS, for children and young people, open day and night"), "116 111"),
    (gettext_noop("Police, when it is not an emergency"), "114 14"),
]


@dataclass(frozen=True)
class LineStatus:
    open: bool
    # While closed: when the line opens next (None: not within LOOKAHEAD_DAYS).
    opens_at: datetime | None = None
    # While open: when it closes (None: not within LOOKAHEAD_DAYS, or no hours configured).
    closes_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """For the protocol: times in the service's time zone, with their offset."""
        return {
            "open": self.open,
            "opens_at": _iso_local(self.opens_at),
            "closes_at": _iso_local(self.closes_at),
        }


def _iso_local(moment: datetime | None) -> str | None:
    return moment.astimezone(ZoneInfo(settings.TIME_ZONE)).isoformat() if moment else None


ALWAYS_OPEN = LineStatus(open=True)


def line_status(county: str = "", now: datetime | None = None) -> LineStatus:
    """Whether the line is open for `county` ("" for no county) at `now` (default: now)."""
    from advice.models import OpeningSchedule

    now = (now or timezone.now()).astimezone(UTC)
    schedules = {s.county: s for s in OpeningSchedule.objects.filter(county__in={county, ""})}
    schedule = schedules.get(county) or schedules.get("")
    if schedule is None:
        return ALWAYS_OPEN
    return _Calendar(schedule, now).status(now)


def is_open(county: str = "", now: datetime | None = None) -> bool:
    return line_status(county, now).open


# --- the open line, remembered (PostgreSQL) ---------------------------------------------------

# Every visitor's start asks whether the line is open: computed, that is up to four queries and
# a calendar, and in a surge of arrivals it was a tenth of the server's time. So a process
# remembers, per county, that the line is open, with the version of the opening hours it found
# open under and until when. Triggers on the schedule tables give the hours a new version with
# every write (migration 0004), and the start statement (advice.fastpath.start_web) stores a
# conversation only while the version is unchanged; when it has changed, the start goes the
# long way and this is computed again. So an admin's change, in any process, holds from the
# next start on. A closed line is not remembered: that answer needs the numbers to call too.

VERSION_TABLE = "advice_opening_hours_version"
# An open line with no closing time in sight is checked again after this long anyway.
REMEMBER_OPEN_AT_MOST = timedelta(hours=1)


@dataclass(frozen=True)
class _RememberedOpen:
    version: int
    since: datetime
    until: datetime


_open_lines: dict[str, _RememberedOpen] = {}


def remembered_open(county: str, now: datetime | None = None) -> int | None:
    """The opening hours' version under which the line was found open for `county` and still
    is at `now`, if this process remembers one."""
    remembered = _open_lines.get(county)
    if remembered is None:
        return None
    now = now or timezone.now()
    # `since` too: a clock set back (a test travelling in time) is before what was seen.
    return remembered.version if remembered.since <= now < remembered.until else None


def status_and_version(county: str) -> tuple[LineStatus, int]:
    """line_status(county) with the version of the hours it was computed from, remembering an
    open line. The version is read first: a change committed in between leaves a version that
    the start statement finds stale (and the start goes the long way), never a stale status
    under a current version."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT version FROM {VERSION_TABLE} WHERE id = 1")  # noqa: S608
        (version,) = cursor.fetchone()
    now = timezone.now()
    status = line_status(county, now)
    if status.open:
        until = min(status.closes_at or now + REMEMBER_OPEN_AT_MOST, now + REMEMBER_OPEN_AT_MOST)
        _open_lines[county] = _RememberedOpen(version, now, until)
    return status, version


def forget_open(county: str) -> None:
    _open_lines.pop(county, None)


def emergency_numbers() -> list[dict[str, str]]:
    """[{"label": untranslated label, "number": ...}] in the admin's order; the built-in
    defaults if none is shown. Callers translate the label (gettext / {% translate %})."""
    from advice.models import EmergencyNumber

    rows = list(EmergencyNumber.objects.filter(active=True).values_list("label", "number"))
    if not rows:
        # Safety first: the page never shows a closed line without a number to call.
        rows = DEFAULT_EMERGENCY_NUMBERS
    return [{"label": label, "number": number} for label, number in rows]


def line_closed_frame(status: LineStatus, language: str) -> dict[str, Any]:
    """The visitor's typed error while the line is closed: when it opens, and the numbers to
    call meanwhile, labelled in the visitor's language."""
    with translation.override(language):
        message = gettext("The line is closed just now.")
        numbers = [
            {"label": gettext(n["label"]), "number": n["number"]} for n in emergency_numbers()
        ]
    return {
        "type": "error",
        "code": "line_closed",
        "message": message,
        "ref": "start",
        "opens_at": _iso_local(status.opens_at),
        "numbers": numbers,
    }


class _Calendar:
    """The intervals of one schedule, loaded once for the days around `now`."""

    def __init__(self, schedule: Any, now: datetime) -> None:
        from advice.models import Holiday

        self.zone = ZoneInfo(settings.TIME_ZONE)
        first = now.astimezone(self.zone).date() - timedelta(days=1)
        last = first + timedelta(days=LOOKAHEAD_DAYS + 2)
        self.first, self.last = first, last
        self.weekly: dict[int, list[tuple[time, time]]] = {}
        for row in schedule.weekly_hours.all():
            self.weekly.setdefault(row.weekday, []).append((row.opens, row.closes))
        self.exceptions: dict[date, list[tuple[time, time]]] = {}
        for row in schedule.exceptions.filter(date__range=(first, last)):
            hours = self.exceptions.setdefault(row.date, [])
            if row.opens is not None and row.closes is not None:
                hours.append((row.opens, row.closes))
        self.holidays = set(
            Holiday.objects.filter(date__range=(first, last)).values_list("date", flat=True)
        )

    def hours_on(self, day: date) -> list[tuple[time, time]]:
        if day in self.exceptions:
            return self.exceptions[day]
        if day in self.holidays:
            return []
        return self.weekly.get(day.weekday(), [])

    def intervals_on(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's opening intervals as UTC instants, in order."""
        intervals = []
        for opens, closes in self.hours_on(day):
            start = self._instant(day, opens)
            end = (
                self._instant(day + timedelta(days=1), time(0))
                if closes == time(0)
                else self._instant(day, closes)
            )
            if end > start:
                intervals.append((start, end))
        return sorted(intervals)

    def _instant(self, day: date, at: time) -> datetime:
        return datetime.combine(day, at, tzinfo=self.zone).astimezone(UTC)

    def _intervals_from(self, day: date):
        while day <= self.last:
            yield from self.intervals_on(day)
            day += timedelta(days=1)

    def status(self, now: datetime) -> LineStatus:
        # From yesterday on: an interval that ends at midnight belongs to the day before.
        current_end: datetime | None = None
        for start, end in self._intervals_from(self.first):
            if current_end is None:
                if start <= now < end:
                    current_end = end
                elif start > now:
                    return LineStatus(open=False, opens_at=start)
            elif start <= current_end:
                # Touching or overlapping intervals (a day open until midnight and the next
                # from midnight) are one stretch of opening.
                current_end = max(current_end, end)
            else:
                return LineStatus(open=True, closes_at=current_end)
        if current_end is None:
            return LineStatus(open=False)
        # Open without a break to the end of the lookahead.
        return LineStatus(open=True)


# --- Sweden's public holidays, for `manage.py add_holidays` ---------------------------------


def swedish_holidays(year: int) -> list[tuple[date, str]]:
    """Sweden's public holidays and the eves that are kept as holidays (midsummer, Christmas
    and New Year's Eve: the `holidays` package's de facto category), by their Swedish names.
    Sundays are not listed for being Sundays: the weekly hours say what a Sunday is."""
    import holidays

    days = holidays.Sweden(
        years=year,
        categories=(holidays.PUBLIC, holidays.DE_FACTO),
        language="sv",
        include_sundays=False,
    )
    return sorted(days.items())
