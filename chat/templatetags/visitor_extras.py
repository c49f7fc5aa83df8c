"""For the visitor's chat page: `{% load visitor_extras %}`, then
`{% interpreter_gender_choices as genders %}` and `{% return_code_days as days %}`."""

from __future__ import annotations

from django import template
from django.conf import settings

from advice.choices import InterpreterGender

register = template.Library()


@register.simple_tag
def interpreter_gender_choices() -> list[tuple[str, str]]:
    return list(InterpreterGender.choices)


@register.simple_tag
def return_code_days() -> int:
    return settings.RETURN_CODE_DAYS
