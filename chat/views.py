"""The visitor's pages. They carry no identifier: the conversation lives in the page's script
and its token in sessionStorage, never in a URL or a cookie."""

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.http import require_GET

from advice.choices import COUNTIES, INTERPRETER_LANGUAGES, SafeNow, Writer


@require_GET
def start(request):
    """A neutral start page that leads to the chat."""
    return render(request, "chat/start.html")


@require_GET
def chat(request):
    return render(request, "chat/chat.html", {
        "counties": COUNTIES,
        "interpreter_languages": INTERPRETER_LANGUAGES,
        "writers": Writer.choices,
        "safe_choices": SafeNow.choices,
        "languages": settings.LANGUAGES,
        "max_length": settings.MAX_MESSAGE_LENGTH,
    })
