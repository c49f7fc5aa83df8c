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


# --- the line's status, cached ---------------------------------------------------------------

# Every visitor's start asks whether the line is open: computed, that is up to four queries and
# a calendar, and in a surge of arrivals it was a tenth of the server's time. So each process
# keeps an open line's status per county for OPENING_HOURS_CACHE_SECONDS, never past the
# moment it closes by itself. A save or delete of the hours in this process clears it (the
# signals below, and again when that transaction commits); a closing made in another process,
# or by a bulk write, holds here within the cache time. A closed line is not cached: a visitor
# is never turned away for longer than the hours say, whichever process they reach.


@dataclass(frozen=True)
class _Cached:
    status: LineStatus
    since: datetime
    until: datetime


_cached: dict[str, _Cached] = {}
# Raised by every clear, so that a status computed across a clear is not kept.
_generation = 0


def fresh_line_status(county: str) -> LineStatus | None:
    """The cached line status for `county`, if this process has one still valid now; never a
    database query (for code on the event loop)."""
    cached = _cached.get(county)
    if cached is None:
        return None
    now = timezone.now()
    # `since` too: a clock set back (a test travelling in time) is before what was seen.
    return cached.status if cached.since <= now < cached.until else None


def cached_line_status(county: str = "") -> LineStatus:
    """line_status(county) now, from the cache while it is fresh."""
    status = fresh_line_status(county)
    if status is not None:
        return status
    generation = _generation
    now = timezone.now()
    status = line_status(county, now)
    seconds = getattr(settings, "OPENING_HOURS_CACHE_SECONDS", 10)
    until = min(
        moment
        for moment in (now + timedelta(seconds=seconds), status.opens_at, status.closes_at)
        if moment is not None
    )
    if status.open and generation == _generation and until > now:
        _cached[county] = _Cached(status, now, until)
    return status


def clear_line_status_cache(**_kwargs: Any) -> None:
    global _generation
    _generation += 1
    _cached.clear()


def _hours_changed(using: str = "default", **_kwargs: Any) -> None:
    from django.db import transaction

    clear_line_status_cache()
    # Another thread may compute the old hours again before this write commits.
    transaction.on_commit(clear_line_status_cache, using=using)


def connect_signals() -> None:
    """Clear the cache on every save and delete of the opening hours (AdviceConfig.ready)."""
    from django.db.models.signals import post_delete, post_save

    from advice.models import Holiday, OpeningException, OpeningSchedule, WeeklyHours

    for model in (OpeningSchedule, WeeklyHours, Holiday, OpeningException):
        uid = f"advice.hours.{model.__name__}"
        post_save.connect(_hours_changed, sender=model, dispatch_uid=uid + ".save")
        post_delete.connect(_hours_changed, sender=model, dispatch_uid=uid + ".delete")


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
