"""Opening hours in templates: `{% load line_hours %}`, then
`{% line_status_now county as line %}` ({"open", "opens_at", "closes_at"}, times as aware
datetimes in the service's time zone), `{% emergency_numbers_shown as numbers %}` (the admin's
numbers, [{"label", "number"}], labels translated into the active language) and
`{% default_emergency_numbers as numbers %}` (the built-in four, without touching the
database: the chat page renders them and its script swaps in the admin's from the socket)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from django import template
from django.conf import settings
from django.utils.translation import gettext

from advice.hours import DEFAULT_EMERGENCY_NUMBERS, emergency_numbers, line_status

register = template.Library()


@register.simple_tag
def line_status_now(county: str = "") -> dict[str, Any]:
    status = line_status(county or "")
    zone = ZoneInfo(settings.TIME_ZONE)
    return {
        "open": status.open,
        "opens_at": status.opens_at.astimezone(zone) if status.opens_at else None,
        "closes_at": status.closes_at.astimezone(zone) if status.closes_at else None,
        "iso": status.as_dict(),
    }


@register.simple_tag
def emergency_numbers_shown() -> list[dict[str, str]]:
    return [{"label": gettext(n["label"]), "number": n["number"]} for n in emergency_numbers()]


@register.simple_tag
def default_emergency_numbers() -> list[dict[str, str]]:
    return [
        {"label": gettext(label), "number": number} for label, number in DEFAULT_EMERGENCY_NUMBERS
    ]
