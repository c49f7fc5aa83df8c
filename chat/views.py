"""The visitor's pages. They carry no identifier: the conversation lives in the page's script
and its token in sessionStorage, never in a URL or a cookie.

Every visitor page is rendered through `visitor_page`, which gives it what the quick exit needs
(the exit address, the neutral title, the strings its script speaks) and the CSRF token for the
quick-exit beacon. The only cookie a visitor ever gets is that CSRF cookie, and it lasts only
as long as the browser session (settings: CSRF_COOKIE_AGE = None).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import translate_url
from django.utils.translation import get_language
from django.views.decorators.http import require_http_methods, require_safe

from advice.choices import COUNTIES, INTERPRETER_LANGUAGES, SafeNow, Writer
from chat.quick_exit import quick_exit_by_token
from chat.strings import chat_strings, quick_exit_strings

# What /exit/ asks the browser to forget about this site (QE-9). Firefox applies the header
# only to a 2xx response, so /exit/ answers 200, never a redirect.
CLEAR_SITE_DATA = '"cache", "cookies", "storage"'


def visitor_page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    page: str,
    strings: dict[str, Any] | None = None,
    chat: dict[str, Any] | None = None,
    csrf: bool = True,
) -> HttpResponse:
    config = {
        "page": page,
        "exitUrl": settings.QUICK_EXIT_URL,
        # While the neutral site loads, the tab shows its host name, as any loading page does.
        "exitTitle": quick_exit_host(),
        "exitEndpoint": "/exit/",
        # Rendering the token sets the (browser-session) CSRF cookie the beacon needs.
        "csrfToken": get_token(request) if csrf else "",
        "strings": {**quick_exit_strings(), **(strings or {})},
    }
    if chat is not None:
        config["chat"] = chat
    return render(
        request,
        template,
        {
            "PAGE_TITLE": settings.VISITOR_PAGE_TITLE,
            "QUICK_EXIT_URL": settings.QUICK_EXIT_URL,
            "quick_exit_host": quick_exit_host(),
            "languages": [
                (code, name, translate_url(request.path, code)) for code, name in settings.LANGUAGES
            ],
            "visitor_config": config,
            **(context or {}),
        },
    )


def quick_exit_host() -> str:
    return urlsplit(settings.QUICK_EXIT_URL).hostname or ""


@require_safe
def start(request: HttpRequest) -> HttpResponse:
    """The start page, which is also the interruption page (QE-14): before the chat it explains
    the exit button and Shift x3, says that browser history is not erased, and links to the
    safety page."""
    return visitor_page(request, "chat/start.html", page="start")


@require_safe
def safety(request: HttpRequest) -> HttpResponse:
    """Staying safer online, and what the service keeps."""
    return visitor_page(
        request,
        "chat/safety.html",
        {
            "retention_days": getattr(settings, "CHAT_RETENTION_DAYS", None),
        },
        page="safety",
    )


@require_safe
def chat(request: HttpRequest) -> HttpResponse:
    """The form and the chat, in one page: the chat never adds a history entry."""
    current = get_language()
    return visitor_page(
        request,
        "chat/chat.html",
        {
            "counties": COUNTIES,
            "interpreter_languages": INTERPRETER_LANGUAGES,
            "writers": Writer.choices,
            "safe_choices": SafeNow.choices,
            "current_language": current,
            "max_length": settings.MAX_MESSAGE_LENGTH,
        },
        page="chat",
        strings=chat_strings(),
        chat={
            "socketPath": "/ws/chat/",
            "language": current,
            "maxLength": settings.MAX_MESSAGE_LENGTH,
        },
    )


@require_http_methods(["GET", "HEAD", "POST"])
async def exit_page(request: HttpRequest) -> HttpResponse:
    """/exit/: asks the browser to forget this site (200 with Clear-Site-Data, QE-9).

    POST is the quick-exit beacon, sent by the page as it leaves (a keep-alive request that
    outlives the page, with the CSRF token in its form data): it ends the conversation as left
    by quick exit and revokes the token. A token that opens nothing (never did, or was revoked by
    an earlier exit) gets 404 and changes nothing.

    GET shows nothing and sends the browser on to the neutral site. It sets no cookie: the
    response clears them."""
    if request.method == "POST":
        token = request.POST.get("token", "")
        if not token:
            response = JsonResponse(
                {"code": "missing_field", "message": "The field 'token' is required."}, status=400
            )
        else:
            events = await database_sync_to_async(quick_exit_by_token)(token)
            if events is None:
                response = JsonResponse(
                    {"code": "invalid_token", "message": "This conversation cannot be found."},
                    status=404,
                )
            else:
                response = JsonResponse({"status": "ended"})
    else:
        response = visitor_page(request, "chat/exit.html", page="exit", csrf=False)
    response["Clear-Site-Data"] = CLEAR_SITE_DATA
    return response
