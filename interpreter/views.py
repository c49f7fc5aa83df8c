"""The interpreter's page. It carries nothing secret: the invitation's secret is in the link's
fragment, which the browser keeps to itself, and the page's script sends it over the socket."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_safe

from advice.choices import INTERPRETER_LANGUAGES
from config.language import advisor_language


def page_strings() -> dict[str, str]:
    """What the page's script says, in the page's language."""
    return {
        "connecting": _("Connecting…"),
        "reconnecting": _("The connection dropped. Reconnecting…"),
        "waiting": _(
            "The person you will interpret for is being asked if you may join. Please wait."
        ),
        "joined": _("You are in the conversation. Everyone sees you as “Interpreter”."),
        "refused": _(
            "The person said no to an interpreter this time. Thank you for your "
            "time. You can close this page."
        ),
        "revoked": _(
            "The advisor has ended your part in this conversation. Thank you. You "
            "can close this page."
        ),
        "left": _("You have left the conversation. You can close this page."),
        "ended": _("The conversation has ended. Thank you. You can close this page."),
        "expired": _("This invitation has expired. Ask the advisor for a new link."),
        "invalid_link": _("This link does not work. Ask the advisor for a new link."),
        "link_used": _(
            "This link has already been used. Each link works once. If the "
            "conversation was opened in another tab, use that tab."
        ),
        "link_revoked": _("The advisor has withdrawn this invitation."),
        "link_expired": _("This invitation has expired. Ask the advisor for a new link."),
        "conversation_ended": _("The conversation has already ended."),
        "no_link": _("Open the invitation link the advisor sent you."),
        "invalid_token": _("This invitation is no longer valid."),
        "send_failed": _("Could not send. Try again."),
        "from_visitor": _("Visitor"),
        "from_advisor": _("Advisor"),
        "from_interpreter": _("Interpreter (you)"),
        "typing_visitor": _("The visitor is writing…"),
        "typing_advisor": _("The advisor is writing…"),
        "confirm_leave": _("Leave the conversation? You cannot come back with this link."),
        "event_interpreter_joined": _("You joined the conversation."),
        "event_interpreter_left": _("The interpreter left."),
        "event_interpreter_shared": _("The advisor shared earlier messages with you."),
        "event_visitor_left": _("The visitor left."),
        "event_closed": _("The advisor ended the conversation."),
        "event_other": _("Something changed in the conversation."),
        "language": _("Language to interpret:"),
    }


@require_safe
def page(request: HttpRequest) -> HttpResponse:
    # Swedish or English, like the advisor side: the interpreter is a professional.
    with translation.override(advisor_language(request.META.get("HTTP_ACCEPT_LANGUAGE", ""))):
        return render(
            request,
            "interpreter/interpreter.html",
            {
                "interpreter_config": {
                    "strings": page_strings(),
                    "socket": "/ws/interpreter/",
                    # Language codes as names, each in its own script ("ar" -> "العربية (Arabic)").
                    "languages": {**dict(settings.LANGUAGES), **dict(INTERPRETER_LANGUAGES)},
                },
                "LANGUAGE_CODE": translation.get_language(),
            },
        )
