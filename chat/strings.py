"""The words the visitor pages' script shows, translated here on the server and handed to the
page with json_script (no JavaScript catalogue, no inline script).

Waits are given in rough steps rather than as "N minutes": a precise number would promise more
than the queue can keep, and whole phrases translate into every language without plural rules.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from chat.consent_and_codes import consent_and_code_strings


def quick_exit_strings() -> dict[str, Any]:
    """What every visitor page may say: the quick exit's screen-reader announcements."""
    return {
        "shiftTwoMore": _("Shift, press 2 more times to exit."),
        "shiftOneMore": _("Shift, press 1 more time to exit."),
        "shiftExpired": _("Exit this page expired."),
    }


def chat_strings() -> dict[str, Any]:
    return {
        "you": _("You"),
        "advisor": _("Advisor"),
        "interpreter": _("Interpreter"),
        "sending": _("Sending…"),
        "notSent": _("Not sent"),
        "connecting": _("Connecting…"),
        "reconnecting": _("The connection was lost. Trying again…"),
        "positionNext": _("You are next in the queue."),
        # %(position)s is a number: 2, 3, ...
        "position": _("You are number %(position)s in the queue."),
        "waits": [
            # [up to this many seconds, what to say]; the last one covers everything longer.
            [60, _("Estimated wait: less than a minute.")],
            [5 * 60, _("Estimated wait: a few minutes.")],
            [12 * 60, _("Estimated wait: about 10 minutes.")],
            [20 * 60, _("Estimated wait: about 15 minutes.")],
            [35 * 60, _("Estimated wait: about half an hour.")],
            [70 * 60, _("Estimated wait: about an hour.")],
            [None, _("Estimated wait: more than an hour.")],
        ],
        "events": {
            "advisor_joined": _("An advisor has joined the chat."),
            "visitor_left": _("You left the chat."),
            "closed": _("The advisor has ended the chat."),
        },
        "typing": {
            "advisor": _("The advisor is writing…"),
            "interpreter": _("The interpreter is writing…"),
        },
        "tokenGone": _("That chat is no longer open. You can start a new one."),
        "slowDown": _("You are sending very fast. Wait a moment, then try again."),
        "tooLong": _("The message is too long. Split it into shorter messages."),
        "empty": _("Write something first."),
        "chooseWriter": _("Choose who is writing."),
        "chooseInterpreterLanguage": _("Choose the language for the interpreter."),
        "genericError": _("Something went wrong. Please try again."),
        # Interpreters, opening hours and return codes (chat/consent_and_codes.py).
        "interp": consent_and_code_strings(),
    }
